"""Loop-nest features of reducing ops: what untuned TVM code pays for on a CPU. Pure (no torch, no
TVM); every function takes Python ints or numpy int64 arrays (many specs at once) and is exact in
integers, so the meta-device counter (``features.py``), the closed forms (``analytic_features.py``)
and the ONNX counter (``onnx_model.py``) give the same numbers.

Without a schedule, TVM's CPU code for a convolution or a matrix product is the plain loop nest
with the reduction innermost: each output element is a chain of dependent multiply-adds. For a
reducing op with ``out`` output elements, each summing ``red`` products:

* ``mac_excess = out * max(red - SHORT, 0)``: the part of the chain that runs at the latency of
  one dependent add per step (fitted: ~1.2 ns per multiply-add on the CI host, about 4 cycles);
* the first ``SHORT`` (``SHORT_DW`` for a depthwise k x k window) steps overlap: LLVM unrolls
  them and, where the innermost output loop has unit stride, vectorises across outputs, so
  ``out * min(red, SHORT)`` is split into ``short_vec`` (the share of the output row in whole
  ``LANES``-wide vectors: conv with stride 1 along the output width, matmul along the columns)
  and ``short_scal`` (the rest, and strided convs). Windowed pooling (max / avg, not the global
  mean) counts its whole window as short work, split by the same rule with the pool's stride;
* ``mac_l1miss_exc``: ``mac_excess`` of the ops whose reduction walks a strided operand that L1
  can't hold: a matmul's B column (stride 4·N bytes, ``red`` lines) or the input planes of an
  NCHW convolution (stride 4·H·W bytes, ``cin_per_group · kh`` lines). A set-associative L1
  (``L1_SETS`` sets x ``L1_WAYS`` ways of ``LINE`` bytes) holds only ``l1_lines(stride)`` lines of a
  constant-stride stream before its sets conflict;
* ``w_tlbmiss``: the elements of a matmul's B when its column walk spans more than ``DTLB`` pages
  (``red · 4·N > DTLB · PAGE`` bytes): then every element read costs a TLB miss.

On the CI host (100 + 100 blocks, ten families) a non-negative linear model of these, ``acts``,
``inp`` and ``n_ops`` reached 9.6 % median error on held-out families where per-class FLOPs
(``ops``) reached 25.6 % (README, "Accuracy"). The cache and TLB sizes are those of common x86
cores; the mechanisms are hypotheses that fit, not read from performance counters.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: the feature columns this module adds (features.FEATURE_COLUMNS ends with them)
LOOP_COLUMNS = ["mac_excess", "short_vec", "short_scal", "mac_l1miss_exc", "w_tlbmiss"]

SHORT = 32       # reduction steps that overlap (= features.REDUCTION_SHORT)
SHORT_DW = 49    # a depthwise k x k window (up to 7 x 7) never counts as long
LANES = 8        # float32 lanes of the vectors LLVM uses here (256-bit)
L1_SETS, L1_WAYS, LINE = 64, 8, 64
PAGE, DTLB = 4096, 64


def _out(d: dict[str, Any]) -> dict[str, Any]:
    """Plain ints for scalars (records, rows), int64 arrays for arrays."""
    if all(np.ndim(v) == 0 for v in d.values()):
        return {k: int(v) for k, v in d.items()}
    return {k: np.asarray(v, dtype=np.int64) for k, v in d.items()}


def l1_lines(stride_bytes: Any) -> Any:
    """Lines of a constant-stride stream that L1 holds before its sets conflict."""
    s = np.asarray(stride_bytes, dtype=np.int64)
    small = (L1_SETS * L1_WAYS * LINE) // np.maximum(s, 1)
    aligned = (L1_SETS // np.gcd(np.maximum(s // LINE, 1), L1_SETS)) * L1_WAYS
    return np.where(s < LINE, small, np.where(s % LINE != 0, L1_SETS * L1_WAYS, aligned))


def _split(out: Any, out_w: Any, red: Any, short_len: Any, vec_ok: Any):
    short = out * np.minimum(red, short_len)
    excess = out * np.maximum(red - short_len, 0)
    vec = np.where(vec_ok, (out // np.maximum(out_w, 1)) * (out_w // LANES * LANES) * np.minimum(red, short_len), 0)
    return excess, vec, short - vec


def conv_loops(out: Any, out_w: Any, cin_per_group: Any, kh: Any, kw: Any, stride: Any, in_h: Any, in_w: Any,
               depthwise: Any) -> dict[str, Any]:
    """A 2-d convolution (NCHW) with ``out`` output elements, rows ``out_w`` wide."""
    red = cin_per_group * kh * kw
    excess, vec, scal = _split(out, out_w, red, np.where(depthwise, SHORT_DW, SHORT), np.equal(stride, 1))
    miss = np.greater(cin_per_group, 1) & np.greater(cin_per_group * kh, l1_lines(4 * in_h * in_w))
    return _out({"mac_excess": excess, "short_vec": vec, "short_scal": scal,
                 "mac_l1miss_exc": np.where(miss, excess, 0), "w_tlbmiss": np.zeros_like(np.asarray(excess))})


def matmul_loops(out: Any, red: Any, cols: Any, b_elems: Any) -> dict[str, Any]:
    """A (batched) matrix product: ``out`` outputs, each a reduction of ``red``; B has ``cols`` columns."""
    excess, vec, scal = _split(out, cols, red, SHORT, True)
    miss = np.greater(red, l1_lines(4 * cols))
    tlb = np.greater(np.asarray(red, dtype=np.int64) * 4 * cols, DTLB * PAGE)
    return _out({"mac_excess": excess, "short_vec": vec, "short_scal": scal,
                 "mac_l1miss_exc": np.where(miss, excess, 0), "w_tlbmiss": np.where(tlb, b_elems, 0)})


def pool_loops(out: Any, out_w: Any, window: Any, stride: Any) -> dict[str, Any]:
    """A windowed (max / avg) pooling: its whole window is short work."""
    win = out * window
    vec = np.where(np.equal(stride, 1), (out // np.maximum(out_w, 1)) * (out_w // LANES * LANES) * window, 0)
    zero = np.zeros_like(np.asarray(win))
    return _out({"mac_excess": zero, "short_vec": vec, "short_scal": win - vec, "mac_l1miss_exc": zero,
                 "w_tlbmiss": zero})
