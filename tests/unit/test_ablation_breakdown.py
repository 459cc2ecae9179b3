"""The ablation's breakdowns: per held-out family, and how well the timings agree with themselves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tvmlat.ablation import MIN_REPEATED, family_table, measurement_repeatability


def _preds(rows):
    return pd.DataFrame(rows, columns=["model", "split_kind", "block_id", "family", "measured", "predicted"])


def test_family_table_counts_each_family_and_model():
    p = _preds([
        ("a", "family", "b1", "conv", 1.0, 1.05), ("a", "family", "b2", "conv", 1.0, 1.30),
        ("a", "family", "b3", "pool", 2.0, 1.0), ("b", "family", "b1", "conv", 1.0, 1.0),
        ("b", "family", "b2", "conv", 1.0, 1.09), ("b", "family", "b3", "pool", 2.0, 2.1),
        ("a", "kfold", "b1", "conv", 1.0, 9.0),  # random folds are not families: left out
    ])
    t = family_table(p).set_index("family")
    assert list(t.index) == ["conv", "pool"]
    assert t.loc["conv", "n"] == 2 and t.loc["pool", "n"] == 1
    assert t.loc["conv", "a +-10%"] == 50 and t.loc["conv", "b +-10%"] == 100
    assert t.loc["pool", "a +-10%"] == 0 and t.loc["pool", "b +-10%"] == 100
    assert t.loc["conv", "a medAPE%"] == pytest.approx(17.5) and t.loc["pool", "a medAPE%"] == pytest.approx(50)
    assert [c for c in t.columns if c.endswith("+-10%")] == ["a +-10%", "b +-10%"]  # the models' order kept


def test_family_table_is_empty_without_held_out_families():
    assert family_table(_preds([("a", "kfold", "b1", "conv", 1.0, 1.0)])).empty


def _campaigns(n_blocks=MIN_REPEATED + 10, speeds=(1.0, 1.3, 0.8), seed=0):
    rng = np.random.default_rng(seed)
    true = np.exp(rng.uniform(-3, 3, n_blocks))
    rows = [{"block_id": f"b{b}", "campaign": f"c{c}", "latency_ms_median": true[b] * s}
            for c, s in enumerate(speeds) for b in range(n_blocks)]
    return pd.DataFrame(rows)


def test_repeatability_divides_each_campaigns_speed_out():
    df = _campaigns()
    r = measurement_repeatability(df).set_index("what")
    assert list(r.index) == ["across campaigns"]
    assert r.loc["across campaigns", "within10"] == 100 and r.loc["across campaigns", "median_dev_pct"] < 1e-9
    assert r.loc["across campaigns", "blocks"] == MIN_REPEATED + 10 and r.loc["across campaigns", "timings"] == len(df)


def test_repeatability_in_the_ablation_cli(tmp_path, capsys):
    from pathlib import Path

    from tvmlat.dataset import read_dataset
    from helpers import run_cli

    src = Path(__file__).resolve().parents[2] / "datasets" / "llvm"
    a, b = (read_dataset(src / f"calib-emeraldrapids-n100-s{s}.parquet") for s in (0, 2))
    shared = sorted(set(a.block_id) & set(b.block_id))
    assert len(shared) >= MIN_REPEATED
    paths = []
    for name, df in (("a", a), ("b", b)):  # 40 blocks each, the shared ones among them: quick
        keep = pd.concat([df[df.block_id.isin(shared)], df[~df.block_id.isin(shared)].head(40 - len(shared))])
        keep.to_parquet(tmp_path / f"{name}.parquet")
        paths += ["-d", tmp_path / f"{name}.parquet"]
    code, out, err = run_cli(["ablation", *paths, "--no-xgb", "--draws", "1", "--out", tmp_path / "rep"], capsys)
    assert code == 0, err
    assert "odd vs even rounds:" in out and "across campaigns:" in out and f"of {len(shared)} blocks" in out
    assert "held-out families" in out
    rep = pd.read_csv(tmp_path / "rep" / "repeatability.csv").set_index("what")
    assert rep.loc["across campaigns", "blocks"] == len(shared)
    assert rep.loc["across campaigns", "timings"] == 2 * len(shared)
    fams = pd.read_csv(tmp_path / "rep" / "families.csv")
    assert fams["n"].sum() == 80 and "linear-loops +-10%" in fams and fams["linear-loops cov90%"].between(0, 100).all()
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "## How well the timings agree with themselves" in report and "## Held-out families" in report


def test_repeatability_counts_a_block_whose_timings_disagree():
    df = _campaigns()
    for b in ("b0", "b1", "b2"):  # one timing of three blocks 1.5x: all three timings of each stray from their mean
        df.loc[(df.block_id == b) & (df.campaign == "c0"), "latency_ms_median"] *= 1.5
    r = measurement_repeatability(df).set_index("what").loc["across campaigns"]
    assert r["within10"] == pytest.approx(100 * (len(df) - 9) / len(df))
    assert r["within5"] == r["within10"]


def test_repeatability_needs_blocks_measured_more_than_once():
    df = _campaigns(n_blocks=MIN_REPEATED - 1)
    assert measurement_repeatability(df).empty  # too few repeated blocks
    df = _campaigns()
    df["block_id"] = [f"x{i}" for i in range(len(df))]  # campaigns of other blocks
    assert measurement_repeatability(df).empty
    assert measurement_repeatability(df.drop(columns="campaign")).empty


def test_repeatability_of_odd_and_even_rounds():
    df = pd.DataFrame({"latency_ms_median": [1.0] * 4, "half_diff_rel": [0.0, np.log(1.04), np.log(1.08), np.nan],
                       "block_id": list("abcd")})
    r = measurement_repeatability(df).set_index("what").loc["odd vs even rounds"]
    assert r["blocks"] == 3 and r["timings"] == 3 and r["median_dev_pct"] == pytest.approx(4.0)
    assert r["within5"] == pytest.approx(200 / 3) and r["within10"] == 100


def test_family_table_gives_each_familys_interval_coverage():
    from tvmlat.predictors.conformal import split_coverage

    rng = np.random.default_rng(1)
    rows = []
    for fam, spread in (("good1", 0.02), ("good2", 0.02), ("bad", 0.5)):
        for i in range(30):
            measured = float(np.exp(rng.uniform(-2, 3)))
            rows.append(("m", "family", f"{fam}{i}", fam, measured, measured * float(np.exp(rng.normal(0, spread)))))
    p = _preds(rows).assign(split=lambda d: d["family"])
    t = family_table(p).set_index("family")
    # the bad family's interval is sized from the good ones' small errors: few of its blocks fall inside
    assert t.loc["bad", "m cov90%"] < 50
    assert t.loc["good1", "m cov90%"] == 100 and t.loc["good2", "m cov90%"] == 100
    overall = split_coverage(p, 0.9)["coverage"]
    assert (t["m cov90%"] * t["n"]).sum() / t["n"].sum() == pytest.approx(100 * overall)
