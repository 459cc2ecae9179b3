"""torch module -> torch.export -> Relax IRModule -> tvm.compile, with a timing per stage.

The only module besides the runners that imports TVM (lazily, inside functions).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .errors import CompileError
from .runners.vmtime import flatten_outputs, max_rel_error  # noqa: F401 (re-exported)
from .targets import TargetSpec
from .tuning import open_database, tune_extracted, tuning_pipeline


@dataclass
class Compiled:
    """A compiled block: the TVM executable plus what it needs to run and be checked."""

    executable: Any
    inputs: list[np.ndarray]
    reference: list[np.ndarray] | None
    stages: dict[str, float] = field(default_factory=dict)  # export_s, import_s, compile_s


class StageError(CompileError):
    """A failure in one stage (``export``, ``import`` or ``compile``) for one block."""

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage} failed: {message}")
        self.stage = stage


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    # TVM errors put the useful line last; torch puts it first. Keep both ends, one line.
    if not text:
        return type(e).__name__
    first, last = text[0], text[-1]
    msg = first if first == last else f"{first} ... {last}"
    return f"{type(e).__name__}: {msg}"[:400]


def export_module(module: torch.nn.Module, inputs: Sequence[torch.Tensor]):
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.export.export(module.eval(), tuple(inputs))


def import_relax(exported):
    from tvm.relax.frontend.torch import from_exported_program

    return from_exported_program(exported, keep_params_as_input=False)


def to_relax(module: torch.nn.Module, inputs: Sequence[torch.Tensor], stages: dict[str, float] | None = None):
    """Export and import; raises StageError naming the stage that failed; times into ``stages``."""
    stages = {} if stages is None else stages
    t0 = time.perf_counter()
    try:
        ep = export_module(module, inputs)
    except Exception as e:  # noqa: BLE001 - any failure of the user's module is reported as data
        raise StageError("export", _short(e)) from e
    t1 = time.perf_counter()
    stages["export_s"] = t1 - t0
    try:
        mod = import_relax(ep)
    except Exception as e:  # noqa: BLE001
        raise StageError("import", _short(e)) from e
    stages["import_s"] = time.perf_counter() - t1
    return mod


def compile_module(module: torch.nn.Module, inputs: Sequence[torch.Tensor], target: TargetSpec,
                   reference: bool = True) -> Compiled:
    """Export, import and compile ``module`` for ``target``; time each stage."""
    import tvm

    stages: dict[str, float] = {}
    mod = to_relax(module, inputs, stages)
    t2 = time.perf_counter()
    if target.profile == "tuned":
        try:
            mod = tune_relax(mod, target, stages)
        except Exception as e:  # noqa: BLE001
            raise StageError("tune", _short(e)) from e
        t2 = time.perf_counter()
    try:
        ex = tvm.compile(mod, target.tvm_target())
    except Exception as e:  # noqa: BLE001
        raise StageError("compile", _short(e)) from e
    stages["compile_s"] = time.perf_counter() - t2
    ref = None
    if reference:
        try:
            with torch.no_grad():
                out = module(*inputs)
            ref = [o.detach().numpy() for o in (out if isinstance(out, (tuple, list)) else [out])]
        except Exception as e:  # noqa: BLE001 - exported and compiled, but torch itself cannot run it eagerly
            raise StageError("run", f"torch's reference run of the module (what TVM's output is checked against) "
                                    f"raised {_short(e)}") from e
    return Compiled(ex, [t.detach().numpy() for t in inputs], ref, stages)


def tune_relax(mod, target: TargetSpec, stages: dict[str, float] | None = None):
    """The ``tuned`` profile: MetaSchedule-tune the module's fused kernels and apply the best schedules.

    Kernels are tasks; a task whose workload already has records in the target's shared JSON
    database (``target.database_dir()``) is not tuned again, so blocks that share a kernel shape
    are tuned once, across blocks, campaigns and interrupted runs. Returns the module with the
    tuned schedules applied, ready for ``tvm.compile``. Records ``tune_s`` and ``tasks_tuned``.
    """
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    t0 = time.perf_counter()
    tvm_target = target.tvm_target()
    mod = tuning_pipeline(mod, tvm_target)
    db = open_database(target)
    tasks = ms.relax_integration.extract_tasks(mod, tvm_target)
    new = [t for t in tasks if not db.has_workload(t.dispatched[0])]
    if new:
        tune_extracted(new, target, db)
    with tvm_target, db:
        mod = relax.transform.MetaScheduleApplyDatabase()(mod)
    if stages is not None:
        stages["tune_s"] = time.perf_counter() - t0
        stages["tasks"] = float(len(tasks))
        stages["tasks_tuned"] = float(len(new))
    return mod


def relax_flops(module: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> dict[str, float]:
    """TVM's own FLOP count after LegalizeOps, per PrimFunc times the number of calls to it in
    ``main`` (TVM shares one PrimFunc between identical ops). For cross-checking features.py."""
    import tvm
    from tvm import relax

    mod = relax.transform.LegalizeOps()(to_relax(module, inputs))
    calls: dict[str, int] = {}
    call_tir = tvm.ir.Op.get("relax.call_tir")
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call) and v.op.same_as(call_tir):
                calls[v.args[0].name_hint] = calls.get(v.args[0].name_hint, 0) + 1
    out: dict[str, float] = {}
    for gv, fn in mod.functions.items():
        if type(fn).__name__ == "PrimFunc":
            flops = float(tvm.s_tir.analysis.estimate_tir_flops(tvm.IRModule({gv: fn})))
            out[gv.name_hint] = flops * calls.get(gv.name_hint, 1)
    return out
