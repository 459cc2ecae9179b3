"""Loop-nest features of reducing ops: what untuned TVM code pays for on a CPU. Pure (no torch, no
TVM); every function takes Python ints or numpy int64 arrays (many specs at once) and is exact in
integers, so the meta-device counter (``features.py``), the closed forms (``analytic_features.py``)
and the ONNX counter (``onnx_model.py``) give the same numbers.

Without a schedule, TVM's CPU code for a convolution or a matrix product is the plain loop nest
with the reduction innermost: each output element is a chain of dependent multiply-adds. For a
reducing op with ``out`` output elements, each summing ``red`` products:

* ``mac_excess = out * chain_steps(red)``: the part of the chain that runs at the latency of
  one dependent add per step (fitted: ~1.0-1.2 ns per step, about 4 cycles). The next output's chain
  starts while this one runs and hides part of it. Versions 1-14 counted ``red - SHORT`` exposed steps
  for ``red > SHORT``; version 15 ``max(red - 40, ceil(red / 2))``; version 16 ``red**2 // (red +
  CHAIN_OVERLAP)``, i.e. ``CHAIN_OVERLAP * red / (red + CHAIN_OVERLAP)`` steps hidden: most of a short
  chain, up to ``CHAIN_OVERLAP`` (70) of a long one. Per output on ``znver4``, 1x1 convs (28x28,
  ``benchmarks/reduction_grid.py:conv``) cost 13.1 / 18.0 / 32.2 / 59.7 ns at 40 / 48 / 64 / 96 steps and
  3x3 ones 34.6 / 66.1 ns at 72 / 108; the sampled batched matmuls 31.5 / 80.8 / 214 / 496 ns at k = 64 /
  128 / 256 / 512. At ~1.05 ns per exposed step each fits ``red**2 / (red + a)`` with a = 69-95; the Intel
  host's 1x1 convs (docs/accuracy-log.md) give a = 49-71. Version 15's half was 1.4-1.7x too many at 40-48 steps;
  docs/accuracy-log.md;
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
  went back to the unpadded planes and dropped the capacity rule; docs/accuracy-log.md.)
* ``w_tlbmiss``: the elements of a matmul's B when its column walk spans more than ``DTLB`` pages
  (``red · 4·N > DTLB · PAGE`` bytes): then every element read costs a TLB miss.
* ``mac_l2miss`` (features version 5): the multiply-adds of a matmul whose B is at least as large
  as the core's L2 (``CacheGeometry.l2``; 0, unknown: never): each column walk then reads B from
  L3, for every row of A. On the CI host (2 MiB L2) such matmuls cost 4.6-7.3 ns per multiply-add
  against 1-3 ns for smaller ones, and were predicted 0.25-0.6x; a 2 MiB B counts (B and the rows
  it meets don't fit together).
* ``w_matmul`` (features version 6): the elements of a matmul's weight matrix (B of a 2-d matmul:
  a linear layer), once per call. A linear layer costs a fixed amount per weight element on top of
  its per-row cost: on the CI host 256x256, 128x1024 and 1024x128 layers took 0.09 + 0.091·M,
  0.18 + 0.157·M and 0.20 + 0.18·M ms for M = 1, 2, 4, 16 rows, ~1.4 ns per weight element
  whatever M, so a one-row layer costs twice its multiply-adds' time (``benchmarks/reduction_grid.py``).
  That fixed cost is a kernel of its own: the default build transposes the weight (``permute_dims``) at
  every call, since it folds no constants (``benchmarks/kernel_level.py``: 0.35 ns per element where the
  copy's walk of ``dout`` rows ``4·din`` bytes apart fits L1 by ``l1_lines``, 1.35 ns where it misses;
  a column for the misses gained 0.1-0.4 points, docs/accuracy-log.md, "Also tried"). The
  batched products of two activations (``bmm``) have no such column: their B is an input (``inp``).
  The meta-device counter takes the B of every 2-d ``mm``/``addmm`` as a weight (as ``weight_elems``
  does); the ONNX counter only an initializer.
* ``red_chain`` (features version 7): the input elements of a reduction that is neither windowed
  pooling nor a multiply-add (a global mean, ``sum``, ``amax``; ONNX ``GlobalAveragePool``,
  ``ReduceMean``...): without a schedule each output is one chain of dependent adds (or maxes), a
  step per input element, at the latency of an add. That latency is not a multiply-add's: on the
  2-vCPU AMD EPYC (``znver4``) a global mean cost ~0.8 ns per input element against ~0.97 ns per
  ``mac_excess`` step (3 and 4 cycles), on the Intel Xeon (``emeraldrapids``) ~0.8 against
  1.1-1.7 ns, so it has its own column rather than joining ``mac_excess`` (which was worse on the Intel
  host, docs/accuracy-log.md, "Tried"). Global means occur in two families (``pool`` kind ``global`` and
  ``squeeze_excitation``), so a held-out one learns the cost from the other: squeeze-excitation blocks
  held out were predicted 0.42-0.98x on ``znver4`` without it.
* The 32-step boundary (version 9): LLVM unrolls a reduction whole by the size of the unrolled code,
  not by its step count. For a 1 x 1 conv, a matmul or a 2 x 2 window that is 32 steps (1 x 1
  convs: cin 32 cheap, 40 a loop; a 2 x 2 window is a loop at 48); for a window of 3 x 3 or more
  it is ``UNROLL_WIN`` = 64: 3 x 3 convs with cin 7 (63 steps), 5 x 5 with cin 2 (50), 7 x 7 with
  cin 1 (49) and grouped 3 x 3 convs with 7 channels per group cost 5-7 ns per output on both the
  Intel and the AMD host, then 34-60 ns at 72, 75 and 98 steps (``benchmarks/reduction_grid.py``,
  grids ``conv`` and ``conv_boundary``). Version 8 split such reductions at 32 and predicted them
  1.2-5.1x too slow on the AMD host, version 9 0.56-1.28x; on a third grid measured after the rule
  (``unroll_check``) the geometric error factor of ten such convs went 4.1x -> 2.3x, but strided
  convs and 14-wide rows already loop at 54-63 steps (then 0.41-0.64x): their boundary is lower,
  which this rule does not know. The sampled blocks have none (dense convs have cin >= 8), so no
  calibration row changed; ResNeXt's grouped convs (4 channels per group, 36 steps) are such.
  Beyond the boundary the split stays at ``SHORT``.
* ``mac_l1thrash`` (features version 8): all multiply-adds of a matmul whose B column walk misses L1
  (as for ``mac_l1miss_exc``) and whose stride leaves at most ``THRASH_LINES`` (16) lines of L1 to
  it, i.e. a stride of 2 or 4 KiB on a 64-set 8-way L1 (512 or 1024 columns, also 1536 and 2048):
  on ``znver4`` such linear layers cost 2.3-3.7 ns per multiply-add whatever their reduction,
  against 0.5-1.2 ns for 1 KiB or 3 KiB strides (32 lines), and were predicted at 0.2-0.4x. On the
  Intel host's 12-way L1 only the 4 KiB stride qualifies (12 lines), and there it costs little
  more. The threshold was read off the znver4 campaigns; the mechanism (set conflicts, the
  prefetcher not crossing pages, or 4 KiB aliasing with the output's stores) is not established.
  Version 19 counts a walk that two sets hold (more lines than ``ways``: 512, 1536 and 2560 columns on
  that L1, 16 lines) at ``THRASH_PARTIAL`` (0.7) of its multiply-adds, one that a single set holds
  (1024, 2048, 3072 columns, 8 lines) whole: on ``znver4`` (``benchmarks/thrash_strides.py``, 196 tokens,
  reduction 384 / 768) the first cost 2.28-2.35 / 2.67-2.86 ns per multiply-add, the second 2.87-2.89 /
  3.18-3.59, walks of 32 or more lines 0.94-0.95 / 1.06-1.17: 0.70-0.72 of the excess. Held out on the 111
  AMD campaigns 69.0 -> 70.0 % within +-10 % (0.5: 69.1, 0.8: 69.8); no Intel row changes.
* ``ew_slow`` (version 10): elements of elementwise nests 9-48 wide (``ew_loops``), which LLVM
  unrolls whole and leaves scalar in AVX-512 code. Version 11 adds the window steps of pool and
  strided depthwise rows that are unrolled whole the same way (``window_slow``), drops a pool's
  padded copy and counts a stride-1 pool row's tail as vector steps -- on AVX-512 code only
  (``CacheGeometry.avx512``): on the two AVX2 (Zen 3) campaigns those rules lowered the held-out
  share within +-10 % from 46 to 42.5 %, on the AVX-512 hosts they raised it (docs/accuracy-log.md).
  Version 12, also on AVX-512 code only: a nest under 9 wide over a small plane (7 x 7, 4 x 4) is
  unrolled whole over its rows too and is slow the same way (``ew_loops``).
* ``win_slow`` (version 13): the window steps of version 11's unrolled rows, which were ``ew_slow``
  until then. They cost about half what a slow elementwise nest does per element: 0.4-0.55 ns per
  window step against 0.83-1.1 ns per element of a ReLU nest (``benchmarks/window_rows.py``,
  ``elementwise_width.py``), and fitted on all AMD campaigns pooled 0.27 against 0.60 ns. One column
  priced both at one rate in between. Version 13 also leaves a strided depthwise row of at most
  ``LANES`` outputs with ``kw * out_w <= DW_ROW`` out of it: 3 x 3 rows of 4-8 outputs and 5 x 5 or
  7 x 7 rows of 4 cost 0.13-0.21 ns per step, not 0.4-0.55 (``window_rows.py`` and ``--square``: 7 x 7
  to 18 x 18 inputs; at 7 x 7 and 14 x 14 these are the sampled blocks' stride-2 depthwise stages).
  Max pools' short strided rows stay slow (0.32-0.48 ns). Version 25: the short steps of a dense or grouped
  strided conv whose whole reduction is short work (at most ``SHORT`` steps, or a 3 x 3+ window unrolled whole)
  are ``win_slow`` too where its rows have fewer than ``STRIDED_VEC`` outputs (AVX-512 code): LLVM vectorises
  such a conv across a strided row only from 16 outputs. On the Zen 5 host a 1 x 1 stride-2 conv of 8-32 input
  channels costs 0.22-0.44 ns per multiply-add in rows of 7-14 outputs, 0.14 at 16 and 0.07-0.09 from 18 (28 at
  stride 1: 0.02-0.05), and 3 x 3 stride-2 convs of 3-4 channels and 1 x 1 grouped ones the same (0.23-0.27 ns
  at 7-14 outputs, 0.06-0.09 at 28); a longer reduction costs its chain's rate at any width (0.27 ns at 48 steps,
  0.42 at 96). Held out by family, per campaign (linear ``loops``, the core fixed): Zen 5 70.75 -> 72.25 %,
  Zen 4 67.49 -> 68.90 % (135 campaigns), Intel 66.32 -> 66.68 % (44); docs/accuracy-log.md.
* ``acts_l2out`` (version 17; version 18 without the weights): a block's activations and inputs when
  they exceed two L2s as float32 (``footprint_loops``): timed run after run, a block that fits finds its
  tensors in the L2s, a larger one streams them from L3 every run. Block-level, not per op; it needs the
  L2 size (0: never counted).
* ``ew_transc`` (version 20): the elements of ops that evaluate exp, erf, tanh or log per element -- GELU,
  softmax, and at 0.6 each sigmoid, SiLU (``transc_loops``): ~4 / ~2.4 ns each on the AMD host against ~0.1 ns
  for a ReLU. Not a loop-nest cost but an instruction count; it is here because every counter adds it per op.
* ``acts_rw`` (version 21): the activations written, and those read again -- ``acts`` (every op's output) plus
  ``acts - out``, the outputs that another op of the block reads back (``rw_elems``). A block's own output is
  only written and its input only read (``inp``). ``loops`` prices this column in place of ``acts``, tied to
  ``inp`` as ``acts`` was, so an element pays once per pass over it: a pool (one op, all of its output the block's)
  no longer pays for a read its activations never get, a conv-BN-ReLU pays for the two passes its BatchNorm and
  ReLU make. Held out, per campaign, within +-10 %: AMD 129 campaigns 70.70 -> 71.67 % (pools 26 -> 30 %,
  squeeze-excitation 64 -> 67 %), Intel 44 64.89 -> 66.36 % (pools 23 -> 32 %); counting the reads at 0.5 or
  1.5 / 2 of a write did no better, a column of their own priced apart worse (docs/accuracy-log.md).
* ``mac_l1thrash`` for convolutions (version 22): a conv whose chain (past ``SHORT`` steps) walks more input planes
  than L1 holds lines of at their stride, where that is ``THRASH_LINES`` or fewer, counts ``CONV_THRASH`` (0.7) of
  its multiply-adds, at the price a thrashing matmul column walk has. Planes of 32 x 32 or 64 x 64 floats lie 4 or
  16 KiB apart, one L1 set: on the AMD host the 1 x 1 project convs of 128-px networks (cin 48-144) ran 3.3-4.5x
  their prediction (2.7-2.9 ns per multiply-add; the same convs at 96 and 160 px 0.73-0.9x), and 19 of 50 search-space
  networks at 128 px were predicted 11-45 % too fast, all at 96 or 160 px within 3.4 %. Only an unpadded conv
  (``padded`` False) walks such planes: TVM pads into a copy (34 x 34, not 4 KiB apart), and the padded 3 x 3 convs of
  a VGG-style net at 64 and 128 px were predicted right without the rule. The sampled calibration blocks (7-112 px
  planes) have none, so no calibration row changed; the price is the matmuls'. The share: on 50 AMD networks all of
  it puts 100 % within +-10 % (0.7: 86 %), on the Intel host's 100 + 30 networks 91 / 93 % (0.7: 100 / 97 %, none:
  96 / 100 %) -- that L1 pays less for the walk; 0.7 is the compromise (docs/accuracy-log.md, "Version 22").
* The chain overlap (version 23): how many steps of a chain the next output's chain hides, ``CHAIN_OVERLAP`` (70)
  in versions 16-22, is the geometry's ``chain_overlap``, which the fit chooses per host (``tvmlat.overlap``): it is
  the core's out-of-order window, which sysfs does not list. An AMD Zen 5 core (``znver5``) hides about twice what a
  Zen 4 one does: its 3 x 3 convs over 32-128 channels and k = 512 matmuls ran 1.2-1.3x faster than on Zen 4, its
  short chains ~2x.
* ``mac_l1thrash_far`` (version 24): the same walks past ``THRASH_LINES`` (16), up to the geometry's ``thrash_lines``,
  which the fit chooses per host with the overlap (``tvmlat.overlap``: 16, none; or the lines of two or four of its
  sets). A walk that ``k`` sets hold counts ``2 / k`` of ``THRASH_PARTIAL`` of its multiply-adds (``far_macs``: two
  sets 0.7, four 0.35), convs ``CONV_THRASH`` of that. The AMD Zen 5 host's 12-way L1 thrashes on walks 2 KiB apart
  (two sets, 24 lines: 512-column matmuls ran 0.45-0.68x their prediction) and partly on ones 1 or 3 KiB apart (four
  sets, 48 lines: 256- and 768-column ones 0.66-0.98x; 112 x 112 planes too); the Intel host's L1 of the same shape
  hardly pays even at 12 lines, the Zen 4 host's 8-way one not at 32. A column of its own, priced apart: counted in
  ``mac_l1thrash`` those walks pulled its price from 1.50 to 1.03 ns per multiply-add on Zen 5, and the 128-px
  search-space networks, whose 1 x 1 convs walk 32 x 32 and 64 x 64 planes (one set), went from -8.4 to -14.7 %
  (their share within +-10 % from 93 to 77 %). ``mac_l1thrash`` is version 23's.
* The weight transpose of a linear layer (version 26): TVM imports ``nn.Linear`` as ``permute_dims`` of its
  (cols, red) weight and a matmul, and the untuned build runs the transpose on every call, its inner loop walking
  ``cols`` rows of the weight ``4 * red`` bytes apart. Where L1 holds fewer lines of that walk than it is long, the
  weight's elements count in ``mac_l1thrash`` / ``mac_l1thrash_far`` like a thrashing column walk's multiply-adds
  (``thrash_split``). Timed kernel by kernel on the Zen 5 host (``benchmarks/kernel_breakdown.py``), the transpose
  costs 0.33-0.47 ns per element where L1 holds 96 or more lines of the walk (512 B, 2.25 or 3.75 KiB apart),
  0.63-0.87 at 48 (1, 3 or 5 KiB), 0.99-1.70 at 24 (2 or 6 KiB) and 1.5-3.7 at 12 (4 or 8 KiB: one set), and is
  55-79 % of a one-token linear layer of 1024 or 2048 inputs (3.1 of 3.8 ms at 1024 x 1000); such layers ran
  0.35-0.64x their prediction. Held out by family, per campaign
  (linear ``loops``, the core fixed): Zen 4 68.90 -> 71.19 % (135 campaigns; linear 68 -> 77 %, MLP 69 -> 77 %),
  Zen 5 72.21 -> 72.54 % (28), Intel 66.68 -> 66.61 % (44), whose L1 hardly pays for such walks
  (docs/accuracy-log.md, "Version 26").
* A pool row's tail (version 27, AVX-512 code): a stride-1 pool row of 20-31 outputs runs one 16-output vector step
  and a tail that costs 1.5-2x per window step on the Zen 5 host; the tail's steps are ``short_scal``
  (``pool_loops``). Held out by family, per campaign, as ``fit`` chooses the core: Zen 5 +0.0 to +1.0 points (four
  sets of 8-20 campaigns), Zen 4 +0.5 (27), Intel -0.2 (22; docs/accuracy-log.md, "Version 27").
* A large depthwise window (version 28, AVX-512 code): the vector steps of a depthwise window of more than
  ``DW_REG_WIN`` steps (6 x 6, 7 x 7) are ``short_scal`` (``conv_loops``). On the Zen 5 host
  (``benchmarks/window_rows.py --dw-kernels``) each step a 7 x 7 window adds to a 5 x 5 one costs 0.028-0.086 ns
  (14-112 wide), 1.6-2x what each step a 5 x 5 adds to a 3 x 3 costs (0.016-0.048): more weights than vector
  registers. Fitted on all 44 Zen 5 campaigns at once, 7 x 7 stride-1 depthwise conv-BN-ReLU blocks at 28 and 56 px
  ran 1.45-1.67x their prediction. The count is coarser than the timings (all of the window's vector steps, not
  those past 25): counting only the steps past 24 scored lower. Held out by family, per campaign, as ``fit``
  chooses the core: Zen 5 +0.3 / +0.4 (20 / 24 campaigns; 8 measured after it, level), Zen 4 +0.1 (27), Intel +0.3
  (22). The search space's networks, which draw 7 x 7 depthwise kernels: Zen 5's thirty 90 -> 93 % within +-10 %
  (docs/accuracy-log.md, "Version 28").

The L1 geometry is the measured CPU's: ``host_geometry()`` reads it from Linux's sysfs (a target's
``TargetSpec.geometry()``), a campaign records it in its dataset's meta.json, a predictor in its
file, and every counter takes it as an argument, ``geometry=`` (``DEFAULT_GEOMETRY``, 32 KiB 8-way,
is what files without a recorded geometry were counted with). On the CI host (200 blocks, ten families, Intel with a
48 KiB 12-way L1) a non-negative linear model of these, ``acts``, ``inp`` and ``n_ops`` reached
9.1 % median error on held-out families where per-class FLOPs (``ops``) reached 25.6 % (README,
"Accuracy"). The page and TLB sizes are those of common x86 cores; the mechanisms are hypotheses
that fit, not read from performance counters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

#: the feature columns this module adds (features.FEATURE_COLUMNS ends with them)
LOOP_COLUMNS = ["mac_excess", "short_vec", "short_scal", "mac_l1miss_exc", "w_tlbmiss", "mac_l2miss", "w_matmul",
                "red_chain", "mac_l1thrash", "ew_slow", "win_slow", "acts_l2out", "ew_transc", "acts_rw",
                "mac_l1thrash_far"]

SHORT = 32       # reduction steps that overlap (= features.REDUCTION_SHORT)
SHORT_DW = 49    # a depthwise k x k window (up to 7 x 7) never counts as long
UNROLL_WIN = 64  # a conv window of 3 x 3 or more is unrolled whole up to this many steps (version 9)
CHAIN_OVERLAP = 70  # version 16: a chain of red > SHORT steps exposes red**2 // (red + CHAIN_OVERLAP) of them
MAX_OVERLAP = 1000  # version 23: a geometry's chain_overlap (fitted per host) is 1 to this many steps
LANES = 8        # float32 lanes of the vectors LLVM uses here (256-bit)
PAGE, DTLB = 4096, 64
THRASH_LINES = 16  # a column walk that L1 holds at most this many lines of: every step pays (mac_l1thrash)
THRASH_PARTIAL = 0.7  # version 19: of a walk that more than one set holds (lines > ways), this share pays
MAX_THRASH_LINES = 4096  # version 24: a geometry's thrash_lines (fitted per host) is 1 to this many lines
CONV_THRASH = 0.7  # version 22: of a conv's thrashing walk over its input planes, this share counts in mac_l1thrash
EW_MIN, EW_UNROLL = 9, 48  # an elementwise nest whose innermost extent is in this range runs ~9x slower (ew_slow)
#: version 20: aten (torch) and ONNX ops that evaluate exp, erf, tanh or log per element, and what each element
#: counts in ``ew_transc``, in tenths of a GELU's: timed in blocks on the AMD host (``benchmarks/kernel_breakdown.py``)
#: a GELU's element costs 4.0-4.1 ns, a softmax's 3.7-4.2, a sigmoid's 2.3-2.5 (SiLU's alike, a bare exp's 1.9):
#: one exp and a division are 0.6 of an erf's polynomial. tanh (5.2 ns alone, more than a sigmoid) counts whole;
#: the rest (ELUs, softplus, logs) were not timed and count as the function they evaluate.
TRANSC_TENTHS = {
    **dict.fromkeys(["gelu", "erf", "erfc", "tanh", "mish", "softplus", "Gelu", "Erf", "Tanh", "Mish", "Softplus"],
                    10),
    **dict.fromkeys(["sigmoid", "silu", "exp", "exp2", "expm1", "elu", "selu", "celu", "log", "log1p", "log2",
                     "log10", "log_sigmoid_forward", "logit", "Sigmoid", "Exp", "Elu", "Selu", "Celu", "Log"], 6),
    # norm-like ops that take an exp of every element (softmax); layer and group norms take one rsqrt per row
    **dict.fromkeys(["_softmax", "softmax", "_log_softmax", "log_softmax", "_safe_softmax", "Softmax", "LogSoftmax"],
                    10),
}
FOOTPRINT_L2 = 2  # a block whose float32 activations and inputs exceed this many L2s counts acts_l2out (17, 18)
# version 11, AVX-512 code only: a window row (pool, depthwise conv) that LLVM unrolls whole runs scalar
POOL_UNROLL, POOL_BODY = 136, 8  # a stride-1 pool row of out_w * (window + POOL_BODY) <= POOL_UNROLL is unrolled
STRIDED_VEC = 16  # a strided window row (pool, depthwise k >= 2) is vectorised only from this many outputs
PLANE_UNROLL = 56  # version 12, AVX-512 code only: a nest under EW_MIN wide over planes of EW_MIN..this many elements
DW_ROW = 28  # version 13: a strided depthwise row of at most LANES outputs and kw * out_w <= this is not slow
#: version 27, AVX-512 code only: a stride-1 pool row of POOL_STEP + POOL_TAIL_MIN .. 2 * POOL_STEP - 1 outputs runs one
#: vector step of POOL_STEP outputs and a tail whose window steps are short_scal, not short_vec
POOL_STEP, POOL_TAIL_MIN = 16, 4
#: version 28, AVX-512 code only: the vector steps of a depthwise window of more than this many steps are short_scal
DW_REG_WIN = 25


@dataclass(frozen=True)
class CacheGeometry:
    """A set-associative L1 data cache (``sets`` x ``ways`` lines of ``line`` bytes), the size of the
    L2 a core sees (``l2`` bytes; 0: unknown, no L2 rule), whether the code is AVX-512 code
    (``avx512``: the window-row and small-plane rules of versions 11 and 12 are what LLVM does for
    AVX-512 CPUs), how many steps of a multiply-add chain the core's out-of-order window hides
    (``chain_overlap``, ``chain_steps``; version 23), and up to how many L1 lines a strided walk that L1 holds only
    that many lines of still thrashes past ``THRASH_LINES`` (``thrash_lines``, ``mac_l1thrash_far``; version 24). The
    last two are the core's, fitted per host (``tvmlat.overlap``), not read from the hardware."""

    sets: int = 64
    ways: int = 8
    line: int = 64
    l2: int = 0
    avx512: bool = True
    chain_overlap: int = CHAIN_OVERLAP
    thrash_lines: int = THRASH_LINES

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"l1d_sets": self.sets, "l1d_ways": self.ways, "line": self.line, "l2_bytes": self.l2}
        if not self.avx512:  # files without the key were all counted for AVX-512 CPUs
            d["avx512"] = False
        if self.chain_overlap != CHAIN_OVERLAP:  # files without the key were all counted with 70
            d["chain_overlap"] = self.chain_overlap
        if self.thrash_lines != THRASH_LINES:  # files without the key were all counted with 16
            d["thrash_lines"] = self.thrash_lines
        return d

    def with_overlap(self, chain_overlap: int, thrash_lines: int | None = None) -> "CacheGeometry":
        """The same geometry with another ``chain_overlap`` (and ``thrash_lines``, where given)."""
        return replace(self, chain_overlap=int(chain_overlap),
                       thrash_lines=self.thrash_lines if thrash_lines is None else int(thrash_lines))

    def with_core(self, other: "CacheGeometry") -> "CacheGeometry":
        """This L1 with ``other``'s fitted core parameters (``chain_overlap``, ``thrash_lines``): how a predictor
        fitted on another host counts this host's blocks."""
        return self.with_overlap(other.chain_overlap, other.thrash_lines)

    @property
    def core(self) -> tuple[int, int]:
        """The fitted core parameters: (``chain_overlap``, ``thrash_lines``)."""
        return self.chain_overlap, self.thrash_lines

    @classmethod
    def from_dict(cls, d: Any, where: str = "cache geometry") -> "CacheGeometry":
        """From ``to_dict``'s form (``None`` or ``{}``: ``DEFAULT_GEOMETRY``); ValueError names what is wrong."""
        if not d:
            return DEFAULT_GEOMETRY
        if not isinstance(d, dict):
            raise ValueError(f"{where} must be a table with l1d_sets, l1d_ways and line, not {d!r}")
        unknown = set(d) - {"l1d_sets", "l1d_ways", "line", "l2_bytes", "avx512", "chain_overlap", "thrash_lines"}
        if unknown:
            raise ValueError(f"{where} has unknown keys {sorted(unknown)}; it takes l1d_sets, l1d_ways, line, "
                             f"l2_bytes, avx512, chain_overlap, thrash_lines")
        avx512 = d.get("avx512", True)
        if not isinstance(avx512, bool):
            raise ValueError(f"{where}: avx512 must be true or false, not {avx512!r}")
        overlap = d.get("chain_overlap", CHAIN_OVERLAP)
        if isinstance(overlap, bool) or not isinstance(overlap, int) or not 1 <= overlap <= MAX_OVERLAP:
            raise ValueError(f"{where}: chain_overlap must be a whole number of steps, 1 to {MAX_OVERLAP}, "
                             f"not {overlap!r}")
        thrash = d.get("thrash_lines", THRASH_LINES)
        if isinstance(thrash, bool) or not isinstance(thrash, int) or not 1 <= thrash <= MAX_THRASH_LINES:
            raise ValueError(f"{where}: thrash_lines must be a whole number of L1 lines, 1 to {MAX_THRASH_LINES}, "
                             f"not {thrash!r}")
        vals = {k: d.get(k, v) for k, v in DEFAULT_GEOMETRY.to_dict().items()}
        for k, v in vals.items():
            if k == "l2_bytes":  # any size (1.25 MiB L2s exist); 0: unknown
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise ValueError(f"{where}: l2_bytes must be a whole number of bytes (0: unknown), not {v!r}")
                continue
            pow2 = k != "l1d_ways"  # sets and line sizes are powers of two; ways need not be (12-way L1s exist)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0 or (pow2 and v & (v - 1)):
                raise ValueError(f"{where}: {k} must be a positive integer{', a power of two' if pow2 else ''}, "
                                 f"not {v!r}")
        return cls(vals["l1d_sets"], vals["l1d_ways"], vals["line"], vals["l2_bytes"], avx512, overlap, thrash)

    def describe(self) -> str:
        l1 = f"{self.sets * self.ways * self.line // 1024} KiB {self.ways}-way L1d, {self.line} B lines"
        return (l1 + (f", {self.l2 // 1024} KiB L2" if self.l2 else "") + ("" if self.avx512 else ", no AVX-512")
                + (f", chain overlap {self.chain_overlap}" if self.chain_overlap != CHAIN_OVERLAP else "")
                + (f", walks of up to {self.thrash_lines} lines thrash" if self.thrash_lines != THRASH_LINES else ""))


