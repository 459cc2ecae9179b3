"""Few-shot adaptation: the adapted predictor's fit, JSON round trip and CLI errors (fake data, no TVM)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import assert_user_error, run_cli
from tvmlat.errors import NotFittedError, PredictorError
from tvmlat.predictors import LinearPredictor, save_predictor
from tvmlat.predictors.adapted import AdaptedPredictor
from tvmlat.predictors.io import load_predictor, predictor_document


@pytest.fixture(scope="module")
def prior_doc(fake_dataset):
    _, df = fake_dataset
    m = LinearPredictor(features="ops").fit(df, df["latency_ms_median"].to_numpy())
    return predictor_document(m, target={"name": "other"}, profile="default"), df


def _adapted(doc):
    return AdaptedPredictor(prior={k: doc[k] for k in ("kind", "model", "target")})


def test_recovers_a_scaled_target(prior_doc):
    doc, df = prior_doc
    prior_pred = LinearPredictor.from_dict(doc["model"]).predict(df)
    y_new = 3.0 * prior_pred  # the new device is 3x slower on every block
    a = _adapted(doc).fit(df.iloc[:5], y_new[:5])
    assert np.allclose(a.predict(df), y_new, rtol=1e-6)
    assert a.b_ == pytest.approx(1.0) and np.exp(a.a_) == pytest.approx(3.0)


def test_slope_is_pulled_to_one_with_few_samples_and_learned_with_many(prior_doc):
    doc, df = prior_doc
    z = LinearPredictor.from_dict(doc["model"]).predict(df)
    y_new = 2.0 * z ** 0.7  # big blocks gain more than small ones
    few = _adapted(doc).fit(df.iloc[:3], y_new[:3])
    many = _adapted(doc).fit(df, y_new)
    assert abs(many.b_ - 0.7) < abs(few.b_ - 0.7)
    assert many.b_ == pytest.approx(0.7, abs=0.05)


def test_json_round_trip(prior_doc, tmp_path):
    doc, df = prior_doc
    a = _adapted(doc).fit(df.iloc[:10], df["latency_ms_median"].to_numpy()[:10])
    save_predictor(a, tmp_path / "a.json", target={"name": "new"}, profile="default")
    back = load_predictor(tmp_path / "a.json")
    assert back.doc["kind"] == "adapted"
    assert np.allclose(back.predict(df), a.predict(df))
    assert "prior" in back.model.describe()


def test_not_fitted_and_bad_documents(prior_doc):
    doc, df = prior_doc
    with pytest.raises(NotFittedError):
        _adapted(doc).predict(df)
    with pytest.raises(PredictorError):
        AdaptedPredictor(prior={"kind": "nonsense", "model": {}}).fit(df, df["latency_ms_median"])
    with pytest.raises(PredictorError):
        AdaptedPredictor.from_dict({"prior": {"kind": "linear", "model": doc["model"]}})  # no a/b


def test_calibrate_from_missing_predictor_is_a_user_error(tmp_path, capsys):
    assert_user_error(run_cli(["calibrate", "--from", tmp_path / "nope.json", "--samples", "10",
                               "--out", tmp_path], capsys), "does not exist")


def test_too_few_samples_even_with_prior(fake_dataset, tmp_path, capsys, prior_doc):
    doc, _ = prior_doc
    p = tmp_path / "prior.json"
    import json

    p.write_text(json.dumps(doc))
    assert_user_error(run_cli(["calibrate", "--from", p, "--samples", "2", "--out", tmp_path], capsys), "at least 3")
    assert not list(tmp_path.glob("*.parquet"))


def test_memory_model_fit_and_round_trip(fake_dataset):
    from tvmlat.memory import MemoryModel

    _, df = fake_dataset
    y = 4.0 * (df["weight_elems"] + df["inp"]).to_numpy(dtype=float) + 0.5 * 4 * df["acts"].to_numpy(dtype=float)
    m = MemoryModel().fit(df, y)
    assert np.allclose(m.predict(df), y, rtol=1e-3)
    back = MemoryModel.from_dict(m.to_dict())
    assert np.allclose(back.predict(df), m.predict(df))
    with pytest.raises(PredictorError):
        MemoryModel.from_dict({"coefficients": {"acts": 1.0}})
    with pytest.raises(NotFittedError):
        MemoryModel().predict(df)


def test_memory_model_holds_the_output_whole_and_reads_older_files(fake_dataset):
    """Planning reuses the activations' memory but not the output's, which escapes the pools: with its own
    column the fit recovers a peak made that way; a model written before that column (three features) still
    loads and predicts as it did; a file naming a column the model does not know is refused."""
    from tvmlat.memory import LEGACY_MEMORY_FEATURES, MemoryModel

    _, df = fake_dataset
    out, acts = df["out"].to_numpy(dtype=float), df["acts"].to_numpy(dtype=float)
    assert (out > 0).all() and (acts >= out).all() and (acts > out).sum() >= 5
    y = 4.0 * (df["weight_elems"] + df["inp"]).to_numpy(dtype=float) + 4 * out + 0.3 * 4 * (acts - out)
    m = MemoryModel().fit(df, y)
    assert np.allclose(m.predict(df), y, rtol=1e-3)
    c = m.to_dict()["coefficients"]
    assert c["out"] == pytest.approx(0.7, rel=1e-2) and c["acts"] == pytest.approx(0.3, rel=1e-2)
    old = MemoryModel(LEGACY_MEMORY_FEATURES).fit(df, y)
    doc = old.to_dict()
    assert doc["features"] == list(LEGACY_MEMORY_FEATURES) and "out" not in doc["coefficients"]
    assert np.allclose(MemoryModel.from_dict(doc).predict(df), old.predict(df))
    del doc["features"]  # the oldest files: the three columns, unnamed
    assert np.allclose(MemoryModel.from_dict(doc).predict(df), old.predict(df))
    with pytest.raises(PredictorError, match="unknown features"):
        MemoryModel.from_dict({**m.to_dict(), "features": ["weight_elems", "flops"]})
    doc = m.to_dict()
    del doc["coefficients"]["out"]
    with pytest.raises(PredictorError, match="no coefficient for out"):
        MemoryModel.from_dict(doc)


def test_calibrate_from_prior_falls_back_to_own_model_when_the_prior_misleads(tmp_path, capsys, fake_dataset):
    """A prior whose shape is unrelated to the new target loses to the target's own model on 5-fold."""
    import json

    from tvmlat.cli.fit import fit_and_report
    from rich.console import Console

    _, df = fake_dataset
    rng = np.random.default_rng(0)
    y_other = df["latency_ms_median"].to_numpy() * np.exp(rng.normal(0, 1.5, len(df)))  # scrambled shape
    prior = predictor_document(LinearPredictor().fit(df, y_other), target={"name": "other"}, profile="default")
    out = tmp_path / "p.json"
    fit_and_report(df, features="ops", target={"name": "new"}, profile="default", dataset_hash="", out=out,
                   con=Console(width=200), prior=prior)
    assert json.loads(out.read_text())["kind"] == "linear"
    assert "does not help" in capsys.readouterr().out


