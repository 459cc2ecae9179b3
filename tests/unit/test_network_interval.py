"""Whole-network intervals: a held-out family's offset shared by the layers, each layer's scatter
independent (conformal.network_interval), or measured networks' leave-one-out residuals
(network_conformal); `analyze --interval`."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tvmlat.anchors import loo_factors, loo_log_residuals
from tvmlat.errors import PredictorError
from tvmlat.metrics import cross_validate
from tvmlat.modelref import load_model_ref
from tvmlat.predictors import LinearPredictor, load_predictor, save_predictor
from tvmlat.predictors.conformal import (heldout_calibration, interval_bounds, network_conformal,
                                        network_interval)
from helpers import assert_user_error, make_target, run_cli

NETS = Path(__file__).resolve().parents[2] / "examples" / "networks.py"


def _cal(offsets: dict[str, float], scatter: np.ndarray) -> dict:
    """An interval calibration whose family ``f`` has log residuals offsets[f] + scatter (median 0)."""
    fams = [f for f in offsets for _ in scatter]
    signed = np.concatenate([o + scatter for o in offsets.values()])
    pred = np.geomspace(0.01, 100, len(signed))
    return {"abs_log_residuals": np.abs(signed).tolist(), "predicted_ms": pred.tolist(),
            "log_residuals": signed.tolist(), "families": fams}


def test_heldout_calibration_keeps_each_blocks_signed_residual_and_family(ok_frame):
    _, preds = cross_validate(ok_frame, lambda: LinearPredictor(features="ops"), split="family")
    cal = heldout_calibration(preds)
    by_pred = preds.sort_values("predicted", kind="stable")
    assert cal["families"] == by_pred["family"].astype(str).tolist()
    np.testing.assert_allclose(cal["log_residuals"], np.log(by_pred["measured"] / by_pred["predicted"]))
    np.testing.assert_allclose(cal["abs_log_residuals"], np.abs(cal["log_residuals"]))


def test_without_scatter_a_network_is_as_sure_as_a_families_offset():
    cal = _cal({"a": 0.1, "b": -0.1, "c": 0.05}, np.zeros(21))
    layers = np.array([1.0, 2.0, 0.5])
    total, lo, hi, how = network_interval(layers, cal, 0.7)  # rank ceil(4 * 0.7) = 3 of |offsets| 0.05, 0.1, 0.1
    assert total == pytest.approx(3.5)
    assert (lo, hi) == pytest.approx((3.5 * math.exp(-0.1), 3.5 * math.exp(0.1)))
    assert "3 held-out families" in how


def test_each_layers_scatter_averages_out_over_more_layers():
    cal = _cal({"a": 0.1, "b": -0.1}, np.linspace(-0.2, 0.2, 41))
    q_common = 0.1  # both |offsets| are 0.1

    def q_independent_sq(n):
        total, _, hi, _ = network_interval(np.full(n, 1.0), cal, 0.5)
        return math.log(hi / total) ** 2 - q_common ** 2

    assert q_independent_sq(4) > 0
    assert q_independent_sq(4) == pytest.approx(4 * q_independent_sq(16))  # independent: variance ~ 1 / n


def test_a_file_without_families_bounds_the_network_by_its_layers_intervals():
    cal = _cal({f"f{i}": 0.02 * (i - 5) for i in range(10)}, np.linspace(-0.2, 0.2, 41))  # 10: enough for 90 %
    old = {k: cal[k] for k in ("abs_log_residuals", "predicted_ms")}
    layers = np.array([0.3, 3.0, 30.0])
    total, lo, hi, how = network_interval(layers, old, 0.9)
    each_lo, each_hi = interval_bounds(layers, old["abs_log_residuals"], 0.9, cal_pred=old["predicted_ms"])
    assert (lo, hi) == pytest.approx((each_lo.sum(), each_hi.sum())) and "bound" in how
    # the family split is narrower than every layer at its end at once
    _, lo2, hi2, _ = network_interval(layers, cal, 0.9)
    assert lo < lo2 < total < hi2 < hi


def test_too_few_families_for_the_coverage_is_no_interval():
    cal = _cal({"a": 0.1, "b": -0.1}, np.zeros(21))  # two families: a 90 % quantile needs 9
    _, lo, hi, _ = network_interval(np.ones(3), cal, 0.9)
    assert lo == 0.0 and hi == math.inf


def test_measured_networks_leave_one_out_residuals():
    m, p = np.array([2.0, 4.0, 8.0]), np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(loo_log_residuals(m, p), 0.0, atol=1e-12)  # one factor (2) fits all
    m = np.array([1.0, 1.0, 4.0])
    np.testing.assert_allclose(loo_log_residuals(m, np.ones(3)), np.log(m / loo_factors(m, np.ones(3))))
    res = [0.01] * 8 + [-0.05, 0.03]
    mid, lo, hi, how = network_conformal(10.0, {"factor": 2.0, "loo_log_residuals": res}, 0.9)
    assert mid == 20.0 and (lo, hi) == pytest.approx((20 * math.exp(-0.05), 20 * math.exp(0.05)))
    assert "10 measured networks" in how
    assert network_conformal(10.0, {"factor": 2.0, "loo_log_residuals": res[:8]}, 0.9) is None  # needs 9
    assert network_conformal(10.0, {"factor": 2.0}, 0.9) is None


@pytest.fixture
def interval_predictor(tmp_path, ok_frame):
    model = LinearPredictor(features="ops").fit(ok_frame, ok_frame["latency_ms_median"].to_numpy(float))
    _, preds = cross_validate(ok_frame, lambda: LinearPredictor(features="ops"), split="family")
    path = tmp_path / "p.json"
    save_predictor(model, path, target=make_target().to_dict(), profile="default",
                   interval={"method": "test", **heldout_calibration(preds)})
    return path


def test_predictor_prefers_enough_measured_networks(interval_predictor, ok_frame):
    X = ok_frame.head(5)
    pred = load_predictor(interval_predictor)
    layers = pred.predict(X)
    total, lo, hi, how = pred.network_interval(layers, 0.8)
    assert total == pytest.approx(layers.sum()) and lo < total < hi and "families" in how
    doc = json.loads(interval_predictor.read_text())
    doc["network_correction"] = {"factor": 0.5, "loo_log_residuals": [0.02] * 9}
    interval_predictor.write_text(json.dumps(doc))
    total2, lo2, hi2, how2 = load_predictor(interval_predictor).network_interval(layers, 0.8)
    assert total2 == pytest.approx(0.5 * total) and (lo2, hi2) == pytest.approx((total2 * math.exp(-0.02),
                                                                                 total2 * math.exp(0.02)))
    assert "9 measured networks" in how2


def test_analyze_interval_cli(interval_predictor, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "layers.png"
    code, out, err = run_cli(["analyze", f"{NETS}:small_cnn", "-p", interval_predictor, "--interval", "0.9",
                              "--plot", png], capsys)
    assert code == 0, err
    assert "whole network: 90 % interval" in out and "held-out families' offsets" in out
    assert png.stat().st_size > 0  # the layers' bars with their intervals, the network's in the title
    code, out, err = run_cli(["analyze", f"{NETS}:small_cnn", "-p", interval_predictor, "--interval", "0.9",
                              "-f", "csv"], capsys)
    assert code == 0, err
    df = pd.read_csv(io.StringIO(out))
    assert ((df["low_ms"] < df["latency_ms"]) & (df["latency_ms"] < df["high_ms"])).all()


def test_analyze_interval_bad_input(interval_predictor, predictor_path, tmp_path, capsys):
    net = f"{NETS}:small_cnn"
    assert_user_error(run_cli(["analyze", net, "--interval", "0.9"], capsys), "--interval needs a predictor")
    assert_user_error(run_cli(["analyze", net, "-p", interval_predictor, "--interval", "1.5"], capsys), "coverage")
    for top in ("0", "-3"):  # -3 dropped the last three layers (a slice), 0 showed none
        assert_user_error(run_cli(["analyze", net, "-p", interval_predictor, "--top", top], capsys), f"--top {top}")
    assert_user_error(run_cli(["analyze", net, "-p", predictor_path, "--interval", "0.9"], capsys),
                      "no interval calibration")
    doc = json.loads(interval_predictor.read_text())
    for bad in ({"families": doc["interval"]["families"][:-1]}, {"log_residuals": "x"},
                {"families": [1] * len(doc["interval"]["families"])}):
        damaged = tmp_path / "damaged.json"
        damaged.write_text(json.dumps({**doc, "interval": {**doc["interval"], **bad}}))
        assert_user_error(run_cli(["analyze", net, "-p", damaged, "--interval", "0.9"], capsys), "families, log_residuals")
    damaged = tmp_path / "damaged.json"
    damaged.write_text(json.dumps({**doc, "interval": {**doc["interval"], "block_groups": [-1] * len(doc["interval"]["families"])}}))
    assert_user_error(run_cli(["analyze", net, "-p", damaged, "--interval", "0.9"], capsys), "block_groups")
    for corr in ({"factor": 0.9, "loo_log_residuals": ["x"] * 9}, {"factor": "x", "loo_log_residuals": [0.1] * 9},
                 {"factor": 0.9, "loo_log_residuals": 0.1}):
        damaged.write_text(json.dumps({**doc, "network_correction": corr}))  # was a ValueError traceback
        result = run_cli(["analyze", net, "-p", damaged, "--interval", "0.9"], capsys)
        assert_user_error(result, "network correction")
        assert "does not run on its example inputs" not in result[2]  # the file's fault, not the network's


def test_too_few_families_is_said_not_printed_as_infinity(interval_predictor, capsys):
    doc = json.loads(interval_predictor.read_text())
    doc["interval"]["families"] = ["a", "b"] * (len(doc["interval"]["families"]) // 2) + ["a"] * (
        len(doc["interval"]["families"]) % 2)  # two families: a 90 % quantile of their offsets needs 9
    interval_predictor.write_text(json.dumps(doc))
    code, out, err = run_cli(["analyze", f"{NETS}:small_cnn", "-p", interval_predictor, "--interval", "0.9"], capsys)
    assert code == 0, err
    assert "no 90 % interval" in out and "inf" not in out.split("whole network:")[1]
    code, out, err = run_cli(["predict", "-p", interval_predictor, f"{NETS}:small_cnn", "--interval", "0.9"], capsys)
    assert code == 0, err
    assert "no 90 % interval for small_cnn" in out and "inf" not in out
    code, out, err = run_cli(["predict", "-p", interval_predictor, f"{NETS}:small_cnn", "--interval", "0.9", "-f",
                              "json"], capsys)
    [row] = json.loads(out)  # valid JSON: no Infinity
    assert code == 0 and row["low_ms"] is None and row["high_ms"] is None and row["latency_ms"] > 0


def test_shipped_predictors_record_families_for_network_intervals():
    root = Path(__file__).resolve().parents[2] / "datasets"
    files = sorted(root.glob("*/*.predictor.json"))
    assert files
    for f in files:
        cal = json.loads(f.read_text())["interval"]
        assert len(cal["families"]) == len(cal["log_residuals"]) == len(cal["abs_log_residuals"]), f.name
        with pytest.raises(AssertionError):  # not every residual of one sign: they are signed
            assert all(v >= 0 for v in cal["log_residuals"]) or all(v <= 0 for v in cal["log_residuals"])


def test_damaged_families_are_a_predictor_error(interval_predictor):
    doc = json.loads(interval_predictor.read_text())
    doc["interval"]["log_residuals"] = [float("nan")] * len(doc["interval"]["log_residuals"])
    interval_predictor.write_text(json.dumps(doc))
    with pytest.raises(PredictorError, match="damaged"):
        load_predictor(interval_predictor).interval_calibration()


def test_a_blocks_other_rows_are_left_out_of_its_neighbours():
    from tvmlat.predictors.conformal import local_scale

    rng = np.random.default_rng(0)
    pred = np.repeat(rng.uniform(0.01, 10, 30), 3) * rng.uniform(0.99, 1.01, 90)  # 30 blocks, 3 rows each
    score = np.repeat(rng.uniform(0, 0.3, 30), 3)
    groups = np.repeat(np.arange(30), 3)
    got = local_scale(pred, score, pred, k=5, exclude_self=True, groups=groups)
    for i in range(90):
        others = groups != groups[i]
        np.testing.assert_allclose(got[i], local_scale(pred[others], score[others], [pred[i]], k=5)[0])


def _duplicated_campaigns(n_blocks=300, rows=5, seed=1):
    """Held-out predictions of blocks each measured in ``rows`` campaigns (nearly the same score each time),
    split 5-fold by block; small blocks miss more."""
    rng = np.random.default_rng(seed)
    pred = np.exp(rng.uniform(np.log(0.01), np.log(10), n_blocks))
    err = rng.normal(0, 0.02 + 0.1 * (pred < 0.3), n_blocks)
    return pd.DataFrame({"block_id": np.repeat([f"b{i}" for i in range(n_blocks)], rows),
                         "predicted": np.repeat(pred, rows),
                         "measured": np.repeat(pred * np.exp(err), rows) * rng.normal(1, 0.003, n_blocks * rows),
                         "family": "f", "split": np.repeat(rng.integers(0, 5, n_blocks), rows)})


def test_intervals_of_blocks_measured_in_several_campaigns_hold_their_coverage():
    from tvmlat.predictors.conformal import split_coverage

    preds = _duplicated_campaigns()
    grouped = split_coverage(preds, 0.9)["coverage"]
    as_if_distinct = split_coverage(preds.assign(block_id=[f"r{i}" for i in range(len(preds))]), 0.9)["coverage"]
    assert abs(grouped - 0.9) < 0.01 < abs(as_if_distinct - 0.9)  # 0.903 against 0.882 with this seed
    cal = heldout_calibration(preds)
    assert len(cal["block_groups"]) == len(preds) and len(set(cal["block_groups"])) == 300
    assert "block_groups" not in heldout_calibration(preds.drop_duplicates("block_id"))


def test_network_correction_checks_each_network_against_its_interval(interval_predictor, tmp_path, monkeypatch,
                                                                      capsys):
    import importlib.util

    from tvmlat.analysis import layer_table
    from tvmlat.runners.fake import FakeRunner

    monkeypatch.setattr("tvmlat.runners.local.LocalRunner", lambda target, check=True, **_: FakeRunner())
    target = tmp_path / "fake.toml"  # the fixture predictor was fitted for target "fake"
    target.write_text('name = "fake"\nkind = "llvm"\ncores = 1\n')
    args = ["network-correction", f"{NETS}:small_cnn", f"{NETS}:vit_tiny", f"{NETS}:resnet18", "-p", interval_predictor,
            "--target", target, "--out", tmp_path / "corrected.json"]
    code, out, err = run_cli(args + ["-f", "json"], capsys)
    assert code == 0, err
    rows = json.loads(out[out.index("["):out.rindex("]") + 1])
    spec = importlib.util.spec_from_file_location("nets_for_interval", NETS)
    nets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nets)
    pred = load_predictor(interval_predictor)
    for r in rows:  # the verdict is the calibration's interval around the sum of layers, as analyze sizes it
        layers = layer_table(*getattr(nets, r["name"])(), pred)["latency_ms"].to_numpy()
        _, lo, hi, _ = network_interval(layers, pred.interval_calibration(), 0.9)
        assert r["in_90%_interval"] == ("yes" if lo <= r["measured_ms"] <= hi else "no")
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "of 3 networks inside the 90 % interval" in out and "--anchors divides it out" in out


def _analyze_json(args, capsys) -> tuple[list[dict], str]:
    code, out, err = run_cli(["analyze", *args, "-f", "json"], capsys)
    assert code == 0, err
    return json.loads(out), err


def test_predict_takes_a_network_as_analyze_does(interval_predictor, ok_frame, capsys):
    """A network entry: the sum of its layers times the network correction, with a network's interval (as
    `analyze` gives them), not one block's prediction of the whole."""
    from tvmlat.features import count_features

    doc = json.loads(interval_predictor.read_text())
    doc["network_correction"] = {"factor": 0.5, "loo_log_residuals": [0.02] * 9, "networks": ["n"] * 9}
    interval_predictor.write_text(json.dumps(doc))
    net = f"{NETS}:small_cnn"
    layers, _ = _analyze_json([net, "-p", interval_predictor], capsys)
    total = sum(r["latency_ms"] for r in layers)
    code, out, err = run_cli(["predict", "-p", interval_predictor, net, "-f", "json"], capsys)
    assert code == 0, err
    [row] = json.loads(out)
    assert row["as"] == f"network, {len(layers)} layers" and len(layers) > 4
    assert row["latency_ms"] == pytest.approx(0.5 * total)
    code, out, err = run_cli(["predict", "-p", interval_predictor, net, "-f", "json", "--interval", "0.9"], capsys)
    assert code == 0, err
    [row] = json.loads(out)
    assert (row["low_ms"], row["latency_ms"], row["high_ms"]) == pytest.approx(
        (0.5 * total * math.exp(-0.02), 0.5 * total, 0.5 * total * math.exp(0.02)))
    code, out, err = run_cli(["predict", "-p", interval_predictor, net, "-f", "json", "--as", "block"], capsys)
    assert code == 0, err
    [row] = json.loads(out)  # the whole network's counts as one block's features: what predict did before
    pred = load_predictor(interval_predictor)
    [(m, x)] = load_model_ref(net).values()
    whole = pred.predict(pd.DataFrame([count_features(m, x, geometry=pred.geometry)]))[0]
    assert row["as"] == "block" and row["latency_ms"] == pytest.approx(whole)
    assert not row["latency_ms"] == pytest.approx(0.5 * total)


