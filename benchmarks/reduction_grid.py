"""Grids behind features versions 6 and 9 and the unroll cliff (docs/accuracy-log.md).

* ``linear``: nn.Linear layers 256x256, 128x1024 and 1024x128 at M = 1, 2, 4, 16 rows, 2-d and
  3-d inputs. The fit ``ms = fixed + per_row * M`` per layer shows the fixed cost per weight
  element that ``w_matmul`` counts (~1.4 ns on the CI host).
* ``bmm``: batched matmuls (b = 8; 64x64, 196x49 and 16x256 outputs) with k = 8 ... 96. The cost
  per output jumps ~11x between k = 32 and k = 40 on the CI host.
* ``conv``: 1x1 convs with cin = 16 ... 96 and 3x3 convs with cin = 2 ... 12 (32 outputs, 28x28,
  no bias). The 1x1 ones jump ~6x between cin 32 and 40; the 3x3 ones stay cheap up to 54
  reduction steps (cin 6) and jump ~6x at 72 (cin 8): where the whole reduction is unrolled
  is not "at most 32 steps" for every op.
* ``conv_boundary``: 3x3 cin 6-8, 5x5 cin 1-3, 7x7 cin 1-2, grouped 3x3 with 4-8 channels per
  group, 2x2 cin 12-20. It puts the boundary at 64 steps for windows of 3x3 and up (63 cheap, 72
  a loop), by channels per group for grouped convs; a 2x2 window is a loop already at 48.
  Features version 9 models it (``loop_features.UNROLL_WIN``).
* ``unroll_check``: written down with version 9 and measured after it: other sizes, strides and
  widths on both sides of the boundary, and ResNeXt-50's grouped convs (4 and 8 channels per group).
* ``short_steps``: 1x1 convs (cin 16 and 32, 128 outputs, 7x7 to 56x56) against matmuls of the same
  32-step reduction (256 rows, B 32 x 16 ... 3136). Both are all short work (``short_vec``); it shows
  what a short vector step costs by row width and by where the re-read operand lives.
* ``dw1x1``: depthwise 1x1 convs, alone and with BatchNorm + ReLU (the ``conv_bn_relu`` blocks the
  sampler draws), and a ReLU, at widths 7-112, stride 1 and 2: the conv costs what an elementwise nest
  of the same width costs, not a short reduction step.
* ``chain``: global means (the ``pool`` family's ``global`` kind) over planes 2x2 to 56x56, and means
  over the last dimension of (rows, L) tensors, L = 16 ... 3136, ~400k input elements each. A chain
  of dependent adds per output costs 0.37-0.46 ns per element up to 100 elements, 0.81 ns at 3136: a
  short chain overlaps the next output's. ``red_chain`` counts every element (a features version 14
  that counted ``max(L - 56, L / 2)`` steps did not pass its check: docs/accuracy-log.md, "Tried").
* ``one_token``: nn.Linear layers on one token, din = 64 ... 2048 at dout 96 and 128, and din 320 at
  dout 64 ... 1024. Per weight element they cost what the L1 holds of a walk down W's rows (stride
  4 * din bytes, ``loop_features.l1_lines``): on ``znver4`` 1.0-1.3 ns at 128 lines (din 64, 192, 320, 448,
  576), 1.3-1.6 at 64 (128, 384, 640), 1.9-2.1 at 32 (256, 768), 3.2-3.3 at 16 (512, 1536), 3.9 at 8
  (1024, 2048); dout 512 and 1024 add 2x. On ``emeraldrapids`` (48 KiB 12-way L1) 1.0-1.6 ns at 96-192
  lines, 1.7-2.3 at 48, 2.2-2.4 at 24 and 12 (it saturates), and at din 320 1.4-1.5 ns up to dout 192,
  2.1-2.6 from 256. Not modelled yet (docs/accuracy-log.md, "Tried after version 16").

    tvmlat measure --target llvm benchmarks/reduction_grid.py:linear --out runs/linear.parquet   # ~1 min
    tvmlat measure --target llvm benchmarks/reduction_grid.py:bmm --out runs/bmm.parquet         # ~1 min
    tvmlat measure --target llvm benchmarks/reduction_grid.py:conv --out runs/conv.parquet       # ~1 min
    tvmlat measure --target llvm benchmarks/reduction_grid.py:conv_boundary --out runs/bnd.parquet
    tvmlat measure --target llvm benchmarks/reduction_grid.py:unroll_check --out runs/check.parquet
    tvmlat measure --target llvm benchmarks/reduction_grid.py:short_steps --out runs/short.parquet  # ~20 s
    tvmlat measure --target llvm benchmarks/reduction_grid.py:dw1x1 --out runs/dw1.parquet         # ~20 s
    tvmlat measure --target llvm benchmarks/reduction_grid.py:chain --out runs/chain.parquet       # ~30 s
    tvmlat measure --target llvm benchmarks/reduction_grid.py:one_token --out runs/one.parquet     # ~25 s
    python benchmarks/reduction_grid.py [runs/linear.parquet runs/bmm.parquet] [--conv runs/conv.parquet]
        [--boundary runs/bnd.parquet] [--check runs/check.parquet] [--short runs/short.parquet]
        [--dw1 runs/dw1.parquet] [--chain runs/chain.parquet] [--one-token runs/one.parquet] [-p PREDICTOR.json]

The analysis prints ns per weight element (linear) and ns per output (bmm), and with ``-p`` the
predictor's predicted/measured ratio per row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import this checkout's tvmlat
    sys.path.insert(0, str(ROOT))

LINEAR_SHAPES = ((256, 256), (128, 1024), (1024, 128))
LINEAR_ROWS = (1, 2, 4, 16)
BMM_K = (8, 16, 24, 32, 40, 48, 64, 96)
BMM_SHAPES = ((64, 64), (196, 49), (16, 256))


def linear():
    """MODEL_REF: ``{lin<din>x<dout>_t<M>_<2d|3d>: (nn.Linear, (input,))}``."""
    import torch

    out = {}
    for din, dout in LINEAR_SHAPES:
        for t in LINEAR_ROWS:
            for dims in ("2d", "3d"):
                torch.manual_seed(0)
                x = torch.randn(t, din) if dims == "2d" else torch.randn(1, t, din)
                out[f"lin{din}x{dout}_t{t}_{dims}"] = (torch.nn.Linear(din, dout).eval(), (x,))
    return out


def bmm_specs():
    from tvmlat.specs import BlockSpec

    return [BlockSpec.make("matmul", b=8, m=m, k=k, n=n) for k in BMM_K for (m, n) in BMM_SHAPES]


def bmm_name(spec) -> str:
    """``b8_k<k>_m<m>_n<n>``: the model ref's entry name of a k-sweep block."""
    return "_".join(f"{k}{v}" for k, v in spec.params)


