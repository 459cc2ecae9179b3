"""FakeRunner: a deterministic stand-in for hardware, for unit tests of everything above the runner.

Latency is a made-up roofline of the block's features with per-family efficiency and a
little seeded noise, so predictors have something learnable. Never used by a shipped command.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import numpy as np
import torch

from ..op_counter import count_features
from .base import RunResult

# per module class: how far from the roofline the fake "hardware" runs
_CLASS_EFF = {"Attention": 0.6, "Pool": 1.3, "SqueezeExcitation": 1.1, "MLP": 0.9}


class FakeRunner:
    name = "fake"

    def __init__(self, fail_keys: Iterable[str] = (), interrupt_after: int | None = None, noise: float = 0.02,
                 rounds: int = 0, interrupt_in_round: int | None = None, slowdown: float = 1.0):
        self.fail_keys = set(fail_keys)
        self.slowdown = slowdown  # the whole "machine" this much slower (a host in another speed state)
        self.interrupt_after = interrupt_after
        self.noise = noise
        self.calls = 0
        # interleaved rounds, like LocalRunner: the "machine" runs 1 + 0.2 r / rounds slower in round r
        self.rounds = rounds
        self.interrupt_in_round = interrupt_in_round
        self.keeping = False
        self._kept: dict[str, float] = {}
        self.kept_keys: list[str] = []  # every key that was kept, in order (for tests)

    def latency_ms(self, feats: dict, key: str = "", cls: str = "") -> float:
        compute = feats["flops"] / 2e9 + feats["flops_dwconv"] / 2e8
        memory = (feats["acts"] + feats["inp"] + feats["params"]) * 4 / 5e9
        base = 0.01 + 1e3 * (compute + memory) * _CLASS_EFF.get(cls, 1.0)
        seed = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
        return self.slowdown * base * float(np.exp(np.random.default_rng(seed).normal(0, self.noise)))

    def run(self, module: torch.nn.Module, inputs: Sequence[torch.Tensor], key: str = "") -> RunResult:
        self.calls += 1
        if self.interrupt_after is not None and self.calls > self.interrupt_after:
            raise KeyboardInterrupt
        if key in self.fail_keys:
            return RunResult(status="compile_error", error=f"compile failed: fake failure for {key}")
        ms = self.latency_ms(count_features(module, inputs), key, type(module).__name__)
        if self.rounds and self.keeping and key:
            self._kept[key] = ms
            self.kept_keys.append(key)
        return RunResult(latency_ms_median=ms, latency_ms_p10=ms * 0.99, latency_ms_p90=ms * 1.01,
                         latency_cov=0.005, ci_rel=0.004, n_runs=50, number=10, repeats=5, max_rel_err=0.0,
                         stages={"export_s": 0.0, "import_s": 0.0, "compile_s": 0.0, "measure_s": 0.0})

    @property
    def kept(self) -> int:
        return len(self._kept)

    def keep(self, module, inputs, key: str, number: int, spec_json: str = "") -> bool:
        if key in self.fail_keys:
            return False
        self._kept[key] = self.latency_ms(count_features(module, inputs), key, type(module).__name__)
        self.kept_keys.append(key)
        return True

    def round_factor(self, r: int) -> float:
        return 1.0 + 0.2 * r / max(self.rounds, 1)

    def interleave(self, on_round=None) -> dict[str, tuple[list[float], int]]:
        try:
            out: dict[str, tuple[list[float], int]] = {k: ([], 10) for k in self._kept}
            for r in range(self.rounds):
                if self.interrupt_in_round == r:
                    raise KeyboardInterrupt
                for k, ms in self._kept.items():
                    out[k][0].append(ms * self.round_factor(r) / 1000.0)
                if on_round is not None:
                    on_round(r + 1)
            return out
        finally:
            self._kept.clear()

    def close(self) -> None:
        """Nothing to release (the protocol's clean-up hook)."""
