"""Real RPC: a tracker and servers started as processes on 127.0.0.1 (marker `rpc`).

Covers a full campaign over two servers, a server killed mid-campaign, a server that hangs, a key
with no server, resuming an interrupted campaign, `measure` and `devices` through the CLI, and
cross-compiling a block for an aarch64 board.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import shutil
import signal
import sys
import threading
import time

import psutil
import pytest

from tvmlat.blocks import build_block, sample_specs
from tvmlat.dataset import CampaignWriter, read_dataset
from tvmlat.errors import RPCError
from tvmlat.measure import run_campaign, spec_workloads
from tvmlat.rpc_farm import LocalFarm, free_port, kill_tree
from tvmlat.runners.rpc import RPCRunner, devices, tracker_summary
from tvmlat.runners.vmtime import REL_TOL
from tvmlat.targets import load_target

pytestmark = [pytest.mark.rpc, pytest.mark.tvm]

SMALL = {"min_flops": 2e4, "max_flops": 3e6}
KEY = "tvmlat-test"


def remote_target(farm: LocalFarm, key: str = KEY, **rpc):
    t = load_target("llvm").with_rpc(farm.address, key)
    ev = dataclasses.replace(t.evaluator, min_repeat_ms=2.0, max_seconds=0.3)
    return dataclasses.replace(t, evaluator=ev, rpc=dataclasses.replace(t.rpc, **{"request_timeout_s": 30.0, **rpc}))


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    with LocalFarm(2, key=KEY, log_dir=tmp_path_factory.mktemp("farm")) as f:
        yield f


def in_session(server: psutil.Popen | object) -> bool:
    """A TVM server serving a session has its listener and a session process below it."""
    try:
        return len(psutil.Process(server.pid).children(recursive=True)) >= 2
    except psutil.NoSuchProcess:
        return False


def act_when_serving(server, action, timeout: float = 60.0) -> threading.Thread:
    def run():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not in_session(server):
            time.sleep(0.02)
        action()
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_devices_lists_the_farm(farm):
    rows = {r["key"]: r for r in devices(tracker_summary(("127.0.0.1", farm.port)))}
    assert rows[KEY]["servers"] == 2
    assert all(a.startswith("127.0.0.1:") for a in rows[KEY]["addresses"].split())


def test_campaign_over_two_servers(farm, tmp_path):
    t = remote_target(farm)
    specs = sample_specs(6, seed=21, **SMALL)
    writer = CampaignWriter(tmp_path / "c.parquet", {"target_name": t.name})
    runner = RPCRunner(t)
    rows = run_campaign(spec_workloads(specs), runner, t, writer, show_progress=False)
    df = read_dataset(tmp_path / "c.parquet")
    assert sorted(df["block_id"]) == sorted(s.block_id for s in specs)
    assert (df["status"] == "ok").all(), df[["name", "status", "error"]]
    assert (df["latency_ms_median"] > 0).all() and (df["max_rel_err"] <= REL_TOL).all()
    assert (df["attempts"] == 1).all()
    assert df["server"].nunique() == 2  # both servers were used, one block each at a time
    assert all(r["server"].startswith("127.0.0.1:") for r in rows)


def test_sessions_are_released_block_after_block(farm):
    # one worker on a two-server farm: if a finished session held its server, block 3 would wait forever
    t = remote_target(farm, request_timeout_s=10.0)
    rows = run_campaign(spec_workloads(sample_specs(4, seed=27, **SMALL)), RPCRunner(t, max_servers=1), t, None,
                        show_progress=False)
    assert [r["status"] for r in rows] == ["ok"] * 4


def test_server_killed_mid_campaign_loses_nothing(tmp_path):
    with LocalFarm(2, key=KEY, log_dir=tmp_path / "logs") as f:
        t = remote_target(f)
        specs = sample_specs(8, seed=22, **SMALL)
        runner = RPCRunner(t)
        killer = act_when_serving(f.servers[0], lambda: f.kill_server(0))
        run_campaign(spec_workloads(specs), runner, t, CampaignWriter(tmp_path / "k.parquet", {}), show_progress=False)
        killer.join(5)
    df = read_dataset(tmp_path / "k.parquet")
    assert len(df) == len(specs) and df["block_id"].nunique() == len(specs)  # none lost, none twice
    assert set(df["status"]) <= {"ok", "run_error"}
    assert runner.stats["retried"] >= 1
    retried = df[df["rpc_errors"].fillna("") != ""]
    assert len(retried) >= 1 and (retried["attempts"] >= 2).all()
    assert df.loc[df["status"] == "ok", "server"].nunique() >= 1


def test_an_unexpected_error_in_a_worker_retries_the_block(farm, monkeypatch):
    """A worker hit by an error that is not an RPCError (e.g. the tracker's socket reset while a server
    dies) hands its block back: before, the thread died with the block and the campaign waited forever."""
    import tvmlat.runners.rpc as rpc_mod

    real, calls = rpc_mod.request_server, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise ConnectionResetError("connection reset by peer")
        return real(*a, **k)

    monkeypatch.setattr(rpc_mod, "request_server", flaky)
    t = remote_target(farm)
    rows = run_campaign(spec_workloads(sample_specs(3, seed=29, **SMALL)), RPCRunner(t), t, None, show_progress=False)
    assert [r["status"] for r in rows] == ["ok"] * 3, [r["error"] for r in rows]
    assert sum("worker error: ConnectionResetError" in (r["rpc_errors"] or "") for r in rows) == 1


@pytest.mark.timeout(300)
def test_a_stuck_compile_worker_is_replaced_not_waited_on_forever(farm, tmp_path):
    """The compile pool's first worker never delivers (as once in CI, where a campaign waited 18
    minutes on a compile that the idle worker never received): after ``compile_stall_s`` the pool is
    replaced and every block is measured."""
    from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor

    class Stuck(ProcessPoolExecutor):
        def submit(self, *a, **k):
            return Future()

    made = []

    def factory(n):  # the replacement compiles in threads: a new worker process would take seconds to start
        made.append(Stuck(n) if not made else ThreadPoolExecutor(n))
        return made[-1]

    t = remote_target(farm)
    specs = sample_specs(3, seed=31, **SMALL)
    runner = RPCRunner(t, compile_stall_s=10.0, executor_factory=factory)
    try:
        rows = run_campaign(spec_workloads(specs), runner, t, None, show_progress=False)
    finally:
        # the campaign closes its pool without waiting; a compile still running in the replacement's
        # thread must not go on into the next test (torch.export and TVM in this process, beside its RPC)
        made[-1].shutdown(wait=True)
    assert sorted(r["block_id"] for r in rows) == sorted(s.block_id for s in specs)
    assert [r["status"] for r in rows] == ["ok"] * 3, [r["error"] for r in rows]
    assert runner.stats["compile_stalls"] == 1 and len(made) == 2


def test_hung_server_is_given_up_and_block_retried(tmp_path):
    with LocalFarm(2, key=KEY, log_dir=tmp_path / "logs") as f:
        t = remote_target(f, session_timeout_s=3.0)
        specs = sample_specs(5, seed=23, **SMALL)
        runner = RPCRunner(t, hang_grace_s=1.0)
        freezer = act_when_serving(f.servers[0], lambda: kill_tree(f.servers[0], signal.SIGSTOP))
        run_campaign(spec_workloads(specs), runner, t, CampaignWriter(tmp_path / "h.parquet", {}), show_progress=False)
        freezer.join(5)
        # the frozen server is still frozen here, yet nothing of the campaign waits on it: its session
        # process was killed (before, the worker thread stayed blocked in TVM's client until the farm closed)
        assert not [th.name for th in threading.enumerate() if th.name.startswith("tvmlat-rpc-")]
        assert not [c for c in multiprocessing.active_children() if c.name == "tvmlat-rpc-session"]
    df = read_dataset(tmp_path / "h.parquet")
    assert len(df) == len(specs) and df["block_id"].nunique() == len(specs)
    # once; twice where the tracker handed the frozen server out again before it was known hung (its
    # connect then hangs too: CI saw that hang for 10 minutes before the watchdog covered connects)
    assert 1 <= runner.stats["hung"] <= 2
    assert 1 <= df["rpc_errors"].fillna("").str.contains("hung").sum() <= runner.stats["hung"]
    assert (df["status"] == "ok").all()
    assert df["server"].nunique() == 1  # every block ended on the server that still answers


def test_a_server_found_hung_is_not_taken_again(tmp_path):
    from tvm import rpc

    from tvmlat.runners.rpc import NoFreeServer, request_server

    with LocalFarm(1, key=KEY, log_dir=tmp_path / "logs") as f:
        addr = ("127.0.0.1", f.port)
        url, port, key = request_server(addr, KEY, 10.0)
        sess = rpc.connect(url, port, key, session_timeout=5.0)
        del sess  # the session ends and the server tells the tracker it is free again
        with pytest.raises(NoFreeServer, match="skipped the hung"):
            request_server(addr, KEY, 3.0, skip={f"{url}:{port}"})  # the only server, offered and refused
        # it was free: refused because of the skip, not because it was taken
        assert request_server(addr, KEY, 10.0)[:2] == (url, port)


@pytest.mark.timeout(120)  # TVM's own request would wait forever: a hang fails here, not a timing assertion
def test_key_without_server_fails_clearly_within_timeout(farm, tmp_path):
    t = remote_target(farm, key="nobody-has-this")
    t = dataclasses.replace(t, rpc=dataclasses.replace(t.rpc, request_timeout_s=1.0))
    writer = CampaignWriter(tmp_path / "n.parquet", {})
    with pytest.raises(RPCError) as e:  # it gives up
        run_campaign(spec_workloads(sample_specs(2, seed=24, **SMALL)), RPCRunner(t), t, writer, show_progress=False)
    msg = str(e.value)
    assert "nobody-has-this" in msg and "rpc_server" in msg and KEY in msg  # says which keys exist
    assert writer.df.empty


class InterruptAfter(CampaignWriter):
    """A writer whose run is interrupted (Ctrl-C) right after it has written ``n`` rows."""

    def __init__(self, path, n):
        super().__init__(path, {})
        self.n = n

    def append(self, row):
        super().append(row)
        if len(self.df) >= self.n:
            raise KeyboardInterrupt


def test_interrupted_rpc_campaign_resumes(farm, tmp_path):
    t = remote_target(farm)
    specs = sample_specs(5, seed=25, **SMALL)
    path = tmp_path / "r.parquet"
    with pytest.raises(KeyboardInterrupt):
        run_campaign(spec_workloads(specs), RPCRunner(t), t, InterruptAfter(path, 2), show_progress=False)
    assert len(read_dataset(path)) == 2
    rows = run_campaign(spec_workloads(specs), RPCRunner(t), t, CampaignWriter(path, {}), show_progress=False)
    assert len(rows) == 3
    df = read_dataset(path)
    assert sorted(df["block_id"]) == sorted(s.block_id for s in specs)


MODEL = '''
import torch
def tiny():
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).eval()
    return {"conv": (m, (torch.randn(1, 3, 16, 16),)),
            "fc": (torch.nn.Linear(32, 16).eval(), (torch.randn(4, 32),))}
'''


def test_cli_measure_and_devices_over_rpc(farm, tmp_path, capsys):
    from tvmlat.cli import main

    (tmp_path / "m.py").write_text(MODEL)
    main(["devices", "--tracker", farm.address, "--format", "json"])
    listed = json.loads(capsys.readouterr().out)
    assert [r["key"] for r in listed] == [KEY]
    main(["measure", f"{tmp_path / 'm.py'}:tiny", "--tracker", farm.address, "--rpc-key", KEY, "--format", "json",
          "--out", str(tmp_path / "m.parquet")])
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["name"] for r in rows) == ["conv", "fc"]
    assert all(r["status"] == "ok" and r["latency_ms"] > 0 and r["server"].startswith("127.0.0.1:") for r in rows)
    meta = json.loads((tmp_path / "m.meta.json").read_text())
    assert meta["device"]["rpc_key"] == KEY and "host" not in meta


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None,
                    reason="no aarch64 cross compiler (apt install gcc-aarch64-linux-gnu)")
def test_cross_compile_for_aarch64_board(tmp_path):
    from tvmlat.runners.ahead import compile_to_library

    t = load_target("rpi4")
    module, inputs = build_block(sample_specs(1, seed=26, families=["conv_bn_relu"], **SMALL)[0])
    art = compile_to_library(module, inputs, t, str(tmp_path), "b")
    assert art["status"] == "ok", art
    head = open(art["lib"], "rb").read(20)
    assert head[:4] == b"\x7fELF" and head[4] == 2  # 64-bit ELF
    assert int.from_bytes(head[18:20], sys.byteorder if head[5] == 1 else "big") == 183  # EM_AARCH64


def test_tvmlat_tracker_and_server_commands(tmp_path):
    import subprocess

    from tvmlat.rpc_farm import free_port
    from tvmlat.runners.rpc import wait_for_servers

    port = free_port()
    cmd = [sys.executable, "-m", "tvmlat.cli"]
    procs = [subprocess.Popen(cmd + ["tracker", "--port", str(port)], stderr=subprocess.PIPE)]
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                tracker_summary(("127.0.0.1", port))
                break
            except RPCError:
                assert time.monotonic() < deadline, "tracker did not come up"
                time.sleep(0.3)
        procs.append(subprocess.Popen(cmd + ["server", "--key", "wrapped", "--tracker", f"127.0.0.1:{port}",
                                             "--port", str(free_port())], stderr=subprocess.PIPE))
        assert wait_for_servers(("127.0.0.1", port), "wrapped", 60) == 1
        # both listen on loopback only: every registered address is 127.0.0.1
        rows = devices(tracker_summary(("127.0.0.1", port)))
        assert all(a.startswith("127.0.0.1:") for r in rows for a in r["addresses"].split())
    finally:
        for p in procs:
            kill_tree(p)
    assert all(b"warning" not in (p.stderr.read() or b"") for p in procs)


def test_tuning_measures_candidates_on_the_board_over_rpc(farm, tmp_path):
    """The tuned profile on a remote target: MetaSchedule's candidates run on the RPC server (not on
    this process's CPU), their run times land in the shared database, and the tuned block is then
    measured over RPC like any other."""
    from tvm.s_tir import meta_schedule as ms

    from tvmlat.targets import TuningConfig
    from tvmlat.tuning import candidate_runner, tune_ahead

    t = dataclasses.replace(remote_target(farm).with_profile("tuned"),
                            tuning=TuningConfig(trials_per_task=2, database=str(tmp_path / "db")))
    assert type(candidate_runner(t)).__name__ == "RPCRunner"
    spec = sample_specs(1, seed=3, families=["pool"], min_flops=2e4, max_flops=2e5)[0]
    report = tune_ahead(spec_workloads([spec]), t, show_progress=False)
    assert report["tuned"] >= 1 and report["ready"] == [spec.block_id]
    records = ms.database.JSONDatabase(work_dir=str(tmp_path / "db")).get_all_tuning_records()
    assert records and all(r.run_secs for r in records)
    assert min(float(s) for r in records for s in r.run_secs) < 1.0  # real run times, not MetaSchedule's 1e10 "failed"
    rows = run_campaign(spec_workloads([spec]), RPCRunner(t), t, None, show_progress=False)
    assert [r["status"] for r in rows] == ["ok"], rows
    assert rows[0]["max_rel_err"] <= REL_TOL and rows[0]["profile"] == "tuned"


def _silent_server():
    """A TCP listener on 127.0.0.1 that accepts and never answers: what a frozen board looks like to TVM's
    client (it waits on the handshake forever)."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    return srv


