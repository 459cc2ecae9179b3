"""End to end on an emulated board: an aarch64 TVM RPC server under qemu-user (markers `slow`, `rpc`).

Needs an arm64 Debian root with Python and TVM's runtime at /opt/tvm: `scripts/make_arm64_root.sh
/tmp/arm64` prepares one (debootstrap + qemu-user-static + binfmt; root needed), then
`TVMLAT_ARM64_ROOT=/tmp/arm64 pytest -m slow tests/integration/test_rpc_qemu.py`. Skipped otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import pytest

from tvmlat.blocks import sample_specs
from tvmlat.measure import run_campaign, spec_workloads
from tvmlat.rpc_farm import LocalFarm
from tvmlat.runners.rpc import RPCRunner
from tvmlat.targets import load_target

pytestmark = [pytest.mark.slow, pytest.mark.rpc, pytest.mark.tvm]

ROOT = os.environ.get("TVMLAT_ARM64_ROOT", "")


@pytest.mark.skipif(not ROOT or not os.path.isdir(os.path.join(ROOT, "opt", "tvm")),
                    reason="set TVMLAT_ARM64_ROOT to a root made by scripts/make_arm64_root.sh")
@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None, reason="apt install gcc-aarch64-linux-gnu")
def test_campaign_on_emulated_aarch64_board(tmp_path):
    server = ["chroot", ROOT, "env", "TVM_USE_RUNTIME_LIB=1", "PYTHONPATH=/opt/tvm", "python3"]
    with LocalFarm(1, key="rpi4", log_dir=tmp_path / "logs", server_cmd=server) as farm:
        t = load_target("rpi4").with_rpc(farm.address)
        # emulation is ~10-50x slower than the board: few, short repeats
        t = dataclasses.replace(t, evaluator=dataclasses.replace(t.evaluator, min_repeat_ms=1.0, min_repeats=3,
                                                                  max_repeats=3, max_seconds=5.0))
        specs = sample_specs(3, seed=71, min_flops=2e4, max_flops=1e6)
        runner = RPCRunner(t)
        rows = run_campaign(spec_workloads(specs), runner, t, None, show_progress=False)
    assert [r["status"] for r in rows] == ["ok"] * len(specs), [(r["name"], r["error"]) for r in rows]
    assert all(r["latency_ms_median"] > 0 and r["max_rel_err"] <= 1e-3 for r in rows)
