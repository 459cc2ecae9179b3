"""The few-shot table of `tvmlat ablation --few-shot-from` on the shipped CPU datasets (no TVM)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tvmlat.ablation import few_shot_pair, few_shot_table
from tvmlat.dataset import dataset_label, ok_rows, read_dataset
from helpers import assert_user_error, run_cli

DATA = Path(__file__).resolve().parents[2] / "datasets"
EAGER = DATA / "torch-eager" / "calib-znver3-n100-s0.parquet"
ONE_THREAD = DATA / "torch-eager-1t" / "calib-znver3-n100-s0.parquet"


def test_few_shot_pair_compares_adapted_and_scratch_on_the_same_held_out_blocks():
    src, dst = ok_rows(read_dataset(ONE_THREAD)), ok_rows(read_dataset(EAGER))
    rows = pd.DataFrame(few_shot_pair(src, dst, "1t", "eager", sizes=(5, 10, 20), draws=3))
    adapted = rows[rows["model"] == "adapted"]
    scratch = rows[rows["model"] == "scratch"]
    assert sorted(adapted["n_new"]) == [5, 10, 20]  # the prior makes 5 samples enough
    assert 5 not in set(scratch["n_new"]) and {10, 20} <= set(scratch["n_new"])  # too few for a model of its own
    assert set(rows["model"]) >= {"prior alone", "scratch, all"}
    assert (rows["median_ape"] > 0).all() and rows["within10"].between(0, 1).all()
    table = few_shot_table(rows)
    assert set(table["model"]) == {"adapted", "scratch"} and "n=10" in table.columns


def test_ablation_report_has_the_few_shot_section(tmp_path, capsys):
    code, out, err = run_cli(["ablation", "-d", EAGER, "--few-shot-from", ONE_THREAD, "--no-xgb", "--draws", "1",
                              "--out", tmp_path], capsys)
    assert code == 0, err
    assert "few-shot" in out
    csv = pd.read_csv(tmp_path / "few_shot.csv")
    assert set(csv["pair"]) == {"torch-eager-1t (znver3) -> torch-eager (znver3)"}
    report = (tmp_path / "report.md").read_text()
    assert "## Few-shot adaptation" in report and "few_shot.png" in report
    assert (tmp_path / "few_shot.png").stat().st_size > 0
    # a new family, and k of its blocks in the calibration: the default model's curve, in all three places
    assert "a new family:" in out and "## A new family, and a few of its blocks" in report
    shots = pd.read_csv(tmp_path / "family_shots.csv")
    assert set(shots["model"]) == {"linear-loops"} and set(shots["k"]) == {0, 1, 2, 3, 5}
    assert (tmp_path / "family_shots.png").stat().st_size > 0


def test_few_shot_from_a_dataset_of_other_blocks_is_a_clear_error(tmp_path, capsys):
    other = read_dataset(ONE_THREAD)
    other["block_id"] = other["block_id"] + "-x"
    p = tmp_path / "other.parquet"
    other.to_parquet(p)
    (tmp_path / "other.meta.json").write_text(ONE_THREAD.with_name(ONE_THREAD.stem + ".meta.json").read_text())
    assert_user_error(run_cli(["ablation", "-d", EAGER, "--few-shot-from", p, "--no-xgb", "--draws", "1"], capsys),
                      "share only 0 blocks", "--seed")


def test_two_llvm_datasets_of_different_cpus_have_different_labels(tmp_path):
    intel, amd = (DATA / "llvm" / f"calib-{chip}-n100-s0.parquet" for chip in ("emeraldrapids", "znver4"))
    assert dataset_label(intel) == "llvm (emeraldrapids)" and dataset_label(amd) == "llvm (znver4)"
    bare = tmp_path / "mine.parquet"  # no meta.json beside it: the file's name
    read_dataset(intel).to_parquet(bare)
    assert dataset_label(bare) == "mine"


def test_few_shot_between_two_campaigns_of_one_chip_names_them_by_file(tmp_path, capsys):
    other = tmp_path / "again.parquet"
    read_dataset(EAGER).to_parquet(other)
    (tmp_path / "again.meta.json").write_text(EAGER.with_name(EAGER.stem + ".meta.json").read_text())
    code, out, err = run_cli(["ablation", "-d", EAGER, "--few-shot-from", other, "--no-xgb", "--draws", "1",
                              "--out", tmp_path / "rep"], capsys)
    assert code == 0, err
    pair, = set(pd.read_csv(tmp_path / "rep" / "few_shot.csv")["pair"])
    assert pair == f"torch-eager (znver3) (again) -> torch-eager (znver3) ({EAGER.stem})"
