"""LocalRunner: compile for the host and time with TVM's time evaluator on this machine."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Sequence

import torch

from ..compile import StageError, compile_module
from ..errors import TvmlatError
from ..targets import TargetSpec
from .base import RunResult, target_device
from .vmtime import REL_TOL, time_vm, vm_energy  # noqa: F401 (REL_TOL: re-exported for tests)


def compile_workers(rounds: int, requested: int | None = None) -> int:
    """Compile-ahead worker processes: ``requested`` (``calibrate --compile-workers``) if given, else
    ``TVMLAT_COMPILE_WORKERS`` if set, else one per core (at most 4) when interleaved rounds decide
    the latencies, and one otherwise. While the workers compile, the block being timed shares the
    cores with them: that only disturbs the back-to-back pass, which the rounds (run once the
    compiling is done) replace; without rounds that pass is the result, so it gets a core to
    itself. Each worker holds torch and TVM (~0.5 GB)."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise TvmlatError(f"--compile-workers {requested}: give a positive whole number of worker processes")
        return requested
    env = os.environ.get("TVMLAT_COMPILE_WORKERS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise TvmlatError(f"TVMLAT_COMPILE_WORKERS={env!r}: give a positive whole number of worker processes")
        return int(env)
    return max(1, min(4, os.cpu_count() or 1)) if rounds > 0 else 1


class LocalRunner:
    """Compile for the host and time there. With ``ahead=True``, block specs announced through
    ``prefetch`` are compiled in a worker process while the previous block is being timed."""

    name = "local"

    def __init__(self, target: TargetSpec, check: bool = True, ahead: bool = False, sampler=None,
                 cache_dir: str | None = None, workers: int | None = None):
        self.target = target
        self.check = check
        self.cache_dir = str(cache_dir) if cache_dir else None  # compile cache (spec workloads only)
        self._specs: dict[str, str] = {}
        self._tmp: str | None = None  # where in-process compiles for the cache write their files
        self.sampler = sampler  # a power.PowerSampler: also measure power and energy per inference
        if target.kind != "llvm":
            import tvm

            if not tvm.device(target.kind, 0).exist:
                raise TvmlatError(f"target {target.name!r} measures on a {target.kind} device and this machine has "
                                  f"none that TVM can see; to compile here and measure there: tvmlat bundle --target "
                                  f"{target.name} --arch {target.arch or 'sm_XX'} --out B/ (see README)")
        # interleaved rounds (EvaluatorConfig.rounds): VMs of measured blocks kept until they are run
        self.rounds = int(target.evaluator.rounds)
        self.keeping = False  # set by the campaign loop, which runs the rounds; single runs keep nothing
        self._kept: dict[str, tuple] = {}  # key -> (time one repeat: () -> seconds per run, number)
        self._ahead = None
        workers = compile_workers(self.rounds, workers)  # checked even where no worker starts: a bad setting is an error
        if ahead:
            from .ahead import CompileAhead

            self._ahead = CompileAhead(target.to_dict(), self.cache_dir, workers)

    @property
    def ahead_depth(self) -> int:
        """How many blocks beyond the one being timed the campaign should announce (``prefetch``)."""
        return self._ahead.workers if self._ahead is not None else 1

    def prefetch(self, key: str, spec_json: str) -> None:
        if spec_json:
            self._specs[key] = spec_json
        if self._ahead is not None:
            self._ahead.submit(key, spec_json)

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None
        if self._tmp:
            import shutil

            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _device(self):
        import tvm

        return target_device(tvm, self.target.kind)

    def _compiled(self, module, inputs, key: str):
        """(executable, inputs, reference, stages) or a failed RunResult."""
        done = self._ahead.take(key) if self._ahead is not None and key else None
        if done is None and self.cache_dir and key in self._specs:
            import tempfile

            from .ahead import compile_spec_to_library

            self._tmp = self._tmp or tempfile.mkdtemp(prefix="tvmlat-local-")
            done = compile_spec_to_library(self._specs[key], self.target.to_dict(), self._tmp, self.cache_dir)
        if done is None:
            try:
                c = compile_module(module, inputs, self.target, reference=self.check)
            except StageError as e:
                return RunResult(status=f"{e.stage}_error", error=str(e))
            return c.executable, c.inputs, c.reference, c.stages
        if done["status"] != "ok":
            return RunResult(status=done["status"], error=done["error"])
        import tvm

        from .ahead import load_arrays

        ins, ref = load_arrays(done["data"], self.check)
        return tvm.runtime.load_module(done["lib"]), ins, ref, done["stages"]

    def run(self, module: torch.nn.Module, inputs: Sequence[torch.Tensor], key: str = "") -> RunResult:
        got = self._compiled(module, inputs, key)
        if isinstance(got, RunResult):
            return got
        return self._time(*got, key=key)

    # ----------------------------------------------------------------------------- interleaved rounds

    @property
    def kept(self) -> int:
        """Blocks waiting for their interleaved rounds."""
        return len(self._kept)

    def keep(self, module, inputs, key: str, number: int, spec_json: str = "") -> bool:
        """Load a block measured in an earlier run (its row lacks rounds) for the next rounds: from
        the compile cache when its spec is given and cached, else compiled again. False if it no
        longer builds or runs."""
        if spec_json:
            self._specs[key] = spec_json
        got = self._compiled(module, inputs, key)
        if isinstance(got, RunResult):
            return False
        executable, host_inputs = got[0], got[1]
        try:
            vm, dev = self._vm(executable)
            import tvm

            vm.set_input("main", *[tvm.runtime.tensor(a, dev) for a in host_inputs])
            self._keep_vm(key, vm, dev, number)
        except Exception:  # noqa: BLE001 - it keeps its consecutive measurement
            return False
        return True

    def _keep_vm(self, key: str, vm, dev, number: int) -> None:
        f = vm.time_evaluator("invoke_stateful", dev, number=number, repeat=1, min_repeat_ms=0)
        self._kept[key] = ((lambda f=f: float(f("main").results[0])), number)

    def settle(self) -> None:
        """Let the compile workers finish what they were given, so nothing compiles during the rounds."""
        if self._ahead is not None:
            self._ahead.wait()

    def interleave(self, on_round=None) -> dict[str, tuple[list[float], int]]:
        """Run the kept blocks' rounds; ``{key: (seconds per run of each round, number)}``. The
        blocks are released afterwards (also when interrupted)."""
        from .base import interleaved_rounds

        try:
            samples = interleaved_rounds({k: t for k, (t, _) in self._kept.items()}, self.rounds, on_round)
            return {k: (v, self._kept[k][1]) for k, v in samples.items()}
        finally:
            self._kept.clear()

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
        return self._time(ex, list(host_inputs), None, {"compile_s": time.perf_counter() - t0}, key=key)

    def _vm(self, executable):
        os.environ.setdefault("TVM_NUM_THREADS", str(self.target.cores))
        from tvm import relax

        dev = self._device()
        return relax.VirtualMachine(executable, dev), dev

    def _first_pass_config(self):
        """The evaluator settings of the back-to-back pass. When interleaved rounds will replace its
        statistics (a campaign keeping its blocks), it only has to pick ``number`` and leave a row
        that survives a crash before the rounds: ``min_repeats`` repeats, no adaptive extension
        (on the 2-vCPU host that pass took ~0.35 s a block; the rounds' precision does not depend on it)."""
        cfg = self.target.evaluator
        if self.rounds and self.keeping:
            return dataclasses.replace(cfg, max_repeats=cfg.min_repeats)
        return cfg

    def _rounds_number(self, res: RunResult) -> int:
        """Runs per repeat in the rounds: enough that a repeat lasts ``min_repeat_ms`` at the block's
        fastest back-to-back time (p10). The pass's own ``number`` came from one warm-up run, which
        the compile workers may have slowed; a repeat shorter than planned is a noisier one."""
        p10 = res.latency_ms_p10
        if not (p10 and math.isfinite(p10) and p10 > 0):
            return res.number
        return max(res.number, int(math.ceil(self.target.evaluator.min_repeat_ms / p10)))

    def _time(self, executable, host_inputs, reference, stages, key: str = "") -> RunResult:
        try:
            vm, dev = self._vm(executable)
            res = time_vm(vm, dev, host_inputs, reference, self._first_pass_config())
        except Exception as e:  # noqa: BLE001 - a failing block is a row, not a crash
            return RunResult(status="run_error", error=f"{type(e).__name__}: {str(e).strip().splitlines()[-1:]}",
                             stages=stages)
        res.stages = {**stages, **res.stages}
        if self.rounds and self.keeping and key and res.status == "ok":
            self._keep_vm(key, vm, dev, self._rounds_number(res))
        if self.sampler is not None and res.status == "ok":
            res.energy = vm_energy(vm, dev, res.latency_ms_median, self.sampler)
        return res