def test_no_network_correction_predicts_the_plain_sum_and_leaves_the_file(interval_predictor, capsys):
    """`predict` / `analyze --no-network-correction`: a network is the plain sum of its layers, with the
    calibration's interval, whatever correction the file carries; the file is left as it is."""
    doc = json.loads(interval_predictor.read_text())
    doc["network_correction"] = {"factor": 0.5, "loo_log_residuals": [0.02] * 9, "networks": ["n"] * 9}
    interval_predictor.write_text(json.dumps(doc))
    before = interval_predictor.read_bytes()
    net = f"{NETS}:small_cnn"
    layers, _ = _analyze_json([net, "-p", interval_predictor], capsys)
    total = sum(r["latency_ms"] for r in layers)
    rows = {}
    for flag in ("--network-correction", "--no-network-correction"):
        code, out, err = run_cli(["predict", "-p", interval_predictor, net, "-f", "json", "--interval", "0.9", flag],
                                 capsys)
        assert code == 0, err
        [rows[flag]] = json.loads(out)
    on, off = rows["--network-correction"], rows["--no-network-correction"]
    assert on["latency_ms"] == pytest.approx(0.5 * total) and off["latency_ms"] == pytest.approx(total)
    assert off["low_ms"] < total < off["high_ms"]  # the calibration's interval, around the plain sum
    assert off["high_ms"] / off["low_ms"] != pytest.approx(math.exp(0.04))  # not the correction's residuals'
    code, out, err = run_cli(["analyze", net, "-p", interval_predictor], capsys)
    assert code == 0, err
    assert "with the network correction x0.500" in out
    code, out, err = run_cli(["analyze", net, "-p", interval_predictor, "--no-network-correction"], capsys)
    assert code == 0, err
    assert "network correction" not in out
    assert interval_predictor.read_bytes() == before


