"""Per block: TVM tuned vs. TVM untuned vs. torch eager on this CPU, from three datasets of the same blocks.

The calibration sampler with the same seed and sample count draws the same blocks on every
target, so datasets join on ``block_id``. Prints the per-family median of each ratio and the
overall distribution, writes a CSV of every block and a PNG (tuned/eager ratio per block, by family).

    python benchmarks/tuned_vs_eager.py \
        --tuned datasets/llvm/calib-znver3-tuned16-n100-s0.parquet \
        --default datasets/llvm/calib-znver3-n100-s0.parquet \
        --eager datasets/torch-eager/calib-znver3-n100-s0.parquet --out benchmarks/out
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from tvmlat.dataset import ok_rows, read_dataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tuned", required=True)
    ap.add_argument("--default", required=True)
    ap.add_argument("--eager", required=True)
    ap.add_argument("--out", default="benchmarks/out")
    a = ap.parse_args()
    cols = ["block_id", "family", "name", "latency_ms_median"]
    t = ok_rows(read_dataset(a.tuned))[cols].rename(columns={"latency_ms_median": "tuned_ms"})
    d = ok_rows(read_dataset(a.default))[["block_id", "latency_ms_median"]].rename(
        columns={"latency_ms_median": "default_ms"})
    e = ok_rows(read_dataset(a.eager))[["block_id", "latency_ms_median"]].rename(
        columns={"latency_ms_median": "eager_ms"})
    df = t.merge(d, on="block_id").merge(e, on="block_id")
    df["tuned_over_eager"] = df["tuned_ms"] / df["eager_ms"]
    df["default_over_eager"] = df["default_ms"] / df["eager_ms"]
    df["default_over_tuned"] = df["default_ms"] / df["tuned_ms"]
    print(f"{len(df)} blocks in all three datasets")
    fam = df.groupby("family").agg(n=("block_id", "size"), tuned_ms=("tuned_ms", "median"),
                                   eager_ms=("eager_ms", "median"), default_ms=("default_ms", "median"),
                                   tuned_over_eager=("tuned_over_eager", "median"),
                                   default_over_eager=("default_over_eager", "median"),
                                   speedup_from_tuning=("default_over_tuned", "median"),
                                   tuned_faster_share=("tuned_over_eager", lambda r: float(np.mean(r < 1))))
    pd.set_option("display.width", 200)
    print(fam.to_string(float_format=lambda v: f"{v:.3g}"))
    r = df["tuned_over_eager"]
    print(f"\nall blocks: tuned/eager median {r.median():.2f} (p10 {r.quantile(0.1):.2f}, p90 {r.quantile(0.9):.2f}); "
          f"tuned faster than eager on {100 * np.mean(r < 1):.0f} % of blocks; "
          f"untuned/eager median {df['default_over_eager'].median():.1f}; "
          f"tuning speed-up (untuned/tuned) median {df['default_over_tuned'].median():.1f}x")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "tuned_vs_eager.csv", index=False)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    fams = sorted(df["family"].unique())
    for i, f in enumerate(fams):
        g = df[df["family"] == f]
        ax.scatter(np.full(len(g), i) + np.random.default_rng(i).uniform(-0.2, 0.2, len(g)), g["tuned_over_eager"],
                   s=14, label=None)
        ax.scatter(i, g["default_over_eager"].median(), marker="_", s=300, color="grey")
    ax.axhline(1, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(fams)), fams, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("TVM latency / torch eager latency")
    ax.set_title("tuned TVM vs torch eager per block (dots); grey bar: untuned TVM, family median")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(out / "tuned_vs_eager.png", dpi=110)
    print(f"wrote {out / 'tuned_vs_eager.csv'} and {out / 'tuned_vs_eager.png'}")


if __name__ == "__main__":
    main()
