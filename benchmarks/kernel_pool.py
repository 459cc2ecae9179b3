"""Kernel-level prediction from a pool of kernels timed on their own (nn-Meter's way), host CPU, default profile.

``kernel_level.py`` fitted kernel models on the kernels of the 100 blocks it also tested on. Here the training
set is a separate, denser pool: the kernels of many other sampled blocks, each built alone from its PrimFunc and
timed with TVM's evaluator. The blocks to predict are timed whole in the same interleaved rounds as the pool, so
every label comes from one host state. A block is predicted as the sum of its kernels' predictions plus a
per-call constant (the VM's dispatch; the median of measured minus predicted per call over the blocks of the
other families, at least 0). Reported:

* how well the labels repeat (a kernel's odd against its even rounds);
* the ceiling: the test blocks predicted from their own kernels' measured standalone times;
* the block-level linear ``loops`` model on the same labels (held-out families, random 5-fold);
* kernel models fitted on the pool: XGBoost on the kernel's buffer shapes, the same with its loop-nest terms
  (``tvmlat.loop_features`` counted from the shapes), a per-kernel linear ``loops`` model, and that model with
  an XGBoost residual. Each with three pools: every pool kernel; without the kernels only the held-out
  family's blocks have (a leave-one-family-out); and without any kernel of a test block (every test kernel's
  shape unseen), with a learning curve over a quarter, a half and all of that pool.

    python benchmarks/kernel_pool.py [--pool-seeds 1000 ... ] [--pool-blocks 100] [--test-seed 48] [--test-blocks 100]
                                     [--rounds 7] [--out benchmarks/out/kernel_pool]
    python benchmarks/kernel_pool.py --refit [--out benchmarks/out/kernel_pool]   # fit again on a run's files
"""

from __future__ import annotations

import argparse
import ast
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernel_level import base_name, kernel_calls, kernel_table, xgb_log  # noqa: E402

from tvmlat.blocks import build_block, sample_specs  # noqa: E402
from tvmlat.features import block_features  # noqa: E402
from tvmlat.loop_features import (LOOP_COLUMNS, conv_loops, ew_loops_over, matmul_loops, pad_loops,  # noqa: E402
                                  pool_loops, reduce_loops, weight_copy_loops)
from tvmlat.metrics import accuracy, family_splits  # noqa: E402
from tvmlat.predictors import LinearPredictor  # noqa: E402
from tvmlat.specs import BlockSpec  # noqa: E402
from tvmlat.targets import load_target  # noqa: E402

#: PrimFuncs the VM never calls (views), left out of the pool
VIEWS = {"reshape", "broadcast_to", "squeeze", "expand_dims"}
#: kernel names (less their number) the shape features know; any other is one more code
BASES = ["conv2d", "matmul", "batch_norm", "add", "transpose", "relu", "multiply", "strided_slice", "tir_logical_not",
         "cast", "mean", "tir_sigmoid", "layer_norm", "gelu", "softmax", "equal", "max", "full", "where", "avg_pool2d",
         "max_pool2d", "zeros", "hardswish", "subtract", "divide", "sigmoid", "sum"]
KCOLS = ["acts", "inp", "macs", "n_ops"] + LOOP_COLUMNS
FILES = ("kernels", "calls", "blocks")


def shapes_of(fn) -> list[tuple[int, ...]]:
    return [tuple(int(d) for d in b.shape) for b in fn.params]


# --- features of one kernel, from its name and buffer shapes -------------------------------------------------

