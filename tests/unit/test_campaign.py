import json

import pandas as pd
import pytest
import torch

from helpers import campaign_meta, make_target
from tvmlat.blocks import sample_specs
from tvmlat.dataset import (COLUMNS, SCHEMA_VERSION, CampaignWriter, concat_datasets, dataset_hash, load_for_fit, meta_path,
                            ok_rows, read_dataset, read_meta)
from tvmlat.errors import DatasetError
from tvmlat.features import FEATURE_COLUMNS, block_features
from tvmlat.measure import Workload, module_workloads, run_campaign, spec_workloads
from tvmlat.runners.fake import FakeRunner

N = 8


@pytest.fixture(scope="module")
def specs():
    return sample_specs(N, seed=11, max_flops=5e6)


def _writer(path, target=None, **extra):
    t = target or make_target()
    return CampaignWriter(path, campaign_meta(t, **extra)), t


def test_all_rows_written_and_readable(tmp_path, specs):
    path = tmp_path / "c.parquet"
    writer, t = _writer(path)
    runner = FakeRunner()
    rows = run_campaign(spec_workloads(specs), runner, t, writer, show_progress=False)
    writer.finish()
    assert runner.calls == N
    assert len(rows) == N
    df = read_dataset(path)
    assert list(df.columns) == COLUMNS
    assert len(df) == N
    assert sorted(df["block_id"]) == sorted(s.block_id for s in specs)
    assert (df["status"] == "ok").all()
    assert (df["latency_ms_median"] > 0).all()
    assert (df["target"] == t.name).all() and (df["profile"] == t.profile).all()
    # feature columns are the block's features
    first = df.set_index("block_id").loc[specs[0].block_id]
    for c in ("flops", "acts", "inp", "params", "macs"):
        assert first[c] == block_features(specs[0])[c]
    meta = read_meta(path)
    assert meta["rows"] == N
    assert meta["schema_version"] == SCHEMA_VERSION
    assert meta["target_name"] == t.name
    assert meta_path(path).name == "c.meta.json"
    json.loads(meta_path(path).read_text())  # valid JSON on disk


def test_failing_block_is_a_row_and_the_rest_continue(tmp_path, specs):
    path = tmp_path / "c.parquet"
    writer, t = _writer(path)
    bad = specs[2].block_id
    rows = run_campaign(spec_workloads(specs), FakeRunner(fail_keys={bad}), t, writer, show_progress=False)
    assert len(rows) == N
    df = read_dataset(path).set_index("block_id")
    assert len(df) == N
    assert df.loc[bad, "status"] != "ok"
    assert isinstance(df.loc[bad, "error"], str) and df.loc[bad, "error"]
    assert pd.isna(df.loc[bad, "latency_ms_median"])
    others = df.drop(index=bad)
    assert (others["status"] == "ok").all()
    assert (others["latency_ms_median"] > 0).all()
    assert len(ok_rows(df.reset_index())) == N - 1


def test_broken_workload_is_an_export_error_row(tmp_path, fake_target):
    def boom():
        raise ValueError("cannot build")

    good = module_workloads({"fc": (torch.nn.Linear(4, 3), (torch.randn(2, 4),))})
    work = [Workload("broken", "broken", "model", "", boom), *good]
    path = tmp_path / "m.parquet"
    writer, t = _writer(path, fake_target)
    runner = FakeRunner()
    rows = run_campaign(work, runner, t, writer, show_progress=False)
    assert [r["status"] for r in rows] == ["export_error", "ok"]
    assert "cannot build" in rows[0]["error"]
    assert runner.calls == 1  # the broken one never reached the runner
    df = read_dataset(path)
    assert list(df["block_id"]) == ["broken", "fc"]


