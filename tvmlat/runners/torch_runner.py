"""TorchRunner: time a block in PyTorch itself (eager, or ``torch.compile`` with inductor) with the
same statistics as TVM's evaluator: warm-up, ``number`` runs per repeat so a repeat lasts
>= min_repeat_ms, adaptive repeats until the median is known to +-rel_precision. On CUDA devices
every repeat is synchronised. Answers "TVM or PyTorch on this device?" per block.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch

from ..targets import TargetSpec
from .base import RunResult, adaptive_measure


class TorchRunner:
    name = "torch"

    def __init__(self, target: TargetSpec):
        self.target = target
        self.backend = "compile" if target.kind == "torch-compile" else "eager"
        self.device = torch.device("cuda" if target.arch else "cpu")

    def run(self, module: torch.nn.Module, inputs: Sequence[torch.Tensor], key: str = "") -> RunResult:
        old = torch.get_num_threads()
        torch.set_num_threads(self.target.cores)
        try:
            return self._run(module, inputs)
        except Exception as e:  # noqa: BLE001 - a failing block is a row
            status = "compile_error" if self.backend == "compile" else "run_error"
            return RunResult(status=status, error=f"{type(e).__name__}: {str(e).strip().splitlines()[:1]}"[:400])
        finally:
            torch.set_num_threads(old)

    def _run(self, module, inputs) -> RunResult:
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        module = module.to(self.device).eval()
        args = [t.to(self.device) for t in inputs]
        stages = {}
        fn = module
        if self.backend == "compile":
            t0 = time.perf_counter()
            fn = torch.compile(module)
            with torch.no_grad():
                fn(*args)  # compiles
            sync()
            stages["compile_s"] = time.perf_counter() - t0

        def time_fn(number: int, repeats: int) -> list[float]:
            out = []
            with torch.no_grad():
                for _ in range(repeats):
                    sync()
                    t0 = time.perf_counter()
                    for _ in range(number):
                        fn(*args)
                    sync()
                    out.append((time.perf_counter() - t0) / number)
            return out

        res = adaptive_measure(time_fn, self.target.evaluator)
        res.max_rel_err = 0.0  # torch is the reference
        res.stages = {**stages, **res.stages}
        return res
