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


class _MeanByFamily:
    """A stand-in model: a seen family's mean label, else the mean of all; records what it was fitted on."""

    fitted_on: list = []

    def fit(self, X, y):
        self.means = pd.Series(np.asarray(y, float), index=X["family"].to_numpy()).groupby(level=0).mean()
        self.all = float(np.mean(y))
        _MeanByFamily.fitted_on.append(X["block_id"].tolist())
        return self

    def predict(self, X):
        return np.array([self.means.get(f, self.all) for f in X["family"]])


def test_family_shots_tests_each_k_on_the_same_blocks_and_fits_the_shots_weighted():
    from tvmlat.ablation import family_shots, shots_table

    # two campaigns of the same blocks: a block's rows stay together (never both a shot and a test block)
    rows = [{"block_id": f"{fam}{i}", "family": fam, "campaign": c, "latency_ms_median": cost}
            for c in ("c0", "c1") for fam, cost in (("a", 1.0), ("b", 1.0), ("new", 4.0)) for i in range(9)]
    df = pd.DataFrame(rows)
    _MeanByFamily.fitted_on = []
    r = family_shots(df, _MeanByFamily, draws=2, weights=(3,), offset=True, seed=1)
    new = r[r["family"] == "new"]
    for (draw, k), g in new.groupby(["draw", "k"]):
        assert sorted(g[g["method"] == "held"]["block_id"]) == sorted(new[(new["draw"] == draw)
                                                                         & (new["k"] == 0)]["block_id"])
        assert len(g[g["method"] == "held"]) == 2 * (9 - 5)  # 4 test blocks, each in two campaigns
    held = new[new["method"] == "held"]["predicted"]
    assert np.allclose(held, 1.0)  # fitted without the family: the other families' mean
    fit = new[new["method"] == "fit w3"]
    assert np.allclose(fit["predicted"], 4.0) and np.allclose(new[new["method"] == "offset"]["predicted"], 4.0)
    # the shots were fitted on 3 times each, and never a test block
    with_shots = [ids for ids in _MeanByFamily.fitted_on  # fits with some, not all, of "new"'s blocks
                  if 0 < len({i for i in ids if i.startswith("new")}) < 9]
    assert with_shots and all(ids.count(i) == 3 * 2 for ids in with_shots for i in ids if i.startswith("new"))
    assert len(with_shots) == 2 * 4  # the family's two draws, k = 1, 2, 3, 5 each
    for draw in (0, 1):
        tested = set(fit[fit["draw"] == draw]["block_id"])
        shots = [{i for i in ids if i.startswith("new")} for ids in with_shots[4 * draw:4 * draw + 4]]
        assert [len(s) for s in shots] == [1, 2, 3, 5] and not shots[-1] & tested
        assert shots[0] <= shots[1] <= shots[2] <= shots[3]  # more shots: the same ones and more
    t = shots_table(r.assign(model="mean")).set_index("model")
    assert list(t.columns) == ["method", "k=0", "k=1", "k=2", "k=3", "k=5"]
    assert t.loc[t["method"] == "fit w3", "k=5"].iloc[0].startswith("100 %")


def test_the_ablation_adds_the_family_shots_of_the_models_asked_for():
    from pathlib import Path

    from tvmlat.ablation import run_ablation
    from tvmlat.dataset import load_for_fit, ok_rows
    from tvmlat.predictors import LinearPredictor

    df = ok_rows(load_for_fit(Path(__file__).resolve().parents[2] / "datasets" / "llvm"
                              / "calib-znver4-n100-s3.parquet")).reset_index(drop=True)
    zoo = {"linear-loops": lambda: LinearPredictor(features="loops"), "ops": lambda: LinearPredictor(features="ops")}
    res = run_ablation(df, zoo, sizes=(50,), draws=1)
    assert set(res.shots["model"]) == {"linear-loops"} and set(res.shots["k"]) == {0, 1, 2, 3, 5}
    assert run_ablation(df, zoo, sizes=(50,), draws=1, shot_models=()).shots.empty  # --no-family-shots