#: the geometry of files that record none (what the features were counted with before geometry existed)
DEFAULT_GEOMETRY = CacheGeometry()


def stamp_geometry(features: Any, geometry: CacheGeometry) -> Any:
    """Record on a feature table (a DataFrame's ``attrs``, or a ``FeatureArrays``) the L1 its loop
    features were counted for, so that a predictor of another L1 refuses it (``check_geometry``)."""
    if hasattr(features, "attrs"):
        features.attrs["cache_geometry"] = geometry.to_dict()
    else:
        features.cache_geometry = geometry.to_dict()
    return features


def stamped_geometry(features: Any) -> CacheGeometry | None:
    """The L1 ``stamp_geometry`` recorded on ``features``; None where none was (a plain dict or frame)."""
    attrs = getattr(features, "attrs", None)
    d = attrs.get("cache_geometry") if isinstance(attrs, dict) else getattr(features, "cache_geometry", None)
    return CacheGeometry.from_dict(d) if d else None


class FeatureArrays(dict):
    """Feature columns as numpy arrays (``analytic_arrays``), with the L1 they were counted for."""

    cache_geometry: dict[str, int] | None = None


def geometry_of(predictor: Any) -> CacheGeometry:
    """The L1 a predictor's loop features are counted for: a loaded predictor file's ``.geometry``;
    ``DEFAULT_GEOMETRY`` for none, or a bare model that records none."""
    return getattr(predictor, "geometry", None) or DEFAULT_GEOMETRY


