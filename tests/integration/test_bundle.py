"""Offline bundles with real TVM on the host CPU: build, verify, measure (in process and with only the
bundle's own runner on PYTHONPATH), resume, tampering, version checks, wrong results, ingest; and a CUDA
bundle compiled on a machine without a GPU (marker `tvm`)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_user_error, run_cli

import tvmlat.dataset
from tvmlat.blocks import sample_specs
from tvmlat.bundle import MANIFEST, BundleError, build_bundle, read_manifest, sha256, verify
from tvmlat.bundle_run import done_keys, run_bundle
from tvmlat.cli.bundle import read_results
from tvmlat.features import block_features
from tvmlat.loop_features import LOOP_COLUMNS
from tvmlat.measure import spec_workloads
from tvmlat.runners.vmtime import REL_TOL
from tvmlat.targets import load_target

pytestmark = pytest.mark.tvm

SMALL = dict(min_flops=2e4, max_flops=3e6)  # keeps each block well under a second untuned


def _quiet(_msg: str) -> None:
    pass


def _fast(t):
    return dataclasses.replace(t, evaluator=dataclasses.replace(t.evaluator, min_repeat_ms=2.0, max_seconds=0.3))


@pytest.fixture(scope="module")
def fast_target():
    return _fast(load_target("llvm"))


@pytest.fixture(scope="module")
def specs():
    return sample_specs(3, seed=5, **SMALL)


@pytest.fixture(scope="module")
def built(tmp_path_factory, specs, fast_target):
    """One 3-block llvm bundle, built once; tests that change it work on a copy."""
    out = tmp_path_factory.mktemp("bundle") / "b"
    bw = build_bundle(spec_workloads(specs), fast_target, out, {"versions": tvmlat.dataset.versions()})
    return out, bw


@pytest.fixture
def bundle(built, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(built[0], out)
    return out




def _rows(results: Path) -> list[dict]:
    return read_results(results)[1]


def test_build_verify_run_ingest(built, specs, fast_target, tmp_path, monkeypatch, capsys):
    out, bw = built
    m = read_manifest(out)
    assert [e["key"] for e in m["entries"]] == [s.block_id for s in specs] and m["failed"] == []
    assert [e["key"] for e in bw.manifest["entries"]] == [e["key"] for e in m["entries"]]
    assert m["versions"]["tvm"] == tvmlat.dataset.versions()["tvm"]
    assert m["target"]["kind"] == "llvm" and m["target"]["evaluator"]["max_seconds"] == 0.3
    assert all((out / e["lib"]).is_file() and (out / e["data"]).is_file() for e in m["entries"])
    assert (out / "tvmlat" / "bundle_run.py").is_file()
    assert verify(out) == []

    res = tmp_path / "results.jsonl"
    counts = run_bundle(out, res, log=_quiet)
    assert counts == {"measured": 3, "skipped": 0, "failed": 0}
    header, rows = read_results(res)
    assert header["result_schema"] == 1 and header["target"]["name"] == "llvm"
    assert header["runtime"]["tvm"] == m["versions"]["tvm"]
    assert [r["key"] for r in rows] == [s.block_id for s in specs]
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["latency_ms_median"] > 0 and r["repeats"] >= 3
        assert 0 <= r["max_rel_err"] <= REL_TOL
        assert r["compile_s"] > 0 and r["features"]["flops"] > 0

    monkeypatch.chdir(tmp_path)
    ds = tmp_path / "ds.parquet"
    code, stdout, err = run_cli(["ingest", res, "--out", ds], capsys)
    assert code == 0, err
    assert "ingested 3 rows" in stdout
    df = tvmlat.dataset.read_dataset(ds)
    assert list(df["block_id"]) == [s.block_id for s in specs]
    assert (df["flops"] > 0).all() and (df["status"] == "ok").all()
    assert (df["latency_ms_median"] > 0).all() and set(df["target"]) == {"llvm"}
    assert list(df["latency_ms_median"]) == pytest.approx([r["latency_ms_median"] for r in rows])
    # the loop features were counted for the target's L1, and the dataset says so
    g = fast_target.geometry()
    assert m["cache_geometry"] == header["cache_geometry"] == g.to_dict() == tvmlat.dataset.meta_geometry(ds).to_dict()
    for s, (_, row) in zip(specs, df.iterrows()):
        assert {c: int(row[c]) for c in LOOP_COLUMNS} == {c: block_features(s, geometry=g)[c] for c in LOOP_COLUMNS}
    code, stdout, err = run_cli(["ingest", res, "--out", ds], capsys)
    assert code == 0, err
    assert "ingested 0 rows (3 already there)" in stdout
    assert len(tvmlat.dataset.read_dataset(ds)) == 3


def test_resume_measures_only_the_rest(built, specs, tmp_path):
    out = built[0]
    full = tmp_path / "full.jsonl"
    run_bundle(out, full, log=_quiet)
    lines = full.read_text().splitlines()
    res = tmp_path / "results.jsonl"
    res.write_text(lines[0] + "\n" + lines[2] + "\n")  # header + the second block
    logged = []
    counts = run_bundle(out, res, log=logged.append)
    assert counts == {"measured": 2, "skipped": 1, "failed": 0}
    assert len(logged) == 2 and specs[1].short()[:60] not in " ".join(logged)
    rows = _rows(res)
    assert sorted(r["key"] for r in rows) == sorted(s.block_id for s in specs)
    assert len(rows) == 3
    assert sum(1 for ln in res.read_text().splitlines() if '"type": "header"' in ln) == 1
    # everything there: nothing to do
    assert run_bundle(out, res, log=_quiet) == {"measured": 0, "skipped": 3, "failed": 0}


def _torn_results(out: Path, tmp_path: Path) -> Path:
    full = tmp_path / "full.jsonl"
    run_bundle(out, full, log=_quiet)
    header, first, second = full.read_text().splitlines()[:3]
    res = tmp_path / "results.jsonl"
    res.write_text(header + "\n" + first + "\n" + second[: len(second) // 2])  # crashed while writing row 2
    return res


def test_torn_last_line_is_tolerated(built, specs, tmp_path):
    res = _torn_results(built[0], tmp_path)
    assert done_keys(res) == {specs[0].block_id}
    counts = run_bundle(built[0], res, log=_quiet)
    assert counts == {"measured": 2, "skipped": 1, "failed": 0}
    assert specs[2].block_id in done_keys(res)


def test_torn_last_line_keeps_the_next_row(built, specs, tmp_path):
    res = _torn_results(built[0], tmp_path)
    run_bundle(built[0], res, log=_quiet)
    assert sorted(r["key"] for r in _rows(res)) == sorted(s.block_id for s in specs)


def test_torn_header_line_is_tolerated(built, specs, tmp_path):
    res = tmp_path / "results.jsonl"
    res.write_text('{"type": "header", "result_sch')
    assert run_bundle(built[0], res, log=_quiet)["measured"] == 3
    header, rows = read_results(res)
    assert sorted(r["key"] for r in rows) == sorted(s.block_id for s in specs)


def test_results_file_is_standard_json(built, tmp_path):
    res = tmp_path / "results.jsonl"
    run_bundle(built[0], res, log=_quiet)

    def no_constants(name):
        raise ValueError(f"{name} is not JSON")
    for line in res.read_text().splitlines():
        json.loads(line, parse_constant=no_constants)


def test_building_again_compiles_nothing_new(bundle, specs, fast_target, monkeypatch):
    import tvmlat.runners.ahead as ahead

    before = read_manifest(bundle)
    real = ahead.compile_to_library
    compiled = []

    def counting(module, inputs, target, out_dir, name, *args, **kwargs):
        compiled.append(name)
        return real(module, inputs, target, out_dir, name, *args, **kwargs)

    monkeypatch.setattr(ahead, "compile_to_library", counting)
    bw = build_bundle(spec_workloads(specs), fast_target, bundle, {"versions": tvmlat.dataset.versions()})
    assert compiled == [] and len(bw.manifest["entries"]) == 3
    assert [e["sha256"] for e in read_manifest(bundle)["entries"]] == [e["sha256"] for e in before["entries"]]
    extra = sample_specs(1, seed=77, families=["pool"], **SMALL)
    bw = build_bundle(spec_workloads(specs + extra), fast_target, bundle, {})
    assert compiled == [extra[0].block_id]
    assert [e["key"] for e in bw.manifest["entries"]] == [s.block_id for s in specs + extra]
    assert verify(bundle) == []


def test_building_into_a_bundle_of_another_target(bundle, cuda_bundle, fast_target, specs):
    before = (bundle / MANIFEST).read_text()
    with pytest.raises(BundleError, match="holds a bundle for llvm"):
        build_bundle(spec_workloads(specs), load_target("cuda").with_arch("sm_90"), bundle, {})
    assert (bundle / MANIFEST).read_text() == before
    cuda_dir, _ = cuda_bundle
    with pytest.raises(BundleError, match="sm_90"):
        build_bundle(spec_workloads(specs), load_target("cuda").with_arch("sm_80"), cuda_dir, {})


def _damage(bundle: Path, how: str) -> Path:
    lib = sorted((bundle / "libs").glob("*.so"))[1]
    if how == "flip":
        b = bytearray(lib.read_bytes())
        b[len(b) // 2] ^= 0x01
        lib.write_bytes(bytes(b))
    elif how == "truncate":
        lib.write_bytes(lib.read_bytes()[:-100])
    else:
        lib.unlink()
    return lib


@pytest.mark.parametrize("how, needle", [("flip", "SHA-256"), ("truncate", "truncated"), ("delete", "missing")])
def test_damaged_bundle_is_refused_before_measuring(bundle, tmp_path, how, needle):
    lib = _damage(bundle, how)
    res = tmp_path / "results.jsonl"
    with pytest.raises(BundleError) as ei:
        run_bundle(bundle, res, log=_quiet)
    msg = str(ei.value)
    assert needle in msg and lib.name in msg and "nothing was measured" in msg
    assert not res.exists()
    assert len(verify(bundle)) == 1


def test_damaged_bundle_cli_is_a_user_error(bundle, tmp_path, capsys):
    _damage(bundle, "flip")
    res = tmp_path / "results.jsonl"
    assert_user_error(run_cli(["run-bundle", bundle, "--out", res], capsys), "SHA-256")
    assert not res.exists()


def test_version_mismatch(bundle, tmp_path):
    mp = bundle / MANIFEST
    m = json.loads(mp.read_text())
    m["versions"]["tvm"] = "0.0.1"
    mp.write_text(json.dumps(m))
    res = tmp_path / "results.jsonl"
    with pytest.raises(BundleError, match="TVM 0.0.1.*--allow-version-mismatch"):
        run_bundle(bundle, res, log=_quiet)
    assert not res.exists()
    counts = run_bundle(bundle, res, allow_version_mismatch=True, log=_quiet)
    assert counts == {"measured": 3, "skipped": 0, "failed": 0}
    assert all(r["status"] == "ok" for r in _rows(res))


def test_wrong_result_is_detected(bundle, specs, tmp_path):
    mp = bundle / MANIFEST
    m = json.loads(mp.read_text())
    e = m["entries"][1]
    path = bundle / e["data"]
    with np.load(path) as d:
        data = {k: d[k] for k in d.files}
    data["refval0"] = data["refval0"] + 0.5 * float(data["refscale0"]) + 1.0
    np.savez(path, **data)
    e["size"]["data"], e["sha256"]["data"] = path.stat().st_size, sha256(path)
    mp.write_text(json.dumps(m))
    assert verify(bundle) == []

    res = tmp_path / "results.jsonl"
    counts = run_bundle(bundle, res, log=_quiet)
    assert counts == {"measured": 3, "skipped": 0, "failed": 1}
    status = {r["key"]: r for r in _rows(res)}
    bad = status[specs[1].block_id]
    assert bad["status"] == "wrong_result" and bad["max_rel_err"] > 0.4 and "differs" in bad["error"]
    assert status[specs[0].block_id]["status"] == status[specs[2].block_id]["status"] == "ok"
    # without the check, the same block is timed as ok
    res2 = tmp_path / "unchecked.jsonl"
    assert run_bundle(bundle, res2, check=False, log=_quiet)["failed"] == 0
    unchecked = {r["key"]: r for r in _rows(res2)}[specs[1].block_id]
    assert unchecked["status"] == "ok"
    assert unchecked["max_rel_err"] is None or math.isnan(unchecked["max_rel_err"])  # not compared


def test_power_with_a_fake_sampler(bundle, tmp_path):
    from tvmlat.power import FakeSampler

    mp = bundle / MANIFEST
    m = json.loads(mp.read_text())
    m["entries"] = m["entries"][:1]  # one block: a power window lasts >= 1 s
    mp.write_text(json.dumps(m))
    res = tmp_path / "results.jsonl"
    counts = run_bundle(bundle, res, power=True, sampler=FakeSampler(idle_w=40.0, busy_w=90.0), log=_quiet)
    assert counts["measured"] == 1 and counts["failed"] == 0
    [row] = _rows(res)
    assert row["status"] == "ok"
    # the fake board is never told the block runs: it reads idle power throughout
    assert row["idle_power_w"] == row["power_w"] == 40.0
    assert row["energy_mj"] > 0 and math.isfinite(row["energy_mj"])
    assert row["energy_runs"] >= 1 and row["energy_samples"] >= 1
    assert row["energy_mj"] == pytest.approx(40.0 * row["energy_window_s"] / row["energy_runs"] * 1000.0)


# --- CUDA, compiled on a machine without a GPU --------------------------------------------------------

@pytest.fixture(scope="module")
def cuda_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda") / "b"
    t = _fast(load_target("cuda").with_arch("sm_90"))
    bw = build_bundle(spec_workloads(sample_specs(2, seed=6, **SMALL)), t, out, {"versions": tvmlat.dataset.versions()})
    return out, bw


def test_cuda_bundle_compiles_without_gpu(cuda_bundle, tmp_path):
    import tvm

    out, bw = cuda_bundle
    m = read_manifest(out)
    assert len(m["entries"]) == 2 and m["failed"] == [], m["failed"]
    assert m["target"]["kind"] == "cuda" and m["target"]["arch"] == "sm_90"
    assert verify(out) == []
    if tvm.cuda(0).exist:
        pytest.skip("this machine has a CUDA device: run_bundle would measure")
    res = tmp_path / "results.jsonl"
    with pytest.raises(BundleError, match="no cuda device"):
        run_bundle(out, res, log=_quiet)
    assert not res.exists()


# --- the bundle's own runner, with TVM's runtime library only ---------------------------------------

def _runtime_env(bundle: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TVMLAT_TARGETS")}
    env.update(TVM_USE_RUNTIME_LIB="1", PYTHONPATH=str(bundle))
    return env


def test_runtime_only_run(built, specs, tmp_path):
    out = built[0]
    assert (out / "tvmlat" / "bundle_run.py").is_file()
    res = tmp_path / "results.jsonl"
    p = subprocess.run([sys.executable, "-m", "tvmlat.bundle_run", str(out), "--out", str(res)], cwd=tmp_path,
                       env=_runtime_env(out), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "done: 3 measured (0 failed), 0 already there" in p.stdout
    rows = _rows(res)
    assert [r["key"] for r in rows] == [s.block_id for s in specs] and all(r["status"] == "ok" for r in rows)
    # what that interpreter imports: the bundle's tvmlat, and neither TVM's compiler side nor pandas
    probe = ("import sys, tvmlat, tvmlat.bundle_run; from tvm.runtime.vm import VirtualMachine; "
             "print(tvmlat.__file__); print(sorted(m for m in sys.modules if m in ('pandas', 'tvm.relax')))")
    p = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=_runtime_env(out), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    where, heavy = p.stdout.strip().splitlines()[-2:]
    assert Path(where) == out / "tvmlat" / "__init__.py"
    assert heavy == "[]"


def test_runtime_only_run_of_a_damaged_bundle(bundle, tmp_path):
    _damage(bundle, "flip")
    res = tmp_path / "results.jsonl"
    p = subprocess.run([sys.executable, "-m", "tvmlat.bundle_run", str(bundle), "--out", str(res)], cwd=tmp_path,
                       env=_runtime_env(bundle), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, (p.stdout, p.stderr)
    errors = [ln for ln in p.stderr.splitlines() if ln.strip() and "Warning" not in ln]
    assert len(errors) == 1 and errors[0].startswith("error:") and "SHA-256" in errors[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not res.exists()
