"""A benchmark script given a file it can't use ends with one line that says how to make that file."""

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).parents[2]


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _error_line(r: subprocess.CompletedProcess) -> str:
    """The one line a failed benchmark printed, less torch's warnings; asserts it failed with one line."""
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "Warning" not in ln and "return cls" not in ln]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_a_missing_grid_dataset_is_one_line_naming_the_command_that_makes_it(tmp_path):
    missing = tmp_path / "none.parquet"
    line = _error_line(_run("benchmarks/reduction_grid.py", "--one-token", str(missing)))
    assert f"{missing} does not exist" in line and "tvmlat measure --target llvm benchmarks/reduction_grid.py" in line
    assert "tvmlat calibrate" not in line  # the library's generic advice would point elsewhere


def test_refitting_the_kernel_level_benchmark_without_its_files_is_one_line_naming_the_command(tmp_path):
    csv = tmp_path / "kernel_level.csv"
    line = _error_line(_run("benchmarks/kernel_level.py", "--refit", "--csv", str(csv)))
    assert f"{csv}, " in line and "do not exist" in line
    assert f"python benchmarks/kernel_level.py --csv {csv}" in line


def test_the_nas_benchmark_with_a_missing_predictor_or_a_lone_without_is_one_line(tmp_path):
    shipped = "benchmarks/out/nas_networks.parquet"
    for args, needle in ((["--calibrations", str(tmp_path / "x.predictor.json")], "does not exist"),
                         (["--without", "pool"], "--without refits the predictors of --calibrations")):
        line = _error_line(_run("benchmarks/nas_networks.py", shipped, *args))
        assert line.startswith("error: ") and needle in line, line


def test_refitting_the_kernel_pool_without_a_runs_files_is_one_line_naming_the_command(tmp_path):
    prefix = tmp_path / "kp"
    line = _error_line(_run("benchmarks/kernel_pool.py", "--refit", "--out", str(prefix)))
    assert line.startswith("error: ")
    assert f"{prefix}_kernels.csv" in line and "do not exist" in line
    assert f"python benchmarks/kernel_pool.py --out {prefix}" in line


def test_kernel_pool_files_of_two_runs_are_refused_in_one_line(tmp_path):
    prefix = tmp_path / "kp"
    pd.DataFrame([{"base": "relu", "shapes": "[(1, 8), (1, 8)]", "families": "mlp", "src": "pool|test", "ms": 0.01,
                   "ms_odd": 0.01, "ms_even": 0.01, "number": 100}]).to_csv(f"{prefix}_kernels.csv", index=False)
    pd.DataFrame([{"block_id": "b1", "family": "mlp", "pos": 0, "kernel": "add", "base": "add",
                   "shapes": "[(1, 8), (1, 8), (1, 8)]"}]).to_csv(f"{prefix}_calls.csv", index=False)
    pd.DataFrame([{"block_id": "b1", "family": "mlp", "spec": "{}", "latency_ms": 0.02, "ms_odd": 0.02,
                   "ms_even": 0.02}]).to_csv(f"{prefix}_blocks.csv", index=False)
    line = _error_line(_run("benchmarks/kernel_pool.py", "--refit", "--out", str(prefix)))
    assert line.startswith("error: ")
    assert "1 kernel calls of the test blocks have no kernel time" in line


def test_the_transcendental_and_kernel_breakdown_benchmarks_with_a_missing_file_or_entry_are_one_line(tmp_path):
    assert "does not exist" in _error_line(_run("benchmarks/transcendental.py", str(tmp_path / "none.parquet")))
    line = _error_line(_run("benchmarks/kernel_breakdown.py", "examples/own_blocks.py:convnext", "convnext(c=1,hw=1)"))
    assert "has no entries ['convnext(c=1,hw=1)']" in line
    assert "does not exist" in _error_line(_run("benchmarks/kernel_breakdown.py", f"{tmp_path / 'x.py'}:blocks"))
