"""RPC over loopback: a campaign on two servers with one killed midway, and RPC vs local per block.

Starts a real tracker and servers on 127.0.0.1 (tvmlat.rpc_farm). Prints:
  1. the killed-server campaign: blocks, rows written, ok / failed, blocks retried, unique ids
  2. per-block wall time and measured medians, local vs one RPC server, on the same blocks

    python benchmarks/rpc_campaign.py [--blocks 60] [--compare 20]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from tvmlat.blocks import sample_specs
from tvmlat.dataset import CampaignWriter, read_dataset
from tvmlat.measure import run_campaign, spec_workloads
from tvmlat.rpc_farm import LocalFarm
from tvmlat.runners.local import LocalRunner
from tvmlat.runners.rpc import RPCRunner
from tvmlat.targets import load_target


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=60)
    ap.add_argument("--compare", type=int, default=20)
    ap.add_argument("--kill-after", type=int, default=20, help="kill server 0 once this many rows are written")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tvmlat-rpc-bench-"))
    base = load_target("llvm")

    # 1. two servers, one killed mid-block after --kill-after rows
    specs = sample_specs(a.blocks, seed=0)
    with LocalFarm(2, key="bench", log_dir=tmp / "logs") as farm:
        t = base.with_rpc(farm.address, "bench")
        runner = RPCRunner(t)
        writer = CampaignWriter(tmp / "killed.parquet", {"target_name": t.name})
        killed_at = {}

        def killer():
            while len(writer.df) < a.kill_after:
                time.sleep(0.05)
            pid = farm.servers[0].pid
            while len(psutil.Process(pid).children(recursive=True)) < 2:  # wait until it is mid-session
                time.sleep(0.01)
            killed_at["rows"] = len(writer.df)
            farm.kill_server(0)

        threading.Thread(target=killer, daemon=True).start()
        t0 = time.perf_counter()
        run_campaign(spec_workloads(specs), runner, t, writer, show_progress=False)
        wall = time.perf_counter() - t0
    df = read_dataset(tmp / "killed.parquet")
    print(f"== {a.blocks} blocks over loopback RPC, 2 servers, server 0 killed mid-block after "
          f"{killed_at.get('rows')} rows ==")
    print(f"rows written {len(df)}, unique block ids {df['block_id'].nunique()}, ok {(df['status'] == 'ok').sum()}, "
          f"failed {(df['status'] != 'ok').sum()}, blocks retried {(df['attempts'] > 1).sum()} "
          f"(sessions {runner.stats['sessions']}, retries {runner.stats['retried']}), wall {wall:.1f} s")
    print("rows by server:", df["server"].value_counts().to_dict())
    print("retried blocks' errors:", df.loc[df["attempts"] > 1, "rpc_errors"].tolist())

    # 2. the same blocks, local vs one RPC server
    cmp_specs = specs[: a.compare]
    t0 = time.perf_counter()
    local = run_campaign(spec_workloads(cmp_specs), LocalRunner(base), base, None, show_progress=False)
    local_wall = time.perf_counter() - t0
    with LocalFarm(1, key="bench1", log_dir=tmp / "logs1") as farm:
        t = base.with_rpc(farm.address, "bench1")
        t0 = time.perf_counter()
        remote = run_campaign(spec_workloads(cmp_specs), RPCRunner(t), t, None, show_progress=False)
        rpc_wall = time.perf_counter() - t0
    lm = {r["block_id"]: r for r in local}
    ratio = np.array([r["latency_ms_median"] / lm[r["block_id"]]["latency_ms_median"] for r in remote
                      if r["status"] == "ok" and lm[r["block_id"]]["status"] == "ok"])
    meas_l = np.median([r["measure_s"] for r in local])
    meas_r = np.median([r["measure_s"] for r in remote])
    up = np.median([r["upload_s"] for r in remote])
    print(f"\n== {len(cmp_specs)} blocks, local (sequential compile+time) vs 1 RPC server (compile overlapped) ==")
    print(f"wall per block: local {local_wall / len(cmp_specs):.2f} s, RPC {rpc_wall / len(cmp_specs):.2f} s "
          f"(ratio {rpc_wall / local_wall:.2f})")
    print(f"timing stage per block (median): local {meas_l:.3f} s, RPC {meas_r:.3f} s (+ upload/load {up:.3f} s)")
    print(f"measured median latency RPC / local: median {np.median(ratio):.3f}, "
          f"p10 {np.percentile(ratio, 10):.3f}, p90 {np.percentile(ratio, 90):.3f}")


if __name__ == "__main__":
    main()
