"""Power sampling, bundle helpers (inputs, sampled references, manifests, results files), CUDA
architectures and the bundle/calibrate command-line errors: no TVM compilation."""

from __future__ import annotations

import ast
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import assert_user_error, make_target, run_cli
from tvmlat.bundle import (BUNDLE_SCHEMA, MANIFEST, REF_SAMPLES, RUNNER_MODULES, BundleError, BundleWriter,
                           input_seed, make_inputs, read_manifest, sample_reference, sampled_error, sha256, verify)
from tvmlat.bundle_run import done_keys
from tvmlat.errors import TargetError, TvmlatError
from tvmlat.power import FakeSampler, measure_energy
from tvmlat.targets import load_target, resolve_cuda_arch


@pytest.fixture
def no_gpu(monkeypatch):
    """No NVIDIA GPU and no $TVMLAT_CUDA_ARCH, whatever this machine has."""
    monkeypatch.delenv("TVMLAT_CUDA_ARCH", raising=False)
    monkeypatch.setattr("tvmlat.targets.detect_cuda_arch", lambda: None)


# --- power ----------------------------------------------------------------------------------------

def _fake_block(sampler: FakeSampler, latency_s: float):
    calls = []

    def run(n: int) -> float:
        calls.append(n)
        sampler.run(n * latency_s)
        return n * latency_s
    return run, calls


def test_measure_energy_with_a_fake_board():
    latency = 0.002
    s = FakeSampler(idle_w=60.0, busy_w=300.0, readings_per_s=200.0)
    run, calls = _fake_block(s, latency)
    e = measure_energy(run, latency, s, min_window_s=0.3, idle_s=0.1)
    assert e["energy_ok"] is True, e
    assert e["energy_note"] == ""
    assert e["idle_power_w"] == 60.0
    assert e["power_w"] == pytest.approx(300.0, rel=0.10)
    assert e["energy_mj"] == pytest.approx(300.0 * latency * 1000.0, rel=0.15)
    assert e["energy_runs"] >= math.floor(0.3 / latency)
    assert calls == [e["energy_runs"]]  # one window, run back to back
    assert e["energy_window_s"] >= 0.3
    assert e["energy_samples"] >= 10


@pytest.mark.parametrize("case", ["window_capped", "few_readings"])
def test_measure_energy_flags_a_window_too_short(case):
    latency = 0.002
    if case == "window_capped":
        s = FakeSampler(readings_per_s=200.0)
        kw = dict(min_window_s=0.3, max_window_s=0.05)
    else:
        s = FakeSampler(readings_per_s=5.0)
        kw = dict(min_window_s=0.3)
    run, calls = _fake_block(s, latency)
    e = measure_energy(run, latency, s, idle_s=0.1, **kw)
    assert e["energy_ok"] is False
    assert e["energy_note"] and "too short" in e["energy_note"]
    if case == "window_capped":
        assert calls == [int(0.05 / latency)]  # max_window_s caps the runs
        assert e["energy_runs"] == calls[0]


def test_fake_sampler_reports_idle_then_busy():
    s = FakeSampler(idle_w=10.0, busy_w=50.0, readings_per_s=100.0)
    s.start()
    s.run(0.1)
    got = s.stop()
    assert got and set(got) <= {10.0, 50.0}
    assert got.count(50.0) == pytest.approx(10, abs=1)


# --- inputs and references --------------------------------------------------------------------------

SHAPES = [{"shape": [2, 3, 4], "dtype": "float32"}, {"shape": [5], "dtype": "int64"}, {"shape": [], "dtype": "float32"}]


def test_make_inputs_is_deterministic_and_respects_shapes_and_dtypes():
    a, b, c = make_inputs(7, SHAPES), make_inputs(7, SHAPES), make_inputs(8, SHAPES)
    assert [x.shape for x in a] == [(2, 3, 4), (5,), ()]
    assert [x.dtype for x in a] == [np.float32, np.int64, np.float32]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    assert set(np.unique(a[1])) <= {0, 1}
    assert np.all(np.isfinite(a[0])) and a[0].std() > 0


