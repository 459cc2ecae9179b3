"""On an NVIDIA GPU (marker `gpu`; skipped, with the reason, where TVM sees none)."""

from __future__ import annotations

import dataclasses

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.tvm]


@pytest.fixture(scope="module")
def cuda_target():
    import tvm

    if not tvm.cuda(0).exist:
        pytest.skip("no CUDA GPU visible to TVM on this machine")
    from tvmlat.targets import load_target

    t = load_target("cuda").with_arch(None)
    return dataclasses.replace(t, evaluator=dataclasses.replace(t.evaluator, max_seconds=0.5))


def test_blocks_compile_run_and_match_torch_on_gpu(cuda_target):
    from tvmlat.blocks import FAMILIES, sample_specs
    from tvmlat.measure import run_campaign, spec_workloads
    from tvmlat.runners.local import LocalRunner

    specs = [sample_specs(1, seed=41, families=[f], max_flops=3e6)[0] for f in FAMILIES]
    rows = run_campaign(spec_workloads(specs), LocalRunner(cuda_target), cuda_target, None, show_progress=False)
    assert [r["status"] for r in rows] == ["ok"] * len(specs), [(r["name"], r["error"]) for r in rows]
    assert all(r["latency_ms_median"] > 0 for r in rows)


def test_power_reading_on_gpu(cuda_target):
    pytest.importorskip("pynvml", reason="pip install nvidia-ml-py for power readings")
    from tvmlat.blocks import build_block, sample_specs
    from tvmlat.power import NVMLSampler
    from tvmlat.runners.local import LocalRunner

    module, inputs = build_block(sample_specs(1, seed=42, families=["conv_bn_relu"])[0])
    res = LocalRunner(cuda_target, sampler=NVMLSampler()).run(module, inputs)
    assert res.status == "ok"
    assert res.energy["idle_power_w"] > 0 and res.energy["power_w"] > 0 and res.energy["energy_mj"] > 0
