"""Latency reached vs. MetaSchedule trials per task, for a few blocks on this CPU (tuned profile).

For each block and budget, tuning starts from an empty database (no sharing between budgets), then
the tuned build is timed with the target's evaluator; the untuned (default) build and torch eager
are timed too. Prints a table, writes CSV and a PNG (latency vs trials, log axes).

    python benchmarks/tuning_curve.py [--budgets 4,16,64] [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from tvmlat.blocks import build_block
from tvmlat.runners.local import LocalRunner
from tvmlat.specs import BlockSpec
from tvmlat.targets import load_target

BLOCKS = [
    BlockSpec.make("conv_bn_relu", cin=64, cout=64, hw=28, k=3, stride=1, groups=1),
    BlockSpec.make("linear", tokens=64, din=512, dout=512, bias=True),
    BlockSpec.make("inverted_residual", cin=32, cout=32, hw=28, expand=6, k=3, stride=1),
]


def torch_eager_ms(module, inputs, seconds: float = 1.0) -> float:
    with torch.no_grad():
        for _ in range(3):
            module(*inputs)
        n, t0 = 0, time.perf_counter()
        times = []
        while time.perf_counter() - t0 < seconds:
            t1 = time.perf_counter()
            module(*inputs)
            times.append(time.perf_counter() - t1)
            n += 1
    times.sort()
    return 1000 * times[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", default="4,16,64")
    ap.add_argument("--out", default="benchmarks/out")
    ap.add_argument("--only", default="", help="comma-separated families of BLOCKS to run [all]")
    ap.add_argument("--append", action="store_true", help="add to an existing tuning_curve.csv in --out")
    a = ap.parse_args()
    budgets = [int(b) for b in a.budgets.split(",")]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    base = load_target("llvm")
    rows = []
    if a.append and (out / "tuning_curve.csv").exists():
        rows = pd.read_csv(out / "tuning_curve.csv").to_dict("records")
    only = {f for f in a.only.split(",") if f}
    for spec in [b for b in BLOCKS if not only or b.family in only]:
        module, inputs = build_block(spec)
        eager = torch_eager_ms(module, inputs)
        res = LocalRunner(base).run(module, inputs)
        rows.append({"block": spec.short(), "trials_per_task": 0, "latency_ms": res.latency_ms_median,
                     "tune_s": 0.0, "tasks": 0, "torch_eager_ms": eager})
        print(rows[-1], flush=True)
        for n in budgets:
            with tempfile.TemporaryDirectory() as db:
                t = dataclasses.replace(base, profile="tuned",
                                        tuning=dataclasses.replace(base.tuning, trials_per_task=n, database=db))
                res = LocalRunner(t).run(module, inputs)
            rows.append({"block": spec.short(), "trials_per_task": n, "latency_ms": res.latency_ms_median,
                         "tune_s": res.stages.get("tune_s", float("nan")), "tasks": res.stages.get("tasks", 0),
                         "torch_eager_ms": eager, "status": res.status})
            print(rows[-1], flush=True)
            pd.DataFrame(rows).to_csv(out / "tuning_curve.csv", index=False)
    df = pd.DataFrame(rows)
    print(df.to_string(index=False))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (block, g) in enumerate(df.groupby("block", sort=False)):
        tuned = g[g["trials_per_task"] > 0]
        line, = ax.plot(tuned["trials_per_task"], tuned["latency_ms"], "o-", label=f"{block} (tuned)")
        ax.axhline(g[g["trials_per_task"] == 0]["latency_ms"].iloc[0], color=line.get_color(), ls=":", lw=1)
        ax.axhline(g["torch_eager_ms"].iloc[0], color=line.get_color(), ls="--", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("MetaSchedule trials per task")
    ax.set_ylabel("latency (ms, median)")
    ax.set_title("Tuned latency vs trials (dotted: untuned default build, dashed: torch eager)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "tuning_curve.png", dpi=120)
    print(f"wrote {out / 'tuning_curve.png'}")


if __name__ == "__main__":
    main()
