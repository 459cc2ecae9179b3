"""A family the calibration never saw, and what a few of its blocks buy (README, "Where the default model stands").

For each campaign (a shipped 100-block dataset, fitted on its own as a user's calibration is) and each of its
families (``tvmlat.ablation.family_shots``, which `tvmlat ablation` reports with shots counted 3 times, as `calibrate --with` counts them): the family's blocks are shuffled, the last ones are the test blocks, and the first k (0, 1, 2, 3, 5) are
"shots", blocks of the new family a user measured too. Every k is scored on the same test blocks:

* ``held``: the linear ``loops`` model fitted on the other families only (k = 0; the leave-one-family-out figure);
* ``fit wW``: fitted on the other families plus the k shots, each shot counted W times;
* ``offset``: the held-out model times the shots' geometric-mean ratio measured/predicted (one factor per family,
  as a network correction is one per network set).

    python benchmarks/family_shots.py datasets/llvm/calib-znver4-n100-s*.parquet [--draws 3] [--weights 1 3 5]
        [--model linear+xgb]

What counting a new family's blocks W times does to the other families, held out (``--others K``: K blocks of each
family in turn counted 0 and W times, every other family left out and predicted):

    python benchmarks/family_shots.py datasets/llvm/calib-znver4-n100-s*.parquet --others 5 --weights 1 3 5 --draws 1

More own blocks than a 100-block campaign has of a family (``calibrate --with`` measures a dozen): the first 100
blocks of a 200-block campaign are the calibration (``--base``, the 100-block campaign of those blocks), its
families' 20 blocks the shots and test blocks:

    python benchmarks/family_shots.py datasets/llvm/calib-znver4-n200-s0.parquet \
        --base datasets/llvm/calib-znver4-n100-s0.parquet --shots 0 1 3 5 8 12 15 --draws 10 --weights 1 2 3 5
"""

from __future__ import annotations

import argparse
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from tvmlat.ablation import SHOTS

WITHIN = 0.10


def campaign_rows(path: str, draws: int, weights: tuple[int, ...], model: str = "linear", shots=None,
                  base: str | None = None) -> pd.DataFrame:
    """Every test block's prediction by every method and k, for one campaign's file (``tvmlat.ablation.family_shots``
    with the held-out model's offset too); ``base``: a dataset whose blocks are the only other families' blocks the
    calibration holds."""
    from tvmlat.ablation import family_shots
    from tvmlat.cli.fit import make_model_factory
    from tvmlat.dataset import load_for_fit, ok_rows
    from tvmlat.errors import TvmlatError

    try:
        df = ok_rows(load_for_fit(path)).reset_index(drop=True)
        mask = None if base is None else df["block_id"].isin(set(load_for_fit(base)["block_id"])).to_numpy()
    except TvmlatError as e:
        raise SystemExit(f"error: {e}") from None
    seed = zlib.crc32(Path(path).name.encode())  # the same draws on every run, wherever the file is
    try:
        rows = family_shots(df, make_model_factory(model, "loops"), draws=draws, weights=weights, seed=seed,
                            offset=True, base=mask, **({"shots": tuple(shots)} if shots else {}))
    except TvmlatError as e:
        if mask is None:
            raise
        raise SystemExit(f"error: {path} holds {int(mask.sum())} of the blocks of --base {base}, too few to fit ({e}); "
                         "give the campaign whose first blocks they are") from None
    return rows.assign(campaign=str(path))


