"""``benchmarks/transcendental.py``: the transcendental elements of a block, and the loops model with them as a term."""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import transcendental  # noqa: E402


def test_the_elements_are_gelus_softmaxs_and_the_gates_and_none_of_the_rest():
    t = transcendental.transcendental
    assert t('{"dim":128,"family":"mlp","ratio":2,"tokens":64}', "") == 64 * 256
    assert t('{"dim":96,"family":"attention","heads":2,"tokens":49}', "") == 2 * 49 * 49
    assert t('{"c":320,"family":"squeeze_excitation","hw":7,"reduction":16}', "") == 320
    assert t('{"c":320,"family":"squeeze_excitation","hw":7,"reduction":16}', "", which=("mlp",)) == 0
    assert t('{"cin":8,"cout":8,"family":"conv_bn_relu","groups":1,"hw":7,"k":3,"stride":1}', "") == 0
    assert t("", "convnext(c=16,hw=56)") == 56 * 56 * 64 and t("", "resnet18") == 0


def test_with_the_column_the_fit_changes_and_without_it_is_the_shipped_model():
    from tvmlat.dataset import load_for_fit, ok_rows
    from tvmlat.metrics import cross_validate
    from tvmlat.predictors import LinearPredictor

    path = str(ROOT / "datasets" / "llvm" / "calib-znver4-n100-s3.parquet")
    without = transcendental.campaign_rows(path, "without")
    with_it = transcendental.campaign_rows(path, "with")
    df = ok_rows(load_for_fit(path)).reset_index(drop=True)
    ref = cross_validate(df, lambda: LinearPredictor(features="loops"), split="family")[1]
    fam = without[without["split"] == "family"]
    assert np.allclose(fam["predicted"].to_numpy(), ref["predicted"].to_numpy())
    assert not np.allclose(with_it["predicted"].to_numpy(), without["predicted"].to_numpy())
    from tvmlat.predictors.linear import FEATURE_SETS

    assert transcendental.COLUMN not in FEATURE_SETS["loops"][0]  # the shipped feature set is left as it was
