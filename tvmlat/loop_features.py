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
  NCHW convolution (``cin_per_group · kh`` lines, stride 4·H·W bytes). A set-associative L1
  (``sets`` x ``ways`` lines of ``line`` bytes, a ``CacheGeometry``) holds only ``l1_lines(stride)``
  lines of a constant-stride stream before its sets conflict. (Version 3 walked the padded planes
  TVM materialises, ``pad_temp``, and let a conv's rows miss once they filled half of L1: three
  campaigns measured afterwards were predicted worse with that in all 12 comparisons, so version 4
  went back to the unpadded planes and dropped the capacity rule; README, "Accuracy".)
* ``w_tlbmiss``: the elements of a matmul's B when its column walk spans more than ``DTLB`` pages
  (``red · 4·N > DTLB · PAGE`` bytes): then every element read costs a TLB miss.

The L1 geometry is the measured CPU's: ``host_geometry()`` reads it from Linux's sysfs (a target's
``TargetSpec.geometry()``), a campaign records it in its dataset's meta.json, a predictor in its
file, and every counter takes it as an argument, ``geometry=`` (``DEFAULT_GEOMETRY``, 32 KiB 8-way,
is what files without a recorded geometry were counted with). On the CI host (200 blocks, ten families, Intel with a
48 KiB 12-way L1) a non-negative linear model of these, ``acts``, ``inp`` and ``n_ops`` reached
9.2 % median error on held-out families where per-class FLOPs (``ops``) reached 25.6 % (README,
"Accuracy"). The page and TLB sizes are those of common x86 cores; the mechanisms are hypotheses
that fit, not read from performance counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: the feature columns this module adds (features.FEATURE_COLUMNS ends with them)
LOOP_COLUMNS = ["mac_excess", "short_vec", "short_scal", "mac_l1miss_exc", "w_tlbmiss"]

SHORT = 32       # reduction steps that overlap (= features.REDUCTION_SHORT)
SHORT_DW = 49    # a depthwise k x k window (up to 7 x 7) never counts as long
LANES = 8        # float32 lanes of the vectors LLVM uses here (256-bit)
PAGE, DTLB = 4096, 64


@dataclass(frozen=True)
class CacheGeometry:
    """A set-associative L1 data cache: ``sets`` x ``ways`` lines of ``line`` bytes."""

    sets: int = 64
    ways: int = 8
    line: int = 64

    def to_dict(self) -> dict[str, int]:
        return {"l1d_sets": self.sets, "l1d_ways": self.ways, "line": self.line}

    @classmethod
    def from_dict(cls, d: Any, where: str = "cache geometry") -> "CacheGeometry":
        """From ``to_dict``'s form (``None`` or ``{}``: ``DEFAULT_GEOMETRY``); ValueError names what is wrong."""
        if not d:
            return DEFAULT_GEOMETRY
        if not isinstance(d, dict):
            raise ValueError(f"{where} must be a table with l1d_sets, l1d_ways and line, not {d!r}")
        unknown = set(d) - {"l1d_sets", "l1d_ways", "line"}
        if unknown:
            raise ValueError(f"{where} has unknown keys {sorted(unknown)}; it takes l1d_sets, l1d_ways, line")
        vals = {k: d.get(k, v) for k, v in DEFAULT_GEOMETRY.to_dict().items()}
        for k, v in vals.items():
            pow2 = k != "l1d_ways"  # sets and line sizes are powers of two; ways need not be (12-way L1s exist)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0 or (pow2 and v & (v - 1)):
                raise ValueError(f"{where}: {k} must be a positive integer{', a power of two' if pow2 else ''}, "
                                 f"not {v!r}")
        return cls(vals["l1d_sets"], vals["l1d_ways"], vals["line"])

    def describe(self) -> str:
        return f"{self.sets * self.ways * self.line // 1024} KiB {self.ways}-way L1d, {self.line} B lines"


#: the geometry of files that record none (what the features were counted with before geometry existed)
DEFAULT_GEOMETRY = CacheGeometry()


def geometry_of(predictor: Any) -> CacheGeometry:
    """The L1 a predictor's loop features are counted for: a loaded predictor file's ``.geometry``;
    ``DEFAULT_GEOMETRY`` for none, or a bare model that records none."""
    return getattr(predictor, "geometry", None) or DEFAULT_GEOMETRY


def host_geometry(root: str | Path = "/sys/devices/system/cpu/cpu0/cache") -> CacheGeometry | None:
    """This machine's L1 data cache from Linux's sysfs; None where it can't be read."""
    try:
        for d in sorted(Path(root).glob("index*")):
            read = lambda name: (d / name).read_text().strip()  # noqa: E731
            if read("level") == "1" and read("type") in ("Data", "Unified"):
                return CacheGeometry(int(read("number_of_sets")), int(read("ways_of_associativity")),
                                     int(read("coherency_line_size")))
    except (OSError, ValueError):
        return None
    return None


def _out(d: dict[str, Any]) -> dict[str, Any]:
    """Plain ints for scalars (records, rows), int64 arrays for arrays."""
    if all(np.ndim(v) == 0 for v in d.values()):
        return {k: int(v) for k, v in d.items()}
    return {k: np.asarray(v, dtype=np.int64) for k, v in d.items()}


def l1_lines(stride_bytes: Any, g: CacheGeometry) -> Any:
    """Lines of a constant-stride stream that the L1 ``g`` holds before its sets conflict."""
    s = np.asarray(stride_bytes, dtype=np.int64)
    small = (g.sets * g.ways * g.line) // np.maximum(s, 1)
    aligned = (g.sets // np.gcd(np.maximum(s // g.line, 1), g.sets)) * g.ways
    return np.where(s < g.line, small, np.where(s % g.line != 0, g.sets * g.ways, aligned))


def _split(out: Any, out_w: Any, red: Any, short_len: Any, vec_ok: Any):
    short = out * np.minimum(red, short_len)
    excess = out * np.maximum(red - short_len, 0)
    vec = np.where(vec_ok, (out // np.maximum(out_w, 1)) * (out_w // LANES * LANES) * np.minimum(red, short_len), 0)
    return excess, vec, short - vec


def conv_loops(out: Any, out_w: Any, cin_per_group: Any, kh: Any, kw: Any, stride: Any, in_h: Any, in_w: Any,
               depthwise: Any, *, geometry: CacheGeometry) -> dict[str, Any]:
    """A 2-d convolution (NCHW) with ``out`` output elements, rows ``out_w`` wide, input planes ``in_h`` x ``in_w``,
    on a CPU with the L1 ``geometry``."""
    red = cin_per_group * kh * kw
    excess, vec, scal = _split(out, out_w, red, np.where(depthwise, SHORT_DW, SHORT), np.equal(stride, 1))
    plane = 4 * np.asarray(in_h) * np.asarray(in_w)
    miss = np.greater(cin_per_group, 1) & np.greater(np.asarray(cin_per_group) * np.asarray(kh), l1_lines(plane, geometry))
    return _out({"mac_excess": excess, "short_vec": vec, "short_scal": scal,
                 "mac_l1miss_exc": np.where(miss, excess, 0), "w_tlbmiss": np.zeros_like(np.asarray(excess))})


def matmul_loops(out: Any, red: Any, cols: Any, b_elems: Any, *, geometry: CacheGeometry) -> dict[str, Any]:
    """A (batched) matrix product: ``out`` outputs, each a reduction of ``red``; B has ``cols`` columns; L1 ``geometry``."""
    excess, vec, scal = _split(out, cols, red, SHORT, True)
    miss = np.greater(red, l1_lines(4 * cols, geometry))
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
