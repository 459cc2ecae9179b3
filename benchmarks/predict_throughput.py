"""Batch prediction speed, the latency-oracle use in architecture search.

    python benchmarks/predict_throughput.py [--rows 1000000] [--dataset D.parquet]

Fits the linear ('loops', the default, 'ops' and 'published' features) and linear + XGBoost residual predictors on a dataset (the
shipped CPU campaign by default) and prints predictions per second on ROWS feature rows
(the dataset's rows repeated), i.e. Predictor.predict(features_df) vectorised; and, where the dataset
has its predictor file beside it, the same with a 90 % interval.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tvmlat.dataset import load_for_fit, ok_rows
from tvmlat.predictors import LinearPredictor
from tvmlat.predictors.residual import ResidualPredictor

DEFAULT = Path(__file__).resolve().parent.parent / "datasets" / "llvm" / "calib-emeraldrapids-n200-s0.parquet"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dataset", type=Path, default=DEFAULT)
    a = ap.parse_args()
    df = ok_rows(load_for_fit(a.dataset))
    big = pd.concat([df] * (a.rows // len(df) + 1), ignore_index=True).iloc[: a.rows]
    y = df["latency_ms_median"]
    for name, model in [("linear (loops)", LinearPredictor()), ("linear (ops)", LinearPredictor(features="ops")),
                        ("linear (published)", LinearPredictor(features="published")),
                        ("linear + xgb residual", ResidualPredictor())]:
        model.fit(df, y)
        model.predict(big.iloc[:1000])
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            model.predict(big)
            best = min(best, time.perf_counter() - t0)
        print(f"{name:24s} {a.rows / best:14,.0f} predictions/s  ({best:.3f} s for {a.rows:,} rows)")
    pfile = a.dataset.with_name(a.dataset.stem + ".predictor.json")  # its shipped predictor: with 90 % intervals
    if pfile.is_file():
        from tvmlat.predictors import load_predictor

        loaded = load_predictor(pfile)
        loaded.interval(big.iloc[:1000], 0.9)
        t0 = time.perf_counter()
        loaded.interval(big, 0.9)
        dt = time.perf_counter() - t0
        cal = loaded.doc.get("interval", {})
        how = ("neighbours by make-up" if cal.get("cost_shares") else "neighbours by latency"
               if cal.get("predicted_ms") else "one global half-width")
        print(f"{'loops + 90 % interval':24s} {a.rows / dt:14,.0f} predictions/s  ({pfile.name}, {how})")
    # the architecture-search path: block specs in, latencies out (features in closed form, no torch)
    from tvmlat.analytic_features import analytic_arrays
    from tvmlat.blocks import sample_specs
    from tvmlat.predictors import predict_specs

    specs = sample_specs(5_000, seed=1)
    model = LinearPredictor().fit(df, y)
    t0 = time.perf_counter()
    predict_specs(model, specs)
    dt = time.perf_counter() - t0
    print(f"{'specs -> latency':24s} {len(specs) / dt:14,.0f} specs/s  (predict_specs on {len(specs):,} sampled specs)")
    n = a.rows
    rng = np.random.default_rng(0)
    params = dict(batch=np.ones(n, dtype=np.int64), cin=rng.choice([16, 32, 64, 128], n),
                  cout=rng.choice([16, 32, 64, 128], n), hw=rng.choice([7, 14, 28, 56], n),
                  k=rng.choice([1, 3, 5], n), stride=rng.choice([1, 2], n), groups=np.ones(n, dtype=np.int64))
    t0 = time.perf_counter()
    feats = pd.DataFrame(analytic_arrays("conv_bn_relu", **params))
    feats["family"] = "conv_bn_relu"
    model.predict(feats)
    dt = time.perf_counter() - t0
    print(f"{'arrays -> latency':24s} {n / dt:14,.0f} specs/s  (analytic_arrays + predict, {n:,} conv specs)")


if __name__ == "__main__":
    main()