def bmm():
    """MODEL_REF: the ``matmul`` family blocks of the k sweep, named ``b8_k<k>_m<m>_n<n>``."""
    from tvmlat.blocks import build_block

    return {bmm_name(s): build_block(s) for s in bmm_specs()}


# (name, cin, k, groups, cout) of 28x28 convolutions without bias, padding k // 2
CONV = ([(f"c1x1_cin{c}", c, 1, 1, 32) for c in (16, 24, 32, 40, 48, 64, 96)]
        + [(f"c3x3_cin{c}", c, 3, 1, 32) for c in (2, 3, 4, 5, 6, 8, 12)])
# around the 64-step boundary of k x k windows, and a 2x2 window
BOUNDARY = ([(f"c3_cin{c}", c, 3, 1, 32) for c in (6, 7, 8)] + [(f"c5_cin{c}", c, 5, 1, 32) for c in (1, 2, 3)]
            + [(f"c7_cin{c}", c, 7, 1, 32) for c in (1, 2)] + [(f"g3_cpg{c}", 8 * c, 3, 8, 64) for c in (4, 6, 7, 8)]
            + [(f"c2_cin{c}", c, 2, 1, 32) for c in (12, 16, 20)])

# written down with features version 9's unroll rule and measured after it (the rule was read off the two
# grids above): other sizes, strides and widths, ResNeXt-50's first-stage grouped conv (4 channels per
# group), and controls on both sides of the boundary; (name, cin, k, groups, cout, hw, stride)
UNROLL_CHECK = [("d3_cin3_hw14", 3, 3, 1, 64, 14, 1), ("d3_cin4_hw14", 4, 3, 1, 64, 14, 1),
                ("d3_cin5_hw56_s2", 5, 3, 1, 16, 56, 2), ("d3_cin6_hw14", 6, 3, 1, 48, 14, 1),
                ("d3_cin7_hw28_s2", 7, 3, 1, 24, 28, 2), ("d3_cin8_hw14", 8, 3, 1, 64, 14, 1),
                ("d5_cin2_hw14", 2, 5, 1, 64, 14, 1), ("d5_cin3_hw14", 3, 5, 1, 64, 14, 1),
                ("d7_cin1_hw56_s2", 1, 7, 1, 24, 56, 2), ("x3_cpg4_resnext", 128, 3, 32, 128, 56, 1),
                ("x3_cpg5_hw14", 80, 3, 16, 80, 14, 1), ("x3_cpg6_hw28_s2", 96, 3, 16, 96, 28, 2),
                ("x3_cpg7_hw14", 112, 3, 16, 112, 14, 1), ("x3_cpg8_resnext_s2", 256, 3, 32, 256, 56, 2)]