@pytest.mark.parametrize("k", [0, 3, N - 1])
def test_interrupt_then_resume(tmp_path, specs, k):
    path = tmp_path / "c.parquet"
    writer, t = _writer(path)
    with pytest.raises(KeyboardInterrupt):
        run_campaign(spec_workloads(specs), FakeRunner(interrupt_after=k), t, writer, show_progress=False)
    if k:
        on_disk = read_dataset(path)
        assert len(on_disk) == k
        assert list(on_disk["block_id"]) == [s.block_id for s in specs[:k]]
    else:
        assert not path.exists() or len(read_dataset(path)) == 0

    # resume: a fresh writer reads what is on disk, a fresh runner measures only the rest
    writer2, _ = _writer(path)
    assert writer2.done_ids() == {s.block_id for s in specs[:k]}
    runner2 = FakeRunner()
    new = run_campaign(spec_workloads(specs), runner2, t, writer2, show_progress=False)
    assert runner2.calls == N - k
    assert len(new) == N - k
    df = read_dataset(path)
    assert len(df) == N
    assert df["block_id"].is_unique
    assert set(df["block_id"]) == {s.block_id for s in specs}

    # and once more: nothing left to do
    runner3 = FakeRunner()
    assert run_campaign(spec_workloads(specs), runner3, t, _writer(path)[0], show_progress=False) == []
    assert runner3.calls == 0
    assert len(read_dataset(path)) == N


def test_failures_are_not_remeasured_on_resume(tmp_path, specs):
    path = tmp_path / "c.parquet"
    writer, t = _writer(path)
    run_campaign(spec_workloads(specs[:3]), FakeRunner(fail_keys={specs[0].block_id}), t, writer,
                 show_progress=False)
    runner = FakeRunner()
    run_campaign(spec_workloads(specs[:3]), runner, t, _writer(path)[0], show_progress=False)
    assert runner.calls == 0


@pytest.mark.parametrize("key,field", [("target_name", "target_name"), ("profile", "profile"), ("mcpu", "mcpu")])
def test_reopen_with_different_target_raises(tmp_path, specs, key, field):
    path = tmp_path / "c.parquet"
    t = make_target(mcpu="znver3")
    writer, _ = _writer(path, t)
    run_campaign(spec_workloads(specs[:2]), FakeRunner(), t, writer, show_progress=False)
    meta = campaign_meta(t)
    if key == "mcpu":
        meta["target"] = {**meta["target"], "mcpu": "znver4"}
    else:
        meta[key] = "something-else"
    with pytest.raises(DatasetError) as e:
        CampaignWriter(path, meta)
    assert field in str(e.value)
    assert "something-else" in str(e.value) or "znver4" in str(e.value)
    # the file is untouched, and the same meta still reopens it
    assert len(read_dataset(path)) == 2
    assert CampaignWriter(path, campaign_meta(t)).done_ids() == {s.block_id for s in specs[:2]}


def test_reopen_with_different_host_cpu_raises(tmp_path, specs):
    path = tmp_path / "c.parquet"
    t = make_target()
    writer, _ = _writer(path, t, host={"cpu": "CPU A"})
    run_campaign(spec_workloads(specs[:1]), FakeRunner(), t, writer, show_progress=False)
    with pytest.raises(DatasetError, match="host cpu"):
        _writer(path, t, host={"cpu": "CPU B"})
    _writer(path, t, host={"cpu": "CPU A"})  # same CPU: fine


