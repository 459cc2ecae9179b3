"""Peak memory of a block from TVM's own memory planning (no compilation to machine code, no run).

The block is imported into Relax and taken through the target's pipeline up to
``StaticPlanBlockMemory``; then ``main``'s allocations are summed: the planned storage pools
(intermediate activations, reused where lifetimes don't overlap) and the tensors that escape
(outputs). Peak memory = weights + inputs + planned storage + outputs, in bytes. The weights are
the block's bound parameters (constants in the module), counted from the module itself.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch


def planned_memory(module: torch.nn.Module, inputs: Sequence[torch.Tensor], target) -> dict[str, int]:
    import tvm
    from tvm import relax

    from .compile import to_relax

    import importlib

    mod = to_relax(module, inputs, {})
    tt = target.tvm_target()
    # the target's own default pipeline, stopped right after memory planning (its package does
    # not re-export dataflow_lower_passes in TVM 0.27, hence the module itself)
    backend = importlib.import_module(f"tvm.relax.backend.{'cuda' if target.kind == 'cuda' else 'cpu_generic'}.pipeline")
    with tt:
        passes = (backend.library_dispatch_passes(tt) + backend.legalize_passes(tt)
                  + backend.dataflow_lower_passes(tt) + [relax.transform.StaticPlanBlockMemory()])
        mod = tvm.transform.Sequential(passes)(mod)
    storage = alloc_storage_bytes(mod["main"])
    weights = sum(int(p.numel()) * p.element_size() for p in module.parameters())
    weights += sum(int(b.numel()) * b.element_size() for b in module.buffers())
    inp = sum(int(t.numel()) * t.element_size() for t in inputs)
    return {"planned_bytes": storage["planned"], "output_bytes": storage["outputs"], "weight_bytes": weights,
            "input_bytes": inp, "peak_memory_bytes": weights + inp + storage["planned"] + storage["outputs"],
            "n_pools": storage["pools"]}


def alloc_storage_bytes(func) -> dict[str, int]:
    """Bytes of ``relax.memory.alloc_storage`` pools and of escaping ``relax.builtin.alloc_tensor``s."""
    import tvm
    from tvm import relax

    alloc_storage = tvm.ir.Op.get("relax.memory.alloc_storage")
    alloc_tensor = tvm.ir.Op.get("relax.builtin.alloc_tensor")
    out = {"planned": 0, "outputs": 0, "pools": 0}

    def size_of(shape, dtype: str) -> int:
        n = 1
        for d in shape.values:
            n *= int(d.value)
        dt = tvm.DataType(dtype)
        return n * ((dt.bits + 7) // 8) * dt.lanes

    def visit(e: Any) -> None:
        if isinstance(e, relax.Call):
            if e.op.same_as(alloc_storage):
                out["planned"] += int(e.args[0].values[0].value)
                out["pools"] += 1
            elif e.op.same_as(alloc_tensor):
                out["outputs"] += size_of(e.args[0], e.args[1].value)

    relax.analysis.post_order_visit(func.body, visit)
    return out


#: features of the memory model: bytes are 4 per element (float32 blocks). The output (``out``) escapes the
#: planned pools and is held whole, so it has its own column: with weights, inputs and activations only, a
#: block's output was priced like an activation that planning reuses (held out, median error 15.6 -> 5.0 % on
#: the znver3 dataset, 11.6 -> 4.9 % on 200 other blocks; 2026-12-06, README, "Memory").
MEMORY_FEATURES = ("weight_elems", "inp", "out", "acts")
#: the columns of a memory model written before the output had its own (a file that names no features)
LEGACY_MEMORY_FEATURES = ("weight_elems", "inp", "acts")


class MemoryModel:
    """peak_memory_bytes ~ c_w*weights + c_i*inputs + c_o*outputs + c_a*activations + c_0 (non-negative, fitted
    on relative error). Weights, inputs and the output are held whole; planning keeps only part of the
    activations."""

    kind = "memory-linear"

    def __init__(self, features=MEMORY_FEATURES):
        self.features = tuple(features)

    def fit(self, X, y) -> "MemoryModel":
        import numpy as np
        from scipy.optimize import nnls

        A = self._matrix(X)
        y = np.asarray(y, dtype=float)
        w = 1.0 / y
        self.coef_, _ = nnls(A * w[:, None], np.ones_like(y))
        return self

    def _matrix(self, X):
        import numpy as np

        from .errors import PredictorError

        try:
            cols = [np.asarray(X[f], dtype=float) * 4.0 for f in self.features]
        except KeyError as e:
            raise PredictorError(f"the memory model needs the feature column {e.args[0]!r}; recount the rows "
                                 f"with this tvmlat (features: {', '.join(self.features)})") from None
        return np.column_stack(cols + [np.full(len(cols[0]), 1024.0)])

    def predict(self, X):
        if not hasattr(self, "coef_"):
            from .errors import NotFittedError

            raise NotFittedError("this MemoryModel is not fitted yet")
        return self._matrix(X) @ self.coef_

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "features": list(self.features), "unit": "bytes",
                "coefficients": dict(zip([*self.features, "intercept_kib"], map(float, self.coef_)))}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MemoryModel":
        from .errors import PredictorError

        try:
            features = tuple(d.get("features") or LEGACY_MEMORY_FEATURES)
            unknown = [f for f in features if f not in MEMORY_FEATURES]
            if unknown:
                raise ValueError(f"unknown features {unknown}")
            c = d["coefficients"]
            missing = [f for f in [*features, "intercept_kib"] if f not in c]
            if missing:
                raise ValueError(f"no coefficient for {', '.join(missing)}")
            m = cls(features)
            m.coef_ = __import__("numpy").asarray([float(c[f]) for f in [*features, "intercept_kib"]])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise PredictorError(f"memory model in the predictor file is malformed ({e}); fit it again with "
                                 f"`tvmlat memory --dataset D.parquet --predictor P.json`") from None
        return m


def network_peak(model: MemoryModel, whole, layers) -> float:
    """A network's predicted peak bytes: its weights, its input and its output held whole, plus the largest working
    set of one layer (a layer's predicted peak without its weights). Planning reuses one layer's activations for
    the next; a network predicted as one block would be priced for all its layers' activations at once.
    ``whole``: the network's feature row (``count_features``); ``layers``: its layer rows
    (``analysis.layer_features``). On nine example networks planned for ``llvm``, with the znver3 dataset's model:
    0.90-1.18x the planned peak (median 1.01), against 1.12-1.65x as one block (README, "Memory")."""
    return network_memory(model, whole, layers)[0]


def network_memory(model: MemoryModel, whole, layers):
    """(``network_peak``, each layer's working set: its predicted peak bytes without its weights)."""
    import numpy as np

    w = 4.0 * float(dict(zip(model.features, model.coef_)).get("weight_elems", 0.0))
    work = model.predict(layers) - w * np.asarray(layers["weight_elems"], dtype=float)
    peak = w * float(whole["weight_elems"]) + 4.0 * (float(whole["inp"]) + float(whole["out"]))
    return float(peak + (float(np.max(work)) if len(work) else 0.0)), work


def working_sets(model: MemoryModel, layers):
    """Each layer's predicted peak bytes without its weights: what it holds while it runs (``network_peak``)."""
    return network_memory(model, {"weight_elems": 0, "inp": 0, "out": 0}, layers)[1]
