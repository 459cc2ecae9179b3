"""Kernel-level vs block-level prediction (the nn-Meter idea), on TVM's fused kernels, host CPU, default profile.

For each sampled block: compile it, time the whole block with TVM's evaluator (block latency), and
time every fused kernel (PrimFunc) the VM calls with ``vm.set_instrument`` (median over runs).
Kernel features come from the lowered module: TVM's FLOP estimate of the PrimFunc and the bytes of
its buffers; the kernel's kind comes from its name (conv2d, matmul, pool, norm, other). A
kernel model (per kind: time = a*flops + b*bytes + c, non-negative, least squares on relative
error) predicts each kernel; a block is the sum of its kernels plus a fitted per-call overhead.
Both this and the block-level linear ``ops`` predictor are judged on the same leave-one-family-out
splits (kernels of the held-out family never seen in training).

    python benchmarks/kernel_level.py [--samples 60] [--seed 0] [--csv benchmarks/out/kernel_level.csv]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from tvmlat.blocks import build_block, sample_specs
from tvmlat.features import block_features
from tvmlat.metrics import accuracy, family_splits
from tvmlat.predictors import LinearPredictor
from tvmlat.targets import load_target

KINDS = ("conv2d", "matmul", "pool", "norm", "other")


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
    """FLOPs (TVM's estimate) and bytes of the tensors each PrimFunc is called with in ``main``."""
    import tvm
    from tvm import relax

    prims = {gv.name_hint: (gv, fn) for gv, fn in lowered.functions.items() if type(fn).__name__ == "PrimFunc"}
    nbytes: dict[str, float] = {}

    def tensor_bytes(e) -> float:
        si = getattr(e, "struct_info", None)
        if type(si).__name__ != "TensorStructInfo" or si.shape is None:
            return 0.0
        n = 1
        for d in si.shape.values:
            n *= int(d)
        return float(n * tvm.runtime.DataType(si.dtype).bits // 8)

    for block in lowered["main"].body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call):
                args = list(v.args)
                callee = v.op if isinstance(v.op, tvm.ir.GlobalVar) else (args[0] if args else None)
                if isinstance(callee, tvm.ir.GlobalVar) and callee.name_hint in prims:
                    flat = [a for a in args if not isinstance(a, tvm.ir.GlobalVar)]
                    flat = [x for a in flat for x in (a.fields if isinstance(a, relax.Tuple) else [a])]
                    nbytes[callee.name_hint] = sum(tensor_bytes(a) for a in flat) + tensor_bytes(b.var)
    out = {}
    for name, (gv, fn) in prims.items():
        try:
            flops = float(tvm.s_tir.analysis.estimate_tir_flops(tvm.IRModule({gv: fn})))
        except Exception:  # noqa: BLE001 - TVM can't estimate some loops
            flops = 0.0
        out[name] = {"flops": flops, "bytes": nbytes.get(name, 0.0), "kind": kind_of(name)}
    return out


def measure_block(spec, target, runs: int = 30):
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
    ex = tvm.compile(lowered, tt, relax_pipeline=None)
    dev = tvm.cpu()
    vm = relax.VirtualMachine(ex, dev)
    host = [t.detach().numpy() for t in inputs]
    block = time_vm(vm, dev, host, None, target.evaluator)
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
    for _ in range(runs):
        current = []
        vm["main"](*args)
        calls.append(current)
    per_call = np.median(np.array([[dt for _, dt in c] for c in calls]), axis=0) * 1e3  # ms per call position
    rows = [{"block_id": spec.block_id, "family": spec.family, "kernel": sym, **kernels[sym], "ms": float(ms)}
            for (sym, _), ms in zip(calls[0], per_call)]
    return block.latency_ms_median, rows


def fit_kernels(k: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per kind: ms = a*GFLOP + b*MB + c, non-negative, least squares on relative error."""
    coef = {}
    for kind in KINDS:
        g = k[k["kind"] == kind]
        if g.empty:
            continue
        X = np.column_stack([g["flops"] / 1e9, g["bytes"] / 1e6, np.ones(len(g))])
        y = g["ms"].to_numpy()
        w = 1.0 / np.maximum(y, 1e-6)
        coef[kind], _ = nnls(X * w[:, None], y * w)
    return coef


def predict_kernels(k: pd.DataFrame, coef) -> np.ndarray:
    fallback = np.mean(list(coef.values()), axis=0)  # a kind never seen in training
    X = np.column_stack([k["flops"] / 1e9, k["bytes"] / 1e6, np.ones(len(k))])
    return np.array([x @ coef.get(kind, fallback) for x, kind in zip(X, k["kind"])])


def fit_kernels_xgb(k: pd.DataFrame):
    """XGBoost on log kernel time from log FLOPs, log bytes and the kind."""
    import xgboost as xgb

    d = xgb.DMatrix(_xgb_features(k), label=np.log(np.maximum(k["ms"].to_numpy(), 1e-6)))
    booster = xgb.train({"max_depth": 4, "eta": 0.05, "subsample": 0.8, "nthread": 2, "seed": 0}, d, 300)
    return lambda x: booster.predict(xgb.DMatrix(x))


def _xgb_features(k: pd.DataFrame) -> np.ndarray:
    kind = np.array([KINDS.index(x) for x in k["kind"]])
    return np.column_stack([np.log1p(k["flops"]), np.log1p(k["bytes"]), kind])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--csv", default="benchmarks/out/kernel_level.csv")
    ap.add_argument("--refit", action="store_true", help="fit again on the CSVs of an earlier run (no measuring)")
    a = ap.parse_args()
    kernels_csv = Path(a.csv).with_name("kernel_level_kernels.csv")
    if a.refit:
        b, k = pd.read_csv(a.csv), pd.read_csv(kernels_csv)
    else:
        target = load_target("llvm")
        specs = sample_specs(a.samples, seed=a.seed)
        blocks, kernels = [], []
        t0 = time.perf_counter()
        for i, s in enumerate(specs):
            lat, rows = measure_block(s, target)
            blocks.append({"block_id": s.block_id, "family": s.family, "latency_ms_median": lat,
                           **block_features(s, geometry=target.geometry())})
            kernels += rows
            print(f"\r{i + 1}/{len(specs)} blocks, {len(kernels)} kernel calls, {time.perf_counter() - t0:.0f} s",
                  end="", flush=True)
        print()
        b, k = pd.DataFrame(blocks), pd.DataFrame(kernels)
    ksum = k.groupby("block_id")["ms"].sum()
    ratio = ksum.reindex(b["block_id"]).to_numpy() / b["latency_ms_median"].to_numpy()
    print(f"sum of instrumented kernel times / block latency: median {np.median(ratio):.2f} "
          f"(p10 {np.quantile(ratio, 0.1):.2f}, p90 {np.quantile(ratio, 0.9):.2f}); "
          f"{len(k) / len(b):.1f} kernel calls per block, kinds {k['kind'].value_counts().to_dict()}")
    y = b["latency_ms_median"].to_numpy()
    pred_kernel, pred_block, pred_xgb = np.zeros(len(b)), np.zeros(len(b)), np.zeros(len(b))
    for fam, tr, te in family_splits(b):
        train_ids = set(b["block_id"].iloc[tr])
        kt = k[k["block_id"].isin(train_ids)]
        coef = fit_kernels(kt)
        # per-call overhead: the block latency the kernels don't explain, per kernel call (training blocks)
        kp = kt.assign(pred=predict_kernels(kt, coef))
        per_block = kp.groupby("block_id").agg(pred=("pred", "sum"), n=("pred", "size"))
        resid = (b.set_index("block_id").loc[per_block.index, "latency_ms_median"] - per_block["pred"]) / per_block["n"]
        overhead = max(0.0, float(np.median(resid)))
        ke = k[k["block_id"].isin(set(b["block_id"].iloc[te]))]
        ke = ke.assign(pred=predict_kernels(ke, coef) + overhead)
        s = ke.groupby("block_id")["pred"].sum()
        pred_kernel[te] = s.reindex(b["block_id"].iloc[te]).to_numpy()
        xm = fit_kernels_xgb(kt)
        ke = ke.assign(xgb=np.exp(xm(_xgb_features(ke))))
        pred_xgb[te] = ke.groupby("block_id")["xgb"].sum().reindex(b["block_id"].iloc[te]).to_numpy()
        lin = LinearPredictor(features="ops").fit(b.iloc[tr], y[tr])
        pred_block[te] = lin.predict(b.iloc[te])
    rows = []
    for name, p in [("block-level linear (ops)", pred_block), ("kernel-level linear per kind, summed", pred_kernel),
                    ("kernel-level XGBoost, summed", pred_xgb)]:
        m = accuracy(y, p)
        rows.append({"model": name, "median_ape": m["median_ape"], "within10": m["within10"], "mape": m["mape"],
                     "spearman": m["spearman"]})
    res = pd.DataFrame(rows)
    print(f"leave-one-family-out on {len(b)} blocks:")
    print(res.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    Path(a.csv).parent.mkdir(parents=True, exist_ok=True)
    if not a.refit:
        b.to_csv(a.csv, index=False)
        k.to_csv(kernels_csv, index=False)


if __name__ == "__main__":
    main()
