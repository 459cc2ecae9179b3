"""FakeRunner: a deterministic stand-in for hardware, for unit tests of everything above the runner.

Latency is a made-up roofline of the block's features with per-family efficiency and a
little seeded noise, so predictors have something learnable. Never used by a shipped command.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import numpy as np
import torch

from ..features import count_features
from .base import RunResult

# per module class: how far from the roofline the fake "hardware" runs
_CLASS_EFF = {"Attention": 0.6, "Pool": 1.3, "SqueezeExcitation": 1.1, "MLP": 0.9}


class FakeRunner:
    name = "fake"

    def __init__(self, fail_keys: Iterable[str] = (), interrupt_after: int | None = None, noise: float = 0.02):
        self.fail_keys = set(fail_keys)
        self.interrupt_after = interrupt_after
        self.noise = noise
        self.calls = 0

    def latency_ms(self, feats: dict, key: str = "", cls: str = "") -> float:
        compute = feats["flops"] / 2e9 + feats["flops_dwconv"] / 2e8
        memory = (feats["acts"] + feats["inp"] + feats["params"]) * 4 / 5e9
        base = 0.01 + 1e3 * (compute + memory) * _CLASS_EFF.get(cls, 1.0)
        seed = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
        return base * float(np.exp(np.random.default_rng(seed).normal(0, self.noise)))

    def run(self, module: torch.nn.Module, inputs: Sequence[torch.Tensor], key: str = "") -> RunResult:
        self.calls += 1
        if self.interrupt_after is not None and self.calls > self.interrupt_after:
            raise KeyboardInterrupt
        if key in self.fail_keys:
            return RunResult(status="compile_error", error=f"compile failed: fake failure for {key}")
        ms = self.latency_ms(count_features(module, inputs), key, type(module).__name__)
        return RunResult(latency_ms_median=ms, latency_ms_p10=ms * 0.99, latency_ms_p90=ms * 1.01,
                         latency_cov=0.005, ci_rel=0.004, n_runs=50, number=10, repeats=5, max_rel_err=0.0,
                         stages={"export_s": 0.0, "import_s": 0.0, "compile_s": 0.0, "measure_s": 0.0})

    def close(self) -> None:
        """Nothing to release (the protocol's clean-up hook)."""
