"""Calibration time per block, split into export / import / compile / measure.

    python benchmarks/calibration_breakdown.py                 # measure 20 fresh blocks on llvm
    python benchmarks/calibration_breakdown.py --samples 50 --seed 3
    python benchmarks/calibration_breakdown.py --dataset datasets/llvm/calib-n100-s0.parquet

Prints mean / median / total seconds per stage, overall and per family. With --dataset it only
summarises the stage timings a campaign recorded (no measuring).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

STAGES = ["export_s", "import_s", "compile_s", "measure_s"]


def measure(samples: int, seed: int, target_name: str) -> pd.DataFrame:
    from tvmlat.blocks import sample_specs
    from tvmlat.measure import run_campaign, spec_workloads
    from tvmlat.runners.local import LocalRunner
    from tvmlat.targets import load_target

    t = load_target(target_name)
    t0 = time.perf_counter()
    rows = run_campaign(spec_workloads(sample_specs(samples, seed=seed)), LocalRunner(t), t, None)
    print(f"wall time for {samples} blocks: {time.perf_counter() - t0:.1f} s")
    return pd.DataFrame(rows)


def report(df: pd.DataFrame) -> None:
    df = df[df["status"] == "ok"].copy()
    df["total_s"] = df[STAGES].sum(axis=1)
    cols = STAGES + ["total_s"]
    summary = pd.DataFrame({"mean": df[cols].mean(), "median": df[cols].median(), "sum": df[cols].sum()})
    summary["share_%"] = 100 * summary["sum"] / summary.loc["total_s", "sum"]
    print(f"\nper-block stage times over {len(df)} blocks (seconds)")
    print(summary.round(3).to_string())
    print("\nmean seconds per block, by family")
    print(df.groupby("family")[cols].mean().round(3).to_string())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", default="llvm")
    ap.add_argument("--dataset", type=Path, help="summarise an existing campaign instead of measuring")
    a = ap.parse_args()
    from _bench import read_rows

    report(read_rows(a.dataset, "give a `tvmlat calibrate` dataset, or leave --dataset out to measure")
           if a.dataset else measure(a.samples, a.seed, a.target))


if __name__ == "__main__":
    main()