def test_input_seed_is_stable_and_key_dependent():
    assert input_seed("abc") == input_seed("abc")
    assert input_seed("abc") != input_seed("abd")
    assert 0 <= input_seed("abc") < 2**32


def _refs(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((64, 80)).astype(np.float32), rng.standard_normal((3, 2)).astype(np.float32)]


def test_sampled_error_is_zero_for_the_reference_itself():
    refs = _refs()
    ref = sample_reference(refs, 5)
    assert sampled_error([r.copy() for r in refs], ref) == 0.0
    # the big output is sampled, the small one kept whole
    assert len(ref["refidx0"]) == REF_SAMPLES and len(set(ref["refidx0"].tolist())) == REF_SAMPLES
    assert np.all(np.diff(ref["refidx0"]) > 0)
    np.testing.assert_array_equal(ref["refidx1"], np.arange(6))
    assert list(ref["refshape0"]) == [64, 80]
    assert float(ref["refscale0"]) == pytest.approx(float(np.abs(refs[0]).max()))
    again = sample_reference(refs, 5)
    np.testing.assert_array_equal(again["refidx0"], ref["refidx0"])


def test_sampled_error_measures_a_perturbation_relative_to_the_scale():
    refs = _refs()
    ref = sample_reference(refs, 5)
    scale = float(np.abs(refs[0]).max())
    out = [r.copy() for r in refs]
    pos = int(ref["refidx0"][3])
    out[0].reshape(-1)[pos] += 0.25 * scale
    assert sampled_error(out, ref) == pytest.approx(0.25, rel=1e-4)
    # a position that was not sampled is not compared (the bundle keeps only REF_SAMPLES values)
    unsampled = sorted(set(range(refs[0].size)) - set(ref["refidx0"].tolist()))[0]
    out = [r.copy() for r in refs]
    out[0].reshape(-1)[unsampled] += 100.0
    assert sampled_error(out, ref) == 0.0


def test_sampled_error_wrong_shape_or_count_is_inf():
    refs = _refs()
    ref = sample_reference(refs, 1)
    assert sampled_error([refs[0]], ref) == math.inf
    assert sampled_error([refs[0], refs[1], refs[1]], ref) == math.inf
    assert sampled_error([refs[0], refs[1].reshape(2, 3)], ref) == math.inf
    assert sampled_error([refs[0].T, refs[1]], ref) == math.inf


def test_sampled_error_small_outputs():
    refs = [np.array([1.0, -2.0, 4.0], dtype=np.float32), np.zeros((0, 3), np.float32)]
    ref = sample_reference(refs, 2)
    assert len(ref["refidx0"]) == 3 and len(ref["refidx1"]) == 0
    assert sampled_error([r.copy() for r in refs], ref) == 0.0
    assert sampled_error([np.array([1.0, -2.0, 5.0], np.float32), refs[1]], ref) == pytest.approx(0.25)


def test_sampled_error_nan_output_is_not_a_match():
    refs = _refs()
    ref = sample_reference(refs, 5)
    bad = [np.full_like(refs[0], np.nan), refs[1].copy()]
    assert not sampled_error(bad, ref) <= 1e-3


# --- CUDA architectures -------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["sm_90", "sm_90a", "sm_80", "sm_120"])
def test_resolve_cuda_arch_accepts_sm_xx(arch, no_gpu):
    assert resolve_cuda_arch(arch) == arch


@pytest.mark.parametrize("arch", ["sm90", "90", "compute_90", "sm_", "sm_x0", "sm_90aa", "sm_9"])
def test_resolve_cuda_arch_rejects_other_forms(arch, no_gpu):
    with pytest.raises(TargetError) as ei:
        resolve_cuda_arch(arch, "target 'cuda'")
    msg = str(ei.value)
    assert repr(arch) in msg and "sm_90" in msg and "target 'cuda'" in msg


@pytest.mark.parametrize("arch", ["", "auto", None])
def test_resolve_cuda_arch_auto_without_gpu_names_arch_option(arch, no_gpu):
    with pytest.raises(TargetError, match="--arch"):
        resolve_cuda_arch(arch)


