"""What features version 20's ``ew_transc`` (the elements of GELU, sigmoid, softmax... : ops that evaluate exp, erf,
tanh or log per element) does for the linear ``loops`` model: each campaign fitted on its own with and without it.

Timed kernel by kernel (``benchmarks/kernel_breakdown.py``), a GELU costs ~3.7 ns per element on the AMD host and a
sigmoid ~2.5, where a ReLU costs ~0.1: the untuned build evaluates ``erf`` / ``exp`` as a polynomial and a division
per element. Without the column every elementwise element is priced alike (``acts``, ``ew_slow``), and a held-out
family whose time goes to GELU is predicted short: the ConvNeXt blocks of ``examples/own_blocks.py`` at 56 x 56,
a fifth of whose time is GELU, at 0.65x and 0.78x. The column is counted by the three counters
(``loop_features.transc_loops``); "without" is the shipped ``loops`` set less that column (version 19's model).

For each campaign, held-out families and random 5-fold; mean over campaigns of the share within +-10 % and the
median error, then per family:

    python benchmarks/transcendental.py datasets/llvm/calib-znver4-n100-s*.parquet
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor

import pandas as pd

COLUMN = "ew_transc"


def make_model(variant: str):
    """The linear ``loops`` model as shipped ("with") or without ``COLUMN`` ("without"), ACTS and INP tied alike."""
    from tvmlat.predictors.linear import FEATURE_SETS, LinearPredictor

    if variant == "with":
        return LinearPredictor(features="loops")
    return LinearPredictor(features=[c for c in FEATURE_SETS["loops"][0] if c != COLUMN], tie=1.0)


def campaign_rows(path: str, variant: str) -> pd.DataFrame:
    """Held-out-family and 5-fold predictions of one campaign's blocks by linear ``loops`` "with" the column or
    "without" it."""
    from tvmlat.dataset import load_for_fit, ok_rows
    from tvmlat.errors import TvmlatError
    from tvmlat.metrics import cross_validate

    try:
        df = ok_rows(load_for_fit(path)).reset_index(drop=True)
    except TvmlatError as e:
        raise SystemExit(f"error: {e}") from None
    parts = [cross_validate(df, lambda: make_model(variant), split=s, k=5)[1].assign(split=s)
             for s in ("family", "kfold")]
    return pd.concat(parts)[["block_id", "family", "measured", "predicted", "split"]].assign(campaign=path,
                                                                                             variant=variant)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+", help="campaign parquet files of one host")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    jobs = [(p, v) for v in ("without", "with") for p in a.datasets]
    with ProcessPoolExecutor(a.jobs) as ex:
        r = pd.concat(ex.map(campaign_rows, *zip(*jobs)), ignore_index=True)
    r["ape"] = (r["predicted"] / r["measured"] - 1).abs()
    r["hit"] = r["ape"] <= 0.10
    t = r.groupby(["split", "variant", "campaign"]).agg(within10=("hit", "mean"), median_ape=("ape", "median"))
    print(f"{len(a.datasets)} campaigns, linear loops without and with {COLUMN}; mean over campaigns (%):")
    print((100 * t.groupby(["split", "variant"]).mean()).round(2).to_string())
    fam = r[r["split"] == "family"].groupby(["family", "variant"])["hit"].mean().unstack("variant")
    print("\nheld-out families, within +-10 % (%):")
    print((100 * fam[["without", "with"]]).round(1).to_string())


if __name__ == "__main__":
    main()
