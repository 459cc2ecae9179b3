"""Real TVM: compile, run and time blocks on the host CPU (marker `tvm`)."""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pytest
import torch

from tvmlat.blocks import FAMILIES, build_block, sample_specs
from tvmlat.compile import compile_module, flatten_outputs, max_rel_error, relax_flops
from tvmlat.dataset import CampaignWriter, read_dataset
from tvmlat.features import count_features
from tvmlat.measure import Workload, run_campaign, spec_workloads
from tvmlat.runners.local import REL_TOL, LocalRunner
from tvmlat.targets import load_target

pytestmark = pytest.mark.tvm

SMALL = dict(min_flops=2e4, max_flops=3e6)  # keeps each block well under a second untuned


@pytest.fixture(scope="module")
def target():
    t = load_target("llvm")
    # few, short repeats: these tests check behaviour, not precision
    return dataclasses.replace(t, evaluator=dataclasses.replace(t.evaluator, min_repeat_ms=2.0, max_seconds=0.3))


@pytest.fixture(scope="module")
def one_per_family():
    return {fam: sample_specs(1, seed=11, families=[fam], **SMALL)[0] for fam in FAMILIES}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tvm_output_matches_torch(family, one_per_family, target):
    import tvm
    from tvm import relax

    module, inputs = build_block(one_per_family[family])
    c = compile_module(module, inputs, target)
    vm = relax.VirtualMachine(c.executable, tvm.cpu())
    got = flatten_outputs(vm["main"](*[tvm.runtime.tensor(a) for a in c.inputs]))
    assert max_rel_error(got, c.reference) <= REL_TOL
    assert set(c.stages) == {"export_s", "import_s", "compile_s"}


@pytest.mark.parametrize("family", ["conv_bn_relu", "linear", "matmul", "inverted_residual", "basic_block",
                                    "bottleneck", "mlp", "attention", "squeeze_excitation"])
def test_flops_agree_with_tvm(family, one_per_family):
    """Our multiply-add FLOPs equal TVM's estimate of its conv/matmul kernels after LegalizeOps."""
    module, inputs = build_block(one_per_family[family])
    ours = count_features(module, inputs)
    tvm_counts = relax_flops(module, inputs)
    tvm_mac_flops = sum(v for k, v in tvm_counts.items() if "conv" in k or "matmul" in k)
    assert tvm_mac_flops == pytest.approx(2 * ours["macs"], rel=1e-6)
    # and the totals (elementwise conventions differ a little: TVM counts batch norm as 4/elem)
    assert sum(tvm_counts.values()) == pytest.approx(ours["flops"], rel=0.1)


def test_local_runner_times_a_block(target):
    spec = sample_specs(1, seed=2, families=["conv_bn_relu"], **SMALL)[0]
    module, inputs = build_block(spec)
    res = LocalRunner(target).run(module, inputs)
    assert res.status == "ok", res.error
    assert 0 < res.latency_ms_p10 <= res.latency_ms_median <= res.latency_ms_p90
    assert res.repeats >= target.evaluator.min_repeats
    assert res.number >= 1 and res.n_runs == res.number * res.repeats
    # one repeat lasts at least min_repeat_ms (to within timer noise)
    assert res.number * res.latency_ms_median >= 0.5 * target.evaluator.min_repeat_ms
    assert res.max_rel_err <= REL_TOL
    assert all(res.stages[k] > 0 for k in ("export_s", "import_s", "compile_s", "measure_s"))


class _FFT(torch.nn.Module):
    def forward(self, x):
        return torch.fft.rfft(x).abs()


