"""Kernel-level vs block-level prediction (the nn-Meter idea), on TVM's kernels, host CPU, default profile.

For each sampled block: compile it as ``tvm.compile`` does for a CPU (the ``default`` Relax pipeline, which
on CPUs does not fuse: one kernel per op), time the whole block with TVM's evaluator (block latency), and
time every kernel (PrimFunc) the VM calls with ``vm.set_instrument`` (median over runs, after warm-up).
Kernel features come from the lowered module: TVM's FLOP estimate of the PrimFunc and the bytes of its
buffers, its kind from its name (conv2d, matmul, pool, norm, other), and TVM's own cost-model features
(MetaSchedule's ``PerStoreFeature``: loop extents, vectorisation, arithmetic and buffer-access patterns per
store, 172 per store; summed and maxed over the kernel's stores). Kernel models predict each kernel and a
block is the sum of its kernels:

* linear per kind: time = a*flops + b*bytes + c, non-negative, fitted on log error;
* XGBoost on log kernel time from log FLOPs, log bytes and the kind;
* XGBoost on log kernel time from TVM's cost-model features (what MetaSchedule's cost model reads).

They and the block-level linear predictors (``loops``, the default, and ``ops``) are judged on the same
splits, per campaign: leave-one-family-out (kernels of the held-out family never seen in training) and
random 5-fold.

    python benchmarks/kernel_level.py [--samples 100] [--seeds 0 ...] [--csv benchmarks/out/kernel_level.csv]
    python benchmarks/kernel_level.py --refit      # fit again on an earlier run's files, no measuring
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tvmlat.blocks import build_block, sample_specs
from tvmlat.features import FEATURE_COLUMNS, OpCounter, block_features
from tvmlat.metrics import accuracy, family_splits
from tvmlat.predictors import LinearPredictor
from tvmlat.specs import BlockSpec
from tvmlat.targets import load_target

KINDS = ("conv2d", "matmul", "pool", "norm", "other")


def base_name(name: str) -> str:
    """A kernel's name less the number TVM appends to the second and later kernels of one op."""
    return name.rstrip("0123456789")


def kind_of(name: str) -> str:
    n = name.lower()
    if "conv2d" in n:
        return "conv2d"
    if "matmul" in n or "dense" in n:
        return "matmul"
    if "pool" in n or "mean" in n or n.startswith("max"):
        return "pool"
    if "norm" in n or "softmax" in n:
        return "norm"
    return "other"


