"""A family the calibration never saw, and what a few of its blocks buy (README, "Where the default model stands").

For each campaign (a shipped 100-block dataset, fitted on its own as a user's calibration is) and each of its
families: the family's blocks are shuffled, the last ones are the test blocks, and the first k (0, 1, 2, 3, 5) are
"shots", blocks of the new family a user measured too. Every k is scored on the same test blocks:

* ``held``: the linear ``loops`` model fitted on the other families only (k = 0; the leave-one-family-out figure);
* ``fit wW``: fitted on the other families plus the k shots, each shot counted W times;
* ``offset``: the held-out model times the shots' geometric-mean ratio measured/predicted (one factor per family,
  as a network correction is one per network set).

    python benchmarks/family_shots.py datasets/llvm/calib-znver4-n100-s*.parquet [--draws 3] [--weights 1 5 20]
"""

from __future__ import annotations

import argparse
import zlib
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

SHOTS = (0, 1, 2, 3, 5)
WITHIN = 0.10


def campaign_rows(path: str, draws: int, weights: tuple[int, ...]) -> list[dict]:
    """Every test block's prediction by every method and k, for one campaign's file."""
    from tvmlat.dataset import load_for_fit, ok_rows
    from tvmlat.errors import TvmlatError
    from tvmlat.predictors import LinearPredictor

    try:
        df = ok_rows(load_for_fit(path)).reset_index(drop=True)
    except TvmlatError as e:
        raise SystemExit(f"error: {e}") from None
    y = df["latency_ms_median"].to_numpy(float)
    rng = np.random.default_rng(zlib.crc32(str(path).encode()))  # the same draws on every run
    fit = lambda rows: LinearPredictor(features="loops").fit(df.iloc[rows], y[rows])  # noqa: E731
    out = []
    for fam in sorted(df["family"].unique()):
        mine = np.flatnonzero((df["family"] == fam).to_numpy())
        if len(mine) < max(SHOTS) + 2:  # too few to leave test blocks after the shots
            continue
        rest = np.flatnonzero((df["family"] != fam).to_numpy())
        held = fit(rest)
        for draw in range(draws):
            order = rng.permutation(mine)
            test = order[max(SHOTS):]
            base = held.predict(df.iloc[test])
            for k in SHOTS:
                shots = order[:k]
                preds = {"held": base}
                if k:
                    ratio = y[shots] / held.predict(df.iloc[shots])
                    preds["offset"] = base * float(np.exp(np.mean(np.log(ratio))))
                    for w in weights:
                        preds[f"fit w{w}"] = fit(np.concatenate([rest] + [shots] * w)).predict(df.iloc[test])
                for method, p in preds.items():
                    out += [{"campaign": str(path), "family": fam, "draw": draw, "k": k, "method": method,
                             "measured": y[t], "predicted": float(v)} for t, v in zip(test, p)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+", help="campaign parquet files of one host")
    ap.add_argument("--draws", type=int, default=3, help="shuffles of each family per campaign")
    ap.add_argument("--weights", type=int, nargs="+", default=[1, 5, 20], help="how many times a shot counts")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--csv", help="write every test prediction here")
    a = ap.parse_args()
    with ProcessPoolExecutor(a.jobs) as ex:
        parts = ex.map(campaign_rows, a.datasets, [a.draws] * len(a.datasets), [tuple(a.weights)] * len(a.datasets))
        d = pd.DataFrame([r for part in parts for r in part])
    if d.empty:
        raise SystemExit(f"error: no family has {max(SHOTS) + 2} blocks in these campaigns; give 100-block campaigns")
    if a.csv:
        d.to_csv(a.csv, index=False)
    d["ape"] = (d["predicted"] / d["measured"] - 1).abs()
    d["hit"] = d["ape"] <= WITHIN
    n_test = d[(d["method"] == "held") & (d["k"] == 0)]
    print(f"{len(a.datasets)} campaigns, {n_test['family'].nunique()} families, {len(n_test)} test predictions per "
          f"method and k ({a.draws} draws)\n")
    t = d.pivot_table(index="method", columns="k", values="hit", aggfunc="mean")
    t = t.loc[["held", "offset"] + [f"fit w{w}" for w in a.weights]]
    print("within +-10 % (share of test blocks), by shots k:")
    print((100 * t).round(1).to_string(na_rep="-"))
    m = d.pivot_table(index="method", columns="k", values="ape", aggfunc="median").loc[t.index]
    print("\nmedian error (%):")
    print((100 * m).round(2).to_string(na_rep="-"))
    best = t[max(SHOTS)].drop(["held", "offset"]).idxmax()  # the weight that did best with the most shots
    f = d[d["method"].isin(["held", best])].pivot_table(index="family", columns=["method", "k"], values="hit",
                                                         aggfunc="mean")
    cols = [("held", 0)] + [(best, k) for k in SHOTS if k]
    print(f"\nper family, within +-10 % (%): held out, then {best} with k shots")
    print((100 * f[cols]).round(0).to_string())


if __name__ == "__main__":
    main()
