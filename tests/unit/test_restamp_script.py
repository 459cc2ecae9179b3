"""scripts/restamp_features.py: unchanged datasets are stamped, a predictor using a column this version lacks is refitted."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from tvmlat.features import FEATURES_VERSION

ROOT = Path(__file__).parents[2]
SRC = ROOT / "datasets" / "llvm" / "calib-znver4-n100-s93"


def _copy(tmp: Path, name: str, version: int, extra_column: str | None = None) -> Path:
    d = tmp / "llvm"
    d.mkdir(exist_ok=True)
    base = d / name
    df = pd.read_parquet(SRC.with_suffix(".parquet"))
    if extra_column:
        df[extra_column] = 7
    df.to_parquet(base.with_suffix(".parquet"), index=False)
    meta = json.loads(SRC.with_suffix(".meta.json").read_text())
    meta["features_version"] = version
    base.with_suffix(".meta.json").write_text(json.dumps(meta))
    pred = json.loads(Path(str(SRC) + ".predictor.json").read_text())
    pred["features_version"] = version
    if extra_column:
        pred["features"].append(extra_column)
    Path(str(base) + ".predictor.json").write_text(json.dumps(pred, indent=2))
    return base


def _run(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/restamp_features.py", "--write", "--refit", "--root", str(root)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_unchanged_is_stamped_and_a_stale_column_is_refitted_away(tmp_path):
    same = _copy(tmp_path, "same", FEATURES_VERSION - 1)
    stale = _copy(tmp_path, "stale", FEATURES_VERSION + 1, extra_column="gone_col")
    before = json.loads(Path(str(same) + ".predictor.json").read_text())
    stale_pred = Path(str(stale) + ".predictor.json")  # a memory model (`tvmlat memory`) survives the refit
    memory = {"kind": "memory-linear", "features": ["weight_elems", "inp", "out", "acts"],
              "coefficients": {"weight_elems": 1.0, "inp": 1.0, "out": 1.0, "acts": 0.4, "intercept_kib": 1.0}}
    # a network correction with stored timings is fitted again from them (no measurement)
    nets = ("small_cnn", "vit_tiny", "small_cnn_128")
    timings = {"target": "llvm", "chip": "znver4", "model_refs": [f"examples/networks.py:{n}" for n in nets],
               "networks": {"small_cnn": 0.5, "vit_tiny": 3.0, "small_cnn_128": 9.0}, "anchors": None}
    corr = {"factor": 7.0, "loo_log_residuals": [0.0] * 3, "networks": list(nets), "timings": timings}
    stale_pred.write_text(json.dumps({**json.loads(stale_pred.read_text()), "memory": memory,
                                      "network_correction": corr}, indent=2))
    r = _run(tmp_path)
    assert r.returncode == 0, r.stderr
    assert "same.parquet: version %d, unchanged" % (FEATURES_VERSION - 1) in r.stdout
    assert "columns changed: gone_col" in r.stdout and "refitted stale.predictor.json" in r.stdout
    for base in (same, stale):
        assert json.loads(base.with_suffix(".meta.json").read_text())["features_version"] == FEATURES_VERSION
    after = json.loads(Path(str(same) + ".predictor.json").read_text())
    assert after["features_version"] == FEATURES_VERSION and after["model"] == before["model"]  # only stamped
    pred = json.loads(Path(str(stale) + ".predictor.json").read_text())
    assert pred["features_version"] == FEATURES_VERSION and "gone_col" not in pred["features"]
    assert pred["memory"] == memory
    nc = pred["network_correction"]
    assert "network correction of stale.predictor.json refitted from its stored timings" in r.stdout
    folder = nc["timings"].pop("folder")  # where its relative MODEL_REFs were found (the script ran from the repo)
    assert (stale_pred.parent / folder / "examples" / "networks.py").is_file()
    assert nc["timings"] == timings and nc["factor"] != 7.0 and any(v != 0 for v in nc["loo_log_residuals"])
    assert "gone_col" not in pd.read_parquet(stale.with_suffix(".parquet")).columns


def test_a_new_column_that_is_zero_in_every_row_is_written_in_and_the_fits_kept(tmp_path):
    """A dataset from before a version that adds a column (24: mac_l1thrash_far) which is 0 in every one of its rows:
    unchanged; the column is written in, and its predictor is stamped with the dataset's new hash, its fit kept."""
    from tvmlat.dataset import dataset_hash

    old = _copy(tmp_path, "old", FEATURES_VERSION - 1)
    pq = old.with_suffix(".parquet")
    pd.read_parquet(pq).drop(columns=["mac_l1thrash_far"]).to_parquet(pq, index=False)
    pred_path = Path(str(old) + ".predictor.json")
    pred = json.loads(pred_path.read_text())
    pred["dataset_hash"] = dataset_hash(pq)
    pred_path.write_text(json.dumps(pred, indent=2))
    r = _run(tmp_path)
    assert r.returncode == 0, r.stderr
    assert "old.parquet: version %d, unchanged (new, 0 in every row: mac_l1thrash_far)" % (FEATURES_VERSION - 1) \
        in r.stdout
    df = pd.read_parquet(pq)
    assert "mac_l1thrash_far" in df and (df["mac_l1thrash_far"] == 0).all()
    after = json.loads(pred_path.read_text())
    assert after["features_version"] == FEATURES_VERSION and after["model"] == pred["model"]
    assert after["dataset_hash"] == dataset_hash(pq) != pred["dataset_hash"]
    meta = json.loads(old.with_suffix(".meta.json").read_text())
    assert meta["notes"][-1].endswith("mac_l1thrash_far added, 0 in every row")


def test_a_root_with_no_datasets_is_an_error_not_a_silent_success(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "restamp_features.py"), "--root", str(tmp_path / "nope")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith("error: no datasets") and "nope" in r.stderr and "Traceback" not in r.stderr
