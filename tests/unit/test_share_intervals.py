"""Intervals whose neighbours are the blocks with the same make-up (cost shares), from other families."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tvmlat.metrics import cross_validate
from tvmlat.predictors import LinearPredictor, load_predictor, save_predictor
from tvmlat.predictors.conformal import (NEIGHBOURS, SCALE_FLOOR, SHARE_NEIGHBOURS, SHARE_PREFIX, SHARE_QUANTILE,
                                         SHARE_WEIGHT, cost_shares, half_widths, heldout_calibration, share_scale,
                                         split_coverage)
from tvmlat.predictors.residual import ResidualPredictor, XGBPredictor
from helpers import assert_user_error, make_target, run_cli

SHIPPED = Path(__file__).resolve().parents[2] / "datasets" / "llvm" / "calib-emeraldrapids-n100-s17.parquet"


def _y(df):
    return df["latency_ms_median"].to_numpy(float)


def test_cost_shares_are_each_terms_part_of_the_linear_prediction(ok_frame):
    m = LinearPredictor(features="loops").fit(ok_frame, _y(ok_frame))
    names, sh = cost_shares(m, ok_frame)
    assert names == [*m.feature_names_in_, "intercept"]
    np.testing.assert_allclose(sh.sum(axis=1), 1.0)
    assert (sh >= 0).all()
    terms = ok_frame[m.feature_names_in_].to_numpy(float) * m.coef_
    np.testing.assert_allclose(sh[:, :-1] * m.predict_initial(ok_frame)[:, None], terms, rtol=1e-9, atol=1e-12)


def test_cost_shares_of_a_residual_model_are_its_linear_models_and_trees_alone_have_none(ok_frame):
    pytest.importorskip("xgboost")
    r = ResidualPredictor(linear={"features": "loops"}).fit(ok_frame, _y(ok_frame))
    np.testing.assert_array_equal(cost_shares(r, ok_frame)[1], cost_shares(r.linear_, ok_frame)[1])
    assert cost_shares(XGBPredictor().fit(ok_frame, _y(ok_frame)), ok_frame) is None


def test_share_scale_takes_the_blocks_of_the_same_make_up():
    # two kinds of block over the same latencies: kind A's held-out errors are large, kind B's small
    n = 3 * NEIGHBOURS
    pred = np.exp(np.linspace(-2, 2, n))
    kind_a = np.arange(n) % 2 == 0
    shares = np.where(kind_a[:, None], [[1.0, 0.0]], [[0.0, 1.0]])
    scores = np.where(kind_a, 0.5, 0.02)
    got = share_scale(pred, scores, shares, [1.0, 1.0], [[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(got, [0.5 + SCALE_FLOOR, 0.02 + SCALE_FLOOR])


def test_share_scale_leaves_out_each_blocks_own_label():
    pred = np.ones(6)
    shares = np.array([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0], [0.5, 0.5], [0.5, 0.5]])
    scores = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0])
    fams = ["a", "a", "b", "b", "c", "c"]
    got = share_scale(pred, scores, shares, pred, shares, k=1, exclude=fams)
    # the nearest block of another family: a -> c (0.5 away in shares) before b; b -> c; c -> a or b
    np.testing.assert_allclose(got[:4], [3.0 + SCALE_FLOOR] * 4)
    assert set(np.round(got[4:] - SCALE_FLOOR, 6)) <= {1.0, 2.0}
    assert SHARE_WEIGHT > 0


def test_half_widths_with_shares_follow_the_kind_of_block_not_its_latency():
    rng = np.random.default_rng(0)
    n = 400
    pred = np.exp(rng.uniform(-3, 3, n))
    kind_a = rng.random(n) < 0.5
    shares = np.where(kind_a[:, None], [[0.9, 0.1]], [[0.1, 0.9]])
    scores = np.abs(rng.normal(0, np.where(kind_a, 0.4, 0.03)))
    fams = np.where(kind_a, "fa", "fb").astype(object)
    fams[::7] = "fc"  # a third family shares both kinds
    q_pred = np.array([1.0, 1.0])
    q_sh = np.array([[0.9, 0.1], [0.1, 0.9]])
    h = half_widths(q_pred, scores, 0.9, cal_pred=pred, cal_shares=shares, query_shares=q_sh, cal_families=fams)
    assert h[0] > 5 * h[1]
    plain = half_widths(q_pred, scores, 0.9, cal_pred=pred)
    assert plain[0] == pytest.approx(plain[1], rel=0.5)  # by latency alone the two kinds look alike


def test_cross_validation_records_shares_and_coverage_uses_them(ok_frame):
    from tvmlat.dataset import ok_rows, read_dataset

    _, p = cross_validate(ok_rows(read_dataset(SHIPPED)), lambda: LinearPredictor(features="loops"), split="family")
    sh = [c for c in p if c.startswith(SHARE_PREFIX)]
    assert sh[-1] == SHARE_PREFIX + "intercept" and len(sh) == len(LinearPredictor(features="loops").feature_names) + 1
    np.testing.assert_allclose(p[sh].sum(axis=1), 1.0)
    with_shares = split_coverage(p, 0.9)
    without = split_coverage(p.drop(columns=sh), 0.9)
    assert 0 <= with_shares["coverage"] <= 1 and with_shares["width"] > 0
    assert with_shares != without  # the share columns change the neighbours
    cal = heldout_calibration(p)
    assert cal["share_terms"] == [c.removeprefix(SHARE_PREFIX) for c in sh]
    assert len(cal["cost_shares"]) == len(p) and all(len(r) == len(sh) for r in cal["cost_shares"])
    if _has_xgb():
        _, k = cross_validate(ok_frame, lambda: XGBPredictor(), split="family")
        assert not [c for c in k if c.startswith(SHARE_PREFIX)] and "cost_shares" not in heldout_calibration(k)


def _has_xgb() -> bool:
    try:
        import xgboost  # noqa: F401
    except ImportError:
        return False
    return True


def _saved(ok_frame, tmp_path, cal_edit=None):
    m = LinearPredictor(features="loops").fit(ok_frame, _y(ok_frame))
    _, p = cross_validate(ok_frame, lambda: LinearPredictor(features="loops"), split="family")
    cal = heldout_calibration(p)
    if cal_edit:
        cal_edit(cal)
    path = tmp_path / "p.json"
    save_predictor(m, path, target=make_target().to_dict(), profile="default", interval={"method": "t", **cal})
    return path, cal


def test_a_predictor_file_sizes_intervals_from_its_blocks_shares(ok_frame, tmp_path):
    path, cal = _saved(ok_frame, tmp_path)
    loaded = load_predictor(path)
    pred, lo, hi = loaded.interval(ok_frame, 0.9)
    assert (lo < pred).all() and (pred < hi).all()
    names, q_sh = cost_shares(loaded.model, ok_frame)
    want = half_widths(pred, cal["abs_log_residuals"], 0.9, cal_pred=cal["predicted_ms"],
                       cal_shares=np.asarray(cal["cost_shares"]), query_shares=q_sh, cal_families=cal["families"])
    np.testing.assert_allclose(hi, pred * np.exp(want))
    # a file from before the shares: latency alone, as then
    old = json.loads(path.read_text())
    for k in ("cost_shares", "share_terms"):
        del old["interval"][k]
    (tmp_path / "old.json").write_text(json.dumps(old))
    _, _, hi_old = load_predictor(tmp_path / "old.json").interval(ok_frame, 0.9)
    plain = half_widths(pred, cal["abs_log_residuals"], 0.9, cal_pred=cal["predicted_ms"])
    np.testing.assert_allclose(hi_old, pred * np.exp(plain))


def test_a_single_family_calibration_takes_neighbours_from_other_blocks(ok_frame, tmp_path):
    path, cal = _saved(ok_frame, tmp_path, lambda c: c.update(families=["one"] * len(c["families"])))
    pred, lo, hi = load_predictor(path).interval(ok_frame, 0.9)
    assert np.isfinite(hi).all() and (hi > pred).all()


@pytest.mark.parametrize("edit", [
    lambda c: c.update(cost_shares=c["cost_shares"][:-1]),
    lambda c: c.update(cost_shares=[[*r[:-1], "x"] for r in c["cost_shares"]]),
    lambda c: c.update(share_terms=None),
    lambda c: c.update(share_terms=["acts"] * len(c["share_terms"])),
])
def test_damaged_shares_are_a_one_line_error(ok_frame, tmp_path, capsys, edit):
    path, _ = _saved(ok_frame, tmp_path, edit)
    from helpers import MODELS

    models = tmp_path / "models.py"
    models.write_text(MODELS)
    assert_user_error(run_cli(["predict", "-p", path, f"{models}:good", "--interval", "0.9"], capsys),
                      "cost_shares", "refit it with `tvmlat fit`")


@pytest.mark.parametrize("quantile", [0.5, SHARE_QUANTILE])
@pytest.mark.parametrize("n_labels", [5, 50])  # few labels: a tree per label; many: one tree, own rows dropped
def test_share_scale_with_labels_is_the_brute_force_quantile(n_labels, quantile):
    rng = np.random.default_rng(3)
    n = 200
    pred = np.exp(rng.uniform(-2, 2, n))
    shares = rng.dirichlet(np.ones(4), n)
    scores = rng.random(n)
    labels = rng.integers(0, n_labels, n)
    got = share_scale(pred, scores, shares, pred, shares, k=7, exclude=labels, quantile=quantile)
    x = np.column_stack([np.log(pred), SHARE_WEIGHT * shares])
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    d[labels[:, None] == labels[None, :]] = np.inf
    want = np.quantile(scores[np.argsort(d, axis=1)[:, :7]], quantile, axis=1) + SCALE_FLOOR
    np.testing.assert_allclose(got, want)


def test_share_scale_is_the_tail_of_the_nearest_scores():
    # one kind of block that misses by much one time in ten: the median of its neighbours would not show it
    n = SHARE_NEIGHBOURS * 4
    pred = np.exp(np.linspace(-2, 2, n))
    scores = np.where(np.arange(n) % 10 == 0, 1.0, 0.02)
    got = share_scale(pred, scores, np.ones((n, 1)), [1.0], [[1.0]])
    near = np.argsort(np.abs(np.log(pred)))[:SHARE_NEIGHBOURS]
    assert got[0] == pytest.approx(np.quantile(scores[near], SHARE_QUANTILE) + SCALE_FLOOR)
    assert got[0] > 0.02 + SCALE_FLOOR


def test_two_families_held_out_in_turn_still_get_intervals():
    # each family's interval is sized from the other one alone: its blocks' neighbours come from that family
    rng = np.random.default_rng(5)
    n = 60
    p = pd.DataFrame({"block_id": [f"b{i}" for i in range(2 * n)], "family": ["a"] * n + ["b"] * n,
                      "measured": np.exp(rng.uniform(-2, 2, 2 * n))})
    p["predicted"] = p["measured"] * np.exp(rng.normal(0, 0.1, 2 * n))
    p["split"] = p["family"]
    sh = rng.dirichlet(np.ones(3), 2 * n)
    for i in range(3):
        p[f"{SHARE_PREFIX}t{i}"] = sh[:, i]
    c = split_coverage(p, 0.9)
    assert 0.6 < c["coverage"] <= 1 and 0 < c["width"] < np.inf


def test_a_loaded_predictor_keeps_its_calibrations_scales_between_calls(ok_frame, tmp_path):
    from tvmlat.dataset import ok_rows, read_dataset

    shipped = load_predictor(SHIPPED.with_name(SHIPPED.stem + ".predictor.json"))
    rows = ok_rows(read_dataset(SHIPPED))
    first = shipped.interval(rows.iloc[:30], 0.9)
    again = shipped.interval(rows.iloc[30:60], 0.9)  # the kept calibration scales, not recomputed
    fresh = load_predictor(SHIPPED.with_name(SHIPPED.stem + ".predictor.json"))
    for got, want in ((first, fresh.interval(rows.iloc[:30], 0.9)), (again, fresh.interval(rows.iloc[30:60], 0.9))):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w)
    cal = shipped.interval_calibration()
    assert cal is shipped.interval_calibration()  # checked once
    shipped.doc["interval"] = {**cal, "cost_shares": cal["cost_shares"][:-1]}  # a new section is checked again
    with pytest.raises(Exception, match="cost_shares"):
        shipped.interval(rows.iloc[:3], 0.9)


def test_an_oracle_gets_intervals_from_spec_features_alone():
    # architecture search: block specs -> closed-form features -> (predicted, low, high), no torch, no TVM
    from tvmlat.analytic_features import analytic_frame
    from tvmlat.blocks import sample_specs
    from tvmlat.predictors import predict_specs

    p = load_predictor(SHIPPED.with_name(SHIPPED.stem + ".predictor.json"))
    specs = sample_specs(50, seed=7)
    pred, lo, hi = p.interval(analytic_frame(specs, geometry=p.geometry), 0.9)
    np.testing.assert_allclose(pred, predict_specs(p, specs))
    assert (lo < pred).all() and (pred < hi).all()
    assert len(np.unique(np.round(np.log(hi / pred), 6))) > 1  # sized by make-up, not one width for all


def test_a_calibration_of_blocks_measured_again_takes_the_median_of_its_neighbours():
    # a fit on several campaigns: the nearest rows are a few blocks measured again and again, whose tail is one
    # block's score; a single campaign's blocks take the tail of theirs
    from tvmlat.predictors.conformal import conformal_quantile, share_statistic

    rng = np.random.default_rng(11)
    n = 150
    pred = np.repeat(np.exp(rng.uniform(-2, 2, n)), 2)
    shares = np.repeat(rng.dirichlet(np.ones(3), n), 2, axis=0)
    scores = rng.exponential(0.1, 2 * n)
    groups = np.repeat(np.arange(n), 2)
    query, query_shares = np.array([0.5, 2.0]), rng.dirichlet(np.ones(3), 2)
    assert share_statistic(groups) == {"k": NEIGHBOURS, "quantile": 0.5}
    assert share_statistic(np.arange(n)) == share_statistic(None) == {"k": SHARE_NEIGHBOURS, "quantile": SHARE_QUANTILE}
    got = half_widths(query, scores, 0.9, pred, groups, cal_shares=shares, query_shares=query_shares)
    own = share_scale(pred, scores, shares, pred, shares, k=NEIGHBOURS, exclude=groups, quantile=0.5)
    want = conformal_quantile(scores / own, 0.9) * share_scale(pred, scores, shares, query, query_shares,
                                                               k=NEIGHBOURS, quantile=0.5)
    np.testing.assert_allclose(got, want)
