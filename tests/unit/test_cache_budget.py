"""Compile cache keys and entries, the tuning budget, and the time report (no TVM compilation)."""

from __future__ import annotations

import math

import pytest

from helpers import make_target
from tvmlat.blocks import sample_specs
from tvmlat.cache import CompileCache, cache_root, target_key
from tvmlat.cli.calibrate import parse_duration, time_report
from tvmlat.errors import TvmlatError
from tvmlat.measure import run_campaign, spec_workloads
from tvmlat.runners.fake import FakeRunner


@pytest.mark.parametrize("text,seconds", [("30m", 1800), ("2h", 7200), ("900s", 900), ("1h30m", 5400),
                                          ("45", 2700), ("1.5h", 5400), (" 10M ", 600)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "3x", "m", "h30", "-5m", "0s", "1d"])
def test_parse_duration_rejects(text):
    with pytest.raises(TvmlatError, match="--tune-budget"):
        parse_duration(text)


def test_target_key_depends_on_compile_fields_only():
    t = make_target().to_dict()
    k = target_key(t)
    assert target_key({**t, "description": "other", "evaluator": {"min_repeats": 9}}) == k
    assert target_key({**t, "mcpu": "znver4"}) != k
    assert target_key({**t, "cores": 7}) != k
    tuned = {**t, "profile": "tuned"}
    assert target_key(tuned) != k
    assert target_key({**tuned, "tuning": {"trials_per_task": 64}}) != target_key({**tuned, "tuning": {"trials_per_task": 8}})
    # the tuning budget of an untuned profile does not matter
    assert target_key({**t, "tuning": {"trials_per_task": 64}}) == k


def test_cache_roundtrip(tmp_path):
    cache = CompileCache(tmp_path / "c", make_target().to_dict())
    assert cache.get("abc") is None
    (tmp_path / "x.so").write_bytes(b"lib")
    (tmp_path / "x.npz").write_bytes(b"data")
    art = cache.put("abc", {"status": "ok", "lib": str(tmp_path / "x.so"), "data": str(tmp_path / "x.npz"),
                            "stages": {"compile_s": 1.5}})
    hit = cache.get("abc")
    assert hit["lib"] == art["lib"] and open(hit["lib"], "rb").read() == b"lib"
    assert hit["stages"] == {"compile_s": 1.5, "cache_hit": 1.0}
    # a different target never sees it
    assert CompileCache(tmp_path / "c", make_target(mcpu="znver4").to_dict()).get("abc") is None
    # failures are not cached
    assert cache.put("bad", {"status": "compile_error", "error": "x"})["status"] == "compile_error"
    assert cache.get("bad") is None


def test_cache_entry_without_files_is_a_miss(tmp_path):
    cache = CompileCache(tmp_path, make_target().to_dict())
    (tmp_path / "x.so").write_bytes(b"lib")
    (tmp_path / "x.npz").write_bytes(b"data")
    art = cache.put("k", {"status": "ok", "lib": str(tmp_path / "x.so"), "data": str(tmp_path / "x.npz")})
    import os

    os.remove(art["lib"])
    assert cache.get("k") is None


@pytest.mark.parametrize("entry", [b"{not json", b"\xd9\xff\x00", b"[1, 2]"])
def test_a_damaged_cache_entry_is_a_miss(tmp_path, entry):
    cache = CompileCache(tmp_path, make_target().to_dict())
    (tmp_path / "x.so").write_bytes(b"lib")
    (tmp_path / "x.npz").write_bytes(b"data")
    cache.put("k", {"status": "ok", "lib": str(tmp_path / "x.so"), "data": str(tmp_path / "x.npz")})
    assert cache.get("k") is not None
    (cache.dir / "k" / "entry.json").write_bytes(entry)  # a disk that filled up, a copy cut short
    assert cache.get("k") is None


@pytest.mark.parametrize("value,expect_none", [("off", True), ("0", True), ("", False)])
def test_cache_root_env(monkeypatch, tmp_path, value, expect_none):
    monkeypatch.setenv("TVMLAT_CACHE", value)
    assert (cache_root() is None) == expect_none
    monkeypatch.setenv("TVMLAT_CACHE", str(tmp_path))
    assert cache_root() == tmp_path


def test_campaign_stops_when_asked_and_resumes(tmp_path):
    from tvmlat.dataset import CampaignWriter

    t = make_target()
    specs = sample_specs(8, seed=5)
    writer = CampaignWriter(tmp_path / "d.parquet", {"target_name": t.name})
    rows = run_campaign(spec_workloads(specs), FakeRunner(), t, writer, show_progress=False,
                        stop=lambda rows: "budget spent" if len(rows) >= 3 else "")
    assert len(rows) == 3 and len(writer.df) == 3
    rest = run_campaign(spec_workloads(specs), FakeRunner(), t, CampaignWriter(tmp_path / "d.parquet", {}),
                        show_progress=False)
    assert len(rest) == 5


def test_time_report_counts_cache_hits_as_no_building():
    rows = [{"tune_s": 10.0, "export_s": 1.0, "import_s": 1.0, "compile_s": 1.0, "measure_s": 0.5},
            {"tune_s": math.nan, "export_s": 2.0, "import_s": 2.0, "compile_s": 2.0, "measure_s": 0.5,
             "cache_hit": 1.0}]
    text = time_report(rows, 20.0)
    assert "tuning 10 s" in text and "export+import+compile 3 s" in text and "timing 1 s" in text
    assert "1 blocks from the compile cache" in text
    assert "tuning" not in time_report([{"export_s": 1.0, "measure_s": 1.0}], 2.0)
