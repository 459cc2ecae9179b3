"""Timing a compiled Relax VM, wherever it lives: this process, or a board behind an RPC session.

The same code serves the local and the RPC runner, so both report the same statistics. Outputs are
read back with ``invoke_stateful`` + ``get_outputs``, which work across RPC, and compared with
torch's reference; a board that returns garbage gives a ``wrong_result`` row, not a latency.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from ..targets import EvaluatorConfig
from .base import RunResult, adaptive_measure

#: relative tolerance for TVM vs torch outputs (float32, reordered reductions)
REL_TOL = 1e-3


def time_vm(vm, dev, host_inputs: Sequence, reference: Any, cfg: EvaluatorConfig,
            compare: Callable[[list, Any], float] | None = None) -> RunResult:
    """Check ``vm``'s output against ``reference`` (if given), then time ``main`` adaptively.

    ``compare(outputs, reference)`` gives the relative error; default: every value (``max_rel_error``).
    Raises whatever TVM raises (the caller decides whether that is the block's fault or the board's)."""
    import tvm

    args = [tvm.runtime.tensor(a, dev) for a in host_inputs]
    vm.set_input("main", *args)
    err = math.nan
    if reference is not None:
        vm.invoke_stateful("main")
        err = (compare or max_rel_error)(flatten_outputs(vm.get_outputs("main")), reference)

    def time_fn(number: int, repeats: int) -> list[float]:
        f = vm.time_evaluator("invoke_stateful", dev, number=number, repeat=repeats, min_repeat_ms=0)
        got = [float(x) for x in f("main").results]
        if len(got) != repeats or not all(math.isfinite(x) and x > 0 for x in got):
            raise ValueError(f"the device returned invalid timings {got[:5]}")
        return got

    res = adaptive_measure(time_fn, cfg)
    res.max_rel_err = err
    if not err <= REL_TOL and not math.isnan(err):
        res.status = "wrong_result"
        res.error = f"TVM output differs from torch by {err:.2e} (relative), tolerance {REL_TOL:g}"
    return res


def vm_energy(vm, dev, latency_ms: float, sampler) -> dict[str, Any]:
    """Power and energy per inference of ``main`` (run back to back while ``sampler`` reads power)."""
    from ..power import measure_energy

    def run(n: int) -> float:
        f = vm.time_evaluator("invoke_stateful", dev, number=n, repeat=1, min_repeat_ms=0)
        return float(f("main").mean) * n

    return measure_energy(run, latency_ms / 1000.0, sampler)


def flatten_outputs(out: Any) -> list[np.ndarray]:
    """VM outputs (tensor or nested array of tensors) as a flat list of numpy arrays."""
    if hasattr(out, "numpy"):
        return [out.numpy()]
    res: list[np.ndarray] = []
    for o in out:
        res += flatten_outputs(o)
    return res


def max_rel_error(got: list[np.ndarray], ref: list[np.ndarray]) -> float:
    """Largest |got - ref| relative to the reference's largest magnitude, over all outputs."""
    if len(got) != len(ref):
        return float("inf")
    worst = 0.0
    for g, r in zip(got, ref):
        if g.shape != r.shape:
            return float("inf")
        scale = max(float(np.abs(r).max()) if r.size else 0.0, 1e-6)
        if r.size:
            diff = np.abs(g.astype(np.float64) - r)
            if not np.isfinite(diff).all():  # NaN/inf in the output (or the reference): no match
                return float("inf")
            worst = max(worst, float(diff.max()) / scale)
    return worst