# 1x1 convs whose whole 16- or 32-step reduction is short, and matmuls with the same 32-step reduction
SHORT_CONVS = [(f"p1_cin{c}_hw{hw}", c, 1, 1, 128, hw, 1) for c in (16, 32) for hw in (7, 14, 28, 56)]
SHORT_MM_N = (16, 49, 64, 196, 256, 784, 3136)
# depthwise 1x1 convs: (name, channels, hw, stride); ~50k input elements each
DW1 = [(f"hw{hw}_s{s}", max(8, 50176 // (hw * hw)), hw, s) for hw in (7, 14, 28, 56, 112) for s in (1, 2)]
# chains of adds: global means over hw x hw planes and row means over L elements, ~400k input elements each
CHAIN_HW = (2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 28, 56)
CHAIN_L = (16, 49, 64, 100, 144, 196, 256, 400, 784, 3136)
CHAIN_ELEMS = 401408
# one-token linear layers: (din, dout)
ONE_TOKEN = ([(din, dout) for din in (64, 128, 192, 256, 320, 384, 448, 512, 576, 640, 768, 1024, 1536, 2048)
              for dout in (96, 128)] + [(320, dout) for dout in (64, 192, 256, 384, 512, 768, 1000, 1024)])


def short_specs():
    from tvmlat.specs import BlockSpec

    return [BlockSpec.make("matmul", b=1, m=256, k=32, n=n) for n in SHORT_MM_N]


def short_steps():
    """MODEL_REF: ``SHORT_CONVS`` and the matmuls of ``short_specs`` (named ``b1_k32_m256_n<n>``)."""
    from tvmlat.blocks import build_block

    return {**_convs(SHORT_CONVS), **{bmm_name(s): build_block(s) for s in short_specs()}}


def dw1x1():
    """MODEL_REF: ``dw1_<hw>_s<s>`` (the conv alone), ``dwbn_<hw>_s<s>`` (the sampled ``conv_bn_relu``
    block) and ``relu_<hw>`` for each row of ``DW1``."""
    import torch

    from tvmlat.blocks import build_block
    from tvmlat.specs import BlockSpec

    out = {}
    for name, c, hw, s in DW1:
        torch.manual_seed(0)
        x = torch.randn(1, c, hw, hw)
        out[f"dw1_{name}"] = (torch.nn.Conv2d(c, c, 1, s, groups=c, bias=False).eval(), (x,))
        out[f"dwbn_{name}"] = build_block(BlockSpec.make("conv_bn_relu", cin=c, cout=c, groups="dw", hw=hw, k=1,
                                                          stride=s))
        if s == 1:
            out[f"relu_hw{hw}"] = (torch.nn.ReLU().eval(), (x,))
    return out


def _row_mean():
    """A module taking the mean over the last dimension (torch is imported only when a grid is built)."""
    import torch

    class RowMean(torch.nn.Module):
        def forward(self, x):
            return x.mean(-1)

    return RowMean().eval()


def chain():
    """MODEL_REF: ``gmean_hw<hw>`` (the sampled global pool block, ``CHAIN_HW``) and ``rowmean_l<L>``
    (a mean over the last dimension of a (rows, L) tensor, ``CHAIN_L``)."""
    import torch

    from tvmlat.blocks import build_block
    from tvmlat.specs import BlockSpec

    out = {f"gmean_hw{hw}": build_block(BlockSpec.make("pool", kind="global", c=max(8, CHAIN_ELEMS // (hw * hw)),
                                                         hw=hw, k=2, stride=1)) for hw in CHAIN_HW}
    for n in CHAIN_L:
        torch.manual_seed(0)
        out[f"rowmean_l{n}"] = (_row_mean(), (torch.randn(CHAIN_ELEMS // n, n),))
    return out


def one_token():
    """MODEL_REF: ``din<din>_dout<dout>``, an nn.Linear on one token for each pair of ``ONE_TOKEN``."""
    import torch

    out = {}
    for din, dout in ONE_TOKEN:
        torch.manual_seed(0)
        out[f"din{din}_dout{dout}"] = (torch.nn.Linear(din, dout).eval(), (torch.randn(1, din),))
    return out


def one_token_report(df: pd.DataFrame) -> pd.DataFrame:
    """ns per weight element of the ``one_token`` layers, with the lines of a walk down W's rows (stride
    4 * din bytes) that this host's L1 holds before its sets conflict."""
    from tvmlat.loop_features import DEFAULT_GEOMETRY, host_geometry, l1_lines

    g = host_geometry() or DEFAULT_GEOMETRY
    rows = [{"din": din, "dout": dout, "l1_lines_of_rows": int(l1_lines(4 * din, g)),
             "ns_per_weight": df.loc[f"din{din}_dout{dout}", "latency_ms_median"] * 1e6 / (din * dout)}
            for din, dout in ONE_TOKEN if f"din{din}_dout{dout}" in df.index]
    return pd.DataFrame(rows)


def chain_report(df: pd.DataFrame) -> pd.DataFrame:
    """ns per input element of the ``chain`` blocks, with the chain steps per input element that
    ``red_chain`` counts (``loop_features.reduce_loops``)."""
    from tvmlat.loop_features import reduce_loops

    rows = []
    grid = [(f"gmean_hw{hw}", hw * hw, max(8, CHAIN_ELEMS // (hw * hw))) for hw in CHAIN_HW]
    grid += [(f"rowmean_l{n}", n, CHAIN_ELEMS // n) for n in CHAIN_L]
    for name, length, outputs in grid:  # outputs: channels of a global mean, rows of a row mean
        if name not in df.index:
            continue
        elems = outputs * length
        ns = df.loc[name, "latency_ms_median"] * 1e6 / elems
        counted = reduce_loops(elems, length)["red_chain"] / elems
        rows.append({"block": name, "chain": length, "ns_per_element": ns, "counted_per_element": counted,
                     "ns_per_counted_step": ns / counted if counted else float("nan")})
    return pd.DataFrame(rows)


def short_report(df: pd.DataFrame) -> pd.DataFrame:
    """ns per multiply-add of the ``short_steps`` blocks, with the bytes each output row re-reads (a conv's
    input planes, a matmul's B)."""
    rows = [{"block": name, "row_width": hw, "reread_kib": cin * hw * hw * 4 / 1024,
             "ns_per_mac": df.loc[name, "latency_ms_median"] * 1e6 / (cout * hw * hw * cin)}
            for name, cin, _, _, cout, hw, _ in SHORT_CONVS if name in df.index]
    for s in short_specs():
        p, name = dict(s.params), bmm_name(s)
        if name in df.index:
            rows.append({"block": name, "row_width": p["n"], "reread_kib": p["k"] * p["n"] * 4 / 1024,
                         "ns_per_mac": df.loc[name, "latency_ms_median"] * 1e6 / (p["m"] * p["n"] * p["k"])})
    return pd.DataFrame(rows)


def dw1_report(df: pd.DataFrame) -> pd.DataFrame:
    """ns per output element of the ``dw1x1`` blocks, by output row width."""
    rows = []
    for name, c, hw, s in DW1:
        out_w = (hw - 1) // s + 1
        ns = {k: df.loc[f"{k}_{name}", "latency_ms_median"] * 1e6 / (c * out_w * out_w)
              for k in ("dw1", "dwbn") if f"{k}_{name}" in df.index}
        if s == 1 and f"relu_hw{hw}" in df.index:
            ns["relu"] = df.loc[f"relu_hw{hw}", "latency_ms_median"] * 1e6 / (c * hw * hw)
        if ns:
            rows.append({"hw": hw, "stride": s, "out_w": out_w, **{f"{k}_ns": v for k, v in ns.items()}})
    return pd.DataFrame(rows)


def _geometry(row):
    """(name, cin, k, groups, cout, hw, stride) of a table row; the first two grids are 28x28, stride 1."""
    name, cin, k, groups, cout, *rest = row
    hw, stride = rest if rest else (28, 1)
    return name, cin, k, groups, cout, hw, stride


def _convs(table):
    import torch

    out = {}
    for row in table:
        name, cin, k, groups, cout, hw, stride = _geometry(row)
        torch.manual_seed(0)
        out[name] = (torch.nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False).eval(),
                     (torch.randn(1, cin, hw, hw),))
    return out


def conv():
    """MODEL_REF: the first conv grid (``CONV``): 1x1 and 3x3 convs around their unroll cliff."""
    return _convs(CONV)


def conv_boundary():
    """MODEL_REF: the second conv grid (``BOUNDARY``)."""
    return _convs(BOUNDARY)


def unroll_check():
    """MODEL_REF: the third conv grid (``UNROLL_CHECK``), a check of version 9's rule on fresh shapes."""
    return _convs(UNROLL_CHECK)


def conv_report(df: pd.DataFrame, table=CONV) -> pd.DataFrame:
    """ns per output element and per reduction step of a conv grid's blocks."""
    rows = []
    for row in table:
        name, cin, k, groups, cout, hw, stride = _geometry(row)
        if name in df.index:
            side = (hw + 2 * (k // 2) - k) // stride + 1
            steps = cin // groups * k * k
            ns = df.loc[name, "latency_ms_median"] * 1e6 / (cout * side * side)
            rows.append({"conv": name, "reduction_steps": steps, "ns_per_output": ns, "ns_per_step": ns / steps})
    return pd.DataFrame(rows)


def _ok(path: str) -> pd.DataFrame:
    """The measured rows of a grid's parquet (written by ``tvmlat measure``), by entry name."""
    from _bench import read_rows

    df = read_rows(path, f"measure the grid with `tvmlat measure --target llvm benchmarks/reduction_grid.py:GRID "
                         f"--out {path}`")
    return df[df["status"] == "ok"].set_index("name")


def linear_report(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for din, dout in LINEAR_SHAPES:
        for dims in ("2d", "3d"):
            names = [f"lin{din}x{dout}_t{t}_{dims}" for t in LINEAR_ROWS]
            if not all(n in df.index for n in names):
                continue
            ms = df.loc[names, "latency_ms_median"].to_numpy(float)
            per_row, fixed = np.polyfit(np.asarray(LINEAR_ROWS, dtype=float), ms, 1)
            rows.append({"layer": f"{din}x{dout} {dims}", "fixed_ms": fixed, "per_row_ms": per_row,
                         "fixed_ns_per_weight": fixed * 1e6 / (din * dout),
                         "ns_per_mac_at_1_row": ms[0] * 1e6 / (din * dout)})
    return pd.DataFrame(rows)


def bmm_report(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for s in bmm_specs():
        p, name = dict(s.params), bmm_name(s)
        if name in df.index:
            rows.append({"k": p["k"], "shape": f"{p['m']}x{p['n']}",
                         "ns_per_output": df.loc[name, "latency_ms_median"] * 1e6 / (p["b"] * p["m"] * p["n"])})
    t = pd.DataFrame(rows)
    return t.pivot_table(index="k", columns="shape", values="ns_per_output") if len(t) else t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("linear_parquet", nargs="?")
    ap.add_argument("bmm_parquet", nargs="?")
    ap.add_argument("--conv", help="the conv grid's parquet")
    ap.add_argument("--boundary", help="the second conv grid's parquet (conv_boundary)")
    ap.add_argument("--check", help="the third conv grid's parquet (unroll_check)")
    ap.add_argument("--short", help="the short_steps grid's parquet")
    ap.add_argument("--dw1", help="the dw1x1 grid's parquet")
    ap.add_argument("--chain", help="the chain grid's parquet")
    ap.add_argument("--one-token", help="the one_token grid's parquet")
    ap.add_argument("-p", "--predictor", help="also print predicted / measured per block")
    args = ap.parse_args()
    lin, mm, cv, bd, ck, sh, dw, ch, ot = (_ok(a) if a else None for a in (args.linear_parquet, args.bmm_parquet,
                                                                           args.conv, args.boundary, args.check,
                                                                           args.short, args.dw1, args.chain,
                                                                           args.one_token))
    if lin is not None:
        print("linear layers: ms = fixed + per_row * M (least squares over M = 1, 2, 4, 16)")
        print(linear_report(lin).round(4).to_string(index=False))
    if mm is not None:
        print("\nbatched matmuls (b = 8): ns per output element")
        print(bmm_report(mm).round(2).to_string())
    for title, df, table in (("convolutions (32 outputs, 28x28)", cv, CONV),
                             ("convolutions around the unroll boundary", bd, BOUNDARY),
                             ("convolutions checking the unroll rule (other shapes)", ck, UNROLL_CHECK)):
        if df is not None:
            print(f"\n{title}: ns per output and per reduction step")
            print(conv_report(df, table).round(3).to_string(index=False))
    for title, df, report in (
            ("short reductions (1x1 convs, k = 32 matmuls): ns per multiply-add", sh, short_report),
            ("depthwise 1x1 convs: ns per output element (alone, with BatchNorm + ReLU; a ReLU alone)", dw, dw1_report),
            ("chains of adds (global means, row means): ns per input element and per counted red_chain step", ch,
             chain_report),
            ("one-token linear layers: ns per weight element, by the L1 lines a walk down W's rows keeps", ot,
             one_token_report)):
        if df is not None:
            print(f"\n{title}")
            print(report(df).round(3).to_string(index=False))
    if args.predictor:
        from tvmlat.dataset import ok_rows
        from tvmlat.predictors import load_predictor

        pred = load_predictor(args.predictor)
        for title, df in (("linear", lin), ("bmm", mm), ("conv", cv), ("boundary", bd), ("check", ck),
                          ("short", sh), ("dw1x1", dw), ("chain", ch), ("one_token", ot)):
            if df is None:
                continue
            d = ok_rows(df.reset_index())
            ratio = pred.predict(d) / d["latency_ms_median"].to_numpy(float)
            print(f"\n{title}: predicted / measured")
            print(pd.Series(ratio, index=d["name"]).round(2).to_string())


if __name__ == "__main__":
    main()
