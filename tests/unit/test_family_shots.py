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
