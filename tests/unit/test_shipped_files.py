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
    assert p.geometry == meta_geometry(data)
    df = ok_rows(load_for_fit(data, p.geometry))
    pred = p.predict(df)
    y = df["latency_ms_median"].to_numpy()
    assert np.all(np.isfinite(pred)) and np.all(pred > 0)
    # in-sample: what it was fitted on; far off means a stale file (the worst shipped one, tuned, is ~30 %)
    assert np.median(np.abs(pred / y - 1)) < 0.4
