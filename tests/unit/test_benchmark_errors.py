"""A benchmark script given a file it can't use ends with one line that says how to make that file."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_a_missing_grid_dataset_is_one_line_naming_the_command_that_makes_it(tmp_path):
    missing = tmp_path / "none.parquet"
    r = subprocess.run([sys.executable, "benchmarks/reduction_grid.py", "--one-token", str(missing)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "Warning" not in ln and "return cls" not in ln]
    assert len(lines) == 1, r.stderr
    assert f"{missing} does not exist" in lines[0] and "tvmlat measure --target llvm benchmarks/reduction_grid.py" in lines[0]
    assert "tvmlat calibrate" not in lines[0]  # the library's generic advice would point elsewhere


def test_refitting_the_kernel_level_benchmark_without_its_files_is_one_line_naming_the_command(tmp_path):
    csv = tmp_path / "kernel_level.csv"
    r = subprocess.run([sys.executable, "benchmarks/kernel_level.py", "--refit", "--csv", str(csv)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "Warning" not in ln and "return cls" not in ln]
    assert len(lines) == 1, r.stderr
    assert f"{csv}, " in lines[0] and "do not exist" in lines[0]
    assert f"python benchmarks/kernel_level.py --csv {csv}" in lines[0]


def test_the_nas_benchmark_with_a_missing_predictor_or_a_lone_without_is_one_line(tmp_path):
    shipped = "benchmarks/out/nas_networks.parquet"
    for args, needle in ((["--calibrations", str(tmp_path / "x.predictor.json")], "does not exist"),
                         (["--without", "pool"], "--without refits the predictors of --calibrations")):
        r = subprocess.run([sys.executable, "benchmarks/nas_networks.py", shipped, *args], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 1
        lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "Warning" not in ln and "return cls" not in ln]
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
