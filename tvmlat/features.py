"""Features of a block, counted from the aten operations its forward pass runs. Pure: no TVM.

The module runs once on ``meta`` tensors (no memory, no arithmetic) under a dispatch mode
that sees every aten op after autograd decomposition, whatever Python the module is.

Conventions (kept everywhere in tvmlat):

* ``flops``: 2 FLOPs per multiply-add for convolution, matrix multiply and attention
  (the torch ``FlopCounterMode`` / fvcore x2 convention), plus, for the other arithmetic ops,
  1 FLOP per output element (elementwise, activations), 2 per element for batch norm,
  5 per element for layer/group norm and softmax, and one per window element for pooling.
  ``macs`` counts only the multiply-adds of convolution / matmul / attention.
  Per class: ``flops_conv`` (dense or grouped, kernel > 1x1), ``flops_conv1x1``, ``flops_dwconv``
  (depthwise), ``flops_matmul`` (mm/addmm: linear layers), ``flops_bmm`` (batched matmul, which is
  also what attention becomes on the meta device), ``flops_attn`` (a fused attention op, if seen);
  and, over all reducing ops (conv, matmul, attention, pooling, softmax/layer norm), by reduction
  length: ``flops_redshort`` / ``flops_redlong`` (each output reduces <= 32 or more elements; see
  ``OpCounter._reduction``).
  Attention is counted from the shapes of Q, K, V (QK^T and AV products), because
  ``FlopCounterMode`` gives 0 for ``_scaled_dot_product_flash_attention_for_cpu``.
* ``acts``: elements of every tensor an op produces (intermediate and output activations),
  views and reshapes excluded. ``inp``: elements of the block inputs.
* ``params``: parameter elements; ``bytes``: bytes each op reads and writes, summed over ops
  as if nothing were fused (an upper bound of memory traffic).
"""

from __future__ import annotations

import copy
import math
from functools import lru_cache
from typing import Any, Iterable, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .loop_features import (DEFAULT_GEOMETRY, LOOP_COLUMNS, TRANSC_TENTHS, CacheGeometry, block_loops,
                            conv_loops, ew_loops_over, matmul_loops, pad_loops, pool_loops, reduce_loops,
                            stamp_geometry, transc_loops)
from .specs import BlockSpec

#: bump when a feature's definition changes; datasets record it, and fitting recomputes stale features
FEATURES_VERSION = 24  # 24: mac_l1thrash_far, the multiply-adds of thrashing walks past 16 L1 lines up to the geometry's thrash_lines, chosen per host by the fit with the chain overlap (tvmlat.overlap; 16, no such walk, where a file records none), a walk of k sets counting 2 / k of 0.7 (loop_features.far_macs); mac_l1thrash is unchanged; 23: the steps a multiply-add chain hides (red**2 // (red + overlap) exposed) are the geometry's chain_overlap, chosen per host by the fit (tvmlat.overlap; 70, what every earlier version counted, where a file records none: no row counted at 70 changes); 22: mac_l1thrash also counts 0.7 of the multiply-adds of an unpadded conv whose chain walks more input planes than L1 holds lines of at their stride, 16 or fewer (loop_features.conv_loops: 32 x 32 and 64 x 64 planes); 21: acts_rw, the activations written plus those read back (acts + acts - out; loop_features.rw_elems), priced by loops in place of acts; 20: ew_transc, the elements of ops that evaluate exp / erf / tanh / log per element (GELU, softmax; a sigmoid's 0.6 each; loop_features.transc_loops); 19: mac_l1thrash counts 0.7 of the multiply-adds of a column walk that more than one L1 set holds (loop_features.thrash_macs); 18: acts_l2out by the activations and inputs alone, not the weights (loop_features.footprint_loops); 17: acts_l2out (the activations of a block whose footprint exceeds two L2s; loop_features.footprint_loops); 16: a multiply-add chain past 32 steps exposes red**2 // (red + 70) of them (mac_excess; loop_features.chain_steps); 15: max(red - 40, red / 2) of them; 14 (short reduction chains of means) was tried and reverted (README, "Tried after version 13"), its number is not reused; 13: the window steps of unrolled rows are win_slow, not ew_slow; a strided depthwise row of <= 8 outputs with kw * out_w <= 28 is not unrolled-slow; 12: AVX-512 code: nests under 9 wide over planes of 9-56 elements (7x7, 4x4) are ew_slow; 11: AVX-512 code: pool and strided depthwise rows unrolled whole are ew_slow, a stride-1 pool row is all vector steps, a pool's pad is free; 10: ew_slow (elementwise nests 9-48 wide, pad copies included); 9: a conv window of 3x3+ is unrolled whole up to 64 steps (all short); 8: mac_l1thrash (a column walk L1 holds <= 16 lines of); 7: red_chain (a global mean's chain of adds); 6: w_matmul (a linear layer's weights, once per call); 5: mac_l2miss (a matmul whose B fills the L2); 4: the conv L1 rule walks unpadded planes again

#: columns every feature dict has, in order
FEATURE_COLUMNS = [
    "acts", "inp", "flops", "macs", "params", "bytes",
    "flops_conv", "flops_conv1x1", "flops_dwconv", "flops_matmul", "flops_bmm", "flops_attn",
    "flops_redshort", "flops_redlong", "acts_conv", "elems_elementwise", "elems_norm", "elems_pool", "elems_copy",
    "weight_elems", "out", "n_ops",
    *LOOP_COLUMNS,  # loop-nest features of reducing ops (loop_features.py)
]

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


#: reductions up to this length count as short (see OpCounter._reduction)
REDUCTION_SHORT = 32


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


@lru_cache(maxsize=65536)
def _block_features_cached(spec_json: str, geometry: CacheGeometry) -> tuple[tuple[str, int], ...]:
    from .blocks import build_block

    spec = BlockSpec.from_json(spec_json)
    module, inputs = build_block(spec, device="meta")
    return tuple(count_features(module, inputs, geometry=geometry).items())


def block_features(spec: BlockSpec, *, geometry: CacheGeometry = DEFAULT_GEOMETRY) -> dict[str, int]:
    """Features of a block spec for the L1 ``geometry`` (cached by its canonical JSON and the geometry)."""
    return dict(_block_features_cached(spec.to_json(), geometry))


def spec_features(spec: BlockSpec, geometry: CacheGeometry = DEFAULT_GEOMETRY) -> dict[str, int]:
    """A spec's features in closed form (``analytic_features``: equal to the meta-device counter's, checked
    in the tests, ~1000x faster: a campaign's main process and the sampler use it); the counter where
    the closed form does not know the spec."""
    from .analytic_features import analytic_features

    try:
        return analytic_features(spec, geometry=geometry)
    except (KeyError, ValueError, TypeError):
        return block_features(spec, geometry=geometry)


def features_frame(specs: Iterable[BlockSpec], *, geometry: CacheGeometry = DEFAULT_GEOMETRY):
    """A DataFrame with one row per spec: block_id, family, spec JSON and the feature columns (for ``geometry``)."""
    import pandas as pd

    rows = []
    for s in specs:
        rows.append({"block_id": s.block_id, "family": s.family, "spec": s.to_json(), **block_features(s, geometry=geometry)})
    return stamp_geometry(pd.DataFrame(rows, columns=["block_id", "family", "spec", *FEATURE_COLUMNS]), geometry)
