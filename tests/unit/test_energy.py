"""Energy and power predictors: fitted where a dataset has energy readings, absent (not zero) where not.

The readings here are synthetic (no target of this machine measures energy): each family draws a
different power, energy = power x latency, so the model has something real to learn and to miss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tvmlat.energy import MIN_ROWS, energy_rows, fit_energy, predict_energy
from tvmlat.predictors import load_predictor
from helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "datasets" / "llvm" / "calib-znver3-n100-s0.parquet"
NETS = ROOT / "examples" / "networks.py"


def _with_energy(tmp_path: Path, n_with: int | None = None) -> Path:
    df = pd.read_parquet(DATA)
    df = df[df["status"] == "ok"].reset_index(drop=True)
    rng = np.random.default_rng(0)
    watts = {f: 20 + 10 * i for i, f in enumerate(sorted(df["family"].unique()))}
    power = df["family"].map(watts).to_numpy() * rng.uniform(0.95, 1.05, len(df))
    df["power_w"] = power
    df["energy_mj"] = power * df["latency_ms_median"]  # W x ms = mJ
    if n_with is not None:
        df.loc[n_with:, ["energy_mj", "power_w"]] = math.nan
    out = tmp_path / "energy.parquet"
    df.to_parquet(out)
    (tmp_path / "energy.meta.json").write_text(DATA.with_name(DATA.stem + ".meta.json").read_text())
    return out


def test_fit_energy_learns_energy_and_derives_power(tmp_path):
    df = pd.read_parquet(_with_energy(tmp_path))
    section = fit_energy(df)
    assert section is not None and section["kind"] == "linear"
    m = section["training"]["metrics"]
    e, p = m["energy, held-out families"], m["power, held-out families"]
    assert e["n"] == p["n"] == len(energy_rows(df))
    assert 0 < e["median_ape"] < 100 and 0 <= p["within10"] <= 1
    # the in-sample energy follows the readings' scale (mJ), not latency's (ms)
    from tvmlat.energy import energy_model

    pred = energy_model(section).predict(df)
    ratio = np.median(pred / df["energy_mj"])
    assert 0.5 < ratio < 2.0
    assert np.median(pred / df["latency_ms_median"]) > 10  # ~20-110 W, not 1


def test_too_few_or_no_readings_fit_no_energy_model(tmp_path):
    df = pd.read_parquet(_with_energy(tmp_path, n_with=MIN_ROWS - 1))
    assert len(energy_rows(df)) == MIN_ROWS - 1
    assert fit_energy(df) is None
    assert fit_energy(pd.read_parquet(DATA)) is None  # the CPU dataset: NaN energy everywhere


def test_fit_stores_energy_and_predict_and_analyze_show_it(tmp_path, capsys):
    data = _with_energy(tmp_path)
    pred_path = tmp_path / "p.json"
    code, out, err = run_cli(["fit", "-d", data, "-o", pred_path], capsys)
    assert code == 0, err
    assert "energy model" in out and "with an energy model" in out
    doc = json.loads(pred_path.read_text())
    assert doc["energy"]["power"].startswith("energy_mj / latency_ms")
    code, out, err = run_cli(["predict", "-p", pred_path, f"{NETS}:small_cnn", "--format", "json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    for r in rows:
        assert r["energy_mj"] > 0 and r["power_w"] == pytest.approx(r["energy_mj"] / r["latency_ms"])
    code, out, err = run_cli(["analyze", f"{NETS}:small_cnn", "-p", pred_path, "--format", "json"], capsys)
    assert code == 0, err
    layers = json.loads(out)
    assert all(r["energy_mj"] > 0 and r["power_w"] > 0 for r in layers)


def test_a_predictor_without_energy_shows_no_energy_columns(tmp_path, capsys):
    pred_path = tmp_path / "p.json"
    assert run_cli(["fit", "-d", DATA, "-o", pred_path], capsys)[0] == 0
    assert "energy" not in json.loads(pred_path.read_text())
    assert predict_energy(load_predictor(pred_path), pd.DataFrame(), []) is None
    code, out, err = run_cli(["predict", "-p", pred_path, f"{NETS}:small_cnn", "--format", "json"], capsys)
    assert code == 0 and all("energy_mj" not in r and "power_w" not in r for r in json.loads(out))


def test_a_malformed_energy_section_is_a_clear_error(tmp_path, capsys):
    data = _with_energy(tmp_path)
    pred_path = tmp_path / "p.json"
    assert run_cli(["fit", "-d", data, "-o", pred_path], capsys)[0] == 0
    doc = json.loads(pred_path.read_text())
    doc["energy"]["kind"] = "xgb"
    pred_path.write_text(json.dumps(doc))
    code, out, err = run_cli(["predict", "-p", pred_path, f"{NETS}:small_cnn"], capsys)
    assert code == 2 and "energy section is malformed" in err and "Traceback" not in err


def test_ablation_reports_memory_and_energy_models_on_the_same_splits(tmp_path):
    from tvmlat.ablation import other_quantities

    df = pd.read_parquet(_with_energy(tmp_path))
    t = other_quantities(df)
    assert set(t["quantity"]) == {"peak memory (bytes)", "energy per inference (mJ)"}  # the CPU set has memory
    assert set(t["split"]) == {"held-out families", "5-fold"}
    assert (t["n"] == len(df)).all() and (t["median_ape"] > 0).all()
    assert not {"median_ape_ge1ms", "median_ape_lt1ms"} & set(t.columns)  # bytes and mJ are not split at 1 ms
    df[["energy_mj", "peak_memory_bytes"]] = math.nan
    assert other_quantities(df).empty  # nothing measured: no section, no zeros
