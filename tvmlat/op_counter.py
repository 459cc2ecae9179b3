"""The aten-op counter behind ``features.count_features``: the one part of feature counting that needs torch.

``tvmlat.features`` holds the feature columns and the spec-level entry points and imports this module on
first use, so commands that only read datasets or predictors start without loading torch.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .features import FEATURE_COLUMNS, REDUCTION_SHORT
from .loop_features import (DEFAULT_GEOMETRY, TRANSC_TENTHS, CacheGeometry, block_loops, conv_loops, ew_loops_over,
                            matmul_loops, pad_loops, pool_loops, reduce_loops, transc_loops)

_VIEW_OPS = {
    "view", "_unsafe_view", "reshape", "permute", "transpose", "t", "expand", "unsqueeze", "squeeze",
    "select", "slice", "unbind", "split", "split_with_sizes", "detach", "alias", "as_strided",
    "lift_fresh", "lift_fresh_copy", "_reshape_alias", "flatten", "unflatten", "view_as", "expand_as",
    "empty", "zeros", "ones", "full", "scalar_tensor", "_to_copy", "to", "numpy_T", "sym_size", "sym_stride",
    "sym_numel", "is_same_size", "_local_scalar_dense", "item",
}
_COPY_OPS = {"clone", "contiguous", "cat", "stack", "copy", "copy_", "pad", "constant_pad_nd", "index", "gather"}
_MATMUL_OPS = {"mm", "addmm", "matmul", "linear", "dot", "mv", "addmv"}
_BMM_OPS = {"bmm", "baddbmm"}
_NORM5 = {"native_layer_norm", "layer_norm", "native_group_norm", "group_norm", "_softmax", "softmax",
          "_log_softmax", "log_softmax", "_safe_softmax"}
_POOL_OPS = {"max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "adaptive_avg_pool2d", "_adaptive_avg_pool2d",
             "mean", "sum", "amax", "max", "adaptive_max_pool2d", "max_pool1d", "avg_pool1d"}


def _numel(t: Any) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 0


def _nbytes(t: Any) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0



def _pads(padding: Any) -> list:
    """An op's ``padding`` argument (an int or one per side) as a list."""
    return list(padding) if isinstance(padding, (list, tuple)) else [padding]


