import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tvmlat
from tvmlat.errors import NotFittedError, PredictorError
from tvmlat.features import FEATURES_VERSION, features_frame
from tvmlat.predictors import FEATURE_SETS, LinearPredictor, load_predictor, save_predictor
from tvmlat.predictors.io import SCHEMA_VERSION

TRUE_COEF = {"acts": 1e-7, "inp": 2e-7, "flops": 5e-7}
TRUE_ICPT = 0.002


@pytest.fixture(scope="module")
def synthetic(dataset_specs):
    """The 40 sampled blocks' published features with exactly linear latencies (ms)."""
    X = features_frame(dataset_specs)
    y = TRUE_ICPT + sum(c * X[f].to_numpy(float) for f, c in TRUE_COEF.items())
    return X, y


def test_synthetic_latencies_span_decades(synthetic):
    _, y = synthetic
    assert y.min() < 0.05 and y.max() > 20


@pytest.mark.parametrize("segmented", [None, False])
def test_linear_recovers_known_coefficients(synthetic, segmented):
    X, y = synthetic
    m = LinearPredictor(features="published", segmented=segmented).fit(X, y)
    assert m.feature_names_in_ == ["acts", "inp", "flops"]
    assert np.all(m.coef_ >= 0) and m.intercept_ >= 0
    pred = m.predict(X)
    assert np.all(np.abs(pred / y - 1) <= 0.02)
    if m.breakpoint_ms_ == 0:  # one segment: the coefficients themselves come back
        for f, c in zip(m.feature_names_in_, m.coef_):
            assert c == pytest.approx(TRUE_COEF[f], rel=0.02), f
    # also on blocks it has not seen: scaled-up feature rows
    Z = X[["acts", "inp", "flops"]] * 3
    z = TRUE_ICPT + sum(c * Z[f].to_numpy(float) for f, c in TRUE_COEF.items())
    assert np.all(np.abs(m.predict(Z) / z - 1) <= 0.02)


def test_coefficients_stay_non_negative_when_truth_is_negative(synthetic):
    X, _ = synthetic
    # a latency that falls with acts: the fit must clip that coefficient at 0, never go negative
    y = 0.01 + 5e-7 * X["flops"].to_numpy(float) + np.maximum(0, 1 - 1e-7 * X["acts"].to_numpy(float))
    m = LinearPredictor(features="published", segmented=False).fit(X, y)
    assert np.all(m.coef_ >= 0)
    assert m.intercept_ >= 0


def test_ops_feature_set_on_fake_runner_data(ok_frame):
    y = ok_frame["latency_ms_median"].to_numpy(float)
    m = LinearPredictor(features="ops").fit(ok_frame, y)
    shared, extra = FEATURE_SETS["ops"]
    assert m.feature_names_in_ == shared + extra
    pred = m.predict(ok_frame)
    assert pred.shape == (len(ok_frame),)
    assert np.all(np.isfinite(pred)) and np.all(pred > 0)
    assert np.all(m.coef_ >= 0)
    # the fake hardware is a roofline of these features: the fit is close in the median
    assert np.median(np.abs(pred / y - 1)) < 0.5
    assert "latency_ms" in m.describe()


def test_predict_before_fit_raises():
    with pytest.raises(NotFittedError, match="not fitted"):
        LinearPredictor().predict(pd.DataFrame({"acts": [1.0]}))
    with pytest.raises(PredictorError):
        LinearPredictor().to_dict()


def test_fit_input_errors(synthetic):
    X, y = synthetic
    with pytest.raises(PredictorError, match="at least 8"):
        LinearPredictor(features="published").fit(X.iloc[:5], y[:5])
    bad = y.copy()
    bad[0] = -1
    with pytest.raises(PredictorError, match="positive"):
        LinearPredictor(features="published").fit(X, bad)
    with pytest.raises(PredictorError, match="flops"):
        LinearPredictor(features="published").fit(X.drop(columns=["flops"]), y)
    with pytest.raises(PredictorError, match="feature set"):
        LinearPredictor(features="nosuch").fit(X, y)


def test_custom_feature_list(synthetic):
    X, y = synthetic
    m = LinearPredictor(features=["flops", "acts", "inp"], segmented=False).fit(X, y)
    assert m.feature_names_in_ == ["flops", "acts", "inp"]
    assert np.all(np.abs(m.predict(X) / y - 1) <= 0.02)