def test_campaign_records_import_failure_and_goes_on(tmp_path, target):
    good = spec_workloads(sample_specs(2, seed=4, families=["pool"], **SMALL))
    bad = Workload("fft", "fft", "custom", "", lambda: (_FFT(), (torch.randn(1, 8, 16),)))
    writer = CampaignWriter(tmp_path / "c.parquet", {"target_name": target.name, "profile": target.profile})
    rows = run_campaign([good[0], bad, good[1]], LocalRunner(target), target, writer, show_progress=False)
    df = read_dataset(tmp_path / "c.parquet")
    assert list(df["block_id"]) == [good[0].key, "fft", good[1].key]
    status = dict(zip(df["block_id"], df["status"]))
    assert status["fft"] == "import_error"
    assert "fft" in df.set_index("block_id").loc["fft", "error"]
    assert status[good[0].key] == status[good[1].key] == "ok"
    assert len(rows) == 3


class _EagerFails(torch.nn.Module):
    """Exports (and compiles) as a ReLU, but raises when torch runs it eagerly."""

    def forward(self, x):
        if not torch.compiler.is_exporting():
            raise RuntimeError("no eager run for this module")
        return torch.relu(x)


def test_a_failing_reference_run_is_a_run_error_not_a_build_error(tmp_path, target):
    """torch's eager run, what TVM's output is checked against, failing after the compile: a ``run_error``
    row saying so, in the local runner and in a compile worker's library (not "building the block failed")."""
    from tvmlat.runners.ahead import compile_to_library

    x = torch.randn(1, 8, 16)
    res = LocalRunner(target).run(_EagerFails(), [x])
    assert res.status == "run_error"
    assert "torch's reference run" in res.error and "no eager run for this module" in res.error
    art = compile_to_library(_EagerFails(), [x], target, str(tmp_path), "eager")
    assert art["status"] == "run_error" and "no eager run for this module" in art["error"]
    assert "building the block" not in art["error"]
    assert compile_to_library(_EagerFails(), [x], target, str(tmp_path), "nocheck", check=False)["status"] == "ok"


def test_cli_calibrate_and_measure_real(tmp_path, monkeypatch, capsys):
    """The README's main job, small: calibrate on real TVM, then measure and predict a model ref."""
    from tvmlat.cli import main

    fast = tmp_path / "fast.toml"
    fast.write_text(open(load_target("llvm").source).read()
                    .replace("max_seconds = 1.0", "max_seconds = 0.2").replace("min_repeat_ms = 10.0", "min_repeat_ms = 2.0"))
    out = tmp_path / "run"
    main(["calibrate", "--target", str(fast), "--samples", "14", "--families", "pool,squeeze_excitation,linear",
          "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert "fitted model" in printed and "held-out families" in printed
    [data] = list(out.glob("calib-*-n14-s0.parquet"))
    df = pd.read_parquet(data)
    assert len(df) == 14 and (df["status"] == "ok").all()
    pred = data.with_name(data.name.replace(".parquet", ".predictor.json"))
    assert json.loads(pred.read_text())["profile"] == "default"

    model = tmp_path / "m.py"
    model.write_text("import torch\n"
                     "def blocks():\n"
                     "    return {'fc': (torch.nn.Linear(64, 32), (torch.randn(4, 64),)),\n"
                     "            'pool': (torch.nn.MaxPool2d(2), (torch.randn(1, 8, 16, 16),))}\n")
    main(["measure", f"{model}:blocks", "--target", str(fast), "--format", "json", "--no-progress"])
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["fc", "pool"]
    assert all(r["status"] == "ok" and r["latency_ms"] > 0 for r in rows)

    main(["predict", f"{model}:blocks", "--predictor", str(pred), "--format", "json"])
    preds = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in preds] == ["fc", "pool"]
    assert all(math.isfinite(r["latency_ms"]) and r["latency_ms"] > 0 for r in preds)


def test_compile_ahead_gives_the_same_rows(tmp_path, target):
    """With the compile worker, blocks come back ok, checked against torch, with stage timings."""
    specs = sample_specs(3, seed=8, families=["conv_bn_relu", "linear", "pool"], **SMALL)
    runner = LocalRunner(target, ahead=True)
    try:
        rows = run_campaign(spec_workloads(specs), runner, target, None, show_progress=False)
    finally:
        runner.close()
    assert [r["block_id"] for r in rows] == [s.block_id for s in specs]
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["max_rel_err"] <= REL_TOL
        assert r["compile_s"] > 0 and r["latency_ms_median"] > 0


def test_onnx_model_measured_through_relax_onnx_frontend(tmp_path, capsys):
    pytest.importorskip("onnx")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from onnx_models import small_onnx

    from tvmlat.cli import main

    path = tmp_path / "small.onnx"
    small_onnx(path)
    main(["measure", str(path), "--format", "json"])
    [row] = json.loads(capsys.readouterr().out)
    assert row["name"] == "small" and row["status"] == "ok" and row["latency_ms"] > 0
    assert row["compile_s"] > 0


def test_measure_layers_splits_a_network_into_timed_layers(tmp_path, capsys):
    from tvmlat.cli import main

    model = tmp_path / "net.py"
    model.write_text("import torch\n"
                     "class Net(torch.nn.Module):\n"
                     "    def __init__(self):\n"
                     "        super().__init__()\n"
                     "        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)\n"
                     "        self.bn = torch.nn.BatchNorm2d(8)\n"
                     "        self.fc = torch.nn.Linear(8, 4)\n"
                     "    def forward(self, x):\n"
                     "        x = torch.relu(self.bn(self.conv(x)))\n"
                     "        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))\n"
                     "def net():\n"
                     "    return Net().eval(), (torch.randn(1, 3, 16, 16),)\n")
    main(["measure", f"{model}:net", "--layers", "--format", "json", "--no-progress"])
    rows = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in rows]
    assert names[0] == "conv" and "fc" in names and len(names) == 3  # conv+bn+relu, pool, fc
    assert all(r["status"] == "ok" and r["latency_ms"] > 0 and r["max_rel_err"] <= REL_TOL for r in rows)