def _size_bytes(text: str) -> int:
    """sysfs cache sizes: ``2048K``, ``1M``, or plain bytes."""
    mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(text[-1:].upper(), 1)
    return int(text[:-1] if mult > 1 else text) * mult


def host_avx512(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this machine's CPU has AVX-512 (``avx512f`` among /proc/cpuinfo's flags; True where that
    can't be read, as every geometry before version 11 assumed)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return True
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith(("flags", "Features"))), None)
    return True if flags is None else "avx512f" in flags


def host_geometry(root: str | Path = "/sys/devices/system/cpu/cpu0/cache",
                  cpuinfo: str | Path = "/proc/cpuinfo") -> CacheGeometry | None:
    """This machine's L1 data cache (and L2 size, 0 where none is listed) from Linux's sysfs, and whether
    it runs AVX-512 code; None where the L1 can't be read."""
    l1, l2 = None, 0
    for d in sorted(Path(root).glob("index*")):
        read = lambda name: (d / name).read_text().strip()  # noqa: E731
        try:
            level, kind = read("level"), read("type")
            if kind not in ("Data", "Unified"):
                continue
            if level == "1" and l1 is None:
                l1 = (int(read("number_of_sets")), int(read("ways_of_associativity")), int(read("coherency_line_size")))
            elif level == "2":
                l2 = _size_bytes(read("size"))
        except (OSError, ValueError):
            continue  # an unreadable entry: an L1 not found is None, an L2 not found is 0 (unknown)
    return CacheGeometry(*l1, l2, host_avx512(cpuinfo)) if l1 else None


