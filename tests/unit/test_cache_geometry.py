"""The L1 geometry the loop features count for: per CPU, recorded with datasets and predictors."""

import json

import pandas as pd
import pytest

from tvmlat.dataset import CampaignWriter, datasets_geometry, load_for_fit, meta_path
from tvmlat.errors import DatasetError, PredictorError, TargetError
from tvmlat.features import FEATURES_VERSION, block_features, count_features
from tvmlat.loop_features import DEFAULT_GEOMETRY, CacheGeometry, conv_loops, host_geometry, l1_lines
from tvmlat.predictors import LinearPredictor, load_predictor, predict_specs, save_predictor
from tvmlat.specs import BlockSpec
from tvmlat.targets import load_target

INTEL = CacheGeometry(64, 12, 64)  # 48 KiB 12-way, the CI host's L1d
# a dense 3x3 conv, 64 channels on 14x14: the unpadded plane (784 B) is not line-aligned, the padded
# 16x16 one TVM reads (1024 B) is, so its 64 x 3 input rows fall into 4 of the 64 sets
CONV = dict(out=64 * 14 * 14, out_w=14, cin_per_group=64, kh=3, kw=3, stride=1, in_h=14, in_w=14, depthwise=False,
            geometry=DEFAULT_GEOMETRY)
SPEC = BlockSpec.make("basic_block", cin=64, cout=64, hw=16, stride=1)


def test_l1_lines_follow_the_geometry():
    assert l1_lines(64 * 64, DEFAULT_GEOMETRY) == 8  # every line in one set: the ways
    assert l1_lines(64 * 64, INTEL) == 12 and l1_lines(100, INTEL) == 64 * 12


def test_the_conv_rule_walks_the_unpadded_planes():
    assert conv_loops(**CONV)["mac_l1miss_exc"] == 0  # 14x14 planes (784 B): not line-aligned, no conflict
    aligned = conv_loops(**{**CONV, "in_h": 16, "in_w": 16})  # 1 KiB planes: every 16th line, 4 sets
    assert aligned["mac_l1miss_exc"] == aligned["mac_excess"] > 0  # 192 rows > 4 sets x 8 ways
    # a (hypothetical) 64-way L1 holds all 192 rows
    assert conv_loops(**{**CONV, "in_h": 16, "in_w": 16, "geometry": CacheGeometry(64, 64, 64)})["mac_l1miss_exc"] == 0


def test_block_features_are_cached_per_geometry():
    base = block_features(SPEC)
    wide = block_features(SPEC, geometry=CacheGeometry(64, 64, 64))
    assert base["mac_l1miss_exc"] > 0 and wide["mac_l1miss_exc"] == 0
    assert {k: v for k, v in base.items() if k != "mac_l1miss_exc"} == \
        {k: v for k, v in wide.items() if k != "mac_l1miss_exc"}
    assert block_features(SPEC) == base


def _fake_sysfs(root, entries):
    for i, (level, kind, sets, ways, line) in enumerate(entries):
        d = root / f"index{i}"
        d.mkdir(parents=True)
        for name, v in [("level", level), ("type", kind), ("number_of_sets", sets),
                        ("ways_of_associativity", ways), ("coherency_line_size", line)]:
            (d / name).write_text(f"{v}\n")


def test_host_geometry_reads_the_l1_data_cache(tmp_path):
    _fake_sysfs(tmp_path, [(1, "Instruction", 64, 8, 64), (1, "Data", 64, 12, 64), (2, "Unified", 2048, 16, 64)])
    cpu = tmp_path / "cpuinfo"
    cpu.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n")
    assert host_geometry(tmp_path, cpu) == INTEL  # no size file for the L2: unknown (0)
    (tmp_path / "index2" / "size").write_text("2048K\n")
    assert host_geometry(tmp_path, cpu) == CacheGeometry(64, 12, 64, l2=2 * 2**20)
    cpu.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")  # an AVX2 CPU (e.g. Zen 3)
    assert host_geometry(tmp_path, cpu) == CacheGeometry(64, 12, 64, l2=2 * 2**20, avx512=False)
    cpu.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm aes\n")  # an Arm board
    assert host_geometry(tmp_path, cpu).avx512 is False
    assert host_geometry(tmp_path, tmp_path / "no-cpuinfo").avx512 is True  # unreadable: as before version 11
    assert host_geometry(tmp_path / "missing") is None
    bad = tmp_path / "bad"
    _fake_sysfs(bad, [(1, "Data", "x", 12, 64)])
    assert host_geometry(bad) is None