# ------------------------------------------------------------------ save / load


@pytest.mark.parametrize("features", ["ops", "published"])
def test_save_load_roundtrip(ok_frame, tmp_path, features):
    y = ok_frame["latency_ms_median"].to_numpy(float)
    m = LinearPredictor(features=features).fit(ok_frame, y)
    p = tmp_path / "sub" / "p.json"
    doc = save_predictor(m, p, target={"name": "fake"}, profile="default", dataset_hash="abc")
    on_disk = json.loads(p.read_text())  # plain JSON
    assert on_disk["schema_version"] == SCHEMA_VERSION == doc["schema_version"]
    assert on_disk["kind"] == "linear"
    assert on_disk["features_version"] == FEATURES_VERSION
    assert on_disk["features"] == m.feature_names_in_
    loaded = load_predictor(p)
    assert loaded.profile == "default"
    assert loaded.target == {"name": "fake"}
    np.testing.assert_array_equal(loaded.predict(ok_frame), m.predict(ok_frame))
    assert loaded.model.get_params() == m.get_params()
    assert loaded.model.breakpoint_ms_ == m.breakpoint_ms_


def test_no_pickle_in_package():
    import re

    root = Path(tvmlat.__file__).parent
    imports = re.compile(r"^\s*(import|from)\s+(pickle|cloudpickle|dill|joblib|shelve)\b", re.M)
    for f in root.rglob("*.py"):
        text = f.read_text()
        assert not imports.search(text), f"{f} imports a pickle library"
        assert "torch.load(" not in text and "pickle.load" not in text, f


def _doc(predictor_path) -> dict:
    return json.loads(Path(predictor_path).read_text())


def _write_doc(tmp_path, doc) -> Path:
    p = tmp_path / "p.json"
    p.write_text(json.dumps(doc))
    return p