def test_predict_takes_a_block_as_a_block(interval_predictor, capsys, tmp_path):
    """An entry of one layer (a calibration-like block) is predicted as one block, as before; `--as network`
    takes it layer by layer, with the network correction."""
    ref = tmp_path / "one.py"
    ref.write_text("import torch\n\ndef conv():\n    return torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), "
                   "torch.nn.ReLU()), (torch.randn(1, 8, 28, 28),)\n")
    doc = json.loads(interval_predictor.read_text())
    doc["network_correction"] = {"factor": 0.5, "loo_log_residuals": [0.02] * 9}
    interval_predictor.write_text(json.dumps(doc))
    rows = {}
    for how in ("auto", "network"):
        code, out, err = run_cli(["predict", "-p", interval_predictor, f"{ref}:conv", "-f", "json", "--as", how], capsys)
        assert code == 0, err
        [rows[how]] = json.loads(out)
    assert rows["auto"]["as"] == "block" and rows["network"]["as"] == "network, 1 layer"
    assert rows["network"]["latency_ms"] == pytest.approx(0.5 * rows["auto"]["latency_ms"], rel=0.05)


def test_sampled_blocks_are_blocks_and_example_networks_are_networks():
    """The rule `predict --as auto` uses: no sampled calibration block has more layers than BLOCK_LAYERS, every
    example network has more."""
    from tvmlat.analysis import BLOCK_LAYERS, trace_layers
    from tvmlat.blocks import build_block, sample_specs
    from tvmlat.loop_features import DEFAULT_GEOMETRY

    seen = {}
    for spec in sample_specs(120, seed=5):
        m, x = build_block(spec)
        n = len(trace_layers(m, x, geometry=DEFAULT_GEOMETRY)[0])
        seen[spec.family] = max(seen.get(spec.family, 0), n)
    assert len(seen) == 10 and max(seen.values()) <= BLOCK_LAYERS
    for name in ("small_cnn", "mobilenet_v2"):
        [(m, x)] = load_model_ref(f"{NETS}:{name}").values()
        assert len(trace_layers(m, x, geometry=DEFAULT_GEOMETRY)[0]) > BLOCK_LAYERS