@pytest.mark.parametrize("d, msg", [({"l1d_sets": 48}, "power of two"), ({"l1d_ways": 0}, "positive"),
                                    ({"l1d_ways": "12"}, "positive"), ({"ways": 12}, "unknown keys"),
                                    ({"l2_bytes": -1}, "whole number of bytes"), ({"l2_bytes": 1.5}, "whole number"),
                                    ({"chain_overlap": 0}, "chain_overlap must be"),
                                    ({"chain_overlap": 70.5}, "chain_overlap must be"),
                                    ({"chain_overlap": True}, "chain_overlap must be"),
                                    ({"chain_overlap": 5000}, "1 to 1000"), ([64, 12], "must be a table"),
                                    ({"thrash_lines": 0}, "thrash_lines must be"),
                                    ({"thrash_lines": "48"}, "thrash_lines must be"),
                                    ({"thrash_lines": 10**6}, "1 to 4096")])
def test_bad_geometry_is_named(d, msg):
    with pytest.raises(ValueError, match=msg):
        CacheGeometry.from_dict(d)


def test_geometry_round_trips():
    assert CacheGeometry.from_dict(INTEL.to_dict()) == INTEL
    assert CacheGeometry.from_dict(None) == CacheGeometry.from_dict({}) == DEFAULT_GEOMETRY
    assert INTEL.describe() == "48 KiB 12-way L1d, 64 B lines"
    with_l2 = CacheGeometry(64, 12, 64, l2=2 * 2**20)
    assert CacheGeometry.from_dict(with_l2.to_dict()) == with_l2 and with_l2.describe().endswith(", 2048 KiB L2")
    # avx512 is recorded only where false: files from before it were all counted for AVX-512 CPUs
    no512 = CacheGeometry(avx512=False)
    assert CacheGeometry.from_dict(no512.to_dict()) == no512 and "avx512" not in DEFAULT_GEOMETRY.to_dict()
    assert no512.describe().endswith("no AVX-512") and no512 != DEFAULT_GEOMETRY
    # chain_overlap (version 23, fitted per host) is recorded only where it is not 70, what every file before counted
    fitted = INTEL.with_overlap(140)
    assert fitted.to_dict()["chain_overlap"] == 140 and "chain_overlap" not in INTEL.to_dict()
    assert CacheGeometry.from_dict(fitted.to_dict()) == fitted != INTEL and fitted.with_overlap(70) == INTEL
    assert fitted.describe() == "48 KiB 12-way L1d, 64 B lines, chain overlap 140"
    # thrash_lines (version 24, fitted per host) likewise, only where it is not 16
    reach = fitted.with_overlap(140, 48)
    assert reach.to_dict()["thrash_lines"] == 48 and "thrash_lines" not in fitted.to_dict()
    assert CacheGeometry.from_dict(reach.to_dict()) == reach and reach.core == (140, 48) and fitted.core == (140, 16)
    assert reach.describe().endswith("chain overlap 140, walks of up to 48 lines thrash")
    assert INTEL.with_core(reach) == reach and reach.with_overlap(70) == INTEL.with_overlap(70, 48)
    # files from before the L2 was recorded: unknown, no L2 rule
    assert CacheGeometry.from_dict({"l1d_sets": 64, "l1d_ways": 12, "line": 64}) == INTEL and INTEL.l2 == 0


def test_target_cache_table(tmp_path):
    p = tmp_path / "board.toml"
    p.write_text('kind = "llvm"\ncores = 4\n[cache]\nl1d_sets = 64\nl1d_ways = 4\nline = 64\n')
    # no mcpu: LLVM's generic x86-64 code, which has no AVX-512
    assert load_target(str(p)).geometry() == CacheGeometry(64, 4, 64, avx512=False)
    p.write_text('kind = "llvm"\ncores = 4\n[cache]\nl1d_ways = -1\n')
    with pytest.raises(TargetError, match=r"\[cache\]: l1d_ways must be a positive integer"):
        load_target(str(p))
    p.write_text('kind = "llvm"\ncores = 4\ntriple = "aarch64-linux-gnu"\nmcpu = "cortex-a72"\n')
    # a board with no [cache]: the default L1, not this host's; an Arm board runs no AVX-512 code
    assert load_target(str(p)).geometry() == CacheGeometry(avx512=False)
    p.write_text('kind = "llvm"\ncores = 4\ntriple = "aarch64-linux-gnu"\n[cache]\nl1d_ways = 4\n')
    assert load_target(str(p)).geometry() == CacheGeometry(64, 4, 64, avx512=False)
    p.write_text('kind = "llvm"\ncores = 4\ntriple = "x86_64-linux-gnu"\n[cache]\nl1d_ways = 4\navx512 = false\n')
    assert load_target(str(p)).geometry() == CacheGeometry(64, 4, 64, avx512=False)
    # no [cache] avx512: what LLVM knows of the CPU the target compiles for, not this host's flags
    p.write_text('kind = "llvm"\ncores = 4\nmcpu = "haswell"\n')
    assert load_target(str(p)).geometry().avx512 is False
    p.write_text('kind = "llvm"\ncores = 4\nmcpu = "skylake-avx512"\n')
    assert load_target(str(p)).geometry().avx512 is True
    p.write_text('kind = "llvm"\ncores = 4\nmcpu = "haswell"\n[cache]\navx512 = true\n')  # the table wins
    assert load_target(str(p)).geometry().avx512 is True
    p.write_text('kind = "llvm"\ncores = 4\n[cache]\navx512 = "yes"\n')
    with pytest.raises(TargetError, match=r"avx512 must be true or false"):
        load_target(str(p))
    host = load_target("llvm").geometry()  # mcpu "host": this machine's caches and its CPU's ISA
    assert host == (host_geometry() or DEFAULT_GEOMETRY)


