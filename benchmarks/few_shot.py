"""Few-shot adaptation between targets: error on the new target vs. its own samples, with and without
the other target's predictor as prior.

For every ordered pair of datasets (same blocks measured on two targets): 30 % of the new target's
blocks are the test set (never seen by either model, nor by the prior); for N new-target samples
(drawn from the rest, 20 draws each) it fits (a) the linear model (`--features`, default `loops`) from scratch
on N samples and (b) the prior (the same model fitted on the other target, test blocks excluded) adapted with
the same N samples. Prints median APE and share within +-10 % on the test set, and the reference:
from scratch on all remaining new-target samples.

    python benchmarks/few_shot.py datasets/llvm/calib-znver3-n100-s0.parquet datasets/torch-eager/....parquet
"""

from __future__ import annotations

import argparse

import pandas as pd

from tvmlat.ablation import few_shot_pair
from tvmlat.dataset import dataset_label, load_for_fit, ok_rows

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--csv", default=None)
    ap.add_argument("--features", default="loops", help="linear model's feature set (loops, ops, published)")
    a = ap.parse_args()
    dfs = {}
    for p in a.datasets:
        name = dataset_label(p)
        if name in dfs:  # two datasets of the same target and chip: tell them apart by their files
            name = f"{name} ({p})"
        dfs[name] = ok_rows(load_for_fit(p))
    rows = []
    names = list(dfs)
    for s in names:
        for d in names:
            if s != d:
                rows += few_shot_pair(dfs[s], dfs[d], s, d, sizes=(3, 5, 10, 20, 50, 100), draws=a.draws, seed=a.seed,
                                     features=a.features)
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if a.csv:
        df.to_csv(a.csv, index=False)


if __name__ == "__main__":
    main()