def test_tuned_profile_tunes_once_and_reuses_the_shared_database(tmp_path, target):
    """A tiny MetaSchedule run (one pooling kernel, 2 trials): the second compile of the same block
    tunes nothing, because the workload is already in the target's JSON database."""
    from tvmlat.targets import TuningConfig

    tuned = dataclasses.replace(target.with_profile("tuned"),
                                tuning=TuningConfig(trials_per_task=2, database=str(tmp_path / "tuning")))
    spec = sample_specs(1, seed=3, families=["pool"], min_flops=2e4, max_flops=2e5)[0]
    module, inputs = build_block(spec)
    first = LocalRunner(tuned).run(module, inputs)
    assert first.status == "ok", first.error
    assert first.stages["tasks_tuned"] >= 1 and first.max_rel_err <= REL_TOL
    assert any((tmp_path / "tuning").glob("database_tuning_record.json"))
    again = LocalRunner(tuned).run(module, inputs)
    assert again.status == "ok" and again.stages["tasks_tuned"] == 0
    assert again.stages["tasks"] == first.stages["tasks"]


def _tiny_tuned_target(tmp_path):
    """A one-core tuned target with 2 trials per kernel, short timings and its own database."""
    tfile = tmp_path / "tiny.toml"
    tfile.write_text(f'name = "tiny"\nkind = "llvm"\ncores = 1\nprofile = "tuned"\n'
                     f'[evaluator]\nmin_repeat_ms = 2.0\nmax_seconds = 0.3\n'
                     f'[tuning]\ntrials_per_task = 2\ndatabase = "{tmp_path / "db"}"\n')
    return tfile


