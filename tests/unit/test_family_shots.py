"""``benchmarks/family_shots.py``: a new family's blocks added to a calibration, scored on the same test blocks."""

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import family_shots  # noqa: E402

CAMPAIGN = ROOT / "datasets" / "llvm" / "calib-znver4-n100-s3.parquet"


def test_no_shots_is_the_held_out_family_prediction_and_shots_are_never_test_blocks():
    from tvmlat.dataset import load_for_fit, ok_rows
    from tvmlat.metrics import cross_validate
    from tvmlat.predictors import LinearPredictor

    d = family_shots.campaign_rows(str(CAMPAIGN), 1, (1,))
    df = ok_rows(load_for_fit(CAMPAIGN)).reset_index(drop=True)
    _, held = cross_validate(df, lambda: LinearPredictor(features="loops"), split="family")
    k0 = d[(d["method"] == "held") & (d["k"] == 0)]
    assert len(k0) == len(held) - 5 * df["family"].nunique()  # every family: 5 shots drawn, the rest tested
    ref = dict(zip(zip(held["family"], held["measured"]), held["predicted"]))
    assert np.allclose([ref[(f, m)] for f, m in zip(k0["family"], k0["measured"])], k0["predicted"], rtol=1e-9)
    # every method and k is scored on the same test blocks; shots in the fit move the predictions
    sets = d.groupby(["method", "k"])["measured"].apply(lambda s: tuple(sorted(s)))
    assert sets.nunique() == 1
    fit5 = d[(d["method"] == "fit w1") & (d["k"] == 5)]["predicted"].to_numpy()
    assert not np.allclose(fit5, k0["predicted"].to_numpy())


def test_a_missing_campaign_or_an_unknown_model_is_one_line(tmp_path):
    for args, needle in (([str(tmp_path / "none.parquet")], "none.parquet"),
                         ([str(CAMPAIGN), "--model", "forest"], "unknown --model 'forest'")):
        r = subprocess.run([sys.executable, "benchmarks/family_shots.py", *args], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "Warning" not in ln]
        assert r.returncode == 1 and len(lines) == 1 and needle in lines[0], r.stderr


def test_with_a_base_the_calibration_holds_only_its_blocks_of_the_other_families():
    """``--base``: the first 100 blocks of a 200-block campaign are the calibration; shots and test blocks come from
    all 20 of a family's blocks (k up to 15)."""
    from tvmlat.dataset import load_for_fit, ok_rows
    from tvmlat.predictors import LinearPredictor

    big = ROOT / "datasets" / "llvm" / "calib-znver4-n200-s0.parquet"
    small = ROOT / "datasets" / "llvm" / "calib-znver4-n100-s0.parquet"
    d = family_shots.campaign_rows(str(big), 1, (3,), shots=[0, 12], base=str(small))
    assert set(d["k"]) == {0, 12} and (d.groupby("family")["block_id"].nunique() == 8).all()
    df = ok_rows(load_for_fit(big)).reset_index(drop=True)
    inside = df["block_id"].isin(set(load_for_fit(small)["block_id"])).to_numpy()
    fam = "attention"
    mine = (df["family"] == fam).to_numpy()
    y = df["latency_ms_median"].to_numpy()
    held = LinearPredictor(features="loops").fit(df[inside & ~mine], y[inside & ~mine])
    k0 = d[(d["family"] == fam) & (d["method"] == "held") & (d["k"] == 0)]
    ref = dict(zip(df["block_id"], held.predict(df)))
    assert np.allclose([ref[b] for b in k0["block_id"]], k0["predicted"], rtol=1e-9)
    r = subprocess.run([sys.executable, "benchmarks/family_shots.py", str(CAMPAIGN), "--base", str(small)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "Warning" not in ln]
    assert r.returncode == 1 and len(lines) == 1 and "too few to fit" in lines[0], r.stderr


def test_others_are_held_out_and_without_shots_fitted_without_the_new_family():
    """``--others K``: W = 0 is the other family predicted by a model that saw neither it nor the new family; the
    shots counted W times move those predictions; each (F, G) pair has as many rows as G has blocks."""
    from tvmlat.dataset import load_for_fit, ok_rows
    from tvmlat.predictors import LinearPredictor

    o = family_shots.others_rows(str(CAMPAIGN), 5, (3,), 1)
    df = ok_rows(load_for_fit(CAMPAIGN)).reset_index(drop=True)
    y = df["latency_ms_median"].to_numpy()
    assert set(o["W"]) == {0, 3} and not (o["F"] == o["G"]).any()
    new, other = "pool", "attention"
    keep = ~df["family"].isin([new, other]).to_numpy()
    test = (df["family"] == other).to_numpy()
    ape = np.abs(LinearPredictor(features="loops").fit(df[keep], y[keep]).predict(df[test]) / y[test] - 1)
    pair = o[(o["F"] == new) & (o["G"] == other)]
    assert np.allclose(pair[pair["W"] == 0]["ape"], ape) and len(pair) == 2 * test.sum()
    assert not np.allclose(pair[pair["W"] == 3]["ape"], ape)