def test_a_factor_with_too_few_networks_still_centres_the_network_interval(interval_predictor, ok_frame):
    """Five measured networks cannot size a 90 % interval; the calibration's then does, around the corrected sum
    (as `analyze` prints the whole network's prediction)."""
    pred = load_predictor(interval_predictor)
    layers = pred.predict(ok_frame.head(5))
    total, lo, hi, _ = pred.network_interval(layers, 0.9)
    doc = json.loads(interval_predictor.read_text())
    doc["network_correction"] = {"factor": 0.8, "loo_log_residuals": [0.02] * 5}
    interval_predictor.write_text(json.dumps(doc))
    total2, lo2, hi2, how = load_predictor(interval_predictor).network_interval(layers, 0.9)
    assert (total2, lo2, hi2) == pytest.approx((0.8 * total, 0.8 * lo, 0.8 * hi)) and "x0.800" in how


def test_predict_with_a_damaged_network_correction_is_a_clear_error(interval_predictor, tmp_path, capsys):
    doc = json.loads(interval_predictor.read_text())
    damaged = tmp_path / "damaged.json"
    for corr in ({"factor": "x"}, {"factor": -1.0}, {"loo_log_residuals": [0.1] * 9}, ["not", "a", "section"]):
        damaged.write_text(json.dumps({**doc, "network_correction": corr}))
        result = run_cli(["predict", "-p", damaged, f"{NETS}:small_cnn"], capsys)
        assert_user_error(result, "network correction")
        assert "does not run on its example inputs" not in result[2]


