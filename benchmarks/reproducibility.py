"""How well two campaigns of the same blocks agree, block by block.

    python benchmarks/reproducibility.py A.parquet B.parquet

Measure the same blocks twice (e.g. ``tvmlat calibrate --samples 100 --out runs/a`` and again
with ``--out runs/b``, each with its own ``TVMLAT_CACHE`` to compile afresh) and compare. For
every latency column both have (the reported median; with interleaved rounds also the
back-to-back first pass it replaced, the rounds' median before their common drift was divided
out (``latency_ms_raw``), and the 10th percentile) it prints the median and p90 of
|log(A/B)| over the blocks, also after removing the two runs' common shift (the median log ratio:
a whole run slower by some percent moves every block alike, which a fitted model absorbs).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

COLUMNS = ["latency_ms_median", "latency_ms_raw", "latency_ms_first", "latency_ms_p10"]


def agreement(a: pd.DataFrame, b: pd.DataFrame, col: str) -> dict[str, float]:
    both = a[["block_id", col]].merge(b[["block_id", col]], on="block_id", suffixes=("_a", "_b")).dropna()
    both = both[(both[f"{col}_a"] > 0) & (both[f"{col}_b"] > 0)]
    d = np.log(both[f"{col}_a"].to_numpy(float) / both[f"{col}_b"].to_numpy(float))
    c = d - np.median(d)
    return {"column": col, "blocks": len(d), "median_pct": 100 * float(np.median(np.abs(d))),
            "p90_pct": 100 * float(np.quantile(np.abs(d), 0.9)), "shift_pct": 100 * float(np.expm1(np.median(d))),
            "median_less_shift_pct": 100 * float(np.median(np.abs(c))),
            "p90_less_shift_pct": 100 * float(np.quantile(np.abs(c), 0.9))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args()
    from _bench import read_rows

    a, b = (read_rows(p, "give two `tvmlat calibrate` datasets of the same blocks") for p in (args.a, args.b))
    a, b = a[a["status"] == "ok"], b[b["status"] == "ok"]
    rows = [agreement(a, b, c) for c in COLUMNS if c in a and c in b and a[c].notna().any() and b[c].notna().any()]
    print(pd.DataFrame(rows).round(2).to_string(index=False))


if __name__ == "__main__":
    main()
