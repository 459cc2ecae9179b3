"""The runner protocol, its result type, and the adaptive timing loop shared by all runners."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, runtime_checkable

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
    # interleaved rounds (see interleaved_rounds): how many, the first pass's consecutive median
    # they replaced, and how far the medians of the odd and the even rounds lie apart (relative)
    rounds: int = 0
    latency_ms_first: float = math.nan
    half_diff_rel: float = math.nan
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
    """Compiles (where it needs to) and times one workload.

    What else a runner can do, the campaign loop (``measure.run_campaign``) finds by these protocols:
    ``CompilesAhead`` (the local runner), ``KeepsForRounds`` (local and fake runners), ``parallel = True``
    with ``run_all`` (the RPC runner, one block per server), ``close()`` (release workers)."""

    name: str

    def run(self, module: torch.nn.Module, inputs: Sequence[torch.Tensor], key: str = "") -> RunResult: ...


@runtime_checkable
class CompilesAhead(Protocol):
    """A runner that compiles the next workloads in the background while the current one is timed."""

    @property
    def ahead_depth(self) -> int:
        """How many workloads beyond the one being timed to announce (one per compile worker)."""
        ...

    def prefetch(self, key: str, spec_json: str) -> None:
        """Announce a workload that will be run soon (its spec JSON: compile it now)."""
        ...

    def settle(self) -> None:
        """Wait until the compiles announced so far are done (nothing compiles during the rounds)."""
        ...


@runtime_checkable
class KeepsForRounds(Protocol):
    """A runner that keeps measured blocks (while ``keeping``) for interleaved rounds (``rounds`` > 0)."""

    rounds: int
    keeping: bool

    @property
    def kept(self) -> int:
        """Blocks waiting for their rounds."""
        ...

    def keep(self, module: torch.nn.Module, inputs: Sequence[torch.Tensor], key: str, number: int,
             spec_json: str = "") -> bool:
        """Load a block measured in an earlier run for the next rounds; False if it no longer runs."""
        ...

    def interleave(self, on_round: Callable[[int], Any] | None = None) -> dict[str, tuple[list[float], int]]:
        """Run the kept blocks' rounds: ``{key: (seconds per run of each round, number)}``; release them."""
        ...


def target_device(api, kind: str):
    """Device 0 of a target kind on ``api``: the ``tvm`` module (here) or an RPC session (there)."""
    return api.cpu(0) if kind == "llvm" else api.device(kind, 0)


def build_error(e: Exception) -> str:
    """The ``error`` of a row whose block (module, inputs or features) could not be built: an
    ``export_error`` row, not a crash."""
    return f"building the block failed: {type(e).__name__}: {e}"


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
    return RunResult(**sample_stats(samples, number), stages={"measure_s": time.perf_counter() - t_start})


def sample_stats(samples: Sequence[float], number: int) -> dict:
    """The statistics a row reports for timed repeats (seconds per run, one value per repeat)."""
    ms = np.asarray(samples, dtype=float) * 1000.0
    return {"latency_ms_median": float(np.median(ms)),
            "latency_ms_p10": float(np.percentile(ms, 10)),
            "latency_ms_p90": float(np.percentile(ms, 90)),
            "latency_cov": float(np.std(ms) / np.mean(ms)) if len(ms) > 1 else math.nan,
            "ci_rel": float(median_ci_rel(samples)),
            "n_runs": number * len(samples), "number": number, "repeats": len(samples)}


def interleaved_rounds(timers: dict[str, Callable[[], float]], rounds: int,
                       on_round: Callable[[int], None] | None = None) -> dict[str, list[float]]:
    """Time every workload once per round, round after round: ``timers[key]()`` times one repeat
    (seconds per run). Returns each key's ``rounds`` samples.

    Why: on a shared (virtual) machine the speed of the same code drifts by 10-30 % over seconds to
    minutes, in states that last seconds. Repeats taken back to back all fall into one state, so a
    block's median depends on when it was measured (6-12 % apart between two runs of the same
    blocks on the 2-vCPU CI host) and the campaign's blocks disagree with each other by that much.
    Spreading each block's repeats over the whole campaign puts every block through the same mix of
    states: the medians of two such runs agreed to 1.5-2 % (README, "Measurement protocol").
    """
    samples: dict[str, list[float]] = {k: [] for k in timers}
    for r in range(rounds):
        for key, timer in timers.items():
            samples[key].append(float(timer()))
        if on_round is not None:
            on_round(r + 1)
    return samples


# fewer blocks than this in a chunk of rounds: no common drift is estimated (each block would weigh
# too much in its own correction)
MIN_DRIFT_BLOCKS = 16


def common_drift(samples: dict[str, Sequence[float]], min_blocks: int | None = None) -> np.ndarray | None:
    """The machine's speed per round, shared by all blocks timed in it: for each round, the median over
    the blocks of (that round's sample / the block's median round). ``None`` with fewer than
    ``min_blocks`` (`MIN_DRIFT_BLOCKS`) blocks or unequal numbers of rounds.

    Why: the rounds spread each block's repeats over the campaign, but the states they fall into
    still scatter them (a round ran 1.30x its blocks' median in one campaign here). A state that
    lasts a round slows every block in it alike, so the median over 100 blocks measures it and
    dividing it out leaves each block's own noise. On four campaigns of the same 100 blocks, the
    medians agreed per block to 1.81 % instead of 2.29 % (README, "Measurement protocol").
    """
    rows = [np.asarray(v, dtype=float) for v in samples.values()]
    enough = len(rows) >= (MIN_DRIFT_BLOCKS if min_blocks is None else min_blocks)
    if not enough or len({len(r) for r in rows}) != 1 or len(rows[0]) < 2:
        return None
    x = np.vstack(rows)
    if not np.all(np.isfinite(x)) or np.any(x <= 0):
        return None
    return np.median(x / np.median(x, axis=1, keepdims=True), axis=0)


def rounds_stats(samples: Sequence[float], number: int, first_median_ms: float, first_runs: int,
                 drift: Sequence[float] | None = None) -> dict:
    """Row fields for a block whose interleaved rounds gave ``samples`` (seconds per run, ``number``
    runs each), replacing a consecutive measurement of median ``first_median_ms`` over ``first_runs`` runs.
    With ``drift`` (the campaign's speed per round, `common_drift`) the statistics are those of the
    samples divided by it; ``latency_ms_raw`` and ``rounds_ms`` keep the samples as timed."""
    raw = np.asarray(samples, dtype=float)
    x = raw / np.asarray(drift, dtype=float) if drift is not None else raw
    half = abs(math.log(float(np.median(x[0::2])) / float(np.median(x[1::2])))) if len(x) >= 2 else math.nan
    stats = sample_stats(x, number)
    stats["n_runs"] += int(first_runs)
    return {**stats, "rounds": len(x), "latency_ms_first": float(first_median_ms), "half_diff_rel": half,
            "latency_ms_raw": float(np.median(raw)) * 1000.0,
            "rounds_ms": json.dumps([round(float(v) * 1000.0, 7) for v in raw]),
            "round_drift": json.dumps([round(float(v), 5) for v in drift]) if drift is not None else None}
