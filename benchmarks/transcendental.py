"""A candidate for the next features version: the elements of transcendental elementwise ops as a term of their own.

Timed kernel by kernel (``benchmarks/kernel_breakdown.py``), a GELU costs ~3.7 ns per element on the AMD host, where
a ReLU costs ~0.1: its ``erf`` is a polynomial of a dozen multiply-adds and a division per element, and the untuned
build leaves it at that. The loop features price every elementwise element alike (``acts``, ``ew_slow``), so a
held-out family whose time goes to GELU is predicted short: the ConvNeXt blocks of ``examples/own_blocks.py`` at
56 x 56, 26 % of whose time is GELU, at 0.65x and 0.78x. Here that work is one more column, ``ew_transc``: GELU's
elements in the MLP family (tokens x hidden), softmax's ``exp`` in attention (heads x tokens^2) and the
squeeze-excitation gate's ``sigmoid`` (channels); ConvNeXt's GELU (hw^2 x 4c) for campaigns with those blocks.
It is counted from the block specs (and ConvNeXt names) here, not by the features counters: a prototype, to decide
whether a features version should count it (docs/accuracy-log.md, "Transcendental elements").

For each campaign (fitted on its own), the linear ``loops`` model with and without the column, held-out families and
random 5-fold; mean over campaigns of the share within +-10 % and the median error:

    python benchmarks/transcendental.py datasets/llvm/calib-znver4-n100-s*.parquet [--which mlp attention]
"""

from __future__ import annotations

import argparse
import json
import re
from concurrent.futures import ProcessPoolExecutor

import pandas as pd

FAMILIES = ("mlp", "attention", "squeeze_excitation")
COLUMN = "ew_transc"


def transcendental(spec: str, name: str, which=FAMILIES) -> int:
    """The elements of a block's transcendental elementwise ops, from its spec JSON (or, for a row measured from
    ``examples/own_blocks.py:convnext``, its name); 0 for the rest."""
    if spec:
        s = json.loads(spec)
        fam, batch = s["family"], s.get("batch", 1)
        if fam not in which:
            return 0
        if fam == "mlp":  # GELU on tokens x dim*ratio
            return batch * s["tokens"] * s["dim"] * s["ratio"]
        if fam == "attention":  # softmax's exp on heads x tokens x tokens
            return batch * s.get("heads", 1) * s["tokens"] ** 2
        return batch * s["c"]  # squeeze-excitation's sigmoid gate
    m = re.fullmatch(r"convnext\(c=(\d+),hw=(\d+)\)", name)
    return int(m.group(2)) ** 2 * 4 * int(m.group(1)) if m else 0


_LOOPS = None  # the loops feature set as shipped (each worker adds the column to it, never to itself twice)


def campaign_rows(path: str, variant: str, which=FAMILIES) -> pd.DataFrame:
    """Held-out-family and 5-fold predictions of one campaign's blocks by linear ``loops``, ``variant`` "with" the
    column or "without" it."""
    import tvmlat.predictors.linear as linear
    from tvmlat.dataset import load_for_fit, ok_rows
    from tvmlat.errors import TvmlatError
    from tvmlat.metrics import cross_validate

    global _LOOPS
    _LOOPS = _LOOPS or linear.FEATURE_SETS["loops"]
    try:
        df = ok_rows(load_for_fit(path)).reset_index(drop=True)
    except TvmlatError as e:
        raise SystemExit(f"error: {e}") from None
    linear.FEATURE_SETS["loops"] = _LOOPS
    if variant == "with":
        df[COLUMN] = [transcendental(s if isinstance(s, str) else "", n, which) for s, n in zip(df["spec"], df["name"])]
        linear.FEATURE_SETS["loops"] = ([*_LOOPS[0], COLUMN], *_LOOPS[1:])
    make = lambda: linear.LinearPredictor(features="loops")  # noqa: E731
    parts = [cross_validate(df, make, split=s, k=5)[1].assign(split=s) for s in ("family", "kfold")]
    linear.FEATURE_SETS["loops"] = _LOOPS
    return pd.concat(parts)[["block_id", "family", "measured", "predicted", "split"]].assign(campaign=path,
                                                                                             variant=variant)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+", help="campaign parquet files of one host")
    ap.add_argument("--which", nargs="+", default=list(FAMILIES), choices=FAMILIES,
                    help="the families whose transcendental elements count")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    jobs = [(p, v) for v in ("without", "with") for p in a.datasets]
    with ProcessPoolExecutor(a.jobs) as ex:
        r = pd.concat(ex.map(campaign_rows, *zip(*jobs), [tuple(a.which)] * len(jobs)), ignore_index=True)
    r["ape"] = (r["predicted"] / r["measured"] - 1).abs()
    r["hit"] = r["ape"] <= 0.10
    t = r.groupby(["split", "variant", "campaign"]).agg(within10=("hit", "mean"), median_ape=("ape", "median"))
    print(f"{len(a.datasets)} campaigns, linear loops without and with {COLUMN} ({', '.join(a.which)}); mean over "
          "campaigns (%):")
    print((100 * t.groupby(["split", "variant"]).mean()).round(2).to_string())
    fam = r[r["split"] == "family"].groupby(["family", "variant"])["hit"].mean().unstack("variant")
    print("\nheld-out families, within +-10 % (%):")
    print((100 * fam[["without", "with"]]).round(1).to_string())


if __name__ == "__main__":
    main()