def others_rows(path: str, k: int, weights: tuple[int, ...], draws: int, base: str | None = None) -> pd.DataFrame:
    """What a new family F's k shots, counted W times (0: not in the calibration), do to each other family G held
    out: per campaign, F and draw, the linear ``loops`` model fitted on the calibration without G (and without F's
    other blocks) predicts G's blocks. Rows: F, G, W, hit (within +-10 %), ape."""
    import numpy as np

    from tvmlat.dataset import load_for_fit, ok_rows
    from tvmlat.predictors import LinearPredictor

    df = ok_rows(load_for_fit(path)).reset_index(drop=True)
    inside = (np.ones(len(df), dtype=bool) if base is None
              else df["block_id"].isin(set(load_for_fit(base)["block_id"])).to_numpy())
    y, fams = df["latency_ms_median"].to_numpy(dtype=float), df["family"].to_numpy()
    blocks = df["block_id"].astype(str).to_numpy()
    rng = np.random.default_rng(zlib.crc32(Path(path).name.encode()) + 1)
    out = []
    for new in sorted(set(fams)):
        ids = np.unique(blocks[fams == new])
        if len(ids) < k + 2:
            continue
        for _ in range(draws):
            shots = np.flatnonzero(np.isin(blocks, rng.permutation(ids)[:k]) & (fams == new))
            for other in sorted(set(fams) - {new}):
                rest, test = np.flatnonzero(inside & (fams != new) & (fams != other)), np.flatnonzero(fams == other)
                for w in (0, *weights):
                    tr = np.concatenate([rest] + [shots] * w)
                    ape = np.abs(LinearPredictor(features="loops").fit(df.iloc[tr], y[tr]).predict(df.iloc[test])
                                 / y[test] - 1)
                    out.append(pd.DataFrame({"F": new, "G": other, "W": w, "hit": ape <= WITHIN, "ape": ape}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["F", "G", "W", "hit", "ape"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+", help="campaign parquet files of one host")
    ap.add_argument("--draws", type=int, default=3, help="shuffles of each family per campaign")
    ap.add_argument("--weights", type=int, nargs="+", default=[1, 3, 5], help="how many times a shot counts")
    ap.add_argument("--shots", type=int, nargs="+", default=list(SHOTS), help="the k to try (0: held out)")
    ap.add_argument("--base", help="a dataset whose blocks are the only blocks of other families the calibration "
                    "holds (the first 100 of a 200-block campaign)")
    ap.add_argument("--model", default="linear", help="linear | linear+xgb (the residual tree learns from the shots "
                    "too)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--csv", help="write every test prediction here")
    ap.add_argument("--others", type=int, metavar="K", help="instead: what K shots of a new family, counted each "
                    "--weights times, do to the other families held out (linear loops model)")
    a = ap.parse_args()
    from tvmlat.cli.fit import make_model_factory
    from tvmlat.errors import TvmlatError

    try:
        make_model_factory(a.model, "loops")
    except TvmlatError as e:
        raise SystemExit(f"error: {e}") from None
    n = len(a.datasets)
    if a.others is not None:
        with ProcessPoolExecutor(a.jobs) as ex:
            o = pd.concat(ex.map(others_rows, a.datasets, [a.others] * n, [tuple(a.weights)] * n, [a.draws] * n,
                                 [a.base] * n), ignore_index=True)
        if o.empty:
            raise SystemExit(f"error: no family has {a.others + 2} blocks in these campaigns; give fewer --others")
        print(f"{n} campaigns: the other families held out, with {a.others} blocks of a new family counted W times "
              f"(0: without them); within +-10 % and median error (%)")
        g = o.groupby("W")
        print(pd.DataFrame({"within10": (100 * g["hit"].mean()).round(2), "median_ape": (100 * g["ape"].median())
                            .round(2)}).to_string())
        return
    with ProcessPoolExecutor(a.jobs) as ex:
        d = pd.concat(ex.map(campaign_rows, a.datasets, [a.draws] * n, [tuple(a.weights)] * n, [a.model] * n,
                             [sorted(set(a.shots) | {0})] * n, [a.base] * n), ignore_index=True)
    shots = sorted(set(a.shots) | {0})
    if d.empty:
        raise SystemExit(f"error: no family has {max(shots) + 2} blocks in these campaigns; give 100-block campaigns "
                         "or fewer --shots")
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
    best = t[max(shots)].drop(["held", "offset"]).idxmax()  # the weight that did best with the most shots
    f = d[d["method"].isin(["held", best])].pivot_table(index="family", columns=["method", "k"], values="hit",
                                                         aggfunc="mean")
    cols = [("held", 0)] + [(best, k) for k in shots if k]
    print(f"\nper family, within +-10 % (%): held out, then {best} with k shots")
    print((100 * f[cols]).round(0).to_string())


if __name__ == "__main__":
    main()
