"""Features of a block, counted from the aten operations its forward pass runs (the counter is ``op_counter``). Pure: no TVM.

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

from functools import lru_cache
from typing import Any, Iterable

from .loop_features import DEFAULT_GEOMETRY, LOOP_COLUMNS, CacheGeometry, stamp_geometry
from .specs import BlockSpec

#: bump when a feature's definition changes; datasets record it, and fitting recomputes stale features
FEATURES_VERSION = 28  # 28: the vector steps of a depthwise window of more than 25 steps (6 x 6, 7 x 7), AVX-512 code, are short_scal, not short_vec (loop_features.conv_loops); 27: a stride-1 pool row of 20-31 outputs (one 16-output vector step and a tail of 4 or more), AVX-512 code: its tail's window steps are short_scal, not short_vec (loop_features.pool_loops); 26: a linear layer's weight transpose (TVM's permute_dims, on every call) walks cols rows 4 * red bytes apart; where L1 holds fewer lines of that walk than cols, the weight's elements count in mac_l1thrash / mac_l1thrash_far like a thrashing column walk (loop_features.matmul_loops); 25: win_slow also counts the short steps of a dense or grouped strided conv whose reduction is all short work (at most 32 steps, or a 3 x 3+ window unrolled whole) in rows of fewer than 16 outputs, AVX-512 code (loop_features.conv_loops): LLVM does not vectorise them; 24: mac_l1thrash_far, the multiply-adds of thrashing walks past 16 L1 lines up to the geometry's thrash_lines, chosen per host by the fit with the chain overlap (tvmlat.overlap; 16, no such walk, where a file records none), a walk of k sets counting 2 / k of 0.7 (loop_features.far_macs); mac_l1thrash is unchanged; 23: the steps a multiply-add chain hides (red**2 // (red + overlap) exposed) are the geometry's chain_overlap, chosen per host by the fit (tvmlat.overlap; 70, what every earlier version counted, where a file records none: no row counted at 70 changes); 22: mac_l1thrash also counts 0.7 of the multiply-adds of an unpadded conv whose chain walks more input planes than L1 holds lines of at their stride, 16 or fewer (loop_features.conv_loops: 32 x 32 and 64 x 64 planes); 21: acts_rw, the activations written plus those read back (acts + acts - out; loop_features.rw_elems), priced by loops in place of acts; 20: ew_transc, the elements of ops that evaluate exp / erf / tanh / log per element (GELU, softmax; a sigmoid's 0.6 each; loop_features.transc_loops); 19: mac_l1thrash counts 0.7 of the multiply-adds of a column walk that more than one L1 set holds (loop_features.thrash_macs); 18: acts_l2out by the activations and inputs alone, not the weights (loop_features.footprint_loops); 17: acts_l2out (the activations of a block whose footprint exceeds two L2s; loop_features.footprint_loops); 16: a multiply-add chain past 32 steps exposes red**2 // (red + 70) of them (mac_excess; loop_features.chain_steps); 15: max(red - 40, red / 2) of them; 14 (short reduction chains of means) was tried and reverted (README, "Tried after version 13"), its number is not reused; 13: the window steps of unrolled rows are win_slow, not ew_slow; a strided depthwise row of <= 8 outputs with kw * out_w <= 28 is not unrolled-slow; 12: AVX-512 code: nests under 9 wide over planes of 9-56 elements (7x7, 4x4) are ew_slow; 11: AVX-512 code: pool and strided depthwise rows unrolled whole are ew_slow, a stride-1 pool row is all vector steps, a pool's pad is free; 10: ew_slow (elementwise nests 9-48 wide, pad copies included); 9: a conv window of 3x3+ is unrolled whole up to 64 steps (all short); 8: mac_l1thrash (a column walk L1 holds <= 16 lines of); 7: red_chain (a global mean's chain of adds); 6: w_matmul (a linear layer's weights, once per call); 5: mac_l2miss (a matmul whose B fills the L2); 4: the conv L1 rule walks unpadded planes again

#: columns every feature dict has, in order
FEATURE_COLUMNS = [
    "acts", "inp", "flops", "macs", "params", "bytes",
    "flops_conv", "flops_conv1x1", "flops_dwconv", "flops_matmul", "flops_bmm", "flops_attn",
    "flops_redshort", "flops_redlong", "acts_conv", "elems_elementwise", "elems_norm", "elems_pool", "elems_copy",
    "weight_elems", "out", "n_ops",
    *LOOP_COLUMNS,  # loop-nest features of reducing ops (loop_features.py)
]

#: reductions up to this length count as short (see OpCounter._reduction)
REDUCTION_SHORT = 32


@lru_cache(maxsize=65536)
def _block_features_cached(spec_json: str, geometry: CacheGeometry) -> tuple[tuple[str, int], ...]:
    from .blocks import build_block
    from .op_counter import count_features

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


#: the counter's names, from the module that imports torch (``op_counter``), loaded on first use
_COUNTER_NAMES = ("OpCounter", "count_features", "finish_counts")


def __getattr__(name: str) -> Any:
    if name in _COUNTER_NAMES:
        from . import op_counter

        return getattr(op_counter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
