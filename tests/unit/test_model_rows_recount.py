"""Rows measured from a MODEL_REF (no spec) are counted again when the features change, from the
reference the dataset records; where it can't be, fitting says so instead of using stale features."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from helpers import assert_user_error, run_cli
from tvmlat.dataset import CampaignWriter, load_for_fit, meta_path, model_ref_record, read_dataset
from tvmlat.errors import DatasetError
from tvmlat.features import FEATURE_COLUMNS, FEATURES_VERSION, count_features
from tvmlat.loop_features import DEFAULT_GEOMETRY
from tvmlat.split import split_layers

NETS = '''
import torch
def nets():
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(128, 128, 3, padding=1, groups=32), torch.nn.ReLU())
    return {"fc": (torch.nn.Linear(64, 32), (torch.randn(4, 64),)),
            "grouped": (conv, (torch.randn(1, 128, 8, 8),))}
def net():
    torch.manual_seed(0)
    return (torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2)),
            (torch.randn(1, 3, 16, 16),))
'''


@pytest.fixture
def nets_file(tmp_path):
    p = tmp_path / "nets.py"
    p.write_text(NETS)
    return p


def _truth(entries) -> dict[str, dict[str, int]]:
    return {n: count_features(m, x, geometry=DEFAULT_GEOMETRY) for n, (m, x) in entries.items()}


def _stale_dataset(path, entries, refs, version=FEATURES_VERSION - 1):
    """A dataset of model rows whose features are wrong, written by an older features version."""
    meta = {"target_name": "llvm", "features_version": FEATURES_VERSION, "cache_geometry": DEFAULT_GEOMETRY.to_dict()}
    if refs is not None:
        meta["model_refs"] = refs
    w = CampaignWriter(path, meta)
    for name, feats in _truth(entries).items():
        stale = {**feats, "mac_excess": feats["mac_excess"] + 12345, "short_scal": 0}
        w.append({"block_id": name, "name": name, "family": "model", "spec": "", "status": "ok",
                  "latency_ms_median": 1.0, **stale})
    w.finish()
    m = json.loads(meta_path(path).read_text())
    m["features_version"] = version
    meta_path(path).write_text(json.dumps(m))
    return path


def _entries(nets_file):
    from tvmlat.modelref import load_model_ref

    return load_model_ref(f"{nets_file}:nets")


def test_a_model_ref_record_holds_an_absolute_path(nets_file, monkeypatch):
    monkeypatch.chdir(nets_file.parent)
    rec = model_ref_record("nets.py:nets", layers=True)
    assert rec == {"ref": f"{nets_file.resolve()}:nets", "layers": True}
    assert model_ref_record("torchvision:resnet18") == {"ref": "torchvision:resnet18", "layers": False}


def test_stale_model_rows_are_counted_again_from_the_recorded_reference(nets_file, tmp_path):
    entries = _entries(nets_file)
    path = _stale_dataset(tmp_path / "d.parquet", entries, [model_ref_record(f"{nets_file}:nets")])
    assert (read_dataset(path)["short_scal"] == 0).all()  # stale on disk
    df = load_for_fit(path).set_index("name")
    for name, feats in _truth(entries).items():
        assert {c: int(df.loc[name, c]) for c in FEATURE_COLUMNS} == feats


def test_a_reference_recorded_on_another_machine_is_found_in_this_checkout(nets_file, tmp_path, monkeypatch):
    # shipped from elsewhere: the recorded absolute path does not exist here, the same trailing path does
    (tmp_path / "bench" / "out").mkdir(parents=True)
    (tmp_path / "bench" / "nets.py").write_text(NETS)
    entries = _entries(nets_file)
    path = _stale_dataset(tmp_path / "bench" / "out" / "d.parquet", entries,
                          [{"ref": "/elsewhere/checkout/bench/nets.py:nets", "layers": False}])
    monkeypatch.chdir("/")
    df = load_for_fit(path).set_index("name")
    for name, feats in _truth(entries).items():
        assert {c: int(df.loc[name, c]) for c in FEATURE_COLUMNS} == feats


def test_layers_are_counted_again_from_the_split_network(nets_file, tmp_path):
    from tvmlat.modelref import load_model_ref

    module, inputs = load_model_ref(f"{nets_file}:net")["net"]
    layers = split_layers(module, inputs)
    path = _stale_dataset(tmp_path / "l.parquet", layers, [model_ref_record(f"{nets_file}:net", layers=True)])
    df = load_for_fit(path).set_index("name")
    for name, feats in _truth(layers).items():
        assert int(df.loc[name, "mac_excess"]) == feats["mac_excess"] and int(df.loc[name, "acts"]) == feats["acts"]


def test_without_a_recorded_reference_fitting_says_what_to_do(nets_file, tmp_path, capsys):
    path = _stale_dataset(tmp_path / "old.parquet", _entries(nets_file), refs=None)
    with pytest.raises(DatasetError, match="measure them again"):
        load_for_fit(path)
    assert_user_error(run_cli(["fit", "--dataset", path, "--out", tmp_path / "p.json"], capsys),
                      "model reference", "tvmlat measure")
    assert not (tmp_path / "p.json").exists()


def test_a_reference_that_no_longer_loads_or_lacks_a_row_is_an_error(nets_file, tmp_path):
    entries = _entries(nets_file)
    gone = _stale_dataset(tmp_path / "gone.parquet", entries, [model_ref_record(f"{tmp_path}/moved.py:nets")])
    with pytest.raises(DatasetError, match="no longer loads"):
        load_for_fit(gone)
    other = _stale_dataset(tmp_path / "other.parquet", entries, [model_ref_record(f"{nets_file}:net")])
    with pytest.raises(DatasetError, match="not entries of the model references"):
        load_for_fit(other)


def test_current_model_rows_are_left_alone_without_loading_anything(tmp_path):
    entries = {"fc": (torch.nn.Linear(8, 4), (torch.randn(2, 8),))}
    path = _stale_dataset(tmp_path / "cur.parquet", entries, refs=None, version=FEATURES_VERSION)
    assert int(load_for_fit(path)["short_scal"].iloc[0]) == 0  # as written: nothing to recount, nothing loaded


def test_resuming_a_legacy_file_recounts_from_the_reference_measured_now(nets_file, tmp_path):
    entries = _entries(nets_file)
    path = _stale_dataset(tmp_path / "r.parquet", entries, refs=None)
    m = json.loads(meta_path(path).read_text())
    m["notes"] = ["kept"]
    meta_path(path).write_text(json.dumps(m))
    ref = model_ref_record(f"{nets_file}:nets")
    w = CampaignWriter(path, {"target_name": "llvm", "features_version": FEATURES_VERSION,
                              "cache_geometry": DEFAULT_GEOMETRY.to_dict(), "model_refs": [ref]})
    truth = _truth(entries)
    got = w.df.set_index("name")
    assert all(int(got.loc[n, "mac_excess"]) == f["mac_excess"] for n, f in truth.items())
    meta = json.loads(meta_path(path).read_text())
    assert meta["model_refs"] == [ref] and meta["notes"] == ["kept"] and meta["features_version"] == FEATURES_VERSION
    assert pd.Series(read_dataset(path)["short_scal"]).equals(w.df["short_scal"])  # written back


def test_measure_records_its_model_ref(tmp_path, capsys, monkeypatch, nets_file):
    from tvmlat.runners.fake import FakeRunner

    monkeypatch.setattr("tvmlat.runners.local.LocalRunner", lambda target, check=True, **_: FakeRunner())
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "m.parquet"
    code, _, err = run_cli(["measure", "nets.py:nets", "--no-progress", "--format", "json", "--out", out], capsys)
    assert code == 0, err
    code, _, err = run_cli(["measure", "nets.py:net", "--layers", "--no-progress", "--format", "json", "--out", out],
                           capsys)
    assert code == 0, err
    meta = json.loads(meta_path(out).read_text())
    assert meta["model_refs"] == [{"ref": f"{nets_file.resolve()}:nets", "layers": False},
                                  {"ref": f"{nets_file.resolve()}:net", "layers": True}]


def test_ingest_of_a_model_bundle_records_its_reference(nets_file, tmp_path, capsys):
    """The bundle's manifest carries the reference through run-bundle's header to the ingested dataset."""
    from tvmlat.targets import load_target

    entries = _entries(nets_file)
    ref = model_ref_record(f"{nets_file}:nets")
    header = {"type": "header", "result_schema": 1, "bundle": str(tmp_path / "b"), "target": load_target("llvm").to_dict(),
              "cache_geometry": DEFAULT_GEOMETRY.to_dict(), "model_refs": [ref]}
    rows = [{"type": "row", "key": n, "name": n, "family": "model", "spec": "", "status": "ok", "latency_ms_median": 1.0,
             "features": f} for n, f in _truth(entries).items()]
    res = tmp_path / "results.jsonl"
    res.write_text("\n".join(json.dumps(r) for r in [header, *rows]) + "\n")
    out = tmp_path / "ingested.parquet"
    code, _, err = run_cli(["ingest", res, "--out", out], capsys)
    assert code == 0, err
    assert json.loads(meta_path(out).read_text())["model_refs"] == [ref]


def test_an_entry_that_no_longer_counts_keeps_its_old_values(tmp_path):
    """A module whose forward fails (a failed row when measured) does not stop the recount of the others."""
    (tmp_path / "mixed.py").write_text(NETS + '''
class Broken(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("no")
def mixed():
    return {**nets(), "broken": (Broken(), (torch.randn(2),))}
''')
    from tvmlat.modelref import load_model_ref

    entries = load_model_ref(f"{tmp_path / 'mixed.py'}:nets")
    path = _stale_dataset(tmp_path / "m.parquet", entries, [model_ref_record(f"{tmp_path / 'mixed.py'}:mixed")])
    w = CampaignWriter(path, {"target_name": "llvm", "features_version": FEATURES_VERSION - 1,
                              "cache_geometry": DEFAULT_GEOMETRY.to_dict()})
    w.append({"block_id": "broken", "name": "broken", "family": "model", "spec": "", "status": "export_error"})
    df = load_for_fit(path).set_index("name")
    assert int(df.loc["fc", "mac_excess"]) == _truth(entries)["fc"]["mac_excess"]  # recounted (stale: +12345)
    assert int(df.loc["broken", "acts"]) == 0
