"""Every shipped predictor loads, belongs to a shipped dataset of its target, and predicts that
dataset the way the README says; every shipped dataset is counted with this features version."""

import re
from pathlib import Path

import numpy as np
import pytest

from tvmlat.dataset import dataset_hash, load_for_fit, meta_geometry, ok_rows, read_meta
from tvmlat.features import FEATURES_VERSION
from tvmlat.predictors import load_predictor

ROOT = Path(__file__).resolve().parents[2] / "datasets"
PREDICTORS = sorted(ROOT.glob("*/*.predictor.json"))
DATASETS = sorted(ROOT.glob("*/*.parquet"))


def _dataset_of(pred: Path) -> Path:
    return pred.with_name(re.sub(r"(\.linear\+xgb)?\.predictor\.json$", ".parquet", pred.name))


def test_there_are_shipped_files():
    assert len(PREDICTORS) >= 10 and len(DATASETS) >= 8


@pytest.mark.parametrize("path", DATASETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_shipped_dataset_is_counted_with_this_features_version(path):
    meta = read_meta(path)
    assert meta.get("features_version") == FEATURES_VERSION, "recount it: features changed since it was written"
    meta_geometry(path)  # a readable L1 geometry (or none)


@pytest.mark.parametrize("path", PREDICTORS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_predictor_fits_its_dataset(path):
    if "xgb" in path.name:
        pytest.importorskip("xgboost")
    p = load_predictor(path)
    data = _dataset_of(path)
    assert data.is_file(), f"{path.name} has no dataset {data.name} beside it"
    assert p.doc["dataset_hash"] == dataset_hash(data), "the rows the predictor was fitted on changed since: refit it"
    # its dataset's L1, with the core's parameters its fit chose (chain overlap, version 23; thrash reach, 24; 70 and
    # 16, the defaults, in files before)
    assert p.geometry.with_core(meta_geometry(data)) == meta_geometry(data)
    df = ok_rows(load_for_fit(data, p.geometry))
    pred = p.predict(df)
    y = df["latency_ms_median"].to_numpy()
    assert np.all(np.isfinite(pred)) and np.all(pred > 0)
    # in-sample: what it was fitted on; far off means a stale file (the worst shipped one, tuned, is ~30 %)
    assert np.median(np.abs(pred / y - 1)) < 0.4


TIMED = [p for p in PREDICTORS if '"timings"' in p.read_text()]


@pytest.mark.parametrize("path", TIMED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_network_correction_is_what_its_stored_timings_give(path, tmp_path, capsys, monkeypatch):
    """A correction that stores its networks' timings is the one they give this predictor (not one left
    over from before a refit): fitted again from them, nothing is measured and nothing changes. Run from
    another folder than the repository's: the file says where its relative MODEL_REFs are relative to."""
    import shutil

    from helpers import run_cli

    copy = tmp_path / path.name
    shutil.copy(path, copy)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["network-correction", "-p", copy, "--timings-from", path, "--format", "json"], capsys)
    assert code == 0, err
    old, new = load_predictor(path).doc["network_correction"], load_predictor(copy).doc["network_correction"]
    assert new["factor"] == pytest.approx(old["factor"], rel=1e-9)
    assert new["loo_log_residuals"] == pytest.approx(old["loo_log_residuals"], abs=1e-9)
    assert new.get("host_factor") == pytest.approx(old.get("host_factor"), rel=1e-9)
