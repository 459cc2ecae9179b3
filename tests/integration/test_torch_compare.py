"""PyTorch back-ends as targets and `tvmlat compare` (real torch and TVM on the host CPU; marker `tvm`)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tvmlat.blocks import build_block, sample_specs
from tvmlat.runners.torch_runner import TorchRunner
from tvmlat.targets import load_target

pytestmark = pytest.mark.tvm

MODEL = '''
import torch
def two():
    return {"conv": (torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).eval(),
                     (torch.randn(1, 3, 16, 16),)),
            "fc": (torch.nn.Linear(32, 16).eval(), (torch.randn(4, 32),))}
'''


def fast(t):
    return dataclasses.replace(t, evaluator=dataclasses.replace(t.evaluator, min_repeat_ms=2.0, max_seconds=0.3))


def test_torch_eager_runner_times_blocks():
    t = fast(load_target("torch-eager"))
    for spec in sample_specs(3, seed=51, min_flops=2e4, max_flops=3e6):
        res = TorchRunner(t).run(*build_block(spec))
        assert res.status == "ok" and res.latency_ms_median > 0 and res.repeats >= t.evaluator.min_repeats


def test_torch_runner_failure_is_a_row():
    import torch

    t = fast(load_target("torch-eager"))
    res = TorchRunner(t).run(torch.nn.Linear(4, 4), [torch.randn(2, 5)])  # wrong input width
    assert res.status == "run_error" and "RuntimeError" in res.error


def test_compare_cli(tmp_path, capsys):
    from tvmlat.cli import main

    (tmp_path / "m.py").write_text(MODEL)
    main(["compare", f"{tmp_path / 'm.py'}:two", "--targets", "llvm,torch-eager", "--format", "json", "--no-progress"])
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"conv", "fc", "TOTAL"}
    for r in rows.values():
        assert r["llvm"] > 0 and r["torch-eager"] > 0
        assert r["fastest"] == min(("llvm", "torch-eager"), key=lambda k: r[k])
        assert r["speedup"] >= 1
    assert rows["TOTAL"]["llvm"] == pytest.approx(rows["conv"]["llvm"] + rows["fc"]["llvm"])


def test_compare_needs_two_targets(tmp_path, capsys):
    from tvmlat.cli import main

    (tmp_path / "m.py").write_text(MODEL)
    with pytest.raises(SystemExit) as e:
        main(["compare", f"{tmp_path / 'm.py'}:two", "--targets", "llvm"])
    assert e.value.code == 2
    assert "at least two" in capsys.readouterr().err
