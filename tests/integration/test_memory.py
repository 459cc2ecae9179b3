"""Peak memory from TVM's memory planning, and the memory model (real TVM import and planning; marker `tvm`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tvmlat.blocks import build_block, sample_specs
from tvmlat.dataset import CampaignWriter, dataset_hash, read_dataset
from tvmlat.measure import run_campaign, spec_workloads
from tvmlat.memory import MemoryModel, planned_memory
from tvmlat.runners.fake import FakeRunner
from tvmlat.specs import BlockSpec
from tvmlat.targets import load_target

pytestmark = pytest.mark.tvm


def test_linear_block_memory_is_exact():
    spec = BlockSpec.make("linear", tokens=8, din=64, dout=32, bias=True)
    m = planned_memory(*build_block(spec), load_target("llvm"))
    assert m["weight_bytes"] == (64 * 32 + 32) * 4
    assert m["input_bytes"] == 8 * 64 * 4
    assert m["output_bytes"] == 8 * 32 * 4  # the output escapes main: not in a planned pool
    assert m["peak_memory_bytes"] == m["weight_bytes"] + m["input_bytes"] + m["planned_bytes"] + m["output_bytes"]


def test_planning_reuses_memory_in_a_deep_block():
    spec = BlockSpec.make("inverted_residual", cin=32, cout=32, hw=14, expand=6, k=3, stride=1)
    m = planned_memory(*build_block(spec), load_target("llvm"))
    expanded = 32 * 6 * 14 * 14 * 4  # one expanded activation
    assert m["n_pools"] >= 1
    # several expanded activations live in the block, but planning keeps only a few at a time
    assert expanded <= m["planned_bytes"] < 4 * expanded


def test_memory_command_fills_dataset_and_predictor(tmp_path, capsys):
    from tvmlat.cli import main
    from tvmlat.predictors import LinearPredictor, save_predictor

    t = load_target("llvm")
    specs = sample_specs(10, seed=61, min_flops=2e4, max_flops=3e6)
    path = tmp_path / "d.parquet"
    run_campaign(spec_workloads(specs), FakeRunner(), t,
                 CampaignWriter(path, {"target_name": t.name, "target": t.to_dict()}), show_progress=False)
    df = read_dataset(path)
    fitted_on = dataset_hash(path)
    save_predictor(LinearPredictor().fit(df, df["latency_ms_median"].to_numpy()), tmp_path / "p.json",
                   target=t.to_dict(), profile="default", dataset_hash=fitted_on)
    main(["memory", "--dataset", str(path), "--predictor", str(tmp_path / "p.json"), "--no-progress"])
    df = read_dataset(path)
    assert (df["peak_memory_bytes"] > 0).all()
    doc = json.loads((tmp_path / "p.json").read_text())
    # the dataset gained peak memory, not latency rows: the predictor still names the rows it was fitted on
    assert dataset_hash(path) == fitted_on and doc["dataset_hash"] == fitted_on
    back = MemoryModel.from_dict(doc["memory"])
    assert np.all(back.predict(df) > 0)
    assert "held-out families" in doc["memory"]["training"]["metrics"]
    assert "memory model" in capsys.readouterr().out


def test_memory_command_refuses_a_bad_predictor_file_before_planning(tmp_path, capsys):
    from helpers import assert_user_error, run_cli

    t = load_target("llvm")
    path = tmp_path / "d.parquet"
    run_campaign(spec_workloads(sample_specs(3, seed=62, min_flops=2e4, max_flops=3e5)), FakeRunner(), t,
                 CampaignWriter(path, {"target_name": t.name, "target": t.to_dict()}), show_progress=False)
    bad = tmp_path / "p.json"
    bad.write_bytes(b"\xd9\xff not json")
    assert_user_error(run_cli(["memory", "--dataset", str(path), "--predictor", str(bad), "--no-progress"], capsys),
                      "not a JSON predictor file")
    assert read_dataset(path)["peak_memory_bytes"].isna().all()  # it stopped before planning anything
    assert_user_error(run_cli(["memory", "--dataset", str(path), "--predictor", str(tmp_path / "none.json"),
                               "--no-progress"], capsys), "does not exist")


def test_memory_command_interrupted_keeps_what_it_planned(tmp_path, monkeypatch, capsys):
    """Ctrl-C during planning: the blocks planned so far are in the dataset, and a rerun plans only the rest."""
    import tvmlat.memory
    from tvmlat.cli import main

    t = load_target("llvm")
    path = tmp_path / "d.parquet"
    run_campaign(spec_workloads(sample_specs(10, seed=64, min_flops=2e4, max_flops=3e5)), FakeRunner(), t,
                 CampaignWriter(path, {"target_name": t.name, "target": t.to_dict()}), show_progress=False)
    real, calls = tvmlat.memory.planned_memory, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(tvmlat.memory, "planned_memory", interrupted)
    with pytest.raises(SystemExit) as stop:
        main(["memory", "--dataset", str(path), "--no-progress"])
    assert stop.value.code == 130
    err = capsys.readouterr().err
    assert "3 of 10 blocks planned before the interrupt, kept in" in err and "run the same command again" in err
    assert read_dataset(path)["peak_memory_bytes"].notna().sum() == 3
    calls.clear()
    monkeypatch.setattr(tvmlat.memory, "planned_memory", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    main(["memory", "--dataset", str(path), "--no-progress"])
    assert len(calls) == 7 and read_dataset(path)["peak_memory_bytes"].notna().all()


def test_a_network_is_priced_for_one_layer_working_set_at_a_time(tmp_path, capsys):
    """A network's planned peak holds its weights, input and output whole and one layer's activations at a time;
    priced as one block, all its layers' activations count. `predict` gives the network its layers' peak."""
    import importlib.util
    from pathlib import Path

    import pandas as pd

    from tvmlat.analysis import layer_features
    from tvmlat.cli import main
    from tvmlat.features import block_features, count_features
    from tvmlat.memory import network_peak
    from tvmlat.predictors import LinearPredictor, save_predictor

    t = load_target("llvm")
    specs = sample_specs(16, seed=63, min_flops=2e4, max_flops=3e6)
    rows = pd.DataFrame([{**block_features(s), "family": s.family,
                          **planned_memory(*build_block(s), t)} for s in specs])
    model = MemoryModel().fit(rows, rows["peak_memory_bytes"].to_numpy(dtype=float))
    nets = Path(__file__).resolve().parents[2] / "examples" / "networks.py"
    spec = importlib.util.spec_from_file_location("tvmlat_example_networks_mem", nets)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    m, x = mod.small_cnn_128()
    truth = planned_memory(m, x, t)["peak_memory_bytes"]
    whole = count_features(m, x)
    as_network = network_peak(model, whole, layer_features(m, x))
    as_block = float(model.predict(pd.DataFrame([whole]))[0])
    assert abs(as_network / truth - 1) < abs(as_block / truth - 1)
    assert as_network < as_block
    capsys.readouterr()

    p = tmp_path / "p.json"  # the same model in a predictor file: predict prints the network's peak
    save_predictor(LinearPredictor().fit(rows, rows["flops"].to_numpy(dtype=float) * 1e-6 + 0.01), p,
                   target=t.to_dict(), profile="default")
    doc = json.loads(p.read_text())
    doc["memory"] = model.to_dict()
    p.write_text(json.dumps(doc))
    main(["predict", f"{nets}:small_cnn_128", "-p", str(p), "-f", "json"])
    out = json.loads(capsys.readouterr().out)
    assert out[0]["peak_memory_mib"] == pytest.approx(as_network / 2**20, rel=1e-9)