def test_tune_ahead_tunes_shared_kernels_once(tmp_path):
    """The tuned profile tunes first: two copies of one block have the same kernels, so the distinct
    kernels are half of all kernels; a second run finds everything in the database."""
    import shutil

    from tvmlat.tuning import tune_ahead

    t = load_target(str(_tiny_tuned_target(tmp_path)))
    spec = sample_specs(1, seed=3, families=["pool"], min_flops=2e4, max_flops=2e5)[0]
    one = spec_workloads([spec])[0]
    twin = dataclasses.replace(one, key="twin")
    report = tune_ahead([one, twin], t, show_progress=False)
    assert report["tasks"] == 2 * report["unique"] >= 2
    assert report["tuned"] == report["unique"] and report["already_tuned"] == 0
    assert sorted(report["ready"]) == sorted([one.key, "twin"])
    again = tune_ahead([one], t, show_progress=False)
    assert again["tuned"] == 0 and again["already_tuned"] == again["unique"] and again["ready"] == [one.key]
    # a budget already spent tunes nothing new and measures no block that still needs tuning
    shutil.rmtree(tmp_path / "db")
    spent = tune_ahead([one], t, budget_s=1e-9, show_progress=False)
    assert spent["stopped"] and spent["tuned"] == 0 and spent["ready"] == []


@pytest.mark.slow
def test_tuned_calibration_through_the_cli(tmp_path, capsys):
    """`calibrate --profile tuned`, 12 tiny blocks, 2 trials per kernel (~3-6 min on 2 cores)."""
    from tvmlat.cli import main

    tfile = _tiny_tuned_target(tmp_path)
    main(["calibrate", "--target", str(tfile), "--samples", "12", "--families", "pool", "--no-progress",
          "--out", str(tmp_path / "out"), "--seed", "5"])
    out = capsys.readouterr().out
    assert "tuning:" in out and "12 blocks ready to measure" in out
    df = read_dataset(next((tmp_path / "out").glob("*.parquet")))
    assert len(df) == 12 and (df["status"] == "ok").all() and (df["profile"] == "tuned").all()
    assert (df["max_rel_err"] <= REL_TOL).all()


def test_interleaved_rounds_on_real_blocks_and_after_a_resume(tmp_path, target):
    """Measured blocks stay loaded and get their rounds; rows of a run without them get theirs on resume."""
    from helpers import campaign_meta

    specs = sample_specs(3, seed=9, families=["conv_bn_relu", "linear", "pool"], **SMALL)
    path = tmp_path / "c.parquet"
    no_rounds = dataclasses.replace(target, evaluator=dataclasses.replace(target.evaluator, rounds=0))
    runner = LocalRunner(no_rounds, ahead=True, cache_dir=str(tmp_path / "cache"))
    try:  # the first run: back-to-back repeats only (as if interrupted before its rounds)
        run_campaign(spec_workloads(specs[:2]), runner, no_rounds, CampaignWriter(path, campaign_meta(no_rounds)),
                     show_progress=False)
    finally:
        runner.close()
    before = read_dataset(path).set_index("block_id")
    assert (before["rounds"] == 0).all()
    with_rounds = dataclasses.replace(target, evaluator=dataclasses.replace(target.evaluator, rounds=4))
    runner = LocalRunner(with_rounds, ahead=True, cache_dir=str(tmp_path / "cache"))
    try:
        new = run_campaign(spec_workloads(specs), runner, with_rounds, CampaignWriter(path, campaign_meta(with_rounds)),
                           show_progress=False)
    finally:
        runner.close()
    assert [r["block_id"] for r in new] == [specs[2].block_id]  # only the new block was measured
    df = read_dataset(path).set_index("block_id")
    assert (df["status"] == "ok").all() and (df["rounds"] == 4).all() and (df["repeats"] == 4).all()
    for s in specs[:2]:  # the resumed rows keep their first measurement and have the rounds' statistics
        assert df.loc[s.block_id, "latency_ms_first"] == pytest.approx(before.loc[s.block_id, "latency_ms_median"])
    assert (df["latency_ms_median"] > 0).all() and (df["half_diff_rel"] >= 0).all()
    assert (df["latency_ms_p10"] <= df["latency_ms_median"]).all()
    assert runner.kept == 0
