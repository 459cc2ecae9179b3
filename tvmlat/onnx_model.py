"""ONNX models as MODEL_REFs: counted from the ONNX graph (no TVM), compiled through TVM's Relax
ONNX frontend (`tvm.relax.frontend.onnx.from_onnx`) when measured.

Counting follows features.py's conventions op for op: 2 FLOPs per multiply-add for Conv, Gemm and
MatMul, 1 per element for elementwise ops, 2 for BatchNormalization, 5 for normalisations and
Softmax, one per window element for pooling; shape-only ops (Reshape, Flatten, Transpose,
Squeeze, Unsqueeze, Shape, Constant, Identity) produce no activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelRefError
from .loop_features import DEFAULT_GEOMETRY, CacheGeometry, block_loops  # numpy only

_VIEW = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Shape", "Constant", "Identity", "Dropout",
         "Cast", "Gather", "Slice", "Split", "ConstantOfShape"}
_NORM5 = {"LayerNormalization", "GroupNormalization", "InstanceNormalization", "Softmax", "LogSoftmax"}
_POOL = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax"}
_COPY = {"Concat", "Pad", "Expand", "Tile"}


@dataclass
class OnnxModel:
    path: Path
    proto: Any  # onnx.ModelProto, shape-inferred

    @property
    def name(self) -> str:
        return self.path.stem


def load_onnx(path: str | Path) -> OnnxModel:
    try:
        import onnx
    except ImportError:
        raise ModelRefError("reading .onnx models needs the onnx package: pip install 'tvmlat[onnx]'") from None
    p = Path(path)
    if not p.is_file():
        raise ModelRefError(f"ONNX file {p} does not exist")
    try:
        proto = onnx.load(str(p))
        onnx.checker.check_model(proto)
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
    except Exception as e:  # noqa: BLE001 - protobuf DecodeError, ValidationError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelRefError(f"{p} is not a valid ONNX model ({type(e).__name__}: {first[:200]})") from None
    return OnnxModel(p, proto)


def _shapes(proto) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    g = proto.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            out[vi.name] = tuple(int(d.dim_value) for d in dims)
    for init in g.initializer:
        out[init.name] = tuple(int(d) for d in init.dims)
    return out


def graph_inputs(proto) -> dict[str, tuple[int, ...]]:
    """Inputs that are not initializers, with their static shapes."""
    inits = {i.name for i in proto.graph.initializer}
    shapes = _shapes(proto)
    out = {}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        if vi.name not in shapes:
            raise ModelRefError(f"ONNX input {vi.name!r} has a dynamic shape; export the model with static shapes")
        out[vi.name] = shapes[vi.name]
    return out


def _add(feat: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        feat[k] = feat.get(k, 0) + v


def onnx_records(model: OnnxModel, geometry: CacheGeometry = DEFAULT_GEOMETRY) -> list[dict[str, Any]]:
    """One record per counted ONNX node, in the format of features.OpCounter's records (loop features
    for the L1 ``geometry``)."""
    from .features import REDUCTION_SHORT
    from .loop_features import (TRANSC_TENTHS, conv_loops, ew_loops_over, matmul_loops, pad_loops,
                                pool_loops, reduce_loops, transc_loops)

    def pad(x, out, kernel, attrs, pool: bool = False) -> dict[str, int]:
        """The padded copy TVM makes of a Conv's or pool's (``pool``) input ``x`` (output ``out``, window
        ``kernel``): ONNX ``pads`` (begins, then ends), or what ``auto_pad`` SAME_* adds."""
        if len(x) < 3:
            return {}
        if "pads" in attrs:
            pads = list(attrs["pads"].ints)
            half = len(pads) // 2
            ph = pads[half - 2] + pads[-2] if half >= 2 else 0
            pw = pads[half - 1] + pads[-1]
        elif "auto_pad" in attrs and attrs["auto_pad"].s.decode().startswith("SAME"):
            st = list(attrs["strides"].ints) if "strides" in attrs else [1] * len(kernel)
            dl = list(attrs["dilations"].ints) if "dilations" in attrs else [1] * len(kernel)
            ph, pw = (max((o - 1) * s + (k - 1) * d + 1 - i, 0)
                      for o, s, k, d, i in zip(out[-2:], st[-2:], kernel[-2:], dl[-2:], x[-2:]))
        else:
            return {}
        h, w = x[-2], x[-1]
        return pad_loops(math.prod(x) // (h * w), h, w, ph, pw, geometry=geometry, pool=pool)

    g = model.proto.graph
    shapes = _shapes(model.proto)
    inits = {i.name for i in g.initializer}
    recs = []
    for i, node in enumerate(g.node):
        op = node.op_type
        if op in _VIEW:
            continue
        ins = [shapes.get(n) for n in node.input if n]
        outs = [shapes.get(n) for n in node.output[:1] if n]
        if any(s is None for s in ins[:1] + outs):
            raise ModelRefError(f"{model.path}: shape of node {node.name or op} ({op}) is unknown; "
                                "export the model with static shapes")
        out_elems = math.prod(outs[0]) if outs else 0
        attrs = {a.name: a for a in node.attribute}
        feat: dict[str, int] = {}
        flops, kind, reduction = 0, "elementwise", 0
        if op == "Conv":
            w = ins[1]
            groups = attrs["group"].i if "group" in attrs else 1
            red = w[1] * math.prod(w[2:])
            macs = out_elems * red
            flops = 2 * macs
            kind = "dwconv" if w[1] == 1 and groups > 1 else "conv1x1" if math.prod(w[2:]) == 1 else "conv"
            feat.update(macs=macs, acts_conv=out_elems, weight_elems=math.prod(w), **{f"flops_{kind}": flops})
            reduction = red
            x, strides = ins[0], list(attrs["strides"].ints) if "strides" in attrs else [1]
            padded = (any(attrs["pads"].ints) if "pads" in attrs else "auto_pad" in attrs
                      and attrs["auto_pad"].s.decode().startswith("SAME") and math.prod(w[2:]) > 1)
            feat.update(conv_loops(out_elems, outs[0][-1], w[1], w[2] if len(w) > 2 else 1, math.prod(w[3:]),
                                   strides[0], x[2] if len(x) > 2 else 1, math.prod(x[3:]), kind == "dwconv",
                                   geometry=geometry, padded=padded))
            _add(feat, pad(x, outs[0], list(w[2:]), attrs))
        elif op in ("Gemm", "MatMul"):
            a = ins[0]
            k = a[-1] if not (op == "Gemm" and "transA" in attrs and attrs["transA"].i) else a[0]
            macs = out_elems * k
            flops = 2 * macs
            weight = node.input[1] in inits
            kind = "matmul" if weight or len(outs[0]) <= 2 else "bmm"
            feat.update(macs=macs, weight_elems=math.prod(ins[1]) if weight else 0, **{f"flops_{kind}": flops})
            reduction = k
            b = ins[1]
            cols = b[0] if op == "Gemm" and "transB" in attrs and attrs["transB"].i else b[-1]
            feat.update(matmul_loops(out_elems, k, cols, math.prod(b), weight=weight, geometry=geometry))
        elif op == "BatchNormalization":
            flops, kind = 2 * out_elems, "norm"
            feat.update(elems_norm=out_elems, **ew_loops_over(out_elems, outs[0], 4, geometry=geometry))
        elif op in _NORM5:
            flops, kind = 5 * out_elems, "norm"
            feat.update(elems_norm=out_elems, **transc_loops(out_elems, TRANSC_TENTHS.get(op, 0)))
            reduction = ins[0][-1] if ins[0] else 1
        elif op in _POOL:
            in_elems = math.prod(ins[0])
            if op in ("MaxPool", "AveragePool"):
                window = math.prod(attrs["kernel_shape"].ints)
                flops = out_elems * window
                st = list(attrs["strides"].ints) if "strides" in attrs else [1]
                feat.update(pool_loops(out_elems, outs[0][-1], window, st[0], geometry=geometry))
                _add(feat, pad(ins[0], outs[0], list(attrs["kernel_shape"].ints), attrs, pool=True))
                if op == "AveragePool":  # the window sums, then a nest dividing them
                    _add(feat, ew_loops_over(out_elems, outs[0], geometry=geometry))
            else:
                window = in_elems // max(out_elems, 1)
                flops = in_elems
                feat.update(reduce_loops(in_elems, window))
            kind, reduction = "pool", window
            feat.update(elems_pool=in_elems)
        elif op in _COPY:
            kind = "copy"
            feat.update(elems_copy=out_elems, **ew_loops_over(out_elems, outs[0] if outs else (), geometry=geometry))
        else:
            flops = out_elems
            feat.update(elems_elementwise=out_elems,
                        **ew_loops_over(out_elems, outs[0] if outs else (), geometry=geometry))
            if op in TRANSC_TENTHS:
                _add(feat, transc_loops(out_elems, TRANSC_TENTHS[op]))
        if reduction:
            key = "flops_redshort" if reduction <= REDUCTION_SHORT else "flops_redlong"
            feat[key] = feat.get(key, 0) + flops
        in_bytes = 4 * sum(math.prod(s) for s in ins if s is not None)
        out_bytes = 4 * out_elems
        feat.update(flops=feat.get("flops", 0) + flops, acts=out_elems, bytes=in_bytes + out_bytes, n_ops=1)
        recs.append({"op": op, "kind": kind, "flops": flops, "acts": out_elems, "bytes": in_bytes + out_bytes,
                     "in_bytes": in_bytes, "out_bytes": out_bytes, "feat": feat,
                     "path": node.name or f"{op}_{i}",
                     # BatchNormalization's running mean/var are buffers, not parameters (as in torch)
                     "params": sum(math.prod(shapes[n]) for n in (node.input[:3] if op == "BatchNormalization"
                                                                   else node.input) if n in inits and n in shapes),
                     "in_shape": "x".join(map(str, ins[0])) if ins and ins[0] else "",
                     "out_shape": "x".join(map(str, outs[0])) if outs else "",
                     "reduction": reduction})
    return recs


def random_inputs(model: OnnxModel) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype("float32") for s in graph_inputs(model.proto).values()]


def relax_from_onnx(model: OnnxModel):
    """The Relax module of an ONNX model (TVM's ONNX frontend), with a clear error if it can't import."""
    from tvm.relax.frontend.onnx import from_onnx

    try:
        return from_onnx(model.proto, shape_dict={k: list(v) for k, v in graph_inputs(model.proto).items()})
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ModelRefError(f"TVM's ONNX frontend can't import {model.path}: {type(e).__name__}: {first[:300]}") from None


def onnx_features(model: OnnxModel, *, geometry: CacheGeometry = DEFAULT_GEOMETRY,
                  recs: list[dict[str, Any]] | None = None) -> dict[str, int]:
    """Whole-model feature columns (as features.count_features gives for a torch module), for the L1 ``geometry``;
    ``recs``: its ``onnx_records`` for that geometry, where the caller has them already."""
    import math as _m

    from .features import FEATURE_COLUMNS

    f = dict.fromkeys(FEATURE_COLUMNS, 0)
    recs = onnx_records(model, geometry) if recs is None else recs
    for r in recs:
        for k, v in r["feat"].items():
            f[k] += v
    f["inp"] = sum(_m.prod(s) for s in graph_inputs(model.proto).values())
    f["params"] = sum(r["params"] for r in recs)
    shapes = _shapes(model.proto)
    f["out"] = sum(_m.prod(shapes[o.name]) for o in model.proto.graph.output if o.name in shapes)
    f.update(block_loops(f["acts"], f["inp"], f["out"], geometry=geometry))
    return f