def test_a_network_factor_is_kept_only_where_it_pays_leave_one_out():
    """network-correction's factor with the host's drift divided out (anchors): the fitted one where each network
    corrected by the others' factor is closer than the plain sums (a bias they share), else 1 with the plain sums'
    errors (a factor from networks that disagree would move the next network at random). Without anchors it is
    always kept: it carries the host's drift, which every network shares."""
    from tvmlat.anchors import fitted_correction

    p = np.array([100.0, 200.0, 50.0, 80.0, 120.0])
    biased = fitted_correction(1.3 * p * np.array([1.0, 1.02, 0.98, 1.01, 0.99]), p, host_adjusted=True)
    assert biased["applied"] and biased["factor"] == biased["fitted_factor"] == pytest.approx(1.3, rel=0.01)
    np.testing.assert_allclose(biased["loo_log_residuals"], loo_log_residuals(1.3 * p * np.array(
        [1.0, 1.02, 0.98, 1.01, 0.99]), p))
    scattered = p * np.array([1.05, 0.95, 1.08, 0.93, 1.0])  # errors of both signs: no factor pays
    plain = fitted_correction(scattered, p, host_adjusted=True)
    assert not plain["applied"] and plain["factor"] == 1.0 and plain["fitted_factor"] != 1.0
    assert plain["median_abs_error_%_loo_corrected"] >= plain["median_abs_error_%_before"]
    np.testing.assert_allclose(plain["loo_log_residuals"], np.log(scattered / p))
    drift = fitted_correction(scattered, p, host_adjusted=False)  # no anchors: the factor carries the host's drift
    assert drift["applied"] and drift["factor"] == drift["fitted_factor"] == plain["fitted_factor"]
    np.testing.assert_allclose(drift["loo_log_residuals"], loo_log_residuals(scattered, p))


def test_shipped_intel_network_correction_keeps_no_factor():
    """The ten example networks' x0.986 did not pay leave-one-out (3.5 % -> 5.3 %): the file stores 1 and the plain
    sums' errors, and predicts a network as the sum of its layers."""
    path = Path(__file__).resolve().parents[2] / "datasets" / "llvm" / "calib-emeraldrapids-n200-s0.predictor.json"
    corr = json.loads(path.read_text())["network_correction"]
    assert corr["factor"] == 1.0 and not corr["applied"] and corr["fitted_factor"] == pytest.approx(0.986, abs=5e-4)
    assert corr["median_abs_error_%_loo_corrected"] > corr["median_abs_error_%_before"]
    assert load_predictor(path).network_factor() == 1.0
