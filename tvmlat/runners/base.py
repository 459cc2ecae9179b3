"""The runner protocol, its result type, and the adaptive timing loop shared by all runners."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np

from ..targets import EvaluatorConfig

if TYPE_CHECKING:  # runners.base is imported where only TVM's runtime is (run-bundle): no torch here
    import torch

STATUSES = ("ok", "export_error", "import_error", "tune_error", "compile_error", "run_error", "wrong_result")


@dataclass
class RunResult:
    """What a runner reports for one block. Failures are data: status != "ok" plus ``error``."""

    status: str = "ok"
    error: str = ""
    latency_ms_median: float = math.nan
    latency_ms_p10: float = math.nan
    latency_ms_p90: float = math.nan
    latency_cov: float = math.nan
    ci_rel: float = math.nan      # half-width of the 95% CI of the median, relative to the median
    n_runs: int = 0               # timed executions in all (number x repeats)
    number: int = 0
    repeats: int = 0
    max_rel_err: float = math.nan  # TVM output vs torch, relative to the output's magnitude
    stages: dict[str, float] = field(default_factory=dict)  # export_s, import_s, compile_s, measure_s
    energy: dict = field(default_factory=dict)  # power.measure_energy's reading, where the target has one

    def as_row(self) -> dict:
        d = asdict(self)
        stages = d.pop("stages")
        energy = d.pop("energy")
        for k in ("energy_mj", "power_w", "idle_power_w", "energy_note"):
            if k in energy:
                d[k] = energy[k]
        for k in ("export_s", "import_s", "tune_s", "compile_s", "measure_s", "upload_s", "cache_hit"):
            d[k] = float(stages.get(k, math.nan))
        return d


class Runner(Protocol):
    """Compiles (where it needs to) and times one workload."""

    name: str

    def run(self, module: torch.nn.Module, inputs: Sequence[torch.Tensor], key: str = "") -> RunResult: ...


def median_ci_rel(samples: Sequence[float]) -> float:
    """Half-width of a distribution-free 95% confidence interval of the median, over the median.

    Uses the binomial order statistics (ranks n/2 -+ 0.98 sqrt(n)); needs no normality.
    """
    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    if n < 3:
        return math.inf
    lo = max(0, int(math.floor(n / 2 - 0.98 * math.sqrt(n))) - 1)
    hi = min(n - 1, int(math.ceil(n / 2 + 0.98 * math.sqrt(n))) - 1)
    med = float(np.median(x))
    return (x[hi] - x[lo]) / 2 / med if med > 0 else math.inf


TimeFn = Callable[[int, int], list[float]]  # (number, repeats) -> seconds per run, one per repeat


def adaptive_measure(time_fn: TimeFn, cfg: EvaluatorConfig) -> RunResult:
    """Warm up, pick ``number`` so a repeat lasts >= min_repeat_ms, then add repeats until the
    median is known to +-rel_precision (95% CI), or max_repeats / max_seconds is reached."""
    t_start = time.perf_counter()
    est = None
    for _ in range(max(1, cfg.warmup_runs)):
        est = time_fn(1, 1)[0]
    est = max(est or 1e-9, 1e-9)
    number = max(1, int(math.ceil(cfg.min_repeat_ms / 1000.0 / est)))
    samples: list[float] = []
    batch = cfg.min_repeats
    while True:
        samples += time_fn(number, batch)
        ci = median_ci_rel(samples)
        elapsed = time.perf_counter() - t_start
        if ci <= cfg.rel_precision or len(samples) >= cfg.max_repeats or elapsed >= cfg.max_seconds:
            break
        per_repeat = elapsed / (len(samples) + 1)
        left = int((cfg.max_seconds - elapsed) / max(per_repeat, 1e-9))
        batch = max(1, min(max(2, len(samples) // 2), cfg.max_repeats - len(samples), left))
    ms = np.asarray(samples) * 1000.0
    return RunResult(
        latency_ms_median=float(np.median(ms)),
        latency_ms_p10=float(np.percentile(ms, 10)),
        latency_ms_p90=float(np.percentile(ms, 90)),
        latency_cov=float(np.std(ms) / np.mean(ms)) if len(ms) > 1 else math.nan,
        ci_rel=float(median_ci_rel(samples)),
        n_runs=number * len(samples),
        number=number,
        repeats=len(samples),
        stages={"measure_s": time.perf_counter() - t_start},
    )