def kernel_table(lowered) -> dict[str, dict]:
    """FLOPs (TVM's estimate) and bytes of the buffers (inputs and outputs) of each PrimFunc of the module.

    (Until 2026-12-06 the bytes were read off ``main``'s calls, which the CPU build has rewritten by then:
    every kernel had 0 bytes, so the "FLOPs and bytes" models had FLOPs alone.)"""
    import tvm

    out = {}
    for gv, fn in lowered.functions.items():
        if type(fn).__name__ != "PrimFunc":
            continue
        try:
            flops = float(tvm.s_tir.analysis.estimate_tir_flops(tvm.IRModule({gv: fn})))
        except Exception:  # noqa: BLE001 - TVM can't estimate some loops
            flops = 0.0
        bufs = [b for b in fn.params if hasattr(b, "shape") and hasattr(b, "dtype")]  # tirx: params are buffers
        nbytes = sum(math.prod(int(d) for d in b.shape) * tvm.runtime.DataType(b.dtype).bits // 8 for b in bufs)
        out[gv.name_hint] = {"flops": flops, "bytes": float(nbytes), "kind": kind_of(gv.name_hint)}
    return out


def tvm_features(prims: dict, tvm_target) -> dict[str, np.ndarray]:
    """MetaSchedule's per-store features of each PrimFunc (the untuned code, as it is built): summed and maxed
    over its stores, and log(1 + stores)."""
    import tvm
    from tvm.s_tir import Schedule
    from tvm.s_tir import meta_schedule as ms

    ext = ms.feature_extractor.PerStoreFeature(extract_workload=True)
    out = {}
    for name, fn in prims.items():
        mod = tvm.IRModule({"main": fn.with_attr("global_symbol", "main")})
        ctx = ms.TuneContext(mod=mod, target=tvm_target, task_name=name)
        cand = ms.MeasureCandidate(Schedule(mod), ms.arg_info.ArgInfo.from_prim_func(fn))
        f = ext.extract_from(ctx, [cand])[0].numpy()
        peak = f.max(0) if len(f) else np.zeros(f.shape[1])  # a kernel that stores nothing (a view)
        out[name] = np.concatenate([f.sum(0), peak, [np.log1p(f.shape[0])]]).astype(np.float32)
    return out


def kernel_calls(vm, dev, host: list, kernels, warmup: int = 5, runs: int = 40) -> list[tuple[str, float]]:
    """The kernels ``vm``'s ``main`` calls, in order, each with its median time in ms over ``runs`` calls after
    ``warmup`` (timed with ``vm.set_instrument``; ``kernels``: the names to time, the rest of the calls are
    not kernels). Leaves the instrument set."""
    import tvm

    calls: list[list[tuple[str, float]]] = []
    current: list[tuple[str, float]] = []
    t0 = [0.0]

    def instrument(func, symbol, before, ret, *args):
        if symbol not in kernels:
            return 0
        if before:
            t0[0] = time.perf_counter()
        else:
            current.append((symbol, time.perf_counter() - t0[0]))
        return 0

    vm.set_instrument(instrument)
    args = [tvm.runtime.tensor(a, dev) for a in host]
    for i in range(warmup + runs):
        current = []
        vm["main"](*args)
        if i >= warmup:
            calls.append(current)
    per_call = np.median(np.array([[dt for _, dt in c] for c in calls]), axis=0) * 1e3  # ms per call position
    return [(sym, float(ms)) for (sym, _), ms in zip(calls[0], per_call)]


def measure_block(spec, target, runs: int = 40, warmup: int = 5):
    import tvm
    from tvm import relax

    from tvmlat.compile import to_relax
    from tvmlat.runners.vmtime import time_vm

    module, inputs = build_block(spec)
    mod = to_relax(module, inputs)
    tt = target.tvm_target()
    with tt:  # what tvm.compile runs for a CPU target ("default"), done here to see the kernels it makes
        lowered = relax.get_pipeline("default")(mod)
    kernels = kernel_table(lowered)
    tvm_feats = tvm_features({gv.name_hint: fn for gv, fn in lowered.functions.items()
                              if gv.name_hint in kernels}, tt)
    ex = tvm.compile(lowered, tt, relax_pipeline=None)
    dev = tvm.cpu()
    vm = relax.VirtualMachine(ex, dev)
    host = [t.detach().numpy() for t in inputs]
    block = time_vm(vm, dev, host, None, target.evaluator)
    calls = kernel_calls(vm, dev, host, kernels, warmup, runs)
    rows = [{"block_id": spec.block_id, "family": spec.family, "kernel": sym, **kernels[sym], "ms": ms}
            for sym, ms in calls]
    feats = [tvm_feats[sym] for sym, _ in calls]
    return block.latency_ms_median, rows, feats


def fit_kernels(k: pd.DataFrame):
    """Per kind: ms = a*FLOPs + b*bytes + c, non-negative, fitted on log error as the product's linear model is
    (a kind with fewer than 8 training kernels gets the model of all kinds); returns a function of kernels
    giving ms. (Until 2026-12-06: least squares on relative error plus a per-call overhead, which put block
    sums at 0.13x: relative least squares shrinks the large kernels that dominate a block.)"""
    def fit(g: pd.DataFrame) -> LinearPredictor:
        return LinearPredictor(features=["flops", "bytes"], segmented=False).fit(g, g["ms"].to_numpy())

    every = fit(k)
    per_kind = {kind: fit(g) for kind, g in k.groupby("kind") if len(g) >= 8}

    def predict(kk: pd.DataFrame) -> np.ndarray:
        out = np.zeros(len(kk))
        for kind in kk["kind"].unique():
            sel = (kk["kind"] == kind).to_numpy()
            out[sel] = per_kind.get(kind, every).predict(kk[sel])
        return out

    return predict


def xgb_log(X: np.ndarray, y: np.ndarray, depth: int, rounds: int, **params):
    """XGBoost regressor of ``y`` (a log time or a log residual), η 0.05, subsample 0.8, two threads, seed 0, plus
    ``params``; returns a function of a feature matrix giving the predicted ``y``."""
    import xgboost as xgb

    booster = xgb.train({"max_depth": depth, "eta": 0.05, "subsample": 0.8, "nthread": 2, "seed": 0, **params},
                        xgb.DMatrix(X, label=y), rounds)
    return lambda x: booster.predict(xgb.DMatrix(x))


def fit_xgb(X: np.ndarray, ms: np.ndarray, depth: int = 4, rounds: int = 300):
    """XGBoost on log kernel time; returns a function of a feature matrix giving ms."""
    f = xgb_log(X, np.log(np.maximum(ms, 1e-6)), depth, rounds)
    return lambda x: np.exp(f(x))


def _xgb_features(k: pd.DataFrame) -> np.ndarray:
    kind = np.array([KINDS.index(x) for x in k["kind"]])
    return np.column_stack([np.log1p(k["flops"]), np.log1p(k["bytes"]), kind])


#: kernel names (less their number) of each group; a bias add or scale right after a conv2d or matmul joins it
GROUP_KERNELS = {"conv": {"conv2d"}, "pool": {"mean", "avg_pool2d", "max_pool2d", "zeros"},
                 "mm": {"matmul", "transpose", "softmax", "layer_norm", "strided_slice", "cast", "tir_logical_not",
                        "equal", "full", "where", "max"}}
#: aten op kinds of each group (features.OpCounter's record kinds); the rest is "ew"
GROUP_KINDS = {"conv": {"conv", "conv1x1", "dwconv"}, "pool": {"pool"}, "mm": {"matmul", "bmm", "attention"}}


def _kernel_groups(names, family: str) -> list[str]:
    out: list[str] = []
    for i, n in enumerate(names):
        base, prev = base_name(n), base_name(names[i - 1]) if i else None
        if family == "attention":  # its decomposed SDPA's masks and scales are not aten ops: one group
            g = "mm"
        elif base in ("add", "multiply") and prev in ("conv2d", "matmul"):
            g = out[-1]
        else:
            g = next((g for g, names_ in GROUP_KERNELS.items() if base in names_), "ew")
        out.append(g)
    return out


def _op_group(rec: dict, family: str) -> str:
    if family == "attention" or rec["op"] in ("native_layer_norm", "layer_norm", "_softmax", "softmax"):
        return "mm"
    return next((g for g, kinds in GROUP_KINDS.items() if rec.get("kind") in kinds), "ew")


def group_rows(b: pd.DataFrame, k: pd.DataFrame, geometry) -> pd.DataFrame:
    """One row per block and kernel group (conv, mm, pool, ew): the features of the group's aten ops and the
    instrumented time of its kernels, scaled so that a block's groups sum to its latency. The block's inputs
    count in its first op's group, its ``acts_l2out`` is shared by the groups' activations."""
    import torch

    rows = []
    for r in b.itertuples():
        spec = BlockSpec.from_json(r.spec)
        module, inputs = build_block(spec)
        counter = OpCounter(geometry)
        with torch.no_grad(), counter:
            module.to("meta")(*[torch.empty(t.shape, dtype=t.dtype, device="meta") for t in inputs])
        feats: dict[str, dict] = {}
        for rec in counter.records:
            f = feats.setdefault(_op_group(rec, spec.family), dict.fromkeys(FEATURE_COLUMNS, 0.0))
            for col, v in rec["feat"].items():
                f[col] += v
        feats[_op_group(counter.records[0], spec.family)]["inp"] += r.inp
        kk = k[(k["seed"] == r.seed) & (k["block_id"] == r.block_id)]
        times = pd.Series(kk["ms"].to_numpy()).groupby(_kernel_groups(list(kk["kernel"]), spec.family)).sum()
        if set(times.index) != set(feats):
            raise SystemExit(f"error: block {r.block_id} ({spec.family}): kernel groups {sorted(times.index)} "
                             f"and op groups {sorted(feats)} differ; extend GROUP_KERNELS")
        acts = sum(f["acts"] for f in feats.values())
        for g, f in feats.items():
            rows.append({**f, "acts_l2out": r.acts_l2out * f["acts"] / max(acts, 1), "block_id": r.block_id,
                         "latency_ms_median": times[g] * r.latency_ms_median / kk["ms"].sum()})
    return pd.DataFrame(rows)


MODELS = ("block-level linear (loops, the default)", "block-level linear (ops)",
          "loops fitted on kernel-group times (conv, matmul, pool, elementwise), summed",
          "kernel-level linear per kind, summed", "kernel-level XGBoost (FLOPs, bytes, kind), summed",
          "kernel-level XGBoost (TVM's cost-model features), summed")


def predict_split(b: pd.DataFrame, k: pd.DataFrame, ftvm: np.ndarray, groups: pd.DataFrame, tr: np.ndarray,
                  te: np.ndarray) -> list:
    """Each model's predictions of the blocks ``te``, fitted on the blocks ``tr`` (and their kernels)."""
    y = b["latency_ms_median"].to_numpy()
    ids_tr, ids_te = set(b["block_id"].iloc[tr]), b["block_id"].iloc[te]
    ktr, kte = k["block_id"].isin(ids_tr).to_numpy(), k["block_id"].isin(set(ids_te)).to_numpy()

    def per_block(pred: np.ndarray) -> np.ndarray:
        return pd.Series(pred).groupby(k["block_id"][kte].to_numpy()).sum().reindex(ids_te).to_numpy()

    out = [LinearPredictor(features=f).fit(b.iloc[tr], y[tr]).predict(b.iloc[te]) for f in ("loops", "ops")]
    gtr, gte = groups[groups["block_id"].isin(ids_tr)], groups[groups["block_id"].isin(set(ids_te))]
    gm = LinearPredictor(segmented=False).fit(gtr, gtr["latency_ms_median"].to_numpy())
    out.append(pd.Series(gm.predict(gte)).groupby(gte["block_id"].to_numpy()).sum().reindex(ids_te).to_numpy())
    out.append(per_block(fit_kernels(k[ktr])(k[kte])))
    out.append(per_block(fit_xgb(_xgb_features(k[ktr]), k["ms"][ktr].to_numpy())(_xgb_features(k[kte]))))
    out.append(per_block(fit_xgb(ftvm[ktr], k["ms"][ktr].to_numpy())(ftvm[kte])))
    return out


def measure(samples: int, seed: int, target) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    specs = sample_specs(samples, seed=seed)
    blocks, kernels, feats = [], [], []
    t0 = time.perf_counter()
    for i, s in enumerate(specs):
        lat, rows, f = measure_block(s, target)
        blocks.append({"seed": seed, "block_id": s.block_id, "family": s.family, "spec": s.to_json(), "latency_ms_median": lat,
                       **block_features(s, geometry=target.geometry())})
        kernels += [{"seed": seed, **r} for r in rows]
        feats += f
        print(f"\rseed {seed}: {i + 1}/{len(specs)} blocks, {len(kernels)} kernel calls, "
              f"{time.perf_counter() - t0:.0f} s", end="", flush=True)
    print()
    return pd.DataFrame(blocks), pd.DataFrame(kernels), np.stack(feats)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--csv", default="benchmarks/out/kernel_level.csv")
    ap.add_argument("--refit", action="store_true", help="fit again on the files of an earlier run (no measuring)")
    a = ap.parse_args()
    kernels_csv = Path(a.csv).with_name("kernel_level_kernels.csv")
    tvm_file = Path(a.csv).with_name("kernel_level_tvm_features.npz")
    if a.refit:
        missing = [str(f) for f in (Path(a.csv), kernels_csv, tvm_file) if not f.is_file()]
        if missing:
            raise SystemExit(f"error: --refit needs an earlier run's files, and {', '.join(missing)} "
                             f"{'does' if len(missing) == 1 else 'do'} not exist; measure first: python benchmarks/kernel_level.py --csv {a.csv}")
        B, K, F = pd.read_csv(a.csv), pd.read_csv(kernels_csv), np.load(tvm_file)["features"]
    else:
        target = load_target("llvm")
        runs = [measure(a.samples, seed, target) for seed in a.seeds]
        B, K = pd.concat([r[0] for r in runs], ignore_index=True), pd.concat([r[1] for r in runs], ignore_index=True)
        F = np.concatenate([r[2] for r in runs])
        Path(a.csv).parent.mkdir(parents=True, exist_ok=True)
        B.to_csv(a.csv, index=False)
        K.to_csv(kernels_csv, index=False)
        np.savez_compressed(tvm_file, features=F)
    rows = []
    for seed, b in B.groupby("seed"):
        b = b.reset_index(drop=True)
        sel = (K["seed"] == seed).to_numpy()
        k, f = K[sel].reset_index(drop=True), F[sel]
        groups = group_rows(b, k, load_target("llvm").geometry())
        ksum = k.groupby("block_id")["ms"].sum().reindex(b["block_id"]).to_numpy()
        ratio = ksum / b["latency_ms_median"].to_numpy()
        print(f"seed {seed}: sum of instrumented kernel times / block latency: median {np.median(ratio):.2f} "
              f"(p10 {np.quantile(ratio, 0.1):.2f}, p90 {np.quantile(ratio, 0.9):.2f}); "
              f"{len(k) / len(b):.1f} kernel calls per block")
        y = b["latency_ms_median"].to_numpy()
        folds = np.random.default_rng(seed).permutation(len(b)) % 5
        for split, parts in (("held-out family", [(tr, te) for _, tr, te in family_splits(b)]),
                             ("random 5-fold", [(np.flatnonzero(folds != i), np.flatnonzero(folds == i))
                                                for i in range(5)])):
            preds = np.zeros((len(MODELS), len(b)))
            for tr, te in parts:
                preds[:, te] = predict_split(b, k, f, groups, tr, te)
            for name, p in zip(MODELS, preds):
                m = accuracy(y, p)
                rows.append({"seed": seed, "split": split, "model": name, "median_ape": m["median_ape"],
                             "within10": 100 * m["within10"], "worst_x": m["worst_x"]})
    res = pd.DataFrame(rows)
    print(f"per campaign ({B['seed'].nunique()} campaigns, {len(B)} blocks), then the mean over campaigns:")
    print(res.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    mean = res.groupby(["split", "model"], sort=False)[["median_ape", "within10", "worst_x"]].mean()
    print(mean.to_string(float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
