import math

import numpy as np
import pandas as pd
import pytest

from tvmlat.errors import TvmlatError
from tvmlat.metrics import METRIC_LABELS, accuracy, cross_validate, family_splits, kfold_splits, per_family
from tvmlat.predictors import LinearPredictor


def test_accuracy_perfect():
    y = np.array([0.05, 0.5, 2.0, 10.0, 40.0])
    m = accuracy(y, y)
    assert set(m) == set(METRIC_LABELS)
    assert m["n"] == 5
    assert m["median_ape"] == 0.0
    assert m["mape"] == 0.0 and m["rmspe"] == 0.0
    assert m["within5"] == 1.0 and m["within10"] == 1.0
    assert m["spearman"] == pytest.approx(1.0)
    assert m["r2_log"] == pytest.approx(1.0)
    assert m["median_ape_ge1ms"] == 0.0 and m["median_ape_lt1ms"] == 0.0
    other = accuracy(y, y, latency=False)  # bytes or millijoules: no medians split at 1 ms
    assert set(other) == set(METRIC_LABELS) - {"median_ape_ge1ms", "median_ape_lt1ms"}
    assert set(accuracy([], [], latency=False)) == set(other)


def test_accuracy_known_errors():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = y * np.array([1.0, 1.08, 0.8, 1.5])  # APE 0, 8, 20, 50
    m = accuracy(y, p)
    assert m["median_ape"] == pytest.approx(14.0)
    assert m["within5"] == pytest.approx(0.25)
    assert m["within10"] == pytest.approx(0.5)
    assert m["mape"] == pytest.approx(19.5)
    assert math.isnan(m["median_ape_lt1ms"])  # no block below 1 ms
    assert m["worst_x"] == pytest.approx(1.5)
    far = accuracy(y, p * np.array([1, 1, 1, 1 / 1500]))  # 1000x too fast: APE says 99.9 %, the factor 1000
    assert far["worst_x"] == pytest.approx(1000) and far["mape"] < 45


def test_accuracy_empty():
    m = accuracy([], [])
    assert m["n"] == 0
    assert math.isnan(m["median_ape"])


def _frame(families):
    return pd.DataFrame({"block_id": [f"b{i}" for i in range(len(families))], "family": families})


def test_family_splits_hold_out_one_family_and_partition():
    df = _frame(["a", "b", "a", "c", "b", "a"])
    splits = list(family_splits(df))
    assert [name for name, _, _ in splits] == ["a", "b", "c"]
    all_test = []
    for name, tr, te in splits:
        assert set(df["family"].iloc[te]) == {name}
        assert name not in set(df["family"].iloc[tr])
        assert sorted(np.concatenate([tr, te])) == list(range(len(df)))
        assert not set(tr) & set(te)
        all_test += list(te)
    assert sorted(all_test) == list(range(len(df)))  # every row is held out exactly once


def test_kfold_splits_partition():
    df = _frame(["a"] * 23)
    tests = []
    for _, tr, te in kfold_splits(df, k=5, seed=3):
        assert not set(tr) & set(te)
        assert len(tr) + len(te) == 23
        tests += list(te)
    assert sorted(tests) == list(range(23))
    assert [list(te) for _, _, te in kfold_splits(df, 5, 3)] == [list(te) for _, _, te in kfold_splits(df, 5, 3)]


@pytest.mark.parametrize("split", ["family", "kfold"])
def test_cross_validate_predicts_every_row(ok_frame, split):
    metrics, preds = cross_validate(ok_frame, lambda: LinearPredictor(features="published"), split=split, k=5)
    assert len(preds) == len(ok_frame)
    assert sorted(preds["block_id"]) == sorted(ok_frame["block_id"])
    assert list(preds.columns) == ["block_id", "family", "measured", "predicted", "split",
                                   # each term's share of the held-out prediction (the interval's neighbours)
                                   "share:acts", "share:inp", "share:flops", "share:intercept"]
    np.testing.assert_allclose(preds.filter(like="share:").sum(axis=1), 1.0)
    assert np.all(np.isfinite(preds["predicted"]))
    assert metrics["n"] == len(ok_frame)
    if split == "family":
        assert (preds["split"] == preds["family"]).all()
    # measured values line up with the rows they came from
    by_id = ok_frame.set_index("block_id")["latency_ms_median"]
    assert np.allclose(preds["measured"].to_numpy(float), by_id.loc[preds["block_id"]].to_numpy(float))
    fam = per_family(preds)
    assert set(fam["family"]) == set(ok_frame["family"])
    assert fam["n"].sum() == len(ok_frame)


def test_cross_validate_single_family_does_not_crash(ok_frame):
    one = ok_frame[ok_frame["family"] == ok_frame["family"].iloc[0]].reset_index(drop=True)
    try:  # either no held-out predictions or a user-facing error; not a bare ValueError
        metrics, preds = cross_validate(one, lambda: LinearPredictor(features="published"), split="family")
    except TvmlatError:
        return
    assert len(preds) == 0