def _dataset(tmp_path, name, geometry, specs, version=FEATURES_VERSION):
    rows = [{"block_id": s.block_id, "family": s.family, "spec": s.to_json(), "status": "ok",
             "latency_ms_median": 1.0 + i, **block_features(s, geometry=geometry)} for i, s in enumerate(specs)]
    path = tmp_path / f"{name}.parquet"
    pd.DataFrame(rows).to_parquet(path)
    meta_path(path).write_text(json.dumps({"features_version": version, "cache_geometry": geometry.to_dict()}))
    return path


def test_datasets_keep_and_recount_their_geometry(tmp_path):
    wide = CacheGeometry(64, 64, 64)
    a = _dataset(tmp_path, "a", DEFAULT_GEOMETRY, [SPEC])
    b = _dataset(tmp_path, "b", wide, [SPEC])
    assert load_for_fit(a)["mac_l1miss_exc"].iloc[0] > 0
    assert load_for_fit(b)["mac_l1miss_exc"].iloc[0] == 0  # its own geometry
    assert load_for_fit(b, DEFAULT_GEOMETRY)["mac_l1miss_exc"].iloc[0] > 0  # recounted for another
    assert datasets_geometry([b, b]) == wide
    with pytest.raises(DatasetError, match="different caches"):
        datasets_geometry([a, b])
    c = _dataset(tmp_path, "c", CacheGeometry(64, 8, 64, l2=2**20), [SPEC])  # a's L1, and an L2 size a lacks
    with pytest.raises(DatasetError, match='add its "l2_bytes"'):
        datasets_geometry([a, c])


def test_resuming_an_older_campaign_recounts_its_rows(tmp_path):
    path = _dataset(tmp_path, "old", DEFAULT_GEOMETRY, [SPEC], version=FEATURES_VERSION - 1)
    df = pd.read_parquet(path)
    df["mac_l1miss_exc"] = 0  # what older code counted
    df.to_parquet(path)
    meta = {"features_version": FEATURES_VERSION, "cache_geometry": DEFAULT_GEOMETRY.to_dict()}
    w = CampaignWriter(path, meta)
    assert int(w.df["mac_l1miss_exc"].iloc[0]) == block_features(SPEC)["mac_l1miss_exc"] > 0
    assert int(pd.read_parquet(path)["mac_l1miss_exc"].iloc[0]) > 0  # and the file agrees with its meta.json


def test_predictor_files_record_their_geometry(tmp_path):
    specs = [BlockSpec.make("basic_block", cin=c, cout=c, hw=hw, stride=1)
             for c in (16, 32, 64) for hw in (7, 14, 16, 28)] * 2  # 16 x 16 x 16: 48 rows, 12 ways hold them
    X = pd.DataFrame([block_features(s, geometry=INTEL) for s in specs])
    y = 1e-6 * X["mac_excess"] + 2e-6 * X["mac_l1miss_exc"] + 0.01
    m = LinearPredictor().fit(X, y)
    save_predictor(m, tmp_path / "p.json", target={"name": "llvm"}, profile="default", geometry=INTEL)
    expect = m.predict(X)
    p = load_predictor(tmp_path / "p.json")
    assert p.doc["cache_geometry"] == INTEL.to_dict() and p.geometry == INTEL
    # the oracle counts for the predictor's L1, not the default one a bare model gets
    assert predict_specs(p, specs) == pytest.approx(expect)
    assert predict_specs(m, specs) != pytest.approx(expect)
    doc = json.loads((tmp_path / "p.json").read_text())
    doc["cache_geometry"] = {"l1d_sets": 3}
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(PredictorError, match="l1d_sets must be a positive integer, a power of two"):
        load_predictor(tmp_path / "bad.json")