def test_load_missing_file(tmp_path):
    p = tmp_path / "nope.json"
    with pytest.raises(PredictorError, match="does not exist") as e:
        load_predictor(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("content", ["not json at all", "{\"a\": ", b"\x80\x81\xff"])
def test_load_non_json(tmp_path, content):
    p = tmp_path / "p.json"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(PredictorError, match="not a JSON predictor"):
        load_predictor(p)


# (how the good document is broken, word the message must contain)
BROKEN = {
    "no-schema": (lambda d: d.pop("schema_version"), "schema_version"),
    "no-kind": (lambda d: d.pop("kind"), "kind"),
    "not-an-object": (lambda d: d.clear() or d.update({"_list": True}), "schema_version"),
    "newer-schema": (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "upgrade"),
    "schema-str": (lambda d: d.update(schema_version="1"), "schema_version"),
    "features-version": (lambda d: d.update(features_version=FEATURES_VERSION - 1), "features version"),
    "unknown-kind": (lambda d: d.update(kind="xgboost_forest"), "xgboost_forest"),
    "no-model": (lambda d: d.pop("model"), "model"),
    "model-empty": (lambda d: d.update(model={}), "malformed"),
    "no-coefficients": (lambda d: d["model"].pop("coefficients"), "coefficients"),
    "coefficient-missing": (lambda d: d["model"]["coefficients"].pop(d["model"]["features"][0]), "malformed"),
    "coefficient-str": (lambda d: d["model"]["coefficients"].update({d["model"]["features"][0]: "x"}), "malformed"),
    "segments-null": (lambda d: d["model"].update(segments=None), "malformed"),
    "intercept-nan": (lambda d: d["model"].update(intercept_ms=float("nan")), "non-finite"),
    "tie-str": (lambda d: d["model"]["params"].update(tie="strong"), "tie must be a non-negative number"),
    "tie-negative": (lambda d: d["model"]["params"].update(tie=-1), "tie must be a non-negative number"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_load_broken_documents(tmp_path, predictor_path, case):
    doc = _doc(predictor_path)
    breaker, needle = BROKEN[case]
    breaker(doc)
    if doc.get("_list"):
        doc = [1, 2, 3]
    p = _write_doc(tmp_path, doc)
    with pytest.raises(PredictorError) as e:
        load_predictor(p)
    msg = str(e.value)
    assert needle in msg
    assert str(p) in msg
    assert "\n" not in msg


@pytest.mark.parametrize("model", [None, [], "x", {"params": None}])
def test_load_model_section_not_a_mapping(tmp_path, predictor_path, model):
    doc = _doc(predictor_path)
    if isinstance(model, dict):
        doc["model"].update(model)
    else:
        doc["model"] = model
    with pytest.raises(PredictorError):
        load_predictor(_write_doc(tmp_path, doc))


def test_loaded_fixture_predictor_predicts(predictor_path, ok_frame):
    loaded = load_predictor(predictor_path)
    pred = loaded.predict(ok_frame)
    assert np.all(np.isfinite(pred)) and np.all(pred > 0)


@pytest.mark.parametrize("target, says", [({"name": "llvm", "mcpu": "znver4"}, "llvm (znver4, default)"),
                                           ({"name": "llvm", "mcpu": "host"}, "llvm (default)"),
                                           ({"name": "cuda", "arch": "sm_90", "mcpu": ""}, "cuda (sm_90, default)")])
def test_a_predictor_says_which_chip_it_predicts(predictor_path, target, says):
    """A predictor calibrated on another host's CPU predicts that CPU: the titles of predict/analyze say so."""
    loaded = load_predictor(predictor_path)
    loaded.doc["target"] = target
    assert loaded.describe() == says


def _collinear(n=60, seed=0):
    """Rows where INP is always half of the activations (``acts_rw``; as in blocks without pooling) and latency =
    1 ns per element of each, plus 2 ns per chain step."""
    rng = np.random.default_rng(seed)
    acts = rng.integers(10_000, 5_000_000, n).astype(float)
    X = pd.DataFrame({c: np.zeros(n) for c in FEATURE_SETS["loops"][0]})
    X["acts_rw"], X["inp"], X["mac_excess"] = acts, acts / 2, rng.integers(0, 10_000_000, n).astype(float)
    X["n_ops"] = 3.0
    y = 1e-6 * (X["acts_rw"] + X["inp"]) + 2e-6 * X["mac_excess"] + 0.003
    return X, y.to_numpy()


def test_tied_costs_predict_what_the_data_cannot_tell():
    X, y = _collinear()
    m = LinearPredictor().fit(X, y)  # loops: tied
    assert m.tie_strength == 1.0 and m.get_params()["tie"] == 1.0
    c = dict(zip(m.feature_names_in_, m.coef_))
    assert c["acts_rw"] == pytest.approx(c["inp"], rel=0.05)  # the data only fix acts_rw + inp / 2
    # a global mean: a million input elements, one output; truth 1 ms (+ the per-op costs)
    mean = X.iloc[:1].copy()
    mean[["acts_rw", "inp", "mac_excess"]] = [1.0, 1e6, 0.0]
    assert m.predict(mean)[0] == pytest.approx(1.0 + 0.003, rel=0.1)
    free = LinearPredictor(tie=0).fit(X, y)
    assert np.all(np.abs(free.predict(X) / y - 1) < 0.02)  # as good on what it saw: the tie costs no fit


def test_the_tie_gives_way_to_data_that_tell_the_costs_apart():
    X, _ = _collinear()
    rng = np.random.default_rng(1)
    X["inp"] = rng.integers(10_000, 5_000_000, len(X)).astype(float)  # independent of acts now
    y = 1e-6 * X["acts_rw"] + 3e-6 * X["inp"] + 2e-6 * X["mac_excess"] + 0.003
    c = dict(zip(*[(m := LinearPredictor().fit(X, y)).feature_names_in_, m.coef_]))
    assert c["acts_rw"] == pytest.approx(1e-6, rel=0.1) and c["inp"] == pytest.approx(3e-6, rel=0.1)


def test_older_files_keep_their_free_fit(ok_frame):
    m = LinearPredictor().fit(ok_frame, ok_frame["latency_ms_median"].to_numpy())
    d = m.to_dict()
    assert d["params"]["tie"] == 1.0
    del d["params"]["tie"]  # a file from before the tie
    old = LinearPredictor.from_dict(d)
    assert old.tie_strength == 0.0 and LinearPredictor(features="published").tie_strength == 0.0
    assert old.predict(ok_frame) == pytest.approx(m.predict(ok_frame))
