"""Several campaigns fitted together: each one's host speed divided out; splits keep a block's rows together."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest

from tvmlat.ablation import learning_curve, run_ablation
from tvmlat.blocks import sample_specs
from tvmlat.campaigns import campaign_speeds, divided
from tvmlat.dataset import CampaignWriter, concat_datasets, ok_rows
from tvmlat.measure import run_campaign, spec_workloads
from tvmlat.metrics import block_groups, cross_validate, kfold_splits
from tvmlat.predictors import LinearPredictor
from tvmlat.runners.fake import FakeRunner
from helpers import campaign_meta, make_target, run_cli

SLOW = 1.5  # the second campaign's host ran this much slower


@pytest.fixture(scope="module")
def two_campaigns(tmp_path_factory):
    """The same 30 blocks and 30 others, measured by a host in two speed states."""
    t = make_target()
    root = tmp_path_factory.mktemp("campaigns")
    paths = []
    for name, seeds, slowdown in (("fast", (3,), 1.0), ("slow", (3, 4), SLOW)):
        specs = [s for seed in seeds for s in sample_specs(30, seed=seed)]
        path = root / f"calib-{name}.parquet"
        writer = CampaignWriter(path, campaign_meta(t))
        run_campaign(spec_workloads(specs), FakeRunner(slowdown=slowdown), t, writer, show_progress=False)
        writer.finish()
        paths.append(path)
    return paths


def test_rows_name_their_campaign_and_its_speed_is_found(two_campaigns):
    df = ok_rows(concat_datasets(two_campaigns))
    assert set(df["campaign"]) == {"calib-fast", "calib-slow"}
    s = campaign_speeds(df, df["latency_ms_median"])
    assert s["calib-slow"] / s["calib-fast"] == pytest.approx(SLOW, rel=0.02)
    assert np.exp(np.log(s).mean()) == pytest.approx(1.0)
    y = divided(df, df["latency_ms_median"], s)
    both = df.assign(y=y).groupby("block_id")["y"].agg(["min", "max", "size"])
    both = both[both["size"] > 1]  # the blocks measured in both campaigns now agree
    assert len(both) >= 25 and (both["max"] / both["min"]).max() < 1.02


def test_a_campaign_without_training_rows_keeps_speed_one(two_campaigns):
    df = ok_rows(concat_datasets(two_campaigns))
    rows = np.flatnonzero(df["campaign"].to_numpy() == "calib-slow")
    s = campaign_speeds(df, df["latency_ms_median"], rows)
    assert s["calib-fast"] == 1.0 and s["calib-slow"] == pytest.approx(1.0)


def test_kfold_keeps_a_blocks_rows_on_one_side(two_campaigns):
    df = ok_rows(concat_datasets(two_campaigns))
    seen = []
    for _, tr, te in kfold_splits(df, 5, 0):
        assert not set(df["block_id"].iloc[tr]) & set(df["block_id"].iloc[te])
        seen += list(te)
    assert sorted(seen) == list(range(len(df)))
    # one row per block: the plain random k-fold over rows it always was
    one = df.drop_duplicates("block_id").reset_index(drop=True)
    idx = np.random.default_rng(7).permutation(len(one))
    for (_, tr, te), old in zip(kfold_splits(one, 5, 7), np.array_split(idx, 5)):
        assert list(te) == sorted(old) and list(tr) == sorted(set(idx) - set(old))
    assert list(block_groups(one)) == list(range(len(one)))


def test_learning_curve_tests_on_blocks_it_never_trained_on(two_campaigns, monkeypatch):
    df = ok_rows(concat_datasets(two_campaigns))
    fitted_on: list[set] = []

    class Spy(LinearPredictor):
        def fit(self, X, y):
            fitted_on.append(set(X["block_id"]))
            return super().fit(X, y)

        def predict(self, X):
            assert not set(X["block_id"]) & fitted_on[-1]
            return super().predict(X)

    learning_curve(df, lambda: Spy(features="published"), "spy", (20, 40), 2, 0)
    assert len(fitted_on) == 5


def test_cross_validation_divides_each_splits_speeds_out(two_campaigns):
    df = ok_rows(concat_datasets(two_campaigns))
    # the fake runner's latencies are FLOPs plus (ACTS + INP + params): the published form's terms, so the test is of
    # the speeds alone (loops, since features version 21 without ACTS itself, fits the fake world less closely)
    model = partial(LinearPredictor, features="published")
    raw, _ = cross_validate(df, model, split="family")
    fair, p = cross_validate(df, model, split="family", campaign_speed=True)
    assert fair["median_ape"] < raw["median_ape"] / 2
    assert fair["within10"] > raw["within10"]
    res = run_ablation(df, {"published": model}, sizes=(20,), draws=1)
    assert res.metrics["median_ape"].max() < raw["median_ape"] / 2
    off = run_ablation(df, {"published": model}, sizes=(20,), draws=1, campaign_speed=False)
    assert off.metrics["median_ape"].min() > res.metrics["median_ape"].max()


def test_fit_records_the_speeds_it_divided_out(two_campaigns, tmp_path, capsys):
    a, b = two_campaigns
    code, out, _ = run_cli(["fit", "-d", a, "-d", b, "-o", tmp_path / "p.json"], capsys)
    assert code == 0 and "host speed of 2 campaigns divided out" in out
    speeds = json.loads((tmp_path / "p.json").read_text())["training"]["campaign_speeds"]
    assert speeds["calib-slow"] / speeds["calib-fast"] == pytest.approx(SLOW, rel=0.02)
    # blocks measured in both campaigns: the intervals' scale is the median of 20 neighbours, not a tail
    assert "the median of the 20 held-out scores nearest in predicted latency and cost shares" in \
        json.loads((tmp_path / "p.json").read_text())["interval"]["method"]
    for args in (["-d", a, "-d", b, "--no-campaign-speed"], ["-d", a]):
        code, out, _ = run_cli(["fit", *args, "-o", tmp_path / "q.json"], capsys)
        assert code == 0 and "divided out" not in out
        assert "campaign_speeds" not in json.loads((tmp_path / "q.json").read_text())["training"]
    method = json.loads((tmp_path / "q.json").read_text())["interval"]["method"]  # one campaign: the tail
    assert "the 90% quantile of the 30 held-out scores" in method


def test_a_family_only_one_campaign_has_is_said_where_speeds_are_divided_out(two_campaigns, tmp_path, capsys):
    """Its campaign's speed is also that family's level (own blocks measured apart): fit and ablation say so."""
    import pandas as pd

    from tvmlat.campaigns import lone_campaigns

    a, b = two_campaigns
    df = ok_rows(concat_datasets([a, b]))
    assert lone_campaigns(df) == []  # both campaigns hold the same families
    own = df.copy()
    own.loc[own["campaign"] == "calib-slow", "family"] = "mine"
    assert lone_campaigns(own) == ["calib-fast", "calib-slow"]  # neither speed can be told from a family's level
    mixed = own.copy()  # the calibration's families beside its own: the shared ones anchor its speed
    mixed.loc[mixed.index[mixed["campaign"] == "calib-slow"][:5], "family"] = "conv_bn_relu"
    assert lone_campaigns(mixed) == []
    assert lone_campaigns(own[own["campaign"] == "calib-slow"]) == []  # one campaign: nothing is divided out
    # the CLI: the slow campaign's rows relabelled as a family of their own
    slow = pd.read_parquet(b).assign(family="mine")
    c = tmp_path / "calib-mine.parquet"
    slow.to_parquet(c)
    (tmp_path / "calib-mine.meta.json").write_text(b.with_name(b.stem + ".meta.json").read_text())
    code, out, err = run_cli(["fit", "-d", a, "-d", c, "-o", tmp_path / "p.json"], capsys)
    assert code == 0, err
    assert "calib-fast, calib-mine share no block family with the other campaigns" in " ".join(out.split())
    code, out, err = run_cli(["fit", "-d", a, "-d", b, "-o", tmp_path / "p.json"], capsys)
    assert code == 0 and "share no block family" not in out