def test_read_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(tmp_path / "missing.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(DatasetError, match="not a readable parquet"):
        read_dataset(junk)
    other = tmp_path / "other.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(other)
    with pytest.raises(DatasetError, match="not a tvmlat dataset"):
        read_dataset(other)
    with pytest.raises(DatasetError, match="no dataset"):
        concat_datasets([])


def test_read_meta_errors(tmp_path):
    p = tmp_path / "d.parquet"
    assert read_meta(p) == {}
    meta_path(p).write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_meta(p)
    meta_path(p).write_bytes(b"\x89PNG\r\n\x1a\n\xd9\xff")  # not text at all: was a UnicodeDecodeError traceback
    with pytest.raises(DatasetError, match="not valid JSON.*move it away"):
        read_meta(p)
    meta_path(p).write_text("[1, 2]")
    with pytest.raises(DatasetError, match="not a JSON object"):
        read_meta(p)
    meta_path(p).write_text(json.dumps({"schema_version": "1"}))  # was a TypeError traceback
    with pytest.raises(DatasetError, match="not a whole number"):
        read_meta(p)
    meta_path(p).write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(DatasetError, match="schema_version"):
        read_meta(p)


def test_load_for_fit_refreshes_stale_features(fake_dataset, tmp_path):
    path, df = fake_dataset
    stale = df.copy()
    stale["flops"] = 0
    p = tmp_path / "stale.parquet"
    stale.to_parquet(p, index=False)
    meta_path(p).write_text(json.dumps({"schema_version": SCHEMA_VERSION, "features_version": 0}))
    fresh = load_for_fit(p)
    assert (fresh["flops"] > 0).all()
    assert list(fresh["flops"]) == list(df["flops"])
    assert set(FEATURE_COLUMNS) <= set(fresh.columns)


def test_a_dataset_from_before_the_loop_features_gets_them(fake_dataset, tmp_path):
    """Datasets written before loop_features.py (same features_version, fewer columns) are counted on load."""
    from tvmlat.features import FEATURES_VERSION
    from tvmlat.loop_features import LOOP_COLUMNS

    path, df = fake_dataset
    old = df.drop(columns=LOOP_COLUMNS)
    p = tmp_path / "old.parquet"
    old.to_parquet(p, index=False)
    meta_path(p).write_text(json.dumps({"schema_version": SCHEMA_VERSION, "features_version": FEATURES_VERSION}))
    fresh = load_for_fit(p)
    for c in LOOP_COLUMNS:
        assert list(fresh[c]) == list(df[c])
    assert (fresh["mac_excess"] + fresh["short_vec"] + fresh["short_scal"] > 0).any()


def test_a_feature_column_newer_than_the_file_comes_back_as_integers(fake_dataset, tmp_path):
    """Recounting a file that lacks a column (written before it existed) gives it the dtype the others have."""
    from tvmlat.dataset import refresh_features
    from tvmlat.loop_features import DEFAULT_GEOMETRY

    path, df = fake_dataset
    fresh = refresh_features(df.drop(columns=["red_chain"]), DEFAULT_GEOMETRY)
    assert str(fresh["red_chain"].dtype) == str(df["mac_excess"].dtype) == "Int64"
    assert list(fresh["red_chain"]) == list(df["red_chain"])


def test_refresh_counts_spec_rows_on_arrays_as_spec_features_does(fake_dataset, monkeypatch):
    """refresh_features counts the spec rows per family on arrays (analytic_frame); every row is spec_features's
    count of its spec, and where the closed forms refuse a spec the rows go one by one and come out the same."""
    from tvmlat import analytic_features as af
    from tvmlat.dataset import refresh_features
    from tvmlat.features import spec_features
    from tvmlat.loop_features import DEFAULT_GEOMETRY
    from tvmlat.specs import BlockSpec

    _, df = fake_dataset
    g = DEFAULT_GEOMETRY.with_overlap(55, 32)
    fast = refresh_features(df, g)
    want = [[spec_features(BlockSpec.from_json(s), g)[c] for c in FEATURE_COLUMNS] for s in df["spec"]]
    assert fast[FEATURE_COLUMNS].astype("int64").values.tolist() == want
    assert (fast["mac_excess"] != df["mac_excess"]).any()  # another core: the counts did change

    def refuse(*_a, **_k):
        raise ValueError("not in closed form")

    monkeypatch.setattr(af, "analytic_frame", refuse)
    pd.testing.assert_frame_equal(refresh_features(df, g), fast)


def test_dataset_hash_follows_the_fitted_rows_not_the_file(fake_dataset, tmp_path):
    """A predictor's dataset_hash: a later column (planned memory) leaves it, a timing or a block changes it."""
    path, df = fake_dataset
    fitted_on = dataset_hash(path)
    assert fitted_on.startswith("rows:")

    def written(frame, name):
        p = tmp_path / f"{name}.parquet"
        frame.to_parquet(p, index=False)
        return dataset_hash(p)

    assert written(df, "same") == fitted_on
    assert written(df.assign(peak_memory_bytes=1234.0, energy_mj=5.0), "filled") == fitted_on
    slower = df.copy()
    slower.loc[slower.index[0], "latency_ms_median"] *= 1.01
    assert written(slower, "slower") != fitted_on
    assert written(df.iloc[1:], "fewer") != fitted_on
    assert written(df.assign(flops=df["flops"] + 1), "recounted") != fitted_on
