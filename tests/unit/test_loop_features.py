"""Loop-nest features: hand-counted cases, arrays equal to scalars, and the counter's per-op sums."""

import numpy as np
import pytest
import torch

from tvmlat.features import count_features
from tvmlat.loop_features import (CHAIN_OVERLAP, DEFAULT_GEOMETRY, LANES, CacheGeometry, LOOP_COLUMNS, SHORT, UNROLL_WIN,
                                  block_loops, chain_steps, conv_loops, ew_loops, l1_lines, matmul_loops, pool_loops)

G = DEFAULT_GEOMETRY  # 32 KiB 8-way: 64 sets of 8 lines


def test_a_long_reduction_is_split_at_short():
    # (64 x 100) @ (100 x 20): 1280 outputs, 100 steps each; 20 columns -> 16 of them in vectors
    f = matmul_loops(out=64 * 20, red=100, cols=20, b_elems=100 * 20, weight=True, geometry=G)
    assert f["mac_excess"] == 1280 * (100 * 100 // 170)  # version 16: the next chain hides 70 * 100 / 170 steps
    assert f["short_vec"] == 64 * 16 * SHORT and f["short_scal"] == 64 * 4 * SHORT
    assert f["mac_l1miss_exc"] == 0 and f["w_tlbmiss"] == 0  # B's 80-byte stride fits L1, 8 KB spans 2 pages


@pytest.mark.parametrize("red,exposed", [(1, 0), (32, 0), (33, 10), (40, 14), (48, 19), (64, 30), (72, 36), (96, 55),
                                         (128, 82), (512, 450), (4608, 4539)])
def test_chain_steps_the_next_chain_hides_most_of_a_short_one_and_up_to_70_steps(red, exposed):
    """Version 16: a chain past SHORT exposes red**2 // (red + 70) steps. Measured on znver4 (ns per output,
    ~1.05 ns per exposed step): 1x1 convs 13.1 / 18.0 / 32.2 / 59.7 at 40 / 48 / 64 / 96 steps, batched
    matmuls 80.8 / 496 at k = 128 / 512. A depthwise window's short part is longer (SHORT_DW)."""
    assert CHAIN_OVERLAP == 70 and SHORT == 32
    assert chain_steps(red) == exposed
    assert chain_steps(red, 49) == (0 if red <= 49 else exposed)
    assert red - exposed <= CHAIN_OVERLAP  # never more than CHAIN_OVERLAP steps hidden
    arr = chain_steps(np.array([1, 33, 128, 512]))
    assert arr.tolist() == [0, 10, 82, 450]


def test_a_longer_overlap_hides_more_of_every_chain():
    """Version 23: the steps a chain hides (at most ``overlap``) are the host's geometry's ``chain_overlap``, which
    convs and matmuls count with; 70 is the default every earlier version counted with."""
    red = np.array([33, 64, 128, 512, 4608])
    assert (chain_steps(red, overlap=70) == chain_steps(red)).all()
    wide = chain_steps(red, overlap=140)
    assert (wide < chain_steps(red)).all() and (red - wide <= 140).all() and (red - wide > 70).any()
    assert wide.tolist() == (red * red // (red + 140)).tolist()
    z5 = G.with_overlap(140)
    conv = dict(out=1000, out_w=10, cin_per_group=64, kh=1, kw=1, stride=1, in_h=10, in_w=10, depthwise=False)
    assert conv_loops(**conv, geometry=z5)["mac_excess"] == 1000 * chain_steps(64, overlap=140)
    assert conv_loops(**conv, geometry=G)["mac_excess"] == 1000 * chain_steps(64)
    mm = dict(out=512, red=128, cols=64, b_elems=128 * 64, weight=True)
    assert matmul_loops(**mm, geometry=z5)["mac_excess"] == 512 * chain_steps(128, overlap=140) < \
        matmul_loops(**mm, geometry=G)["mac_excess"]


def test_strided_columns_miss_l1_and_the_tlb():
    # a 4096-column B: each step of the reduction jumps 16 KB -> one L1 set, 8 ways; 1024 steps span 4096 pages
    assert l1_lines(4 * 4096, G) == 8
    f = matmul_loops(out=4096, red=1024, cols=4096, b_elems=1024 * 4096, weight=True, geometry=G)
    assert f["mac_l1miss_exc"] == f["mac_excess"] > 0
    assert f["w_tlbmiss"] == 1024 * 4096


def test_l1_lines_by_stride():
    assert l1_lines(4, G) == 64 * 8 * 64 // 4  # sub-line strides: many elements per line
    assert l1_lines(100, G) == 64 * 8  # not a multiple of the line: spread over all sets
    assert l1_lines(64 * 64, G) == 8  # every line in one set
    assert l1_lines(64 * 2, G) == 32 * 8


def test_conv_stride_and_depthwise():
    # depthwise 5x5 (25 steps) is short whatever its size; stride 2 is never vectorised
    no512 = CacheGeometry(avx512=False)
    dw = conv_loops(out=32 * 14 * 14, out_w=14, cin_per_group=1, kh=5, kw=5, stride=2, in_h=28, in_w=28,
                    depthwise=True, geometry=no512)
    assert dw["mac_excess"] == 0 and dw["short_vec"] == 0 and dw["short_scal"] == 32 * 14 * 14 * 25
    assert dw["ew_slow"] == dw["win_slow"] == 0
    # AVX-512 code (version 11): a strided depthwise row of fewer than 16 outputs runs scalar, unrolled whole;
    # its window steps are win_slow (version 13), not ew_slow
    for out_w, slow in [(14, True), (15, True), (16, False), (28, False)]:
        f = conv_loops(out=32 * out_w * out_w, out_w=out_w, cin_per_group=1, kh=5, kw=5, stride=2, in_h=2 * out_w,
                       in_w=2 * out_w, depthwise=True, geometry=G)
        steps = 32 * out_w * out_w * 25
        assert f["win_slow"] == (steps if slow else 0) and f["short_scal"] == (0 if slow else steps)
        assert f["ew_slow"] == 0
    # not at stride 1, not for a 1x1 window, not for a dense conv with a chain (version 25 below: one without is)
    for kw in [dict(stride=1, kh=5, kw=5, depthwise=True), dict(stride=2, kh=1, kw=1, depthwise=True),
               dict(stride=2, kh=3, kw=3, depthwise=False, cin_per_group=8)]:
        kw = {"cin_per_group": 1, **kw}
        assert conv_loops(out=32 * 14 * 14, out_w=14, in_h=28, in_w=28, geometry=G, **kw)["win_slow"] == 0


@pytest.mark.parametrize("cin, k, groups_of, out_w, stride, slow", [
    (16, 1, 16, 14, 2, True), (24, 1, 24, 7, 2, True), (32, 1, 32, 15, 2, True),  # 1x1, all short, rows < 16
    (3, 3, 3, 14, 2, True), (4, 3, 4, 7, 2, True),  # a 3x3 window unrolled whole (27 / 36 steps)
    (64, 1, 16, 14, 2, True),  # grouped: 16 channels a group
    (16, 1, 16, 16, 2, False), (16, 1, 16, 28, 2, False),  # rows of 16 and more are vectorised
    (16, 1, 16, 14, 1, False),  # stride 1: vectorised (short_vec) at any width
    (48, 1, 48, 14, 2, False), (8, 3, 8, 14, 2, False),  # a chain (48 / 72 steps) costs its rate at any width
])
def test_a_strided_conv_with_a_short_reduction_in_narrow_rows_is_slow(cin, k, groups_of, out_w, stride, slow):
    """Version 25 (Zen 5, docs/accuracy-log.md): a 1 x 1 stride-2 conv of 8-32 channels costs 0.22-0.44 ns per
    multiply-add in rows of 7-14 outputs against 0.07-0.09 from 18; its short steps are then win_slow. Only on
    AVX-512 code, and never for a depthwise conv (version 13's rule)."""
    out = 64 * out_w * out_w
    args = dict(out=out, out_w=out_w, cin_per_group=groups_of, kh=k, kw=k, stride=stride, in_h=stride * out_w,
                in_w=stride * out_w, depthwise=False)
    f = conv_loops(**args, geometry=G)
    short = out * groups_of * k * k if slow else 0
    assert f["win_slow"] == short and f["ew_slow"] == 0
    plain = conv_loops(**args, geometry=CacheGeometry(avx512=False))
    assert plain["win_slow"] == 0
    assert f["short_scal"] + f["win_slow"] + f["short_vec"] == plain["short_scal"] + plain["short_vec"]
    assert f["mac_excess"] == plain["mac_excess"]


@pytest.mark.parametrize("k,out_w,slow", [(3, 4, False), (3, 7, False), (3, 8, False), (3, 9, True), (3, 14, True),
                                          (5, 4, False), (5, 5, False), (5, 6, True), (5, 7, True), (7, 4, False),
                                          (7, 5, True), (7, 7, True)])
def test_a_short_strided_depthwise_row_is_not_slow(k, out_w, slow):
    """Version 13 (``benchmarks/window_rows.py``): strided 3 x 3 rows of 4-8 outputs and 5 x 5 / 7 x 7 rows of 4
    cost 0.13-0.21 ns per window step, like vectorised rows; 5 x 5 rows of 6-7 and 7 x 7 rows of 5-7 outputs
    0.38-0.49 ns. A row of at most LANES outputs with kw * out_w <= DW_ROW is short scalar work."""
    out, steps = 16 * out_w * out_w, 16 * out_w * out_w * k * k
    f = conv_loops(out=out, out_w=out_w, cin_per_group=1, kh=k, kw=k, stride=2, in_h=2 * out_w, in_w=2 * out_w,
                   depthwise=True, geometry=G)
    assert f["win_slow"] == (steps if slow else 0) and f["short_scal"] == (0 if slow else steps)
    # the same row of a max pool stays slow (0.32-0.38 ns per step measured)
    assert pool_loops(out=out, out_w=out_w, window=k * k, stride=2, geometry=G)["win_slow"] == steps
    dense = conv_loops(out=16 * 16 * 16, out_w=16, cin_per_group=8, kh=3, kw=3, stride=1, in_h=16, in_w=16,
                       depthwise=False, geometry=G)
    assert dense["mac_excess"] == 16 * 16 * 16 * (72 * 72 // 142)  # a 72-step chain: 36 steps exposed
    assert dense["short_vec"] == 16 * 16 * 16 * SHORT and dense["short_scal"] == 0  # 16 wide: two whole vectors


@pytest.mark.parametrize("cpg,k,unrolled", [(7, 3, True), (8, 3, False), (2, 5, True), (3, 5, False), (1, 7, True),
                                             (2, 7, False), (40, 1, False), (12, 2, False), (4, 3, True)])
def test_a_window_of_3x3_or_more_is_unrolled_whole_up_to_64_steps(cpg, k, unrolled):
    """Version 9: 3x3 cin 7 (63 steps), 5x5 cin 2 (50), 7x7 cin 1 (49) and 3x3 with 4 channels per
    group (ResNeXt) are all short work, the steps past 32 scalar; one step more than the window
    allows, a 1x1 conv past 32 or a 2x2 window at 48 is a loop split at SHORT as before (its chain's exposed
    steps counted by ``chain_steps``, version 16)."""
    out, red = 16 * 16 * 16, cpg * k * k
    f = conv_loops(out=out, out_w=16, cin_per_group=cpg, kh=k, kw=k, stride=1, in_h=16, in_w=16, depthwise=False,
                   geometry=G)
    assert f["short_vec"] == out * min(red, SHORT)  # rows 16 wide: the first SHORT steps in vectors
    if unrolled:  # every step counted once, as short work
        assert red <= UNROLL_WIN and f["mac_excess"] == 0 and f["short_scal"] == out * max(red - SHORT, 0)
        assert f["short_vec"] + f["short_scal"] == out * red
    else:
        assert f["mac_excess"] == out * chain_steps(red) > 0 and f["short_scal"] == 0


def test_counter_counts_resnext_grouped_convs_as_unrolled():
    grouped = torch.nn.Conv2d(128, 128, 3, padding=1, groups=32, bias=False)  # 4 channels per group: 36 steps
    f = count_features(grouped, (torch.randn(1, 128, 16, 16),), geometry=G)  # rows of whole vectors
    assert f["mac_excess"] == 0 and f["short_scal"] == 128 * 16 * 16 * (36 - SHORT)
    wider = torch.nn.Conv2d(256, 256, 3, padding=1, groups=32, bias=False)  # 8 per group: 72 steps, a loop
    assert count_features(wider, (torch.randn(1, 256, 14, 14),), geometry=G)["mac_excess"] == 256 * 14 * 14 * 36


def test_pool_window_is_short_work():
    # without AVX-512 (version 10's rule): a stride-1 row's whole vectors are vector steps, the tail scalar
    f = pool_loops(out=8 * 12 * 12, out_w=12, window=9, stride=1, geometry=CacheGeometry(avx512=False))
    assert f["mac_excess"] == 0 and f["ew_slow"] == f["win_slow"] == 0
    assert f["short_vec"] == 8 * 12 * LANES * 9 and f["short_vec"] + f["short_scal"] == 8 * 12 * 12 * 9
    # AVX-512 code: the tail is vectorised too
    f = pool_loops(out=8 * 12 * 12, out_w=12, window=9, stride=1, geometry=G)
    assert f["short_vec"] == 8 * 12 * 12 * 9 and f["short_scal"] == f["win_slow"] == 0


@pytest.mark.parametrize("out_w,window,stride,slow", [
    (11, 4, 1, True), (12, 4, 1, False),   # 2x2, stride 1: 11 * 12 = 132 <= 136 unrolled, 12 * 12 = 144 not
    (8, 9, 1, True), (9, 9, 1, False),     # 3x3: 8 * 17 = 136 unrolled, 9 * 17 = 153 not
    (15, 9, 2, True), (16, 9, 2, False),   # strided: vectorised from 16 outputs
    (4, 4, 2, True), (28, 4, 2, False)])
def test_a_window_row_unrolled_whole_is_slow_on_avx512(out_w, window, stride, slow):
    """Version 11 (``benchmarks/window_rows.py``): such rows cost 0.4-0.55 ns per step, the others
    0.04-0.16; every step is counted once; without AVX-512 no row is slow."""
    out = 16 * out_w * out_w
    f = pool_loops(out=out, out_w=out_w, window=window, stride=stride, geometry=G)
    assert f["win_slow"] == (out * window if slow else 0) and f["ew_slow"] == 0
    assert f["short_vec"] + f["short_scal"] + f["win_slow"] == out * window
    if not slow:
        assert f[("short_vec" if stride == 1 else "short_scal")] == out * window
    assert pool_loops(out=out, out_w=out_w, window=window, stride=stride,
                      geometry=CacheGeometry(avx512=False))["win_slow"] == 0


@pytest.mark.parametrize("out_w,window,stride,tail", [
    (20, 4, 1, 4), (21, 4, 1, 5), (28, 9, 1, 12), (29, 4, 1, 13), (31, 4, 1, 15),  # one 16-output step and a tail
    (19, 4, 1, 0), (16, 9, 1, 0), (32, 9, 1, 0), (33, 4, 1, 0), (57, 4, 1, 0),     # tail under 4, none, wider rows
    (28, 9, 2, 0), (29, 4, 2, 0)])                                                  # strided rows: short_scal anyway
def test_a_stride1_pool_rows_tail_past_one_vector_step_is_scalar(out_w, window, stride, tail):
    """Version 27 (``benchmarks/window_rows.py --tails``): on AVX-512 code the window steps of a stride-1 row's
    tail past 16 outputs, 4 to 15 of them, are ``short_scal``; every step is still counted once; not without
    AVX-512, where version 10's rule holds."""
    rows = 8 * out_w
    out = rows * out_w
    f = pool_loops(out=out, out_w=out_w, window=window, stride=stride, geometry=G)
    assert f["short_vec"] + f["short_scal"] + f["win_slow"] == out * window and f["win_slow"] == 0
    if stride == 1:
        assert f["short_scal"] == rows * tail * window
    plain = pool_loops(out=out, out_w=out_w, window=window, stride=stride, geometry=CacheGeometry(avx512=False))
    assert plain["short_vec"] == (rows * (out_w // LANES * LANES) * window if stride == 1 else 0)
    arr = pool_loops(out=np.array([out, out]), out_w=np.array([out_w, out_w]), window=window, stride=stride,
                     geometry=G)
    assert arr["short_scal"].tolist() == [f["short_scal"]] * 2


@pytest.mark.parametrize("k,stride,out_w,depthwise,moved", [
    (7, 1, 56, True, True), (6, 1, 28, True, True), (7, 1, 14, True, True),  # 49 and 36 steps, vectorised rows
    (5, 1, 56, True, False), (3, 1, 56, True, False),                       # 25 steps or fewer
    (7, 1, 56, False, False),                                               # a dense conv
    (7, 2, 28, True, False), (7, 2, 7, True, False)])                       # strided rows: no vector steps
def test_a_large_depthwise_windows_vector_steps_are_scalar(k, stride, out_w, depthwise, moved, monkeypatch):
    """Version 28 (``benchmarks/window_rows.py --dw-kernels``): on AVX-512 code the vector steps of a depthwise
    window of more than 25 steps count as ``short_scal``; the other columns are version 27's; not without AVX-512."""
    import tvmlat.loop_features as lf

    conv = dict(out=16 * out_w * out_w, out_w=out_w, cin_per_group=1 if depthwise else 4, kh=k, kw=k, stride=stride,
                in_h=stride * out_w, in_w=stride * out_w, depthwise=depthwise, padded=True)
    noavx = CacheGeometry(avx512=False)
    f, plain = conv_loops(**conv, geometry=G), conv_loops(**conv, geometry=noavx)
    arr = conv_loops(**{**conv, "out": np.array([conv["out"]] * 2)}, geometry=G)
    monkeypatch.setattr(lf, "DW_REG_WIN", 10 ** 6)  # the rule off: version 27's counts
    v27, plain27 = conv_loops(**conv, geometry=G), conv_loops(**conv, geometry=noavx)
    assert plain == plain27
    assert {c: f[c] for c in f if c not in ("short_vec", "short_scal")} == \
        {c: v27[c] for c in v27 if c not in ("short_vec", "short_scal")}
    assert f["short_vec"] + f["short_scal"] == v27["short_vec"] + v27["short_scal"]
    if moved:
        assert v27["short_vec"] > 0 and f["short_vec"] == 0
    else:
        assert f == v27
    assert arr["short_scal"].tolist() == [f["short_scal"]] * 2


def test_arrays_equal_scalars():
    rng = np.random.default_rng(0)
    out, red, cols = rng.integers(1, 5000, 50), rng.integers(1, 3000, 50), rng.integers(1, 5000, 50)
    arr = matmul_loops(out * cols, red, cols, red * cols, weight=True, geometry=G)
    for i in range(50):
        one = matmul_loops(int(out[i] * cols[i]), int(red[i]), int(cols[i]), int(red[i] * cols[i]), weight=True, geometry=G)
        assert {k: int(arr[k][i]) for k in LOOP_COLUMNS} == one


@pytest.mark.parametrize("stride", [1, 2])
def test_counter_sums_conv_and_linear(stride):
    m = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, stride=stride, padding=1, bias=False), torch.nn.Flatten(),
                            torch.nn.Linear(8 * (16 // stride) ** 2, 10))
    f = count_features(m, (torch.randn(2, 4, 16, 16),))
    ho = 16 // stride
    conv = conv_loops(2 * 8 * ho * ho, ho, 4, 3, 3, stride, 16, 16, False, geometry=G)
    fc = matmul_loops(2 * 10, 8 * ho * ho, 10, 8 * ho * ho * 10, weight=True, geometry=G)
    pad = ew_loops(2 * 4 * 18 * 18, 18, height=18, geometry=G)  # the 18-wide padded copy: unrolled whole (version 10)
    ops = {c: conv[c] + fc[c] + pad[c] for c in LOOP_COLUMNS}
    ops.update(block_loops(f["acts"], f["inp"], f["out"], geometry=G))  # the block-level columns, from its totals
    assert {c: f[c] for c in LOOP_COLUMNS} == ops
    assert f["acts_rw"] == 2 * f["acts"] - f["out"] > f["acts"]  # every op's output read again but the block's


@pytest.mark.parametrize("width, slow", [(1, False), (8, False), (9, True), (28, True), (48, True), (49, False),
                                         (56, False), (112, False)])
def test_elementwise_nests_9_to_48_wide_are_counted(width, slow):
    """Measured on the AMD host (benchmarks/elementwise_width.py): a ReLU / multiply-add / BatchNorm over
    rows 9-42 (49) wide costs ~9x what it does at 8 or 56 wide; those elements are ew_slow."""
    x = torch.randn(1, 16, 64, width)  # 64 rows: planes of 64+ elements, which no width below 9 makes slow
    relu = count_features(torch.nn.ReLU(), (x,))
    bn = count_features(torch.nn.BatchNorm2d(16).eval(), (x,))
    assert relu["ew_slow"] == (x.numel() if slow else 0)
    assert bn["ew_slow"] == (4 * x.numel() if slow else 0)  # subtract, divide, multiply, add: four nests
    assert ew_loops(np.array([10, 10]), np.array([width, 64]), 2, height=64, geometry=G)["ew_slow"].tolist() == [20 * slow, 0]


@pytest.mark.parametrize("h,w,slow", [(7, 7, True), (4, 4, True), (12, 4, True), (8, 7, True), (2, 8, True),
                                      (8, 8, False), (16, 4, False), (100, 7, False), (2, 2, False), (1, 8, False),
                                      (1, 1, False), (4, 56, False), (1, 14, True), (64, 14, True)])
def test_a_narrow_nest_over_a_small_plane_is_slow_on_avx512(h, w, slow):
    """Version 12 (elementwise_width.py --planes): under 9 wide, a nest over planes of 9-56 elements is
    unrolled whole over its rows too and costs what a 9-48-wide nest does; 8 x 8 and beyond do not.
    Without AVX-512 only the width rule counts."""
    x = torch.randn(1, 16, h, w)
    assert count_features(torch.nn.ReLU(), (x,), geometry=G)["ew_slow"] == (x.numel() if slow else 0)
    assert count_features(torch.nn.BatchNorm2d(16).eval(), (x,), geometry=G)["ew_slow"] == (4 * x.numel() if slow else 0)
    no512 = count_features(torch.nn.ReLU(), (x,), geometry=CacheGeometry(avx512=False))["ew_slow"]
    assert no512 == (x.numel() if 9 <= w <= 48 else 0)
    # a conv's padded copy follows the same rule: 5 x 5 padded to 7 x 7 is slow, its 9-wide pad too
    conv = count_features(torch.nn.Conv2d(16, 16, 3, padding=1, bias=False), (torch.randn(1, 16, 5, 5),), geometry=G)
    assert conv["ew_slow"] == 16 * 7 * 7


def test_pools_count_their_pad_copy_and_an_average_its_divide():
    x = torch.randn(1, 8, 14, 14)  # padded 16 wide; 2x2 stride 1, padding 1: 15 wide out
    no512 = CacheGeometry(avx512=False)
    mx = count_features(torch.nn.MaxPool2d(2, 1, padding=1), (x,), geometry=no512)
    avg = count_features(torch.nn.AvgPool2d(2, 1, padding=1), (x,), geometry=no512)
    assert mx["ew_slow"] == 8 * 16 * 16
    assert avg["ew_slow"] == 8 * 16 * 16 + 8 * 15 * 15
    # AVX-512 code (version 11): the pad copy costs nothing measurable; the divide nest still counts
    assert count_features(torch.nn.MaxPool2d(2, 1, padding=1), (x,), geometry=G)["ew_slow"] == 0
    assert count_features(torch.nn.AvgPool2d(2, 1, padding=1), (x,), geometry=G)["ew_slow"] == 8 * 15 * 15
    # a 7x7 input: the 8-wide stride-1 row is unrolled whole, its steps are slow window steps
    small = count_features(torch.nn.MaxPool2d(2, 1, padding=1), (torch.randn(1, 8, 7, 7),), geometry=G)
    assert small["win_slow"] == 8 * 8 * 8 * 4 and small["ew_slow"] == 0
    unpadded = count_features(torch.nn.AvgPool2d(2, 2), (torch.randn(1, 8, 112, 112),))  # 56 wide out
    assert unpadded["ew_slow"] == 0


def test_a_matmul_whose_b_fills_the_l2_counts_its_multiply_adds():
    from tvmlat.loop_features import CacheGeometry

    g = CacheGeometry(64, 12, 64, l2=2 * 2**20)
    # B of 512 x 1024 floats is exactly 2 MiB: with the rows it meets it does not fit
    big = matmul_loops(out=16 * 1024, red=512, cols=1024, b_elems=512 * 1024, weight=True, geometry=g)
    assert big["mac_l2miss"] == 16 * 1024 * 512
    small = matmul_loops(out=16 * 1000, red=512, cols=1000, b_elems=512 * 1000, weight=True, geometry=g)  # 1.95 MiB
    assert small["mac_l2miss"] == 0
    # no L2 size known (0): never
    assert matmul_loops(out=16 * 1024, red=512, cols=1024, b_elems=512 * 1024, weight=True, geometry=G)["mac_l2miss"] == 0
    conv = conv_loops(out=64 * 56 * 56, out_w=56, cin_per_group=512, kh=3, kw=3, stride=1, in_h=56, in_w=56,
                      depthwise=False, geometry=g)
    assert conv["mac_l2miss"] == 0  # a conv's weights are walked contiguously, not by column


def test_a_linear_layers_weights_count_once_per_call_a_bmm_has_none():
    one = matmul_loops(out=1 * 256, red=128, cols=256, b_elems=128 * 256, weight=True, geometry=G)
    many = matmul_loops(out=16 * 256, red=128, cols=256, b_elems=128 * 256, weight=True, geometry=G)
    assert one["w_matmul"] == many["w_matmul"] == 128 * 256  # whatever the rows
    assert matmul_loops(out=16 * 256, red=128, cols=256, b_elems=4 * 128 * 256, weight=False, geometry=G)["w_matmul"] == 0
    lin = count_features(torch.nn.Linear(128, 256), (torch.randn(3, 128),))
    assert lin["w_matmul"] == 128 * 256
    bmm = count_features(_Bmm(), (torch.randn(2, 8, 16), torch.randn(2, 16, 4)))
    assert bmm["w_matmul"] == 0


class _Bmm(torch.nn.Module):
    def forward(self, a, b):
        return torch.matmul(a, b)


def test_a_global_mean_is_a_chain_per_output_and_nothing_else_counts_one():
    from tvmlat.loop_features import reduce_loops

    f = reduce_loops(in_elems=2 * 16 * 7 * 7, window=49)
    assert f["red_chain"] == 2 * 16 * 7 * 7
    assert all(f[c] == 0 for c in LOOP_COLUMNS if c != "red_chain")
    assert reduce_loops(in_elems=64, window=1)["red_chain"] == 0  # one element per output: a copy, no chain
    assert pool_loops(out=8 * 12 * 12, out_w=12, window=9, stride=1, geometry=G)["red_chain"] == 0  # windowed pooling
    assert conv_loops(64, 8, 4, 3, 3, 1, 8, 8, False, geometry=G)["red_chain"] == 0
    assert matmul_loops(64, 40, 8, 320, weight=True, geometry=G)["red_chain"] == 0


@pytest.mark.parametrize("reduce", ["adaptive", "mean", "amax"])
def test_counter_counts_a_global_reduction_in_red_chain(reduce):
    class Head(torch.nn.Module):
        def forward(self, x):
            if reduce == "adaptive":
                w = torch.nn.functional.adaptive_avg_pool2d(x, 1)
            elif reduce == "mean":
                w = x.mean(dim=(2, 3), keepdim=True)
            else:
                w = x.amax(dim=(2, 3), keepdim=True)
            return x * torch.sigmoid(w)

    f = count_features(Head(), (torch.randn(2, 6, 5, 5),))
    assert f["red_chain"] == 2 * 6 * 5 * 5
    assert f["mac_excess"] == f["short_vec"] == f["short_scal"] == 0


def test_a_column_walk_that_l1_holds_few_lines_of_charges_every_multiply_add():
    from tvmlat.loop_features import THRASH_LINES, CacheGeometry

    # 1024 columns: a 4 KiB stride, one set of the default 64-set 8-way L1 -> 8 lines; 64 steps miss
    f = matmul_loops(out=16 * 1024, red=64, cols=1024, b_elems=64 * 1024, weight=True, geometry=G)
    assert l1_lines(4 * 1024, G) == 8 <= THRASH_LINES
    assert f["mac_l1thrash"] == 16 * 1024 * 64  # all steps, the short ones too
    # 512 and 1536 columns (2 and 6 KiB: two sets, 16 lines) count 0.7 of their steps (version 19);
    # 256 (1 KiB, 32 lines), 768 (3 KiB) and 1000 (not whole lines) none
    for cols in (512, 1536):
        assert l1_lines(4 * cols, G) == 16
        f = matmul_loops(16 * cols, 64, cols, 64 * cols, weight=True, geometry=G)
        assert f["mac_l1thrash"] == 16 * cols * 64 * 7 // 10
    assert matmul_loops(16 * 2048, 64, 2048, 64 * 2048, weight=True, geometry=G)["mac_l1thrash"] == 16 * 2048 * 64
    for cols in (256, 768, 1000):
        assert matmul_loops(16 * cols, 192, cols, 192 * cols, weight=True, geometry=G)["mac_l1thrash"] == 0
    # a reduction the L1 holds (8 steps) does not miss, so nothing is charged
    assert matmul_loops(16 * 1024, 8, 1024, 8 * 1024, weight=True, geometry=G)["mac_l1thrash"] == 0
    # a 12-way L1 keeps 24 lines of a 2 KiB stride: only the 4 KiB one (12 lines) counts
    g12 = CacheGeometry(64, 12, 64)
    assert matmul_loops(16 * 512, 64, 512, 64 * 512, weight=True, geometry=g12)["mac_l1thrash"] == 0
    assert matmul_loops(16 * 1024, 64, 1024, 64 * 1024, weight=True, geometry=g12)["mac_l1thrash"] == 16 * 1024 * 64


def test_a_host_whose_longer_walks_thrash_counts_them_apart_by_the_sets_that_hold_them():
    """Version 24: walks past THRASH_LINES (16) up to the geometry's ``thrash_lines`` (16, none, where none is
    recorded) count in mac_l1thrash_far, a walk that k sets hold 2 / k of THRASH_PARTIAL of its multiply-adds (two
    sets 0.7, four 0.35); mac_l1thrash stays version 23's. Convs count CONV_THRASH of the same."""
    from tvmlat.loop_features import CONV_THRASH, CacheGeometry, far_macs

    g12 = CacheGeometry(64, 12, 64)
    z5 = g12.with_overlap(70, 48)

    def cols(n, g):
        f = matmul_loops(16 * n, 64, n, 64 * n, weight=True, geometry=g)
        return f["mac_l1thrash"], f["mac_l1thrash_far"]

    # 1024 columns (4 KiB, one set, 12 lines): mac_l1thrash, all of them, at any reach
    assert cols(1024, g12) == cols(1024, z5) == (16 * 1024 * 64, 0)
    # 512 columns (2 KiB, two sets, 24 lines) and 256 / 768 (1 / 3 KiB, four sets, 48 lines): far, where they reach
    assert l1_lines(4 * 512, g12) == 24 and l1_lines(4 * 256, g12) == l1_lines(4 * 768, g12) == 48
    assert cols(512, g12) == (0, 0) and cols(512, z5) == (0, 16 * 512 * 64 * 70 // 100)
    assert cols(512, g12.with_overlap(70, 24)) == cols(512, z5) and cols(256, g12.with_overlap(70, 24)) == (0, 0)
    for n in (256, 768):
        assert cols(n, g12) == (0, 0) and cols(n, z5) == (0, 16 * n * 64 * 35 // 100)
    assert cols(1000, z5) == (0, 0)  # not whole lines apart: every set holds it
    # an 8-way L1: its two-set walks (16 lines) stay in mac_l1thrash at 0.7; four sets (32) are far at 0.35
    assert cols(512, G.with_overlap(70, 32)) == cols(512, G) == (16 * 512 * 64 * 70 // 100, 0)
    assert cols(256, G) == (0, 0) and cols(256, G.with_overlap(70, 32)) == (0, 16 * 256 * 64 * 35 // 100)
    assert far_macs(1000, 24, g12) == 700 and far_macs(1000, 48, g12) == 350 and far_macs(1000, 24, CacheGeometry(
        64, 24, 64)) == 1000  # one set of a 24-way L1 is 24 lines: all of them
    # a conv walking 112 x 112 planes (49 KiB apart: four sets of the 12-way L1), 64 of them
    conv = dict(out=64 * 112 * 112, out_w=112, cin_per_group=64, kh=1, kw=1, stride=1, in_h=112, in_w=112,
                depthwise=False)
    assert conv_loops(**conv, geometry=g12)["mac_l1thrash_far"] == 0
    f = conv_loops(**conv, geometry=z5)
    whole = 64 * 112 * 112 * 64
    assert f["mac_l1thrash"] == 0 and f["mac_l1thrash_far"] == whole * 35 // 100 * round(100 * CONV_THRASH) // 100
    assert conv_loops(**conv, padded=True, geometry=z5)["mac_l1thrash_far"] == 0  # TVM walks its padded copy


def test_a_block_whose_footprint_exceeds_two_l2s_counts_its_activations_and_inputs():
    from tvmlat.loop_features import FOOTPRINT_L2, footprint_loops

    g = CacheGeometry(64, 8, 64, l2=2**20)
    bound = FOOTPRINT_L2 * g.l2 // 4  # elements
    assert footprint_loops(bound - 100, 100, geometry=g)["acts_l2out"] == 0  # exactly the bound: fits
    assert footprint_loops(bound - 100, 101, geometry=g)["acts_l2out"] == bound + 1  # acts + inp
    assert footprint_loops(bound, 1, geometry=G)["acts_l2out"] == 0  # no L2 size known: never
    arr = footprint_loops(np.array([10, bound]), np.array([1, 1]), geometry=g)["acts_l2out"]
    assert arr.tolist() == [0, bound + 1]


def test_weights_past_two_l2s_do_not_make_a_small_block_count_acts_l2out():
    """Version 18: a one-token layer whose weights alone pass the bound has a few thousand activations;
    counted (version 17), they gave a fit one lever to price them at tens of ns each."""
    g = CacheGeometry(64, 12, 64, l2=2 * 2**20)
    mlp = torch.nn.Sequential(torch.nn.Linear(384, 1536), torch.nn.GELU(), torch.nn.Linear(1536, 384))
    f = count_features(mlp, (torch.randn(1, 384),), geometry=g)
    assert 4 * f["params"] > 2 * g.l2 and f["acts_l2out"] == 0


@pytest.mark.parametrize("hw, counted", [(32, False), (112, True)])
def test_counter_counts_a_large_pool_in_acts_l2out(hw, counted):
    g = CacheGeometry(64, 8, 64, l2=2**20)
    x = torch.randn(1, 64, hw, hw)  # 112: 3.2 MB in, 3.2 MB out, past the 2 MiB of two L2s; 32: 0.5 MB
    f = count_features(torch.nn.MaxPool2d(2, 1), (x,), geometry=g)
    assert f["acts_l2out"] == ((f["acts"] + f["inp"]) if counted else 0)
    assert count_features(torch.nn.MaxPool2d(2, 1), (x,), geometry=G)["acts_l2out"] == 0


@pytest.mark.parametrize("module, shape, elems", [
    (torch.nn.GELU(), (1, 8, 16), 128),
    (torch.nn.Sigmoid(), (2, 5), 6),  # an exp and a division: 0.6 of a GELU's element
    (torch.nn.SiLU(), (1, 3, 4, 4), 48 * 6 // 10),
    (torch.nn.Tanh(), (1, 3, 4, 4), 48),
    (torch.nn.Softmax(-1), (2, 6, 6), 72),
    (torch.nn.ReLU(), (1, 8, 16), 0),
    (torch.nn.Hardswish(), (1, 8, 16), 0),  # piecewise linear: no exp
    (torch.nn.LayerNorm(16), (1, 8, 16), 0),  # one rsqrt per row, not per element
])
def test_counter_counts_the_elements_of_transcendental_ops(module, shape, elems):
    """ew_transc (version 20): GELU, tanh and softmax evaluate erf / exp per element, and count it whole; sigmoid and
    SiLU 0.6 of it (what they cost against a GELU); ReLU, hardswish and a layer norm count nothing."""
    assert count_features(module, (torch.randn(*shape),))["ew_transc"] == elems


def test_attention_counts_the_exp_of_every_score():
    """The meta device decomposes scaled-dot-product attention into a softmax over heads x tokens x tokens scores."""
    q = torch.randn(2, 3, 10, 8)

    class Sdpa(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    assert count_features(Sdpa(), (q, q, q))["ew_transc"] == 2 * 3 * 10 * 10


def test_the_example_mbconv_blocks_count_their_silus_and_gate_at_a_sigmoids_price():
    """examples/own_blocks.py:mbconv (EfficientNet-B0 blocks): every SiLU and the gate's sigmoid count 0.6 of their
    elements, nothing else in the block counts."""
    from pathlib import Path

    from tvmlat.modelref import load_model_ref

    own = Path(__file__).resolve().parents[2] / "examples" / "own_blocks.py"
    module, inputs = load_model_ref(f"{own}:mbconv")["mbconv(cin=24,cout=24,k=3,s=1,hw=56)"]
    mid = 24 * 6
    ops = [mid * 56 * 56, mid * 56 * 56, 24 // 4, mid]  # SiLUs after the expand and depthwise convs, in the gate; sigmoid
    assert count_features(module, inputs)["ew_transc"] == sum(n * 6 // 10 for n in ops)


def test_a_conv_walking_more_unpadded_planes_than_l1_holds_lines_of_thrashes():
    """Version 22: a 1 x 1 conv over 32 x 32 planes (4 KiB apart: one set, 8 lines) with a chain past SHORT counts
    CONV_THRASH of its multiply-adds in mac_l1thrash; padded (TVM walks its padded copy), short, 28 x 28 planes
    (3,136 bytes apart: 512 lines) or depthwise, none. On the AMD host such project convs of 128-px networks ran
    3.3-4.5x their prediction without it (docs/accuracy-log.md, "Version 22")."""
    from tvmlat.loop_features import CONV_THRASH

    def thrash(cin, hw, k=1, padded=False, dw=False, g=G):
        return conv_loops(out=24 * hw * hw, out_w=hw, cin_per_group=1 if dw else cin, kh=k, kw=k, stride=1,
                          in_h=hw, in_w=hw, depthwise=dw, geometry=g, padded=padded)["mac_l1thrash"]

    assert l1_lines(4 * 32 * 32, G) == 8 and l1_lines(4 * 28 * 28, G) == 512
    macs = 24 * 32 * 32 * 144
    assert thrash(144, 32) == macs * round(100 * CONV_THRASH) // 100 > 0
    assert thrash(48, 64) > 0  # 16 KiB apart: 8 lines too
    assert thrash(144, 32, k=3, padded=True) == 0  # a padded copy's planes are 34 x 34, not 4 KiB apart
    assert thrash(24, 32) == 0  # 24 steps: short, unrolled
    assert thrash(144, 28) == 0 and thrash(144, 16) == 0  # 512 / 32 lines: the walk fits
    assert thrash(144, 32, dw=True) == 0
    assert thrash(144, 32, g=CacheGeometry(64, 12, 64)) > 0  # 12 lines on a 12-way L1, still fewer than 144
    # the counters pass the padding: a torch 1 x 1 conv is counted, the same conv with padding=1 is not
    f = count_features(torch.nn.Conv2d(144, 24, 1, bias=False), (torch.randn(1, 144, 32, 32),))
    assert f["mac_l1thrash"] == macs * round(100 * CONV_THRASH) // 100
    assert count_features(torch.nn.Conv2d(144, 24, 1, padding=1, bias=False),
                          (torch.randn(1, 144, 32, 32),))["mac_l1thrash"] == 0


@pytest.mark.parametrize("red, cols, g_reach, near, far", [
    (1024, 1000, 16, 1, 0),  # 4 KiB apart: one set of the 12-way L1, 12 lines < 1000 rows: every element
    (2048, 256, 16, 1, 0),  # 8 KiB apart: one set too
    (1024, 12, 16, 0, 0),  # a walk of 12 rows, which L1 holds whole
    (512, 1024, 16, 0, 0),  # 2 KiB apart: two sets, 24 lines, past THRASH_LINES: a host that does not reach them
    (512, 1024, 24, 0, 0.7),  # ... and one that does: 2 / 2 of THRASH_PARTIAL (mac_l1thrash_far)
    (768, 256, 48, 0, 0.35),  # 3 KiB apart: four sets, 48 lines
    (128, 256, 48, 0, 0),  # 512 B apart: 96 lines, no thrash
    (1000, 1000, 48, 0, 0),  # not whole lines apart: every set holds it
])
def test_a_linear_layers_weight_transpose_thrashes_where_l1_holds_fewer_lines_than_its_walk(red, cols, g_reach, near,
                                                                                           far):
    """Version 26: TVM transposes a linear layer's (cols, red) weight on every call, walking cols rows 4 * red bytes
    apart; its elements count like a thrashing column walk's multiply-adds. A bmm's B is not transposed. The matmul's
    own walk (stride 4 * cols) is version 8's, left out here by a one-row reduction L1 holds (red 1 would be short)."""
    from tvmlat.loop_features import CacheGeometry

    g = CacheGeometry(64, 12, 64).with_overlap(70, g_reach)
    w = red * cols
    f = matmul_loops(out=cols, red=red, cols=cols, b_elems=w, weight=True, geometry=g)
    own = matmul_loops(out=cols, red=red, cols=cols, b_elems=w, weight=False, geometry=g)  # the same product, no transpose
    assert f["mac_l1thrash"] - own["mac_l1thrash"] == int(w * near)
    assert f["mac_l1thrash_far"] - own["mac_l1thrash_far"] == w * round(100 * far) // 100
    assert {k: v for k, v in f.items() if not k.startswith("mac_l1thrash") and k != "w_matmul"} == \
        {k: v for k, v in own.items() if not k.startswith("mac_l1thrash") and k != "w_matmul"}


def test_counter_counts_a_one_token_linear_layers_weight_transpose():
    """The torch counter and the closed forms count version 26 the same way for nn.Linear(1024, 1000) on one token."""
    from tvmlat.analytic_features import analytic_features
    from tvmlat.loop_features import CacheGeometry
    from tvmlat.specs import BlockSpec

    g = CacheGeometry(64, 12, 64)
    f = count_features(torch.nn.Linear(1024, 1000, bias=False), (torch.randn(1, 1024),), geometry=g)
    assert f["mac_l1thrash"] >= 1024 * 1000
    spec = BlockSpec.make("linear", tokens=1, din=1024, dout=1000, bias=False)
    a = analytic_features(spec, geometry=g)
    assert a["mac_l1thrash"] == f["mac_l1thrash"] and a["mac_l1thrash_far"] == f["mac_l1thrash_far"]
