"""What limits the linear model's hit rate (README, "What limits the linear model now").

For campaigns of one host (shipped datasets), it separates the three things a miss can come from:

* the labels: a block (same name) measured in two of the campaigns -- how far apart the two medians
  are after each campaign's host speed is divided out;
* the model's form: within +-10 % on the rows it was fitted on (per campaign, and all campaigns in one
  fit), against random 5-fold and held-out families;
* a family's offset: held out, with each (campaign, family)'s median error divided out of its blocks.

With ``--residuals`` it also compares, on held-out families, the XGBoost residual on the linear terms'
shares (the default since 2026-12-05) with the one on the counted features (before).

    python benchmarks/model_limits.py datasets/llvm/calib-emeraldrapids-n100-s{17..23}.parquet [--residuals]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd

WITHIN = 0.10


def label_pairs(df: pd.DataFrame, y: np.ndarray) -> pd.Series:
    """|log ratio| of every pair of one block's (speed-divided) medians from two campaigns."""
    out = []
    for _, idx in df.groupby("name").indices.items():
        v = np.log(y[idx])
        out += [abs(v[i] - v[j]) for i in range(len(v)) for j in range(i + 1, len(v))]
    return pd.Series(out, dtype=float)


def main() -> None:
    from _bench import read_rows

    from tvmlat.campaigns import campaign_speeds, divided
    from tvmlat.cli.fit import make_model_factory
    from tvmlat.dataset import concat_datasets, ok_rows
    from tvmlat.errors import TvmlatError
    from tvmlat.metrics import accuracy, cross_validate

    def hit(meas, pred) -> float:  # within +-10 %, as evaluate counts it
        return accuracy(meas, pred)["within10"]

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+", help="campaign parquets of one host")
    ap.add_argument("--residuals", action="store_true", help="also the two residual models, held out")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    made_by = "give the parquets of `tvmlat calibrate` campaigns (datasets/llvm/calib-*.parquet)"
    for p in args.datasets:
        read_rows(p, made_by)
    try:
        df = ok_rows(concat_datasets(args.datasets)).reset_index(drop=True)
    except TvmlatError as e:
        raise SystemExit(f"error: {e}") from None
    linear = make_model_factory("linear", "loops")
    y = df["latency_ms_median"].to_numpy(float)
    yd = divided(df, y, campaign_speeds(df, y)) if df["campaign"].nunique() > 1 else y

    pairs = label_pairs(df, yd)
    print(f"{len(args.datasets)} campaigns, {len(df)} rows")
    if len(pairs):
        print(f"labels: {len(pairs)} pairs of one block in two campaigns: median {np.median(pairs) * 100:.1f} % apart, "
              f"{np.mean(pairs > np.log1p(WITHIN)) * 100:.1f} % of them more than 10 %")
    print(f"labels: odd and even rounds of a block {df['half_diff_rel'].abs().median() * 100:.1f} % apart (median)")

    per, held = [], []
    for camp, g in df.groupby("campaign", sort=False):
        g = g.reset_index(drop=True)
        yg = g["latency_ms_median"].to_numpy(float)
        insample = hit(yg, linear().fit(g, yg).predict(g))
        k5, _ = cross_validate(g, linear, split="kfold")
        lofo, p = cross_validate(g, linear, split="family")
        lr = np.log(p["predicted"] / p["measured"])
        off = lr - lr.groupby(p["family"]).transform("median")
        held.append(p.assign(offset_out=np.exp(off)))
        per.append({"campaign": camp, "in_sample": insample, "kfold5": k5["within10"], "held_out": lofo["within10"],
                    "held_out_median": lofo["median_ape"]})
    per = pd.DataFrame(per)
    print("\nwithin +-10 %, mean over the campaigns (one fit per campaign):")
    print(f"  in-sample {per['in_sample'].mean() * 100:.1f} %   random 5-fold {per['kfold5'].mean() * 100:.1f} %   "
          f"held-out families {per['held_out'].mean() * 100:.1f} %")
    held = pd.concat(held, ignore_index=True)
    print(f"  held out, each family's median error divided out: {hit(np.ones(len(held)), held['offset_out']) * 100:.1f} % "
          f"(as is: {hit(held['measured'], held['predicted']) * 100:.1f} %)")

    if df["campaign"].nunique() > 1:
        pooled = linear().fit(df, yd).predict(df)
        fam = pd.Series({f: hit(yd[i], pooled[i]) for f, i in df.groupby("family").indices.items()})
        print(f"\nall campaigns in one fit (host speed divided out), in-sample: {hit(yd, pooled) * 100:.1f} %")
        print("  per family: " + ", ".join(f"{f} {v * 100:.0f} %" for f, v in fam.sort_values().items()))

    if args.residuals:
        print("\nheld-out families, mean over the campaigns (median error, within +-10 %):")
        from tvmlat.predictors.residual import ResidualPredictor

        print(f"  {'linear loops':40s} {per['held_out_median'].mean():5.2f} %  {per['held_out'].mean() * 100:5.1f} %")
        models = {"loops + XGBoost on the counted features": lambda: ResidualPredictor(inputs="features"),
                  "loops + XGBoost on the terms' shares": make_model_factory("linear+xgb", "loops")}
        for name, make in models.items():
            ms = [cross_validate(g.reset_index(drop=True), make, split="family")[0]
                  for _, g in df.groupby("campaign", sort=False)]
            print(f"  {name:40s} {np.mean([m['median_ape'] for m in ms]):5.2f} %  "
                  f"{np.mean([m['within10'] for m in ms]) * 100:5.1f} %")


if __name__ == "__main__":
    main()
