"""Shared fixtures for the unit tests: no TVM compilation anywhere, the FakeRunner stands in for hardware."""

from __future__ import annotations

import pandas as pd
import pytest

from tvmlat.blocks import sample_specs
from tvmlat.dataset import CampaignWriter, read_dataset
from tvmlat.measure import run_campaign, spec_workloads
from tvmlat.predictors import LinearPredictor, save_predictor
from tvmlat.runners.fake import FakeRunner
from helpers import campaign_meta, make_target


@pytest.fixture(scope="session")
def fake_target():
    return make_target()


@pytest.fixture(scope="session")
def dataset_specs():
    # 40 blocks: all ten families, four of each on average
    return sample_specs(40, seed=3)


@pytest.fixture(scope="session")
def fake_dataset(tmp_path_factory, dataset_specs):
    """A parquet dataset (+ meta.json) of FakeRunner measurements; returns (path, DataFrame)."""
    t = make_target()
    path = tmp_path_factory.mktemp("fake_dataset") / "calib.parquet"
    writer = CampaignWriter(path, campaign_meta(t))
    run_campaign(spec_workloads(dataset_specs), FakeRunner(), t, writer, show_progress=False)
    writer.finish()
    return path, read_dataset(path)


@pytest.fixture(scope="session")
def predictor_path(tmp_path_factory, fake_dataset):
    """A LinearPredictor ("ops") fitted on the fake dataset and saved as JSON (profile "default")."""
    _, df = fake_dataset
    good = df[df["status"] == "ok"].reset_index(drop=True)
    model = LinearPredictor(features="ops").fit(good, good["latency_ms_median"].to_numpy(float))
    path = tmp_path_factory.mktemp("predictor") / "p.predictor.json"
    save_predictor(model, path, target=make_target().to_dict(), profile="default", dataset_hash="test")
    return path


@pytest.fixture
def ok_frame(fake_dataset) -> pd.DataFrame:
    _, df = fake_dataset
    return df[df["status"] == "ok"].reset_index(drop=True).copy()
