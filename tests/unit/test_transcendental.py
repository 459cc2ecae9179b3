"""``benchmarks/transcendental.py``: the loops model with and without features version 20's ``ew_transc``."""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import transcendental  # noqa: E402


def test_with_the_column_is_the_shipped_model_and_without_it_the_fit_changes():
    from tvmlat.dataset import load_for_fit, ok_rows
    from tvmlat.metrics import cross_validate
    from tvmlat.predictors import LinearPredictor

    path = str(ROOT / "datasets" / "llvm" / "calib-znver4-n100-s3.parquet")
    without = transcendental.campaign_rows(path, "without")
    with_it = transcendental.campaign_rows(path, "with")
    df = ok_rows(load_for_fit(path)).reset_index(drop=True)
    assert (df[transcendental.COLUMN] > 0).any()  # the campaign has MLPs, attention or SE blocks
    ref = cross_validate(df, lambda: LinearPredictor(features="loops"), split="family")[1]
    fam = with_it[with_it["split"] == "family"]
    assert np.allclose(fam["predicted"].to_numpy(), ref["predicted"].to_numpy())
    assert not np.allclose(with_it["predicted"].to_numpy(), without["predicted"].to_numpy())
    assert transcendental.COLUMN not in transcendental.make_model("without").feature_names