def test_cuda_arch_from_environment(monkeypatch, no_gpu):
    monkeypatch.setenv("TVMLAT_CUDA_ARCH", "sm_80")
    assert resolve_cuda_arch("auto") == "sm_80"
    assert load_target("cuda").with_arch(None).arch == "sm_80"
    assert load_target("cuda").with_arch("sm_90").arch == "sm_90"  # --arch wins over the environment


def test_cuda_arch_detected_gpu_is_used(monkeypatch):
    monkeypatch.delenv("TVMLAT_CUDA_ARCH", raising=False)
    monkeypatch.setattr("tvmlat.targets.detect_cuda_arch", lambda: "sm_89")
    assert resolve_cuda_arch("auto") == "sm_89"


def test_cuda_target_loads_without_gpu(no_gpu):
    t = load_target("cuda")
    assert t.kind == "cuda" and t.arch == "auto"
    t90 = t.with_arch("sm_90")
    assert t90.arch == "sm_90" and t90.kind == "cuda" and t90.name == t.name
    with pytest.raises(TargetError, match="--arch"):
        t.with_arch(None)  # "auto" with nothing to ask
    with pytest.raises(TargetError, match="sm90"):
        t.with_arch("sm90")


def test_with_arch_on_llvm_target():
    t = make_target()
    assert t.with_arch(None) is t
    with pytest.raises(TargetError, match="--arch is for CUDA"):
        t.with_arch("sm_90")


# --- manifests and bundle files ---------------------------------------------------------------------

def _write_manifest(d: Path, text: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / MANIFEST).write_text(text)
    return d


def test_read_manifest_no_manifest(tmp_path):
    with pytest.raises(BundleError, match="not a tvmlat bundle.*tvmlat bundle"):
        read_manifest(tmp_path)
    with pytest.raises(BundleError, match="not a tvmlat bundle"):
        read_manifest(tmp_path / "does-not-exist")