def test_a_predictor_refuses_features_counted_for_another_l1(tmp_path):
    from tvmlat.analytic_features import analytic_arrays, analytic_frame
    from tvmlat.features import features_frame

    specs = [SPEC, BlockSpec.make("linear", tokens=64, din=768, dout=768, bias=True)]
    X = pd.DataFrame([block_features(s, geometry=INTEL) for s in specs * 4])
    m = LinearPredictor(features=["acts", "inp", "flops"]).fit(X, [0.1, 0.2] * 4)
    save_predictor(m, tmp_path / "p.json", target={"name": "llvm"}, profile="default", geometry=INTEL)
    p = load_predictor(tmp_path / "p.json")
    counted = {"frame": analytic_frame(specs), "meta counter": features_frame(specs),
               "arrays": analytic_arrays("linear", tokens=[64], din=[768], dout=[768], bias=[1])}
    for what, feats in counted.items():  # counted for the 32 KiB default: refused, not mispredicted
        with pytest.raises(PredictorError, match="counted for a 32 KiB 8-way L1d.*this predictor for a 48 KiB"):
            p.predict(feats)
        with pytest.raises(PredictorError, match="geometry=predictor.geometry"):
            p.interval(feats, 0.9)
    ok = {"frame": analytic_frame(specs, geometry=p.geometry), "meta counter": features_frame(specs, geometry=INTEL),
          "arrays": analytic_arrays("linear", geometry=p.geometry, tokens=[64], din=[768], dout=[768], bias=[1])}
    assert p.predict(ok["frame"]) == pytest.approx(p.predict(ok["meta counter"]))
    assert p.predict(ok["arrays"]) == pytest.approx(p.predict(ok["frame"])[1:])
    assert len(p.predict(X)) == 8  # a table that records nothing is taken as it is
    assert len(p.predict(pd.concat([ok["frame"], ok["frame"]]))) == 4  # the record survives a concat


def test_rows_filling_l1_without_a_conflict_do_not_miss():
    # version 3 let 300 rows of 7x7 planes miss in a 512-line L1 (its capacity rule); three later
    # campaigns were predicted better without that rule, so only set conflicts count (version 4)
    conv = dict(out=100 * 49, out_w=7, cin_per_group=100, kh=3, kw=3, stride=1, in_h=7, in_w=7, depthwise=False)
    for g in (DEFAULT_GEOMETRY, INTEL):
        assert conv_loops(**conv, geometry=g)["mac_l1miss_exc"] == 0


def test_campaign_rows_are_counted_for_the_l1_their_file_states(tmp_path):
    from helpers import campaign_meta
    from tvmlat.measure import module_workloads, run_campaign, spec_workloads
    from tvmlat.runners.fake import FakeRunner
    from tvmlat.targets import target_from_dict

    import torch

    board = target_from_dict({"name": "board", "kind": "llvm", "cores": 1, "mcpu": "emeraldrapids",
                              "cache": INTEL.to_dict()})
    assert board.geometry() == INTEL
    conv = torch.nn.Conv2d(16, 16, 3, padding=1, bias=False)  # 16 x 16 planes: 48 rows, 12 ways hold them
    work = spec_workloads([SPEC]) + module_workloads({"conv": (conv, (torch.randn(1, 16, 16, 16),))})
    rows = run_campaign(work, FakeRunner(), board, None, show_progress=False)  # no file: the target's L1
    assert rows[0]["mac_l1miss_exc"] == block_features(SPEC, geometry=INTEL)["mac_l1miss_exc"]
    assert rows[1]["mac_l1miss_exc"] == 0 < count_features(conv, (torch.randn(1, 16, 16, 16),))["mac_l1miss_exc"]
    wide = CacheGeometry(64, 64, 64)
    path = tmp_path / "w.parquet"
    w = CampaignWriter(path, campaign_meta(board, cache_geometry=wide.to_dict()))
    assert w.geometry == wide
    rows = run_campaign(spec_workloads([SPEC]), FakeRunner(), board, w, show_progress=False)
    assert rows[0]["mac_l1miss_exc"] == 0 < block_features(SPEC, geometry=INTEL)["mac_l1miss_exc"]
    assert load_for_fit(path)["mac_l1miss_exc"].iloc[0] == 0  # the file agrees with its meta.json