class OpCounter(TorchDispatchMode):
    """Counts features per aten op, loop features for the L1 ``geometry``; ``records`` keeps one dict per
    counted op (for per-layer tables)."""

    def __init__(self, geometry: CacheGeometry = DEFAULT_GEOMETRY):
        super().__init__()
        self.geometry = geometry
        self.totals = dict.fromkeys(FEATURE_COLUMNS, 0)
        self.records: list[dict[str, Any]] = []
        self._cur: dict[str, int] = {}

    def _add(self, **kv):
        """Add to the totals and to the current op's own feature increments (``record["feat"]``)."""
        for k, v in kv.items():
            self.totals[k] += v
            self._cur[k] = self._cur.get(k, 0) + v

    def _ew(self, elems: int, out: Any, nests: int = 1) -> dict[str, int]:
        """``ew_loops`` of ``nests`` elementwise nests over the tensor ``out`` (None: a scalar)."""
        return ew_loops_over(elems, out.shape if isinstance(out, torch.Tensor) else (), nests, geometry=self.geometry)

    def _pad(self, x: torch.Tensor, padding: Any, pool: bool = False) -> None:
        """The padded copy TVM makes of a conv's or pool's (``pool``) input (``padding``: int or per-side list)."""
        pad = _pads(padding)
        if x.dim() >= 3:
            h, w = x.shape[-2], x.shape[-1]
            self._add(**pad_loops(x.numel() // (h * w), h, w, 2 * pad[0], 2 * pad[-1], geometry=self.geometry,
                                  pool=pool))

    def _reduction(self, flops: int, length: int, rec: dict) -> None:
        """Split the FLOPs of reducing ops by the length of the reduction each output sums over.

        Without a schedule, TVM's CPU code reduces in the innermost loop, one dependent
        multiply-add after another; a short reduction is unrolled and vectorised across outputs
        instead. Measured on the untuned LLVM profile: ~1.5 GFLOP/s for long reductions,
        5-30 GFLOP/s for reductions of <= REDUCTION_SHORT elements.
        """
        key = "flops_redshort" if length <= REDUCTION_SHORT else "flops_redlong"
        self._add(**{key: flops})
        rec["reduction"] = max(rec.get("reduction", 0), int(length))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        if name in _VIEW_OPS:
            return out
        ins = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        if name in ("max_pool2d_with_indices",):
            outs = outs[:1]
        if name.startswith("_scaled_dot_product") or name == "scaled_dot_product_attention":
            outs = outs[:1]  # the rest are logsumexp / rng state, not activations
        if "batch_norm" in name and "training" not in name:
            outs = outs[:1]
        if name == "native_layer_norm" or name == "native_group_norm":
            outs = outs[:1]
        out_elems = sum(_numel(o) for o in outs)
        flops = 0
        self._cur = {}
        rec: dict[str, Any] = {"op": name, "feat": self._cur}
        if name == "convolution":
            w = args[1]
            groups = args[8] if len(args) > 8 else kwargs.get("groups", 1)
            cin_per_group = w.shape[1]
            macs = out_elems * cin_per_group * math.prod(w.shape[2:])
            flops = 2 * macs
            dw = cin_per_group == 1 and groups > 1
            kind = "dwconv" if dw else "conv1x1" if math.prod(w.shape[2:]) == 1 else "conv"
            self._add(macs=macs, acts_conv=out_elems, weight_elems=_numel(w), **{f"flops_{kind}": flops})
            self._reduction(flops, cin_per_group * math.prod(w.shape[2:]), rec)
            x, stride = args[0], args[3] if len(args) > 3 else kwargs.get("stride", [1])
            kh, kw = (w.shape[2], math.prod(w.shape[3:])) if w.dim() > 2 else (1, 1)
            in_h, in_w = (x.shape[2], math.prod(x.shape[3:])) if x.dim() > 2 else (1, 1)
            pads = _pads(args[4] if len(args) > 4 else kwargs.get("padding", [0]))
            self._add(**conv_loops(out_elems, outs[0].shape[-1] if outs[0].dim() else 1, cin_per_group, kh, kw,
                                   list(stride)[0] if stride else 1, in_h, in_w, dw, geometry=self.geometry,
                                   padded=any(not isinstance(p, int) or p > 0 for p in pads)))  # "same": padded
            self._pad(x, pads)
            rec["kind"] = kind
        elif name in _MATMUL_OPS or name in _BMM_OPS:
            a, b = (args[1], args[2]) if name in ("addmm", "baddbmm", "addmv") else (args[0], args[1])
            macs = out_elems * a.shape[-1]
            flops = 2 * macs
            kind = "bmm" if name in _BMM_OPS else "matmul"
            self._add(macs=macs, weight_elems=_numel(b) if kind == "matmul" else 0, **{f"flops_{kind}": flops})
            self._reduction(flops, a.shape[-1], rec)
            self._add(**matmul_loops(out_elems, a.shape[-1], b.shape[-1] if b.dim() > 1 else 1, _numel(b),
                                     weight=kind == "matmul", geometry=self.geometry))
            rec["kind"] = kind
        elif name.startswith("_scaled_dot_product") or name == "scaled_dot_product_attention":
            q, k, v = args[0], args[1], args[2]
            L, S, E, Ev = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
            batch = math.prod(q.shape[:-2])
            macs = batch * L * S * (E + Ev)
            flops = 2 * macs + 5 * batch * L * S  # + softmax over the score matrix
            self._add(macs=macs, flops_attn=flops, elems_norm=batch * L * S,
                      **transc_loops(batch * L * S, TRANSC_TENTHS["softmax"]))
            self._reduction(2 * batch * L * S * E, E, rec)
            self._reduction(2 * batch * L * S * Ev, S, rec)
            rec["kind"] = "attention"
        elif "batch_norm" in name:
            flops = 2 * out_elems
            self._add(elems_norm=out_elems, **self._ew(out_elems, outs[0], 4))  # - mean, / std, * w, + b
            rec["kind"] = "norm"
        elif name in _NORM5:
            flops = 5 * out_elems
            self._add(elems_norm=out_elems, **transc_loops(out_elems, TRANSC_TENTHS.get(name, 0)))
            self._reduction(flops, args[0].shape[-1] if args[0].dim() else 1, rec)
            rec["kind"] = "norm"
        elif name in _POOL_OPS:
            in_elems = _numel(args[0])
            if "max_pool" in name or name == "avg_pool2d":
                k = args[1] if len(args) > 1 else kwargs.get("kernel_size")
                k = list(k) if isinstance(k, (list, tuple)) else [k]
                window = math.prod(k) if len(k) > 1 else k[0] ** 2
                flops = out_elems * window
                st = args[2] if len(args) > 2 and args[2] else k
                st = list(st) if isinstance(st, (list, tuple)) else [st]
                self._add(**pool_loops(out_elems, outs[0].shape[-1], window, st[0], geometry=self.geometry))
                self._pad(args[0], args[3] if len(args) > 3 else kwargs.get("padding", 0), pool=True)
                if name == "avg_pool2d":  # the window sum, then a nest dividing it
                    self._add(**self._ew(out_elems, outs[0]))
            else:
                window = in_elems // max(out_elems, 1)
                flops = in_elems
                self._add(**reduce_loops(in_elems, window))
            self._add(elems_pool=in_elems)
            self._reduction(flops, window, rec)
            rec["kind"] = "pool"
        elif name in _COPY_OPS:
            self._add(elems_copy=out_elems, **self._ew(out_elems, outs[0] if outs else None))
            rec["kind"] = "copy"
        else:
            flops = out_elems
            self._add(elems_elementwise=out_elems, **self._ew(out_elems, outs[0] if outs else None))
            if name in TRANSC_TENTHS:
                self._add(**transc_loops(out_elems, TRANSC_TENTHS[name]))
            rec["kind"] = "elementwise"
        nbytes = sum(_nbytes(t) for t in ins) + sum(_nbytes(o) for o in outs)
        self._add(flops=flops, acts=out_elems, bytes=nbytes, n_ops=1)
        rec.update(flops=flops, acts=out_elems, bytes=nbytes)
        self.records.append(rec)
        return out