def _out(d: dict[str, Any]) -> dict[str, Any]:
    """Every loop column, in ``LOOP_COLUMNS`` order: those in ``d``, 0 for the rest. Plain ints for
    scalars (records, rows), int64 arrays for arrays."""
    if all(np.ndim(v) == 0 for v in d.values()):
        return {k: int(d.get(k, 0)) for k in LOOP_COLUMNS}
    shape = np.broadcast_shapes(*(np.shape(v) for v in d.values()))
    return {k: np.broadcast_to(np.asarray(d.get(k, 0), dtype=np.int64), shape).copy() for k in LOOP_COLUMNS}


def l1_lines(stride_bytes: Any, g: CacheGeometry) -> Any:
    """Lines of a constant-stride stream that the L1 ``g`` holds before its sets conflict."""
    s = np.asarray(stride_bytes, dtype=np.int64)
    small = (g.sets * g.ways * g.line) // np.maximum(s, 1)
    aligned = (g.sets // np.gcd(np.maximum(s // g.line, 1), g.sets)) * g.ways
    return np.where(s < g.line, small, np.where(s % g.line != 0, g.sets * g.ways, aligned))


def chain_steps(red: Any, short_len: Any = SHORT, overlap: int = CHAIN_OVERLAP) -> Any:
    """The exposed steps of one output's chain of ``red`` dependent multiply-adds (version 16): none up to
    ``short_len`` (unrolled and overlapped), then ``red**2 // (red + CHAIN_OVERLAP)``: the next output's
    chain starts while this one runs and hides ``CHAIN_OVERLAP * red / (red + CHAIN_OVERLAP)`` steps of
    it, most of a short chain and up to ``CHAIN_OVERLAP`` of a long one. (Versions 1-14 counted
    ``red - short_len``, version 15 ``max(red - 40, ceil(red / 2))``.)"""
    r = np.asarray(red, dtype=np.int64)
    return np.where(r > short_len, r * r // (r + overlap), 0)


def _split(out: Any, out_w: Any, red: Any, short_len: Any, vec_ok: Any, overlap: int):
    """(exposed chain steps, vector short steps, scalar short steps, steps past ``short_len``) of ``out``
    reductions of ``red`` steps each, ``overlap`` of a chain's steps hidden at most (``chain_steps``)."""
    short = out * np.minimum(red, short_len)
    past = out * np.maximum(red - short_len, 0)
    vec = np.where(vec_ok, (out // np.maximum(out_w, 1)) * (out_w // LANES * LANES) * np.minimum(red, short_len), 0)
    return np.asarray(out, dtype=np.int64) * chain_steps(red, short_len, overlap), vec, short - vec, past


def conv_loops(out: Any, out_w: Any, cin_per_group: Any, kh: Any, kw: Any, stride: Any, in_h: Any, in_w: Any,
               depthwise: Any, *, geometry: CacheGeometry, padded: Any = False) -> dict[str, Any]:
    """A 2-d convolution (NCHW) with ``out`` output elements, rows ``out_w`` wide, input planes ``in_h`` x ``in_w``,
    on a CPU with the L1 ``geometry``. A window of 3 x 3 or more whose whole reduction has at most
    ``UNROLL_WIN`` steps is all short work (version 9); otherwise the first ``SHORT`` (``SHORT_DW``
    for a depthwise window) steps are. A strided depthwise window row is a pool's (``window_slow``, its
    steps ``win_slow``), except a short one (at most ``LANES`` outputs, ``kw * out_w <= DW_ROW``; version 13); so
    are the short steps of a dense or grouped strided conv whose reduction is all short, in rows of fewer than
    ``STRIDED_VEC`` outputs (AVX-512 code; version 25). A depthwise window of more than ``DW_REG_WIN`` steps (6 x 6,
    7 x 7) counts its vector steps as ``short_scal`` (AVX-512 code; version 28).
    ``padded``: TVM walks a padded copy of the input (padding > 0), whose planes are not the input's; an unpadded
    conv whose chain walks more planes than L1 holds lines of at their stride thrashes (``mac_l1thrash``, version 22)."""
    red = cin_per_group * kh * kw
    window = np.asarray(kh) * np.asarray(kw)
    short_len = np.where(depthwise, SHORT_DW, SHORT)
    # version 28: a depthwise window of more than DW_REG_WIN steps is not vectorised: its short steps are all scalar
    big = np.asarray(depthwise, dtype=bool) & np.greater(window, DW_REG_WIN) & bool(geometry.avx512)
    excess, vec, scal, past = _split(out, out_w, red, short_len, np.equal(stride, 1) & ~big, geometry.chain_overlap)
    # a window of 3 x 3 or more unrolled whole: the steps past short_len are scalar short work, not a chain
    unrolled = np.greater_equal(window, 9) & np.less_equal(red, UNROLL_WIN)
    scal = scal + np.where(unrolled, past, 0)
    excess = np.where(unrolled, 0, excess)
    plane = 4 * np.asarray(in_h) * np.asarray(in_w)
    lines = l1_lines(plane, geometry)
    miss = np.greater(cin_per_group, 1) & np.greater(np.asarray(cin_per_group) * np.asarray(kh), lines)
    # version 22: a chain walking more input planes than L1 holds lines of at their stride thrashes (mac_l1thrash)
    walks = np.greater(cin_per_group, lines) & np.greater(red, SHORT) & ~np.asarray(padded, dtype=bool)
    macs = np.asarray(out, dtype=np.int64) * red
    near, far = thrash_split(walks, lines, macs, geometry)
    slow = (np.asarray(depthwise, dtype=bool) & np.greater(window, 1) & np.greater(stride, 1)
            & window_slow(out_w, window, stride, geometry, depthwise_kw=kw))
    steps = np.asarray(out, dtype=np.int64) * window
    # version 25: a dense or grouped strided conv whose reduction is all short work, in rows too narrow to vectorise
    narrow = (~np.asarray(depthwise, dtype=bool) & np.greater(stride, 1) & np.less(out_w, STRIDED_VEC)
              & (np.less_equal(red, short_len) | unrolled) & bool(geometry.avx512))
    return _out({"mac_excess": excess, "short_vec": np.where(slow, 0, vec),
                 "short_scal": np.where(slow | narrow, 0, scal),
                 "mac_l1miss_exc": np.where(miss, excess, 0),
                 "win_slow": np.where(slow, steps, 0) + np.where(narrow, scal, 0),
                 "mac_l1thrash": _share(near, CONV_THRASH), "mac_l1thrash_far": _share(far, CONV_THRASH)})


def matmul_loops(out: Any, red: Any, cols: Any, b_elems: Any, *, weight: Any, geometry: CacheGeometry) -> dict[str, Any]:
    """A (batched) matrix product: ``out`` outputs, each a reduction of ``red``; B has ``cols`` columns
    and ``b_elems`` elements, and is a weight matrix where ``weight`` (a 2-d matmul, not ``bmm``); L1 ``geometry``.
    A weight is transposed first, on every call (version 26): its walk over ``cols`` rows ``4 * red`` bytes apart
    thrashes like B's column walk where L1 holds fewer lines of it than ``cols``."""
    excess, vec, scal, _ = _split(out, cols, red, SHORT, True, geometry.chain_overlap)
    lines = l1_lines(4 * cols, geometry)  # of B's column walk
    miss = np.greater(red, lines)
    macs = np.asarray(out, dtype=np.int64) * red
    b_bytes = np.asarray(red, dtype=np.int64) * 4 * np.asarray(cols, dtype=np.int64)
    tlb = np.greater(b_bytes, DTLB * PAGE)
    l2 = np.greater(geometry.l2, 0) & np.greater_equal(b_bytes, geometry.l2)  # B does not fit the L2
    near, far = thrash_split(miss, lines, macs, geometry)
    copy = weight_copy_loops(red, cols, np.where(weight, b_elems, 0), geometry=geometry)
    return _out({"mac_excess": excess, "short_vec": vec, "short_scal": scal,
                 "mac_l1miss_exc": np.where(miss, excess, 0), "w_tlbmiss": np.where(tlb, b_elems, 0),
                 "mac_l2miss": np.where(l2, macs, 0), "w_matmul": copy["w_matmul"],
                 "mac_l1thrash": near + copy["mac_l1thrash"], "mac_l1thrash_far": far + copy["mac_l1thrash_far"]})


def weight_copy_loops(red: Any, cols: Any, elems: Any, *, geometry: CacheGeometry) -> dict[str, Any]:
    """The transpose of a linear layer's (``cols``, ``red``) weight of ``elems`` elements (0: no copy) that the untuned
    build runs on every call: ``w_matmul`` (version 6), and where L1 holds fewer lines of its walk over ``cols`` rows
    ``4 * red`` bytes apart than ``cols``, the elements as a thrashing walk's (version 26; ``thrash_split``).
    ``matmul_loops`` adds it to a weight's product; the kernel-level counter to the transpose kernel."""
    e = np.asarray(elems, dtype=np.int64)
    lines = l1_lines(4 * np.asarray(red, dtype=np.int64), geometry)
    near, far = thrash_split(np.greater(e, 0) & np.greater(cols, lines), lines, e, geometry)
    return {"w_matmul": e, "mac_l1thrash": near, "mac_l1thrash_far": far}


def thrash_split(walks: Any, lines: Any, macs: Any, g: CacheGeometry) -> tuple[Any, Any]:
    """(``mac_l1thrash``, ``mac_l1thrash_far``) of the thrashing ``walks`` (a mask) that L1 holds ``lines`` of, ``macs``
    multiply-adds each: those of ``THRASH_LINES`` or fewer lines (``thrash_macs``), and those past it up to ``g``'s
    ``thrash_lines`` (``far_macs``, version 24)."""
    near = walks & np.less_equal(lines, THRASH_LINES)
    far = walks & np.greater(lines, THRASH_LINES) & np.less_equal(lines, g.thrash_lines)
    return np.where(near, thrash_macs(macs, lines, g), 0), np.where(far, far_macs(macs, lines, g), 0)


def thrash_macs(macs: Any, lines: Any, g: CacheGeometry) -> Any:
    """The multiply-adds ``mac_l1thrash`` counts of a thrashing column walk that L1 holds ``lines`` of: all where
    one set holds it (``lines <= ways``), ``THRASH_PARTIAL`` of them (rounded down) where two or more do (19)."""
    m = np.asarray(macs, dtype=np.int64)
    return np.where(np.greater(lines, g.ways), _share(m, THRASH_PARTIAL), m)


def far_macs(macs: Any, lines: Any, g: CacheGeometry) -> Any:
    """The multiply-adds ``mac_l1thrash_far`` counts of a walk past ``THRASH_LINES`` that L1 holds ``lines`` of
    (version 24): where ``k`` sets hold it, ``2 / k`` of ``THRASH_PARTIAL`` of them (two sets 0.7, four 0.35), in whole
    hundredths, rounded down; all where one set does (an L1 of more than 16 ways)."""
    m = np.asarray(macs, dtype=np.int64)
    hundredths = 2 * round(100 * THRASH_PARTIAL) * g.ways // np.maximum(np.asarray(lines, dtype=np.int64), 1)
    return np.where(np.greater(lines, g.ways), m * hundredths // 100, m)


def _share(count: Any, share: float) -> Any:
    """``share`` of an integer count, in whole hundredths and rounded down, as every counter gives it."""
    return np.asarray(count, dtype=np.int64) * round(100 * share) // 100


def window_slow(out_w: Any, window: Any, stride: Any, geometry: CacheGeometry, *, depthwise_kw: Any = None) -> Any:
    """Whether a window row (a pool's, a depthwise conv's) of ``out_w`` outputs runs as scalar code that
    LLVM unrolled whole (AVX-512 code only; version 11): a stride-1 row of ``out_w * (window + POOL_BODY)
    <= POOL_UNROLL``, a strided row of fewer than ``STRIDED_VEC`` outputs. Measured on the AMD host
    (``benchmarks/window_rows.py``): such a window step costs 0.4-0.55 ns, against 0.04-0.09 ns in a
    vectorised stride-1 row and 0.07-0.16 ns in a vectorised strided one. A depthwise conv's row
    (``depthwise_kw``: its kernel width) of at most ``LANES`` outputs with ``kw * out_w <= DW_ROW`` is not
    (version 13: 0.13-0.21 ns per step); a max pool's row of that size is (0.32-0.48 ns)."""
    w, ow = np.asarray(window), np.asarray(out_w)
    slow = np.where(np.equal(stride, 1), ow * (w + POOL_BODY) <= POOL_UNROLL, np.less(ow, STRIDED_VEC))
    if depthwise_kw is not None:
        slow = slow & ~(np.less_equal(ow, LANES) & np.less_equal(np.asarray(depthwise_kw) * ow, DW_ROW))
    return slow & bool(geometry.avx512)


def pool_loops(out: Any, out_w: Any, window: Any, stride: Any, *, geometry: CacheGeometry) -> dict[str, Any]:
    """A windowed (max / avg) pooling: its whole window is short work. On AVX-512 code (version 11) a row
    unrolled whole (``window_slow``) is ``win_slow`` (``ew_slow`` before version 13), and every step of
    a stride-1 row otherwise is a vector step (measured on Zen 4: a row's tail costs no more); before, and on
    other CPUs, only a stride-1 row's whole ``LANES``-wide vectors are.

    Version 27 (AVX-512 code): a stride-1 row of one ``POOL_STEP``-output vector step and a tail of
    ``POOL_TAIL_MIN`` or more (20-31 outputs) counts the tail's window steps as ``short_scal``. Timed on the Zen 5
    host (max pools on ~200k inputs, ``benchmarks/window_rows.py --tails``), a 2 x 2 window step costs 0.047-0.058 ns
    in rows of 13-19 outputs and 0.048-0.066 from 33 up, but 0.081-0.094 in rows of 21, 23, 29 and 31 (0.058-0.065
    at 25 and 27); a 3 x 3 one 0.026-0.037 at 12-18 and 0.029-0.045 from 32 up, but 0.050-0.057 at 20, 22, 28 and 30.
    The sampled blocks' 28 x 28 stride-1 max pools (rows of 28 and 29) ran 0.65-0.74x their prediction in one fit of
    all 36 Zen 5 campaigns. Wider rows pay less for their tails (at most 1.5x per step, at 44 and 60 outputs), and
    counting them too over-predicted the 56- and 57-wide rows: they stay vector steps (docs/accuracy-log.md,
    "Version 27")."""
    win = np.asarray(out, dtype=np.int64) * window
    s1 = np.equal(stride, 1)
    slow = window_slow(out_w, window, stride, geometry)
    rows = out // np.maximum(out_w, 1)
    vec = np.where(s1, rows * (out_w // LANES * LANES) * window, 0)
    vec = np.where(slow, 0, np.where(s1 & bool(geometry.avx512), win, vec))
    tail = np.asarray(out_w) - POOL_STEP
    tailed = s1 & ~slow & np.greater_equal(tail, POOL_TAIL_MIN) & np.less(tail, POOL_STEP) & bool(geometry.avx512)
    vec = vec - np.where(tailed, rows * tail * window, 0)
    sl = np.where(slow, win, 0)
    return _out({"short_vec": vec, "short_scal": win - vec - sl, "win_slow": sl})


def footprint_loops(acts: Any, inp: Any, *, geometry: CacheGeometry) -> dict[str, Any]:
    """``acts_l2out``: the activations and inputs (``acts + inp`` elements) of a block (or a network's
    layer) whose float32 activations and inputs, ``4 * (acts + inp)`` bytes, exceed ``FOOTPRINT_L2`` times
    the L2 (none where the L2 is unknown). Timed again and again, a block whose tensors fit the L2s of the
    two cores finds them there; a larger one streams them from L3 on every run. Measured on the AMD
    host's pools (ns per input element, all campaigns): a 2 x 2 stride-1 max pool costs 0.28-0.30 ns at
    56 x 56 up to 256 channels and at 112 x 112 up to 64, then 0.37-0.70 ns as the footprint grows past
    ~8 MB; avg pools alike. On the Intel host a squeeze-excitation block costs 0.75 ns per input element
    while it fits its 2 MiB L2 and 1.2-1.3 ns past it. The bound is fitted, not read from the hardware:
    1-4 L2s all helped on both hosts' campaigns (docs/accuracy-log.md, "Versions 17 and 18").

    Version 17 counted the weights in the footprint too. A one-token MLP whose weights alone passed the
    bound then had a few thousand ``acts_l2out`` elements, and a fit whose only such block was that MLP
    (a 60-block campaign with its pools held out) priced them at 38 ns each: held-out pools of millions of
    elements were predicted 40-70x too slow. Weights have their own columns (``w_matmul``,
    ``w_tlbmiss``, ``mac_l2miss``); version 18 leaves them out here. Block-level, from two other columns,
    so every counter adds it the same way once it has ``acts`` and ``inp``."""
    elems = np.asarray(acts, dtype=np.int64) + np.asarray(inp, dtype=np.int64)
    over = np.greater(4 * elems, FOOTPRINT_L2 * geometry.l2) & (geometry.l2 > 0)
    return {"acts_l2out": _ints(np.where(over, elems, 0))}


def _ints(v: Any) -> Any:
    """A block-level count as its counters want it: a plain int for one block, an int64 array for many."""
    return int(v) if np.ndim(v) == 0 else np.asarray(v, dtype=np.int64)


def rw_elems(acts: Any, out: Any) -> Any:
    """``acts_rw``: the ``acts`` activations written, plus the ``acts - out`` of them that are read back (every op's
    output but the block's own; none below 0: a block whose output no op wrote)."""
    a = np.asarray(acts, dtype=np.int64)
    return _ints(a + np.maximum(a - np.asarray(out, dtype=np.int64), 0))


def block_loops(acts: Any, inp: Any, out: Any, *, geometry: CacheGeometry) -> dict[str, Any]:
    """The block-level loop columns, from a block's (or a network layer's) totals: ``acts_l2out``
    (``footprint_loops``) and ``acts_rw`` (``rw_elems``). Every counter adds them the same way once it has
    ``acts``, ``inp`` and ``out``."""
    return {**footprint_loops(acts, inp, geometry=geometry), "acts_rw": rw_elems(acts, out)}


def ew_loops_over(elems: int, shape: Any, nests: int = 1, *, geometry: CacheGeometry) -> dict[str, Any]:
    """``ew_loops`` of ``nests`` nests over a tensor of ``shape`` (a sequence of ints; empty for a scalar):
    its innermost extent is the width, the next one the height (1 for a vector or a scalar)."""
    shape = tuple(shape)
    return ew_loops(elems, int(shape[-1]) if shape else 1, nests, height=int(shape[-2]) if len(shape) >= 2 else 1,
                    geometry=geometry)


def ew_loops(elems: Any, width: Any, nests: Any = 1, *, height: Any, geometry: CacheGeometry) -> dict[str, Any]:
    """``nests`` elementwise loop nests (an op's, a BatchNorm's four, a pad copy's) of ``elems`` elements
    each, over a tensor whose innermost extent is ``width`` and the next one ``height`` (1 for a vector).

    LLVM unrolls an innermost loop of ``EW_MIN``..``EW_UNROLL`` iterations whole and then does not
    vectorise the nest along it: on the AMD host a ReLU, a multiply-add and an inference BatchNorm cost
    0.83 / 1.65 / 3.2 ns per element at widths 9-42 (to 49 for the two-op bodies), against
    0.09 / 0.19 / 0.33 ns at widths up to 8 (one vector) and from 43-56 up, at any number of rows
    (``benchmarks/elementwise_width.py``; version 10). A narrower nest is unrolled whole over its rows
    as well when the plane ``height x width`` is small: at 7 x 7, 4 x 4, 12 x 4, 14 x 4, 7 x 8, 8 x 2
    or 16 x 1 the three cost 0.83-1.1 / 1.6-2.2 / 3.3-3.8 ns again, at 16 x 7, 16 x 4, 16 x 8, 32 x 2
    or 64 x 1 and beyond the fast prices (``elementwise_width.py --planes``); after a conv, its
    BatchNorm and ReLU cost 4-8 ns per output at 4 x 4 and 7 x 7 against 0.4-0.75 at 56 x 56. So on
    AVX-512 code (version 12) a nest under ``EW_MIN`` wide over planes of ``EW_MIN``..``PLANE_UNROLL``
    elements is slow too. The bound is not exact: 12 x 7 (84) is slow and not counted, 8 x 8 (64) is
    slow for a multiply-add or a BatchNorm and not for a ReLU. Those elements are ``ew_slow``.
    """
    w = np.asarray(width)
    plane = w * np.asarray(height)
    slow = np.greater_equal(w, EW_MIN) & np.less_equal(w, EW_UNROLL)
    slow = slow | (bool(geometry.avx512) & np.less(w, EW_MIN) & np.greater_equal(plane, EW_MIN)
                   & np.less_equal(plane, PLANE_UNROLL))
    return _out({"ew_slow": np.where(slow, np.asarray(elems, dtype=np.int64) * nests, 0)})


def transc_elems(elems: Any, tenths: Any = 10) -> Any:
    """``ew_transc`` of an op of ``elems`` elements that each count ``tenths`` / 10 of a GELU's (rounded down; an int
    for ints, an int64 array for arrays)."""
    return elems * tenths // 10


def transc_loops(elems: Any, tenths: Any = 10) -> dict[str, Any]:
    """``ew_transc`` (version 20): the elements of an op that evaluates a transcendental function per element (GELU's
    ``erf``, a sigmoid's or a softmax's ``exp``, ``tanh``, ``log``), each counting ``tenths`` / 10 of a GELU's
    (``TRANSC_TENTHS``; rounded down). The untuned build evaluates each as a polynomial and a division, scalar: timed
    kernel by kernel on the AMD host (``benchmarks/kernel_breakdown.py``), a GELU costs ~4 ns per element at every
    size and a sigmoid ~2.4 ns, where a ReLU costs ~0.1 ns. Priced like any other element (``acts``, ``ew_slow``),
    ConvNeXt's 56 x 56 blocks, a fifth of whose time is GELU, were predicted at 0.65x and 0.78x held out, and the
    MLPs' GELU was priced into their matrix products (docs/accuracy-log.md, "Version 20")."""
    return _out({"ew_transc": transc_elems(elems, tenths)})


def pad_loops(planes: Any, h: Any, w: Any, pad_h: Any, pad_w: Any, *, geometry: CacheGeometry,
              pool: bool = False) -> dict[str, Any]:
    """The padded copy TVM makes of ``planes`` h x w input planes of a conv or pool (``pool``), ``pad_h`` /
    ``pad_w`` elements larger (both sides together): one elementwise nest ``w + pad_w`` wide (none without
    padding). A pool's counts nothing on AVX-512 code (version 11): there its pad nest costs nothing
    measurable (a pool 0.45 ns per input element with it, and a standalone pad 0.10-0.16 ns at any
    width, where a slow nest costs 0.8)."""
    if pool and geometry.avx512:
        return _out({})
    padded = np.greater(pad_h, 0) | np.greater(pad_w, 0)
    return ew_loops(np.where(padded, planes * (h + pad_h) * (w + pad_w), 0), w + pad_w, height=h + pad_h,
                    geometry=geometry)


def reduce_loops(in_elems: Any, window: Any) -> dict[str, Any]:
    """A reduction that is not windowed pooling (a global mean, sum, max) of ``in_elems`` input
    elements, ``window`` of them per output: one dependent step per element (none for ``window`` 1,
    a copy)."""
    return _out({"red_chain": np.where(np.greater(window, 1), in_elems, 0)})
