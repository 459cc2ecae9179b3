"""LocalRunner: compile for the host and time with TVM's time evaluator on this machine."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..compile import StageError, compile_module, flatten_outputs, max_rel_error
from ..targets import TargetSpec
from .base import RunResult, adaptive_measure

#: relative tolerance for TVM vs torch outputs (float32, reordered reductions)
REL_TOL = 1e-3


class LocalRunner:
    name = "local"

    def __init__(self, target: TargetSpec, check: bool = True):
        self.target = target
        self.check = check

    def _device(self):
        import tvm

        return tvm.cpu(0) if self.target.kind == "llvm" else tvm.device(self.target.kind, 0)

    def run(self, module: torch.nn.Module, inputs: Sequence[torch.Tensor], key: str = "") -> RunResult:
        import os

        os.environ.setdefault("TVM_NUM_THREADS", str(self.target.cores))
        try:
            c = compile_module(module, inputs, self.target, reference=self.check)
        except StageError as e:
            return RunResult(status=f"{e.stage}_error", error=str(e))
        import tvm
        from tvm import relax

        try:
            dev = self._device()
            vm = relax.VirtualMachine(c.executable, dev)
            args = [tvm.runtime.tensor(a, dev) for a in c.inputs]
            err = math.nan
            if c.reference is not None:
                err = max_rel_error(flatten_outputs(vm["main"](*args)), c.reference)
            vm.set_input("main", *args)

            def time_fn(number: int, repeats: int) -> list[float]:
                f = vm.time_evaluator("invoke_stateful", dev, number=number, repeat=repeats, min_repeat_ms=0)
                return list(f("main").results)

            res = adaptive_measure(time_fn, self.target.evaluator)
        except Exception as e:  # noqa: BLE001 - a failing block is a row, not a crash
            return RunResult(status="run_error", error=f"{type(e).__name__}: {str(e).strip().splitlines()[-1:]}",
                             stages=c.stages)
        res.stages = {**c.stages, **res.stages}
        res.max_rel_err = err
        if not err <= REL_TOL and not math.isnan(err):
            res.status = "wrong_result"
            res.error = f"TVM output differs from torch by {err:.2e} (relative), tolerance {REL_TOL:g}"
        return res