#: an artefact no session gets to use (the server never answers, or the connect fails first)
NO_ART = {"lib": "x.so", "data": "x.npz"}


def _lone_session():
    from tvmlat.runners.rpc import SessionProcess

    return SessionProcess(load_target("llvm").to_dict(), check=False)


def test_a_session_silent_past_its_deadline_is_ended_by_killing_its_process():
    from tvmlat.runners.rpc import SessionHung

    srv = _silent_server()
    session = _lone_session()
    try:
        session.start()
        proc = session.proc
        with pytest.raises(SessionHung, match="session hung"):
            session.measure("127.0.0.1", srv.getsockname()[1], "k", NO_ART, 1.0)
        proc.join(5)
        assert not proc.is_alive() and session.proc is None  # killed, not left blocked in TVM's client
        session.start()  # the next block gets a fresh process
        assert session.proc is not None and session.proc.pid != proc.pid and session.proc.is_alive()
    finally:
        session.close()
        srv.close()
    assert session.proc is None


def test_a_session_process_that_dies_is_an_rpc_error_not_a_hang():
    srv = _silent_server()
    session = _lone_session()
    try:
        session.start()
        killer = threading.Timer(1.0, session.proc.kill)  # e.g. the OOM killer, mid-session
        killer.start()
        with pytest.raises(RPCError, match="session process died"):
            session.measure("127.0.0.1", srv.getsockname()[1], "k", NO_ART, 60.0)
        killer.join()
    finally:
        session.close()
        srv.close()


def test_a_failed_session_comes_back_as_its_last_error_line():
    session = _lone_session()
    try:
        with pytest.raises(RPCError) as e:  # nothing listens there: TVM's connect fails
            session.measure("127.0.0.1", free_port(), "k", NO_ART, 60.0)
        assert "Error" in str(e.value) and "hung" not in str(e.value) and "died" not in str(e.value)
        assert session.proc is not None and session.proc.is_alive()  # it stays for the next block
    finally:
        session.close()
