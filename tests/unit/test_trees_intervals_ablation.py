"""XGBoost predictors, conformal intervals and the ablation report (fake-runner data, no TVM)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tvmlat.ablation import model_zoo, run_ablation, write_report
from tvmlat.errors import PredictorError
from tvmlat.metrics import cross_validate
from tvmlat.predictors import LinearPredictor, load_predictor, save_predictor
from tvmlat.predictors.conformal import (NEIGHBOURS, SCALE_FLOOR, conformal_quantile, heldout_calibration,
                                        interval_bounds, local_scale, split_coverage)
from tvmlat.predictors.residual import ResidualPredictor, XGBPredictor, tree_features
from helpers import assert_user_error, make_target, run_cli

pytest.importorskip("xgboost")


def _y(df):
    return df["latency_ms_median"].to_numpy(float)


@pytest.mark.parametrize("cls", [ResidualPredictor, XGBPredictor])
def test_tree_predictors_fit_predict_and_roundtrip(cls, ok_frame, tmp_path):
    model = cls(n_estimators=30).fit(ok_frame, _y(ok_frame))
    pred = model.predict(ok_frame)
    assert pred.shape == (len(ok_frame),) and np.all(np.isfinite(pred)) and np.all(pred > 0)
    path = tmp_path / "p.json"
    save_predictor(model, path, target=make_target().to_dict(), profile="default")
    doc = json.loads(path.read_text())
    assert doc["kind"] == cls.kind
    assert "learner" in doc["model"]["xgboost"]  # xgboost's own JSON, embedded as data
    again = load_predictor(path)
    np.testing.assert_allclose(again.predict(ok_frame), pred, rtol=1e-6)


@pytest.mark.parametrize("inputs", ["shares", "features"])
def test_residual_model_fits_training_data_better_than_its_linear_model(ok_frame, inputs):
    y = _y(ok_frame)
    res = ResidualPredictor(n_estimators=100, inputs=inputs).fit(ok_frame, y)
    err = lambda p: np.median(np.abs(np.log(p / y)))  # noqa: E731
    assert err(res.predict(ok_frame)) < err(res.linear_.predict(ok_frame))


def test_residual_applies_its_weight_of_the_trees_log_correction(ok_frame, tmp_path):
    """weight w: linear * exp(w * tree); 0 is the linear model, the file keeps w, a file without one (saved
    before the weight) applies the whole correction it was fitted with, and a bad weight is named."""
    y = _y(ok_frame)
    full = ResidualPredictor(n_estimators=30, weight=1.0).fit(ok_frame, y)
    lin = full.linear_.predict(ok_frame)
    tree = np.log(full.predict(ok_frame) / lin)
    assert np.abs(tree).max() > 1e-3  # the tree corrects something
    assert ResidualPredictor().weight == 1.0
    for w in (0.0, 0.5):
        part = ResidualPredictor(n_estimators=30, weight=w).fit(ok_frame, y)
        np.testing.assert_allclose(np.log(part.predict(ok_frame) / lin), w * tree, atol=1e-5)
    path = tmp_path / "p.json"
    save_predictor(ResidualPredictor(n_estimators=30, weight=0.5).fit(ok_frame, y), path,
                   target=make_target().to_dict(), profile="default")
    doc = json.loads(path.read_text())
    assert doc["model"]["params"]["weight"] == 0.5
    np.testing.assert_allclose(np.log(load_predictor(path).predict(ok_frame) / lin), 0.5 * tree, atol=1e-5)
    del doc["model"]["params"]["weight"]  # a file saved before the weight existed: the whole correction
    path.write_text(json.dumps(doc))
    np.testing.assert_allclose(np.log(load_predictor(path).predict(ok_frame) / lin), tree, atol=1e-5)
    with pytest.raises(PredictorError, match="weight must be a number from 0"):
        ResidualPredictor(weight=2)
    doc["model"]["params"]["weight"] = "half"
    path.write_text(json.dumps(doc))
    with pytest.raises(PredictorError, match="residual weight 'half' is not a number from 0 to 1.*refit"):
        load_predictor(path)


def test_shares_residual_sees_the_linear_terms_make_up(ok_frame, tmp_path):
    """The shares are each term's part of the main-segment prediction: they add up to 1 with the
    intercept's, the last input is its log; the file records the inputs and loads without tree columns."""
    from tvmlat.predictors.residual import share_inputs

    y = _y(ok_frame)
    res = ResidualPredictor(n_estimators=20).fit(ok_frame, y)
    S = share_inputs(res.linear_, ok_frame)
    assert S.shape == (len(ok_frame), len(res.linear_.feature_names_in_) + 2)
    np.testing.assert_allclose(S[:, :-1].sum(axis=1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(np.exp(S[:, -1]), res.linear_.predict_initial(ok_frame), rtol=1e-9)
    assert res.feature_names_in_ == res.linear_.feature_names_in_  # the tree needs no other column
    path = tmp_path / "p.json"
    save_predictor(res, path, target=make_target().to_dict(), profile="default")
    doc = json.loads(path.read_text())
    assert doc["model"]["params"]["inputs"] == "shares" and "tree_columns" not in doc["model"]
    np.testing.assert_allclose(load_predictor(path).predict(ok_frame), res.predict(ok_frame), rtol=1e-6)
    # a booster whose input count does not match the linear terms is named, not an xgboost shape error
    lin = doc["model"]["linear"]
    lin["coefficients"].pop(lin["features"].pop())  # one term fewer than the trees were trained on
    path.write_text(json.dumps(doc))
    with pytest.raises(PredictorError, match="linear model's terms give"):
        load_predictor(path)
    with pytest.raises(PredictorError, match="inputs must be one of"):
        ResidualPredictor(inputs="spec")
    doc["model"]["params"]["inputs"] = "spec"  # a file from a newer tvmlat, or damaged
    path.write_text(json.dumps(doc))
    with pytest.raises(PredictorError, match="not known to this tvmlat.*refit"):
        load_predictor(path)


def test_tree_features_are_finite_for_all_zero_rows(ok_frame):
    zero = ok_frame.iloc[:3].copy()
    for c in zero.columns:
        if zero[c].dtype.kind in "iuf" or str(zero[c].dtype) == "Int64":
            zero[c] = 0
    assert np.all(np.isfinite(tree_features(zero)))


def test_corrupt_embedded_xgboost_model_is_a_clear_error(ok_frame, tmp_path):
    path = tmp_path / "p.json"
    save_predictor(XGBPredictor(n_estimators=5).fit(ok_frame, _y(ok_frame)), path, target={}, profile="default")
    doc = json.loads(path.read_text())
    doc["model"]["xgboost"] = {"learner": "garbage"}
    path.write_text(json.dumps(doc))
    with pytest.raises(PredictorError, match="xgboost"):
        load_predictor(path)


def test_conformal_quantile_is_the_finite_sample_rank():
    scores = np.arange(1, 20) / 100  # 19 scores
    assert conformal_quantile(scores, 0.9) == pytest.approx(0.18)  # ceil(20 * 0.9) = 18th smallest
    assert conformal_quantile(scores, 0.99) == float("inf")  # too few scores for 99 %
    with pytest.raises(PredictorError):
        conformal_quantile(scores, 1.5)
    lo, hi = interval_bounds(np.array([1.0, 2.0]), scores, 0.5)
    assert np.all(lo < [1.0, 2.0]) and np.all(hi > [1.0, 2.0])
    np.testing.assert_allclose(lo * hi, [1.0, 4.0])  # symmetric in ratio


def _hetero(n: int, seed: int):
    """Held-out-like (predicted, score) pairs: blocks under 0.1 ms miss three times as much."""
    rng = np.random.default_rng(seed)
    pred = np.exp(rng.uniform(-5, 3, n))
    return pred, np.abs(rng.normal(0, 0.05, n)) * np.where(pred < 0.1, 3, 1)


def test_local_scale_is_the_median_score_of_the_nearest_blocks_in_log_latency():
    pred, score = _hetero(200, 0)
    lp = np.log(pred)
    got = local_scale(pred, score, pred, exclude_self=True)
    for i in (0, 17, 199):
        d = np.abs(lp - lp[i])
        d[i] = np.inf
        assert got[i] == pytest.approx(np.median(score[np.argsort(d)[:NEIGHBOURS]]) + SCALE_FLOOR)
    q = np.array([1e-4, 0.05, 2.0, 1e4])  # beyond both ends too
    want = [np.median(score[np.argsort(np.abs(lp - np.log(x)))[:NEIGHBOURS]]) + SCALE_FLOOR for x in q]
    np.testing.assert_allclose(local_scale(pred, score, q), want)


def test_locally_scaled_intervals_follow_where_the_held_out_blocks_missed():
    pred, score = _hetero(300, 1)
    lo, hi = interval_bounds(np.array([0.01, 10.0]), score, 0.9, cal_pred=pred)
    assert np.log(hi / lo)[0] > 1.5 * np.log(hi / lo)[1]  # small blocks missed 3x as much: a wider interval
    glo, ghi = interval_bounds(np.array([0.01, 10.0]), score, 0.9)
    assert (ghi / glo)[0] == pytest.approx((ghi / glo)[1])  # the global one is the same ratio everywhere
    few_lo, few_hi = interval_bounds(np.array([0.01, 10.0]), score[:2 * NEIGHBOURS - 1], 0.9,
                                     cal_pred=pred[:2 * NEIGHBOURS - 1])
    assert (few_hi / few_lo)[0] == pytest.approx((few_hi / few_lo)[1])  # too few scores: global
    # on fresh blocks of the same kind, each band is covered near the nominal level; globally, not
    tp, ts = _hetero(4000, 2)
    for cal in (pred, None):
        lo, hi = interval_bounds(tp, score, 0.9, cal_pred=cal)
        inside = np.abs(np.log(tp * np.exp(ts) / tp)) <= np.log(hi / tp) + 1e-12
        small = inside[tp < 0.1].mean()
        if cal is None:
            assert small < 0.8
        else:
            assert 0.82 <= small and 0.82 <= inside[tp >= 0.1].mean()
    cal_doc = heldout_calibration(pd.DataFrame({"predicted": [2.0, 1.0], "measured": [2.2, 0.5], "family": ["x", "y"]}))
    assert cal_doc["predicted_ms"] == [1.0, 2.0]  # in order of the prediction, scores with them
    assert cal_doc["abs_log_residuals"] == pytest.approx([np.log(2.0), np.log(1.1)])
    assert cal_doc["log_residuals"] == pytest.approx([-np.log(2.0), np.log(1.1)]) and cal_doc["families"] == ["y", "x"]


def test_split_conformal_intervals_cover_held_out_families(ok_frame):
    _, preds = cross_validate(ok_frame, lambda: LinearPredictor(features="published"), split="family")
    c = split_coverage(preds, 0.8)
    assert 0.6 <= c["coverage"] <= 1.0 and c["width"] > 0
    wide = split_coverage(preds, 0.95)
    assert wide["width"] >= c["width"]


def test_predict_interval_cli(tmp_path, ok_frame, capsys):
    from helpers import MODELS

    model = LinearPredictor(features="ops").fit(ok_frame, _y(ok_frame))
    _, preds = cross_validate(ok_frame, lambda: LinearPredictor(features="ops"), split="family")
    path = tmp_path / "p.json"
    save_predictor(model, path, target=make_target().to_dict(), profile="default",
                   interval={"method": "test", **heldout_calibration(preds)})
    models = tmp_path / "models.py"
    models.write_text(MODELS)
    code, out, err = run_cli(["predict", "-p", path, f"{models}:good", "--interval", "0.8", "--format", "json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert rows and all(r["low_ms"] < r["latency_ms"] < r["high_ms"] for r in rows)
    assert_user_error(run_cli(["predict", "-p", path, f"{models}:good", "--interval", "2"], capsys), "coverage")


def test_predict_interval_without_calibration_is_a_clear_error(tmp_path, predictor_path, capsys):
    from helpers import MODELS

    models = tmp_path / "models.py"
    models.write_text(MODELS)
    assert_user_error(run_cli(["predict", "-p", predictor_path, f"{models}:good", "--interval", "0.9"], capsys),
                      "interval")
    doc = json.loads(Path(predictor_path).read_text())
    for bad in ({"abs_log_residuals": "x"}, {"abs_log_residuals": [0.1, "a"]}, {"abs_log_residuals": [-1.0]}, "x",
                {"abs_log_residuals": [0.1, 0.2], "predicted_ms": [1.0]},
                {"abs_log_residuals": [0.1, 0.2], "predicted_ms": [1.0, -2.0]}):
        damaged = tmp_path / "damaged.json"  # was a ValueError / AttributeError traceback
        damaged.write_text(json.dumps({**doc, "interval": bad}))
        assert_user_error(run_cli(["predict", "-p", damaged, f"{models}:good", "--interval", "0.9"], capsys),
                          "interval calibration" if isinstance(bad, dict) else "no interval calibration")


def test_ablation_report(ok_frame, tmp_path):
    zoo = {k: v for k, v in model_zoo(with_xgb=True).items() if k in ("linear-published", "linear-ops+xgb")}
    res = run_ablation(ok_frame, zoo, sizes=(10, 20), draws=2)
    assert set(res.metrics["model"]) == set(zoo)
    assert set(res.metrics["split"]) == {"held-out families", "5-fold"}
    # every model is scored on the very same held-out rows
    for split, g in res.predictions.groupby("split_kind"):
        ids = [sorted(gg["block_id"]) for _, gg in g.groupby("model")]
        assert all(i == ids[0] for i in ids)
    assert set(res.curve["n_train"]) >= {10, 20}
    files = write_report(res, tmp_path / "rep", "test")
    names = {f.name for f in files}
    assert {"report.md", "metrics.csv", "learning_curve.csv", "pred_vs_measured.png", "error_cdf.png",
            "learning_curve.png"} <= names
    assert all(f.stat().st_size > 0 for f in files)
    assert "linear-ops+xgb" in (tmp_path / "rep" / "report.md").read_text()
    back = pd.read_csv(tmp_path / "rep" / "metrics.csv")
    assert len(back) == len(res.metrics)


def test_ablation_cli_rejects_tiny_dataset(tmp_path, fake_dataset, capsys):
    path, df = fake_dataset
    small = tmp_path / "small.parquet"
    df.head(5).to_parquet(small)
    assert_user_error(run_cli(["ablation", "-d", small], capsys), "at least 20")
    for draws in ("0", "-2"):  # a learning curve of no draws
        assert_user_error(run_cli(["ablation", "-d", path, "--draws", draws, "--out", tmp_path / "r"], capsys),
                          f"--draws {draws}")
    assert not (tmp_path / "r").exists()


def test_evaluate_refuses_a_predictor_of_another_target(tmp_path, fake_dataset, ok_frame, capsys):
    path, _ = fake_dataset
    other = tmp_path / "other.json"
    save_predictor(LinearPredictor(features="published").fit(ok_frame, _y(ok_frame)), other,
                   target=make_target(name="rpi4").to_dict(), profile="default")
    assert_user_error(run_cli(["evaluate", "-p", other, "-d", path], capsys), "rpi4")


def test_foreign_parquet_is_a_clear_error(tmp_path, capsys):
    foreign = tmp_path / "foreign.parquet"
    pd.DataFrame({"a": [1, 2], "b": [3.0, 4.0]}).to_parquet(foreign)
    assert_user_error(run_cli(["ablation", "-d", foreign], capsys), "not a tvmlat dataset")


def test_missing_xgboost_names_the_extra(monkeypatch, ok_frame, tmp_path, capsys, fake_dataset):
    import sys

    monkeypatch.setitem(sys.modules, "xgboost", None)  # import xgboost -> ImportError
    from tvmlat.errors import MissingExtraError

    with pytest.raises(MissingExtraError, match=r"tvmlat\[xgb\]"):
        XGBPredictor().fit(ok_frame, _y(ok_frame))
    path, _ = fake_dataset
    assert_user_error(run_cli(["fit", "-d", path, "-o", tmp_path / "p.json", "--model", "linear+xgb"], capsys),
                      "xgb")


def test_predict_specs_matches_predict_on_counted_features(predictor_path, dataset_specs):
    from tvmlat.features import features_frame
    from tvmlat.predictors import predict_specs

    pred = load_predictor(predictor_path)
    got = predict_specs(pred, dataset_specs[:7])
    np.testing.assert_allclose(got, pred.predict(features_frame(dataset_specs[:7])))
    assert np.all(got > 0)


@pytest.mark.parametrize("cls", [XGBPredictor, ResidualPredictor])
def test_trees_saved_before_the_loop_features_still_predict(cls, ok_frame):
    """A file without "tree_columns" holds trees trained on the columns of that time (LEGACY_TREE_COLUMNS)."""
    from tvmlat.features import FEATURE_COLUMNS
    from tvmlat.predictors.residual import LEGACY_TREE_COLUMNS

    m = (cls(inputs="features") if cls is ResidualPredictor else cls()).fit(ok_frame, _y(ok_frame))
    m.tree_columns_ = list(LEGACY_TREE_COLUMNS)
    m.booster_ = m._train(tree_features(ok_frame, LEGACY_TREE_COLUMNS), np.log(_y(ok_frame)) * 0.1)
    old = m.to_dict()
    del old["tree_columns"]
    old["params"].pop("inputs", None)  # files of that time did not name their inputs
    again = cls.from_dict(json.loads(json.dumps(old)))
    assert again.tree_columns_ == LEGACY_TREE_COLUMNS
    assert np.allclose(again.predict(ok_frame), m.predict(ok_frame))
    # a file that names more columns than its trees take says so, instead of xgboost's shape error
    old["tree_columns"] = list(FEATURE_COLUMNS)
    with pytest.raises(PredictorError, match="refit"):
        cls.from_dict(old)


def test_shipped_tree_predictors_load_and_predict(ok_frame):
    from pathlib import Path

    for p in sorted((Path(__file__).resolve().parents[2] / "datasets").glob("*/*xgb*.predictor.json")):
        pred = load_predictor(p)
        out = pred.model.predict(ok_frame)
        assert np.all(np.isfinite(out)) and np.all(out > 0), p


def test_fit_residual_weight_option(tmp_path, capsys, fake_dataset):
    path, _ = fake_dataset
    for extra, want in (([], 1.0), (["--residual-weight", "0.5"], 0.5)):
        out = tmp_path / f"p{len(extra)}.json"
        code, _, err = run_cli(["fit", "-d", path, "-o", out, "--model", "linear+xgb", *extra], capsys)
        assert code == 0, err
        assert json.loads(out.read_text())["model"]["params"]["weight"] == want
    assert_user_error(run_cli(["fit", "-d", path, "-o", tmp_path / "x.json", "--residual-weight", "1"], capsys),
                      "applies to --model linear+xgb")
    assert_user_error(run_cli(["fit", "-d", path, "-o", tmp_path / "x.json", "--model", "linear+xgb",
                               "--residual-weight", "1.5"], capsys), "weight must be a number from 0")
    assert not (tmp_path / "x.json").exists()


def test_metrics_table_shows_the_interval_width_to_two_places():
    # widths of 0.25 and 0.34 are not both "0.3": the table is where fit and evaluate show them
    from rich.console import Console

    from tvmlat.cli.common import metrics_table

    con = Console(record=True, width=120)
    con.print(metrics_table({"held-out families": {"cov90": 0.92, "width90": 0.2948}}, "t"))
    out = con.export_text()
    assert "0.29" in out and "92 %" in out


def test_metrics_table_of_another_quantity_has_no_latency_rows():
    """Peak bytes or energy split at "1 ms", or an interval row no evaluation has, mean nothing in their tables."""
    from rich.console import Console

    from tvmlat.cli.common import metrics_table
    from tvmlat.metrics import accuracy

    y = np.array([0.5, 2.0, 3.0, 1e6])
    results = {"held-out families": accuracy(y, 1.05 * y)}
    for quantity, shown in ((None, True), ("peak bytes", False)):
        con = Console(record=True, width=160)
        con.print(metrics_table(results, "t", quantity=quantity))
        out = con.export_text()
        assert ("(>= 1 ms)" in out) is shown and ("interval: coverage" in out) is shown
        assert ("R2 (log latency)" in out) is shown and ("R2 (log peak bytes)" in out) is not shown
        assert "median APE %" in out and "within +-10 %" in out
