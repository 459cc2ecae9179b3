"""A family the calibration never saw, and what a few of its blocks buy (README, "Where the default model stands").

For each campaign (a shipped 100-block dataset, fitted on its own as a user's calibration is) and each of its
families (``tvmlat.ablation.family_shots``, which `tvmlat ablation` reports with shots counted 5 times): the family's blocks are shuffled, the last ones are the test blocks, and the first k (0, 1, 2, 3, 5) are
"shots", blocks of the new family a user measured too. Every k is scored on the same test blocks:

* ``held``: the linear ``loops`` model fitted on the other families only (k = 0; the leave-one-family-out figure);
* ``fit wW``: fitted on the other families plus the k shots, each shot counted W times;
* ``offset``: the held-out model times the shots' geometric-mean ratio measured/predicted (one factor per family,
  as a network correction is one per network set).

    python benchmarks/family_shots.py datasets/llvm/calib-znver4-n100-s*.parquet [--draws 3] [--weights 1 5 20]
        [--model linear+xgb]
"""

from __future__ import annotations

import argparse
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

WITHIN = 0.10


def campaign_rows(path: str, draws: int, weights: tuple[int, ...], model: str = "linear") -> pd.DataFrame:
    """Every test block's prediction by every method and k, for one campaign's file (``tvmlat.ablation.family_shots``
    with the held-out model's offset too)."""
    from tvmlat.ablation import family_shots
    from tvmlat.cli.fit import make_model_factory
    from tvmlat.dataset import load_for_fit, ok_rows
    from tvmlat.errors import TvmlatError

    try:
        df = ok_rows(load_for_fit(path)).reset_index(drop=True)
    except TvmlatError as e:
        raise SystemExit(f"error: {e}") from None
    seed = zlib.crc32(Path(path).name.encode())  # the same draws on every run, wherever the file is
    return family_shots(df, make_model_factory(model, "loops"), draws=draws, weights=weights, seed=seed,
                        offset=True).assign(campaign=str(path))


def main() -> None:
    from tvmlat.ablation import SHOTS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+", help="campaign parquet files of one host")
    ap.add_argument("--draws", type=int, default=3, help="shuffles of each family per campaign")
    ap.add_argument("--weights", type=int, nargs="+", default=[1, 5, 20], help="how many times a shot counts")
    ap.add_argument("--model", default="linear", help="linear | linear+xgb (the residual tree learns from the shots "
                    "too)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--csv", help="write every test prediction here")
    a = ap.parse_args()
    from tvmlat.cli.fit import make_model_factory
    from tvmlat.errors import TvmlatError

    try:
        make_model_factory(a.model, "loops")
    except TvmlatError as e:
        raise SystemExit(f"error: {e}") from None
    with ProcessPoolExecutor(a.jobs) as ex:
        n = len(a.datasets)
        d = pd.concat(ex.map(campaign_rows, a.datasets, [a.draws] * n, [tuple(a.weights)] * n, [a.model] * n),
                      ignore_index=True)
    if d.empty:
        raise SystemExit(f"error: no family has {max(SHOTS) + 2} blocks in these campaigns; give 100-block campaigns")
    if a.csv:
        d.to_csv(a.csv, index=False)
    d["ape"] = (d["predicted"] / d["measured"] - 1).abs()
    d["hit"] = d["ape"] <= WITHIN
    n_test = d[(d["method"] == "held") & (d["k"] == 0)]
    print(f"{len(a.datasets)} campaigns, {n_test['family'].nunique()} families, {len(n_test)} test predictions per "
          f"method and k ({a.draws} draws)\n")
    print(f"model: {a.model} (loops features)")
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