def test_read_manifest_invalid_json(tmp_path):
    _write_manifest(tmp_path, '{"kind": "tvmlat-bundle", "entries": [')
    with pytest.raises(BundleError, match="not valid JSON.*copy it again"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("text", ['{"kind": "something-else", "entries": []}', "[1, 2]", '"tvmlat-bundle"', "{}"])
def test_read_manifest_other_json(tmp_path, text):
    _write_manifest(tmp_path, text)
    with pytest.raises(BundleError, match="not a tvmlat bundle manifest"):
        read_manifest(tmp_path)


def test_read_manifest_newer_schema(tmp_path):
    _write_manifest(tmp_path, json.dumps({"kind": "tvmlat-bundle", "schema_version": BUNDLE_SCHEMA + 1, "entries": []}))
    with pytest.raises(BundleError, match=f"schema_version {BUNDLE_SCHEMA + 1}.*upgrade tvmlat"):
        read_manifest(tmp_path)


def test_read_manifest_schema_version_not_an_integer(tmp_path):
    _write_manifest(tmp_path, json.dumps({"kind": "tvmlat-bundle", "schema_version": "1", "entries": []}))
    with pytest.raises(BundleError, match="schema_version"):
        read_manifest(tmp_path)


def test_bundle_for_another_cpu_is_not_resumed(tmp_path):
    BundleWriter(tmp_path / "b", make_target(mcpu="znver3"), {})
    with pytest.raises(BundleError, match="another --out"):
        BundleWriter(tmp_path / "b", make_target(mcpu="cortex-a72"), {})


def test_read_manifest_without_entries(tmp_path):
    _write_manifest(tmp_path, json.dumps({"kind": "tvmlat-bundle", "schema_version": BUNDLE_SCHEMA}))
    with pytest.raises(BundleError, match="no entries"):
        read_manifest(tmp_path)


def _fake_entry(bw: BundleWriter, key: str, payload: bytes = b"\x7fELF fake library"):
    lib, data = bw.dir / "libs" / f"{key}.so", bw.dir / "data" / f"{key}.npz"
    lib.write_bytes(payload)
    np.savez(data, seed=np.asarray(input_seed(key)), **sample_reference([np.ones((2, 2), np.float32)], 1))
    w = SimpleNamespace(key=key, name=f"block {key}", family="linear", spec="")
    bw.add(w, {"flops": 10}, {"status": "ok", "lib": str(lib), "data": str(data), "stages": {"compile_s": 1.0}},
           [np.zeros((2, 2), np.float32)])
    return lib, data


def test_bundle_writer_manifest_and_verify(tmp_path):
    out = tmp_path / "b"
    bw = BundleWriter(out, make_target(), {"versions": {"tvm": "x"}})
    for rel in RUNNER_MODULES:
        assert (out / "tvmlat" / rel).is_file(), rel
    lib, data = _fake_entry(bw, "k1")
    bw.add(SimpleNamespace(key="k2", name="broken", family="linear", spec=""), {},
           {"status": "compile_error", "error": "boom"}, [])
    m = read_manifest(out)
    assert [e["key"] for e in m["entries"]] == ["k1"] and [f["key"] for f in m["failed"]] == ["k2"]
    e = m["entries"][0]
    assert e["lib"] == "libs/k1.so" and e["data"] == "data/k1.npz"
    assert e["inputs"] == [{"shape": [2, 2], "dtype": "float32"}]
    assert e["sha256"]["lib"] == sha256(lib) and e["size"]["data"] == data.stat().st_size
    assert m["versions"] == {"tvm": "x"} and m["target"]["name"] == "fake"
    assert not (out / (MANIFEST + ".tmp")).exists()
    assert verify(out) == []
    # a second writer resumes: the same entries are done
    assert BundleWriter(out, make_target(), {}).done() == {"k1", "k2"}


@pytest.mark.parametrize("damage, needle", [
    ("flip", "SHA-256"), ("truncate", "truncated"), ("delete", "missing")])
def test_verify_finds_damaged_files(tmp_path, damage, needle):
    bw = BundleWriter(tmp_path / "b", make_target(), {})
    lib, _ = _fake_entry(bw, "k1")
    _fake_entry(bw, "k2")
    if damage == "flip":
        b = bytearray(lib.read_bytes())
        b[3] ^= 0xFF
        lib.write_bytes(bytes(b))
    elif damage == "truncate":
        lib.write_bytes(lib.read_bytes()[:-4])
    else:
        lib.unlink()
    problems = verify(bw.dir)
    assert len(problems) == 1
    assert "libs/k1.so" in problems[0] and needle in problems[0]


def test_bundle_writer_refuses_another_target(tmp_path):
    out = tmp_path / "b"
    BundleWriter(out, make_target("one"), {})
    before = (out / MANIFEST).read_text()
    with pytest.raises(BundleError, match="holds a bundle for one.*another --out"):
        BundleWriter(out, make_target("two"), {})
    with pytest.raises(BundleError, match="holds a bundle for one"):
        BundleWriter(out, make_target("one", profile="tuned"), {})
    assert (out / MANIFEST).read_text() == before


def test_run_bundle_refuses_a_damaged_bundle_before_writing(tmp_path):
    from tvmlat.bundle_run import run_bundle

    bw = BundleWriter(tmp_path / "b", make_target(), {})
    lib, _ = _fake_entry(bw, "k1")
    lib.unlink()
    res = tmp_path / "r" / "results.jsonl"
    with pytest.raises(BundleError, match="1 bundle files fail.*missing.*nothing was measured"):
        run_bundle(bw.dir, res, log=lambda s: None)
    assert not res.exists() and not res.parent.exists()


def test_runner_modules_are_self_contained():
    """Everything ``bundle_run`` imports from tvmlat is copied into the bundle (and nothing imports torch or
    pandas at module level)."""
    src = Path(__import__("tvmlat").__file__).parent
    have = set(RUNNER_MODULES)
    for rel in RUNNER_MODULES:
        tree = ast.parse((src / rel).read_text())
        pkg = Path(rel).parent.parts
        nodes = ast.walk(tree) if rel == "bundle_run.py" else tree.body  # bundle_run: lazy imports too
        for node in nodes:
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & {"torch", "pandas"}, rel
            if isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    assert (node.module or "").split(".")[0] not in {"torch", "pandas"}, rel
                    continue
                base = list(pkg[:len(pkg) - (node.level - 1)])
                mod = base + (node.module.split(".") if node.module else [])
                cands = {"/".join(mod) + ".py", "/".join(mod + ["__init__.py"])}
                if not node.module:  # from . import x
                    cands = {"/".join(base + [a.name]) + ".py" for a in node.names}
                assert cands & have, (rel, ast.unparse(node))


# --- results files ------------------------------------------------------------------------------------

HEADER = {"type": "header", "result_schema": 1, "bundle": "/x/b", "target": {"name": "fake", "kind": "llvm"}}


def _row(key):
    return {"type": "row", "key": key, "name": key, "family": "linear", "spec": "", "features": {"flops": 1},
            "status": "ok", "latency_ms_median": 1.0}


def test_done_keys_ignores_header_and_torn_last_line(tmp_path):
    p = tmp_path / "r.jsonl"
    assert done_keys(p) == set()
    torn = json.dumps(_row("c"))
    p.write_text("\n".join([json.dumps(HEADER), json.dumps(_row("a")), json.dumps(_row("b")), torn[:len(torn) // 2]]))
    assert done_keys(p) == {"a", "b"}


def test_read_results(tmp_path):
    from tvmlat.cli.bundle import read_results

    with pytest.raises(TvmlatError, match="does not exist"):
        read_results(tmp_path / "missing.jsonl")
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps(_row("a")) + "\n")
    with pytest.raises(TvmlatError, match="no header"):
        read_results(p)
    p.write_text("")
    with pytest.raises(TvmlatError, match="no header"):
        read_results(p)
    p.write_text(json.dumps(HEADER) + "\n" + json.dumps({"type": "row", "name": "x"}) + "\n")
    with pytest.raises(TvmlatError, match="without a key"):
        read_results(p)
    torn = json.dumps(_row("c"))
    p.write_text("\n".join([json.dumps(HEADER), json.dumps(_row("a")), "", json.dumps(_row("b")), torn[:20]]))
    header, rows = read_results(p)
    assert header["bundle"] == "/x/b" and [r["key"] for r in rows] == ["a", "b"]


# --- command line -------------------------------------------------------------------------------------

@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TVMLAT_TARGETS", raising=False)
    return tmp_path


def test_cli_ingest_missing_results(in_tmp, capsys):
    assert_user_error(run_cli(["ingest", "missing.jsonl"], capsys), "missing.jsonl", "does not exist")
    assert not (in_tmp / "datasets").exists()


def test_cli_ingest_file_without_header(in_tmp, capsys):
    (in_tmp / "r.jsonl").write_text(json.dumps(_row("a")) + "\n")
    assert_user_error(run_cli(["ingest", "r.jsonl", "--out", "ds.parquet"], capsys), "no header")
    assert not (in_tmp / "ds.parquet").exists()


def test_cli_run_bundle_on_a_folder_that_is_no_bundle(in_tmp, capsys):
    assert_user_error(run_cli(["run-bundle", str(in_tmp)], capsys), "not a tvmlat bundle")
    assert not (in_tmp / "results.jsonl").exists()


def test_cli_bundle_bad_arch(in_tmp, capsys, no_gpu):
    out = in_tmp / "X"
    assert_user_error(run_cli(["bundle", "--target", "cuda", "--arch", "sm90", "--out", out], capsys), "sm90")
    assert not out.exists()


def test_cli_bundle_auto_arch_without_gpu(in_tmp, capsys, no_gpu):
    out = in_tmp / "X"
    assert_user_error(run_cli(["bundle", "--target", "cuda", "--samples", "2", "--out", out], capsys), "--arch")
    assert not out.exists()


def test_cli_bundle_of_no_blocks_or_a_negative_seed(in_tmp, capsys, no_gpu):
    out = in_tmp / "X"
    for args, needle in ((["--samples", "0"], "--samples 0 bundles no blocks"),
                         (["--samples", "-3"], "--samples -3 bundles no blocks"),
                         (["--seed", "-5"], "--seed -5 is negative")):
        assert_user_error(run_cli(["bundle", "--target", "cuda", "--arch", "sm_90", "--out", out, *args], capsys),
                          needle)
    assert not out.exists()


def test_cli_bundle_arch_on_llvm(in_tmp, capsys):
    out = in_tmp / "X"
    assert_user_error(run_cli(["bundle", "--target", "llvm", "--arch", "sm_90", "--out", out], capsys),
                      "--arch is for CUDA")
    assert not out.exists()


def test_cli_calibrate_cuda_without_device(in_tmp, capsys):
    import tvm

    if tvm.cuda(0).exist:
        pytest.skip("this machine has a CUDA device")
    out = in_tmp / "cal"
    line = assert_user_error(run_cli(["calibrate", "--target", "cuda", "--arch", "sm_90", "--samples", "12",
                                      "--out", out], capsys), "cuda")
    assert "tvmlat bundle" in line and "sm_90" in line
    assert not out.exists() or not any(out.rglob("*"))


def test_cli_calibrate_power_on_a_cpu_without_rapl(in_tmp, capsys, monkeypatch):
    """A CPU whose RAPL counters can't be read: one line saying so, nothing written (no zeros)."""
    monkeypatch.setenv("TVMLAT_POWERCAP", str(in_tmp / "no-powercap"))
    out = in_tmp / "cal"
    assert_user_error(run_cli(["calibrate", "--target", "llvm", "--power", "--samples", "12", "--out", out], capsys),
                      "RAPL", "no-powercap", "without --power")
    assert not out.exists() or not any(out.rglob("*"))


def _powercap(root, zones):
    for z, (name, uj) in zones.items():
        d = root / z
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "energy_uj").write_text(f"{uj}\n")
        (d / "max_energy_range_uj").write_text("1000000\n")
    return root


def test_rapl_sampler_reads_package_zones_only_and_handles_wraparound(tmp_path):
    from tvmlat.power import RAPLSampler

    root = _powercap(tmp_path / "pc", {"intel-rapl:0": ("package-0", 10), "intel-rapl:0:0": ("core", 5),
                                       "intel-rapl:1": ("package-1", 20), "intel-rapl:2": ("psys", 7)})
    s = RAPLSampler(root=str(root))
    assert len(s.zones) == 2 and s.read_uj() == [10, 20]
    # 1 s between readings: zone 0 wrapped (999_990 -> 10 is +20 uJ), zone 1 gained 2 J
    assert s._watts([999_990, 0], [10, 2_000_000 % 1_000_000], 1.0) == pytest.approx(20e-6)
    assert s._watts([0, 0], [500_000, 250_000], 0.5) == pytest.approx(1.5)
    s.start()
    time.sleep(0.2)
    readings = s.stop()
    assert readings and all(w == 0.0 for w in readings)  # the counters did not move


def test_rapl_sampler_says_what_is_missing(tmp_path):
    from tvmlat.power import RAPLSampler

    with pytest.raises(RuntimeError, match="does not exist"):
        RAPLSampler(root=str(tmp_path / "none"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="no RAPL package zone"):
        RAPLSampler(root=str(tmp_path / "empty"))
    root = _powercap(tmp_path / "bad", {"intel-rapl:0": ("package-0", 1)})
    (root / "intel-rapl:0" / "energy_uj").write_text("not a number")
    with pytest.raises(RuntimeError, match="cannot read"):
        RAPLSampler(root=str(root))


def test_cli_runtime_pack_onto_a_file(in_tmp, capsys):
    (in_tmp / "rt").write_text("mine\n")
    assert_user_error(run_cli(["runtime-pack", "--out", str(in_tmp / "rt")], capsys), "is a file", "give a new or")
    assert (in_tmp / "rt").read_text() == "mine\n"  # left as it was
