"""The compile cache with real TVM: a second campaign loads compiled blocks instead of compiling (marker `tvm`)."""

from __future__ import annotations

import dataclasses

import pytest

from tvmlat.blocks import sample_specs
from tvmlat.measure import run_campaign, spec_workloads
from tvmlat.runners.local import LocalRunner
from tvmlat.targets import load_target

pytestmark = pytest.mark.tvm


@pytest.mark.parametrize("ahead", [False, True])
def test_second_campaign_uses_compile_cache(tmp_path, ahead):
    t = load_target("llvm")
    t = dataclasses.replace(t, evaluator=dataclasses.replace(t.evaluator, min_repeat_ms=2.0, max_seconds=0.3))
    specs = sample_specs(2, seed=31, min_flops=2e4, max_flops=3e6)
    runs = []
    for _ in range(2):
        runner = LocalRunner(t, ahead=ahead, cache_dir=str(tmp_path / "cache"))
        try:
            runs.append(run_campaign(spec_workloads(specs), runner, t, None, show_progress=False))
        finally:
            runner.close()
    first, second = runs
    assert all(r["status"] == "ok" for r in first + second)
    assert all(r["cache_hit"] != 1 for r in first)
    assert all(r["cache_hit"] == 1 for r in second)
    assert len(list((tmp_path / "cache").rglob("lib.so"))) == len(specs)