def test_calibrate_from_prior_keeps_a_prior_that_helps(tmp_path, fake_dataset):
    import json

    from rich.console import Console

    from tvmlat.cli.fit import fit_and_report

    _, df = fake_dataset
    prior_model = LinearPredictor().fit(df, df["latency_ms_median"].to_numpy())
    prior = predictor_document(prior_model, target={"name": "other"}, profile="default")
    new = df.copy()
    new["latency_ms_median"] = 2.5 * prior_model.predict(df)  # the new target: the same shape, 2.5x slower
    out = tmp_path / "p.json"
    fit_and_report(new, features="ops", target={"name": "new"}, profile="default", dataset_hash="", out=out,
                   con=Console(width=200), prior=prior)
    assert json.loads(out.read_text())["kind"] == "adapted"


def test_an_adapted_predictor_counts_what_its_prior_saw_as_priced(tmp_path, fake_dataset):
    """Few-shot: a feature the new target's few blocks lack but the prior's blocks had is priced (by the prior),
    so it is not named as unpriced; one neither had is. A prior without the record: nothing is claimed."""
    import io
    import json

    from rich.console import Console

    from tvmlat.cli.fit import fit_and_report
    from tvmlat.predictors.io import feature_max

    _, df = fake_dataset
    prior_model = LinearPredictor().fit(df, df["latency_ms_median"].to_numpy())
    prior = predictor_document(prior_model, target={"name": "other"}, profile="default",
                               training={"feature_max": {**feature_max(df, prior_model.feature_names_in_), "win_slow": 0.0}})
    new = df.assign(acts=0, win_slow=0)  # the new target's blocks lack acts, which the prior's had
    new["latency_ms_median"] = 2.5 * prior_model.predict(new)
    for with_record in (True, False):
        out = tmp_path / f"p{with_record}.json"
        fit_and_report(new, features="ops", target={"name": "new"}, profile="default", dataset_hash="", out=out,
                       con=Console(width=200, file=io.StringIO()),
                       prior=prior if with_record else {k: v for k, v in prior.items() if k != "training"})
        assert json.loads(out.read_text())["kind"] == "adapted"
        loaded = load_predictor(out)
        probe = df.iloc[:1].assign(acts=5, win_slow=5)
        assert loaded.unpriced(probe) == ([["win_slow"]] if with_record else [[]])