def kernel_loops(base: str, shapes: list[tuple[int, ...]], geometry) -> dict[str, int]:
    """The loop-nest terms of one kernel, counted from its buffers as ``tvmlat.features`` counts an aten op: a
    conv2d (data, weight, out; the stride and the least padding that give the output read off the shapes), a matmul (its copy of a weight is the
    2-d transpose kernel's ``w_matmul`` and, version 26, its thrash: ``weight_copy_loops``), a windowed pool, a reduction, or an elementwise nest over the output."""
    f = dict.fromkeys(KCOLS, 0)
    out = shapes[-1] if shapes else ()
    nout = math.prod(out) if out else 1
    f["acts"], f["n_ops"] = nout, 1
    f["inp"] = math.prod(shapes[0]) if len(shapes) > 1 and shapes[0] else 0

    def add(d: dict) -> None:
        for k, v in d.items():
            if k in f:
                f[k] += int(v)

    if base == "conv2d" and len(shapes) >= 3 and len(shapes[0]) == 4:
        (n, c, h, w), (_, cg, kh, kw) = shapes[0], shapes[1]
        ho, wo = out[2], out[3]
        s = max(1, round(h / ho))
        f["macs"] = nout * cg * kh * kw
        add(conv_loops(nout, wo, cg, kh, kw, s, h, w, c // max(cg, 1) == c and c > 1, geometry=geometry))
        ph, pw = (2 * next((p for p in range(k // 2 + 1) if (x + 2 * p - k) // s + 1 == xo), k // 2)
                  for x, k, xo in ((h, kh, ho), (w, kw, wo)))  # the least padding on each side that gives the output
        add(pad_loops(n * c, h, w, ph, pw, geometry=geometry))
    elif base == "matmul" and len(shapes) >= 3:
        a, b = shapes[0], shapes[1]
        f["macs"] = nout * a[-1]
        add(matmul_loops(nout, a[-1], b[-1], math.prod(b), weight=False, geometry=geometry))
    elif base in ("max_pool2d", "avg_pool2d") and len(shapes) >= 2:
        (_, _, h, _), (_, _, ho, wo) = shapes[0], shapes[-1]
        s = max(1, round(h / ho))
        add(pool_loops(nout, wo, 4 if s == 2 or h + 1 == ho else 9, s, geometry=geometry))
    elif base in ("mean", "max", "sum") and len(shapes) >= 2:
        add(reduce_loops(math.prod(shapes[0]), math.prod(shapes[0]) // max(nout, 1)))
    elif base == "transpose" and len(out) == 2:
        add(weight_copy_loops(out[0], out[1], nout, geometry=geometry))
    else:
        add(ew_loops_over(nout, out, geometry=geometry))
    return f


def loops_frame(df: pd.DataFrame, geometry) -> pd.DataFrame:
    return pd.DataFrame([kernel_loops(b, ast.literal_eval(s), geometry) for b, s in zip(df["base"], df["shapes"])],
                        columns=KCOLS)


def shape_features(df: pd.DataFrame, kl: pd.DataFrame) -> np.ndarray:
    """The kernel's name (a code), its first four buffers' last four dimensions (log2), log2 FLOPs, bytes,
    outputs and reduction length, and a conv's groups, stride, kernel height and whether it is depthwise."""
    rows = []
    for (b, shp), macs, acts in zip(zip(df["base"], df["shapes"]), kl["macs"], kl["acts"]):
        shapes = ast.literal_eval(shp)
        v = [BASES.index(b) if b in BASES else len(BASES)]
        for s in (list(shapes) + [()] * 4)[:4]:
            s = list(s)[-4:]
            v += [math.log2(x) if x else -1 for x in [0] * (4 - len(s)) + s]
        flops = 2.0 * macs if macs else float(acts)
        nbytes = 4.0 * sum(math.prod(x) for x in shapes)
        v += [math.log2(1 + flops), math.log2(1 + nbytes), math.log2(1 + acts), math.log2(1 + flops / max(2 * acts, 1))]
        if b == "conv2d" and len(shapes) >= 3 and len(shapes[0]) == 4:
            (_, c, h, _), (o, cg, kh, _), ho = shapes[0], shapes[1], shapes[-1][2]
            v += [c // max(cg, 1), h / max(ho, 1), kh, float(c == o and cg == 1)]
        else:
            v += [0, 0, 0, 0]
        rows.append(v)
    return np.array(rows, dtype=np.float32)


# --- kernel models ----------------------------------------------------------------------------------------------

def kernel_features(df: pd.DataFrame, geometry) -> tuple[np.ndarray, pd.DataFrame]:
    """(the shape features followed by log1p of the loop terms, the loop terms) of each kernel, counted once."""
    kl = loops_frame(df, geometry)
    return np.column_stack([shape_features(df, kl), np.log1p(kl.to_numpy(dtype=float))]), kl


MODELS = ("XGBoost on shapes", "XGBoost on shapes + loop terms", "linear loops per kernel",
          "linear loops per kernel + XGBoost residual")


def fit_models(x: np.ndarray, kl: pd.DataFrame, ms: np.ndarray) -> dict:
    """Each kernel model fitted on the pool's ``kernel_features`` ``(x, kl)`` and times ``ms`` (log time); a dict
    of name -> f(x, kl) -> ms. The shape features are the columns of ``x`` before the loop terms."""
    y = np.log(ms)
    ns = x.shape[1] - len(KCOLS)
    extra = {"colsample_bytree": 0.8, "min_child_weight": 2}
    on_shapes, on_both = xgb_log(x[:, :ns], y, 6, 600, **extra), xgb_log(x, y, 6, 600, **extra)
    lin = LinearPredictor(features=KCOLS, segmented=False).fit(kl, ms)
    res = xgb_log(x, y - np.log(np.maximum(lin.predict(kl), 1e-6)), 4, 300, **extra)
    return {MODELS[0]: lambda z, k: np.exp(on_shapes(z[:, :ns])),
            MODELS[1]: lambda z, k: np.exp(on_both(z)),
            MODELS[2]: lambda z, k: lin.predict(k),
            MODELS[3]: lambda z, k: lin.predict(k) * np.exp(res(z))}


def block_sums(calls: pd.DataFrame, pred: np.ndarray, latency: pd.Series) -> pd.DataFrame:
    """Per test block: its measured latency (``lat``) and its prediction (``pred``), the sum of its kernels plus a
    per-call constant, the median of (measured - kernel sum) / calls over the other families' blocks."""
    g = calls.assign(p=pred).groupby("block_id").agg(p=("p", "sum"), n=("p", "size"), family=("family", "first"))
    g["lat"] = latency.reindex(g.index).to_numpy()
    g["pred"] = np.nan
    for fam in g["family"].unique():
        other = g["family"] != fam
        c = max(0.0, float(np.median((g["lat"][other] - g["p"][other]) / g["n"][other])))  # a dispatch: not < 0
        g.loc[~other, "pred"] = g["p"][~other] + c * g["n"][~other]
    return g


def _line(name: str, measured, predicted, kernels: tuple | None = None) -> str:
    """One model's figures on the blocks (``tvmlat.metrics.accuracy``), and on the kernels ``(measured,
    predicted)`` over 50 us where given."""
    m = accuracy(measured, predicted)
    k = f"kernels > 50 us within ±10 % {100 * accuracy(*kernels)['within10']:3.0f} % | " if kernels else ""
    return (f"  {name:44s} {k}blocks within ±10 % {100 * m['within10']:3.0f} %, ±5 % {100 * m['within5']:3.0f} %, "
            f"median error {m['median_ape']:4.1f} %, worst {m['worst_x']:.2f}x")


# --- measuring --------------------------------------------------------------------------------------------------

def _args(fn, dev) -> list:
    """Seeded inputs for every buffer of PrimFunc ``fn`` (``tvmlat.bundle.make_inputs``), on ``dev``."""
    import tvm

    from tvmlat.bundle import make_inputs

    bufs = [{"shape": shapes, "dtype": str(b.dtype)} for shapes, b in zip(shapes_of(fn), fn.params)]
    return [tvm.runtime.tensor(a, dev) for a in make_inputs(0, bufs)]


def _time(kernel: dict, number: int, dev) -> float:
    """Seconds per call of a compiled kernel, ``number`` calls, after as many unmeasured ones (its data back in
    cache after whatever ran before it)."""
    return kernel["mod"].time_evaluator("main", dev, number=number, repeat=2)(*kernel["args"]).results[1]


def _number(once, repeat_s: float, tries: int) -> int:
    """Calls per timing so that one takes ~``repeat_s``: from the fastest of ``tries`` single calls (``once()``, s)."""
    return max(1, int(repeat_s / max(min(once() for _ in range(tries)), 1e-7)))


def measure(pool_seeds: list[int], pool_blocks: int, test_seed: int, test_blocks: int, rounds: int,
            repeat_s: float = 0.008) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Compile every distinct kernel of the test blocks and of the pool blocks on its own, and the test blocks
    whole; time them all in ``rounds`` interleaved rounds, each in a random order (each item ~``repeat_s`` per
    round). The first run, with kernels then blocks in a fixed order, had a 1.46x slower first round for the
    blocks than for the kernels, and its ceiling (blocks from their kernels' own times) fell to 78 % within ±10 %."""
    import tvm
    from tvm import relax

    from tvmlat.compile import to_relax

    target = load_target("llvm")
    tt, dev = target.tvm_target(), tvm.cpu()
    index: dict[tuple[str, str], int] = {}
    kernels: list[dict] = []

    def lower(spec):
        module, inputs = build_block(spec)
        with tt:  # what tvm.compile runs for a CPU target ("default"): one kernel per op
            return relax.get_pipeline("default")(to_relax(module, inputs)), inputs

    def add(lowered, name: str, family: str, source: str) -> tuple[str, str]:
        key = (base_name(name), repr(shapes_of(lowered[name])))
        if key not in index:
            fn = lowered[name]
            mod = tvm.compile(tvm.IRModule({"main": fn.with_attr("global_symbol", "main")}), tt).jit()
            index[key] = len(kernels)
            kernels.append({"base": key[0], "shapes": key[1], "families": set(), "src": set(), "mod": mod,
                            "args": _args(fn, dev)})
        kernels[index[key]]["families"].add(family)
        kernels[index[key]]["src"].add(source)
        return key

    t0 = time.perf_counter()
    blocks, calls = [], []
    for i, spec in enumerate(sample_specs(test_blocks, seed=test_seed)):
        lowered, inputs = lower(spec)
        names = kernel_table(lowered)
        ex = tvm.compile(lowered, tt, relax_pipeline=None)
        host = [t.detach().numpy() for t in inputs]
        seq = kernel_calls(relax.VirtualMachine(ex, dev), dev, host, names, warmup=3, runs=20)
        alone = {}  # each kernel on its own, in the same minute as its in-block time
        for name, _ in seq:
            k = kernels[index[add(lowered, name, spec.family, "test")]]
            if name not in alone:
                number = _number(lambda: _time(k, 1, dev), repeat_s, 2)
                alone[name] = float(np.median([_time(k, number, dev) for _ in range(3)])) * 1e3
        for pos, (name, inblock_ms) in enumerate(seq):
            calls.append({"block_id": spec.block_id, "family": spec.family, "pos": pos, "kernel": name,
                          "base": base_name(name), "shapes": repr(shapes_of(lowered[name])), "inblock_ms": inblock_ms,
                          "alone_ms": alone[name]})
        vm = relax.VirtualMachine(ex, dev)  # a second VM of the same build: without the instrument
        vm.set_input("main", *[tvm.runtime.tensor(a, dev) for a in host])
        blocks.append({"block_id": spec.block_id, "family": spec.family, "spec": spec.to_json(), "vm": vm})
        print(f"\rtest blocks {i + 1}/{test_blocks}, {len(kernels)} kernels, {time.perf_counter() - t0:.0f} s",
              end="", flush=True)
    print()
    n = 0
    for seed in pool_seeds:
        for spec in sample_specs(pool_blocks, seed=seed):
            lowered, _ = lower(spec)
            for name in kernel_table(lowered):
                if base_name(name) not in VIEWS:
                    add(lowered, name, spec.family, "pool")
            n += 1
            print(f"\rpool blocks {n}/{len(pool_seeds) * pool_blocks}, {len(kernels)} kernels, "
                  f"{time.perf_counter() - t0:.0f} s", end="", flush=True)
    print()
    items = [("k", i) for i in range(len(kernels))] + [("b", i) for i in range(len(blocks))]

    def run(item, number: int) -> float:
        kind, i = item
        if kind == "k":
            return _time(kernels[i], number, dev)
        return blocks[i]["vm"].time_evaluator("invoke_stateful", dev, number=number, repeat=2)("main").results[1]

    numbers = []
    for item in items:  # warm up, then runs per round for ~repeat_s
        run(item, 1)
        numbers.append(_number(lambda: run(item, 1), repeat_s, 3))
    times = np.zeros((rounds, len(items)))
    order = np.random.default_rng(0)
    for r in range(rounds):  # each round in its own order: a slow minute falls on kernels and blocks alike
        for j in order.permutation(len(items)):
            times[r, j] = run(items[j], numbers[j]) * 1e3
        print(f"round {r + 1}/{rounds}, {time.perf_counter() - t0:.0f} s", flush=True)
    med, odd, even = np.median(times, 0), np.median(times[0::2], 0), np.median(times[1::2], 0)
    nk = len(kernels)
    K = pd.DataFrame([{"base": k["base"], "shapes": k["shapes"], "families": "|".join(sorted(k["families"])),
                       "src": "|".join(sorted(k["src"]))} for k in kernels])
    K["ms"], K["ms_odd"], K["ms_even"], K["number"] = med[:nk], odd[:nk], even[:nk], numbers[:nk]
    B = pd.DataFrame([{k: v for k, v in b.items() if k != "vm"} for b in blocks])
    B["latency_ms"], B["ms_odd"], B["ms_even"] = med[nk:], odd[nk:], even[nk:]
    return K, pd.DataFrame(calls), B


# --- the report -------------------------------------------------------------------------------------------------

def report(K: pd.DataFrame, C: pd.DataFrame, B: pd.DataFrame, geometry) -> None:
    K = K[~K["base"].isin(VIEWS)].reset_index(drop=True)
    key = ["base", "shapes"]
    C = C.assign(sa=K.set_index(key)["ms"].reindex(pd.MultiIndex.from_frame(C[key])).to_numpy())
    if C["sa"].isna().any():
        raise SystemExit(f"error: {int(C['sa'].isna().sum())} kernel calls of the test blocks have no kernel time; "
                         "the files are not of one run: measure again")
    lat = B.set_index("block_id")["latency_ms"]
    big = (K["ms"] > 0.05).to_numpy()
    oe = np.log(K["ms_odd"] / K["ms_even"])[big]
    print(f"{len(K)} kernels, {len(B)} test blocks ({len(C)} kernel calls); a kernel's odd and even rounds (> 50 us): "
          f"median {100 * np.median(np.abs(oe)):.1f} % apart, {100 * np.mean(np.abs(oe) > np.log(1.1)):.1f} % beyond 10 %")
    if "inblock_ms" in C:  # files from before these columns: no such check
        u = C.groupby(["block_id", "kernel"]).agg(inblock=("inblock_ms", "median"), alone=("alone_ms", "first"))
        u = u[u["inblock"] > 0.05]
        r = u["alone"] / u["inblock"]
        print(f"a kernel alone / in its block, the same minute (> 50 us, {len(r)}): median {r.median():.3f}, "
              f"p10 {r.quantile(0.1):.3f}, p90 {r.quantile(0.9):.3f}, "
              f"{100 * accuracy(u['inblock'], u['alone'])['within10']:.0f} % within ±10 %")
    print("ceiling, each test block from its own kernels' measured standalone times:")
    g = block_sums(C, C["sa"].to_numpy(), lat)
    print(_line("sum of the kernels + per-call constant", g["lat"], g["pred"]))
    bf = pd.DataFrame([block_features(BlockSpec.from_json(s), geometry=geometry) for s in B["spec"]])
    bf["family"], bf["latency_ms_median"] = B["family"].to_numpy(), B["latency_ms"].to_numpy()
    y = bf["latency_ms_median"].to_numpy()
    lofo, fold = np.zeros(len(bf)), np.zeros(len(bf))
    for _, tr, te in family_splits(bf):
        lofo[te] = LinearPredictor(features="loops").fit(bf.iloc[tr], y[tr]).predict(bf.iloc[te])
    folds = np.random.default_rng(0).permutation(len(bf)) % 5
    for i in range(5):
        tr, te = np.flatnonzero(folds != i), np.flatnonzero(folds == i)
        fold[te] = LinearPredictor(features="loops").fit(bf.iloc[tr], y[tr]).predict(bf.iloc[te])
    print("block-level linear loops (the default), fitted on the test blocks' own labels:")
    print(_line("held-out family", y, lofo))
    print(_line("random 5-fold", y, fold))
    pool = K[K["src"].str.contains("pool")].reset_index(drop=True)
    (xp, pk), (xc, ck) = kernel_features(pool, geometry), kernel_features(C, geometry)
    shared = pool["src"].str.contains("test")
    in_pool = C.set_index(key).index.isin(pool.set_index(key).index)
    print(f"pool: {len(pool)} kernels; {int(shared.sum())} of the {int(K['src'].str.contains('test').sum())} distinct "
          f"test kernels are in it too ({100 * C['sa'][in_pool].sum() / C['sa'].sum():.0f} % of the test blocks' "
          f"kernel time)")
    settings = [("every pool kernel", None), ("held-out family: without the kernels only its blocks have", "family")]
    rng = np.random.default_rng(0)
    u = rng.random(len(pool))
    for frac in (0.25, 0.5, 1.0):
        settings.append((f"no test kernel's shape: {frac:g} of that pool", frac))
    for title, how in settings:
        preds = {}
        for fam in (C["family"].unique() if how == "family" else [None]):
            sel = (C["family"] == fam).to_numpy() if fam else np.ones(len(C), bool)
            keep = np.ones(len(pool), bool)
            if how == "family":
                keep = (pool["families"] != fam).to_numpy()
            elif how is not None:
                keep = (~shared & (u < how)).to_numpy()
            models = fit_models(xp[keep], pk[keep].reset_index(drop=True), pool["ms"].to_numpy()[keep])
            for name, m in models.items():
                preds.setdefault(name, np.zeros(len(C)))[sel] = m(xc[sel], ck[sel].reset_index(drop=True))
        print(f"kernel models, pool: {title} ({int(keep.sum()) if how != 'family' else len(pool)} kernels):")
        big = (C["sa"] > 0.05).to_numpy()
        for name, p in preds.items():
            g = block_sums(C, p, lat)
            print(_line(name, g["lat"], g["pred"], (C["sa"].to_numpy()[big], p[big])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool-seeds", type=int, nargs="+", default=list(range(1000, 1008)))
    ap.add_argument("--pool-blocks", type=int, default=100)
    ap.add_argument("--test-seed", type=int, default=49)
    ap.add_argument("--test-blocks", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default="benchmarks/out/kernel_pool", help="prefix of the three CSV files")
    ap.add_argument("--refit", action="store_true", help="fit again on the files of an earlier run (no measuring)")
    a = ap.parse_args()
    files = {f: Path(f"{a.out}_{f}.csv") for f in FILES}
    if a.refit:
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise SystemExit(f"error: --refit needs an earlier run's files, and {', '.join(missing)} "
                             f"{'does' if len(missing) == 1 else 'do'} not exist; measure first: "
                             f"python benchmarks/kernel_pool.py --out {a.out}")
        K, C, B = (pd.read_csv(files[f]) for f in FILES)
    else:
        K, C, B = measure(a.pool_seeds, a.pool_blocks, a.test_seed, a.test_blocks, a.rounds)
        files["kernels"].parent.mkdir(parents=True, exist_ok=True)
        for f, df in zip(FILES, (K, C, B)):
            df.to_csv(files[f], index=False)
    report(K, C, B, load_target("llvm").geometry())


if __name__ == "__main__":
    main()
