"""Few-shot adaptation between targets: error on the new target vs. its own samples, with and without
the other target's predictor as prior.

For every ordered pair of datasets (same blocks measured on two targets): 30 % of the new target's
blocks are the test set (never seen by either model, nor by the prior); for N new-target samples
(drawn from the rest, 20 draws each) it fits (a) the linear model (`--features`, default `loops`) from scratch
on N samples and (b) the prior (the same model fitted on the other target, test blocks excluded) adapted with
the same N samples. Prints median APE and share within +-10 % on the test set, and the reference:
from scratch on all remaining new-target samples.

With the ``loops`` features each dataset is counted for the core's parameters its own fit chooses (chain overlap and
thrash reach, features versions 23 and 24, as `fit` and `calibrate` choose them), and the prior and the models adapting
it count the new target's blocks with the prior's, as `calibrate --from` and `ablation --few-shot-from` do
(``--core stored``: every dataset as stored, what this script did until 2026-12-07).

    python benchmarks/few_shot.py datasets/llvm/calib-znver3-n100-s0.parquet datasets/torch-eager/....parquet
"""

from __future__ import annotations

import argparse

import pandas as pd

from tvmlat.ablation import few_shot_pair
from tvmlat.dataset import dataset_label, datasets_model_refs, load_for_fit, meta_geometry, ok_rows
from tvmlat.errors import TvmlatError
from tvmlat.overlap import choose_core, counted_with_core


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--csv", default=None)
    ap.add_argument("--features", default="loops", help="linear model's feature set (loops, ops, published)")
    ap.add_argument("--core", choices=("choose", "stored"), default="choose",
                    help="loops: count each dataset for the core's parameters its fit chooses (default) or as stored")
    a = ap.parse_args()
    if len(a.datasets) < 2:
        raise SystemExit("error: give two or more datasets of the same sampled blocks (one is the new target, "
                         "another the prior's)")
    try:
        rows = _pairs(a)
    except TvmlatError as e:
        raise SystemExit(f"error: {e}") from None
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if a.csv:
        df.to_csv(a.csv, index=False)


def _pairs(a) -> list[dict]:
    """few_shot_pair's rows for every ordered pair of ``a.datasets``."""
    choose = a.features == "loops" and a.core == "choose"
    dfs, cores, refs = {}, {}, {}
    for p in a.datasets:
        name = dataset_label(p)
        if name in dfs:  # two datasets of the same target and chip: tell them apart by their files
            name = f"{name} ({p})"
        df = ok_rows(load_for_fit(p))
        geometry, refs[name] = meta_geometry(p), datasets_model_refs([p])
        if choose:
            geometry, df, _ = choose_core(df, geometry, df["latency_ms_median"], model_refs=refs[name])
            print(f"{name}: chain overlap {geometry.chain_overlap}, thrash reach {geometry.thrash_lines} lines")
        dfs[name], cores[name] = df, geometry
    rows = []
    names = list(dfs)
    for s in names:
        for d in names:
            if s != d:
                # the new target's rows counted with the core's parameters the prior's were
                as_prior = counted_with_core(dfs[d], cores[d], cores[s], refs[d])[1] \
                    if choose else None
                rows += few_shot_pair(dfs[s], dfs[d], s, d, sizes=(3, 5, 10, 20, 50, 100), draws=a.draws, seed=a.seed,
                                      features=a.features, dst_as_prior=as_prior)
    return rows


if __name__ == "__main__":
    main()