def count_features(module: torch.nn.Module, inputs: Sequence[torch.Tensor], *,
                   geometry: CacheGeometry = DEFAULT_GEOMETRY) -> dict[str, int]:
    """Count features of ``module(*inputs)``, loop features for the L1 ``geometry`` (the measured CPU's:
    ``TargetSpec.geometry()``, or a predictor's ``.geometry``). Runs on the meta device: fast and memory-free."""
    on_meta = all(t.device.type == "meta" for t in inputs) and all(
        p.device.type == "meta" for p in module.parameters())
    if not on_meta:
        module = copy.deepcopy(module).to("meta")
        inputs = [torch.empty(t.shape, dtype=t.dtype, device="meta") for t in inputs]
    counter = OpCounter(geometry)
    with torch.no_grad(), counter:
        out = module(*inputs)
    return finish_counts(counter.totals, module, inputs, out, geometry)


class PathCounter(OpCounter):
    """OpCounter that tags every record with the innermost module path and its tensor shapes (``analysis.trace_layers``;
    here, with the torch it needs, so that ``analysis`` loads without torch)."""

    def __init__(self, geometry: CacheGeometry):
        super().__init__(geometry)
        self.stack: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        n = len(self.records)
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if len(self.records) > n:
            rec = self.records[-1]
            rec["path"] = self.stack[-1] if self.stack else ""
            ins = [a for a in args if isinstance(a, torch.Tensor)]
            rec["in_shape"] = "x".join(map(str, ins[0].shape)) if ins else ""
            o = out[0] if isinstance(out, (tuple, list)) else out
            rec["out_shape"] = "x".join(map(str, o.shape)) if isinstance(o, torch.Tensor) else ""
            rec["out_bytes"] = o.numel() * o.element_size() if isinstance(o, torch.Tensor) else 0
            rec["in_bytes"] = rec["bytes"] - rec["out_bytes"]
        return out


def finish_counts(totals: dict[str, Any], module: torch.nn.Module, inputs: Sequence[torch.Tensor], out: Any,
                  geometry: CacheGeometry) -> dict[str, int]:
    """A run's op counts (an ``OpCounter``'s totals) completed into a block's features: its input, parameters,
    output and footprint. ``count_features`` and ``analysis.trace_layers`` (a network's totals) share it."""
    feats = dict(totals)
    feats["inp"] = sum(t.numel() for t in inputs)
    feats["params"] = sum(p.numel() for p in module.parameters())
    feats["out"] = sum(o.numel() for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor))
    feats.update(block_loops(feats["acts"], feats["inp"], feats["out"], geometry=geometry))
    return {k: int(v) for k, v in feats.items()}
