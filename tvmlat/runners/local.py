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
    """Compile for the host and time there. With ``ahead=True``, block specs announced through
    ``prefetch`` are compiled in a worker process while the previous block is being timed."""

    name = "local"

    def __init__(self, target: TargetSpec, check: bool = True, ahead: bool = False):
        self.target = target
        self.check = check
        self._ahead = None
        if ahead:
            from .ahead import CompileAhead

            self._ahead = CompileAhead(target.to_dict())

    def prefetch(self, key: str, spec_json: str) -> None:
        if self._ahead is not None:
            self._ahead.submit(key, spec_json)

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None

    def _device(self):
        import tvm

        return tvm.cpu(0) if self.target.kind == "llvm" else tvm.device(self.target.kind, 0)

    def _compiled(self, module, inputs, key: str):
        """(executable, inputs, reference, stages) or a failed RunResult."""
        done = self._ahead.take(key) if self._ahead is not None and key else None
        if done is None:
            try:
                c = compile_module(module, inputs, self.target, reference=self.check)
            except StageError as e:
                return RunResult(status=f"{e.stage}_error", error=str(e))
            return c.executable, c.inputs, c.reference, c.stages
        if done["status"] != "ok":
            return RunResult(status=done["status"], error=done["error"])
        import numpy as np
        import tvm

        data = np.load(done["data"])
        ins = [data[f"in{i}"] for i in range(sum(k.startswith("in") for k in data.files))]
        ref = [data[f"ref{i}"] for i in range(sum(k.startswith("ref") for k in data.files))] if self.check else None
        return tvm.runtime.load_module(done["lib"]), ins, ref, done["stages"]

    def run(self, module: torch.nn.Module, inputs: Sequence[torch.Tensor], key: str = "") -> RunResult:
        got = self._compiled(module, inputs, key)
        if isinstance(got, RunResult):
            return got
        return self._time(*got)

    def run_relax(self, mod, host_inputs: Sequence, key: str = "") -> RunResult:
        """Compile and time a Relax module that did not come from torch (e.g. TVM's ONNX frontend);
        there is no torch reference to check it against."""
        import time

        import tvm

        t0 = time.perf_counter()
        try:
            ex = tvm.compile(mod, self.target.tvm_target())
        except Exception as e:  # noqa: BLE001
            return RunResult(status="compile_error", error=f"compile failed: {type(e).__name__}: {e}"[:400])
        return self._time(ex, list(host_inputs), None, {"compile_s": time.perf_counter() - t0})

    def _time(self, executable, host_inputs, reference, stages) -> RunResult:
        import os

        os.environ.setdefault("TVM_NUM_THREADS", str(self.target.cores))
        import tvm
        from tvm import relax

        try:
            dev = self._device()
            vm = relax.VirtualMachine(executable, dev)
            args = [tvm.runtime.tensor(a, dev) for a in host_inputs]
            err = math.nan
            if reference is not None:
                err = max_rel_error(flatten_outputs(vm["main"](*args)), reference)
            vm.set_input("main", *args)

            def time_fn(number: int, repeats: int) -> list[float]:
                f = vm.time_evaluator("invoke_stateful", dev, number=number, repeat=repeats, min_repeat_ms=0)
                return list(f("main").results)

            res = adaptive_measure(time_fn, self.target.evaluator)
        except Exception as e:  # noqa: BLE001 - a failing block is a row, not a crash
            return RunResult(status="run_error", error=f"{type(e).__name__}: {str(e).strip().splitlines()[-1:]}",
                             stages=stages)
        res.stages = {**stages, **res.stages}
        res.max_rel_err = err
        if not err <= REL_TOL and not math.isnan(err):
            res.status = "wrong_result"
            res.error = f"TVM output differs from torch by {err:.2e} (relative), tolerance {REL_TOL:g}"
        return res
