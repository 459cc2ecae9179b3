"""RPC configuration without any device: tracker addresses, board targets, [rpc] validation, --tracker /
--rpc-key / $TVMLAT_TRACKER, the cross-toolchain check, the `devices` table from a tracker summary, and
the errors for a tracker that is not there (or is not a tracker). Everything stays on 127.0.0.1; no TVM
compilation, no real tracker or RPC server."""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
import threading

import pytest

from helpers import assert_user_error, run_cli
from tvmlat.errors import RPCError, TargetError
from tvmlat.runners.rpc import RPCRunner, devices, tracker_summary
from tvmlat.targets import (DEFAULT_TRACKER, TRACKER_ENV, RPCConfig, TargetSpec, load_target, parse_tracker,
                            target_from_dict)

BOARDS = ["rpi4", "rpi5", "jetson-orin-cpu"]


@pytest.fixture(autouse=True)
def _clean_env(tmp_path, monkeypatch):
    # a tracker address in the developer's environment must not leak into these tests,
    # and nothing a command writes by default may land in the repository
    monkeypatch.delenv(TRACKER_ENV, raising=False)
    monkeypatch.delenv("TVMLAT_TARGETS", raising=False)
    monkeypatch.chdir(tmp_path)


def free_port() -> int:
    """A loopback port nobody listens on (bound, read, closed)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class StubServer:
    """A tiny TCP server on 127.0.0.1 in a thread; ``handle(conn)`` serves each connection."""

    def __init__(self, handle):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.handle = handle
        self.stop = threading.Event()
        self.connections = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            try:
                conn.settimeout(2.0)
                self.handle(conn)
            except OSError:
                pass
            finally:
                conn.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=2.0)
        self.sock.close()


def _recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise OSError("closed")
        buf += chunk
    return buf


def fake_tracker(summary):
    """A handler that speaks just enough of the tracker protocol to answer one SUMMARY request."""
    from tvm.rpc import base

    def handle(conn):
        magic = struct.unpack("<i", _recv_exact(conn, 4))[0]
        conn.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
        if magic != base.RPC_TRACKER_MAGIC:
            return
        n = struct.unpack("<i", _recv_exact(conn, 4))[0]
        req = json.loads(_recv_exact(conn, n).decode())
        assert req == [base.TrackerCode.SUMMARY]
        data = json.dumps([base.TrackerCode.SUCCESS, summary]).encode()
        conn.sendall(struct.pack("<i", len(data)) + data)

    return handle


SUMMARY = {
    "queue_info": {"k": {"free": 1, "pending": 0}},
    "server_info": [{"key": "server:k", "addr": ["127.0.0.1", 9091]},
                    {"key": "server:k", "addr": ["127.0.0.1", 9092]}],
}


def board_dict(**over):
    d = {"name": "board", "kind": "llvm", "triple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "cores": 4,
         "mattr": ["+neon"], "cross_compiler": "aarch64-linux-gnu-gcc", "cross_package": "gcc-aarch64-linux-gnu",
         "rpc": {"key": "board"}}
    d.update(over)
    return d


# ------------------------------------------------------------------ parse_tracker


@pytest.mark.parametrize("addr, expected", [("127.0.0.1:9190", ("127.0.0.1", 9190)), ("localhost:1", ("localhost", 1)),
                                            ("h:65535", ("h", 65535))])
def test_parse_tracker_good(addr, expected):
    host, port = parse_tracker(addr)
    assert (host, port) == expected
    assert isinstance(port, int)


@pytest.mark.parametrize("addr", ["localhost", "a:b", "h:0", "h:70000", "h:65536", ":9190", "h:1:2", "", "h:",
                                  "h:-1", "h: 1"])
def test_parse_tracker_malformed(addr):
    with pytest.raises(TargetError, match="HOST:PORT"):
        parse_tracker(addr)


@pytest.mark.parametrize("addr", ["h:\u00b2", "h:\uff11\uff12"])
def test_parse_tracker_non_ascii_digits_are_a_target_error(addr):
    with pytest.raises(TargetError, match="HOST:PORT"):
        parse_tracker(addr)


@pytest.mark.parametrize("key", ["a b", "a:b", "a\nb"])
def test_rpc_key_in_target_file_is_checked(key):
    with pytest.raises(TargetError, match="key"):
        target_from_dict({"kind": "llvm", "rpc": {"key": key}})


def test_parse_tracker_not_a_string():
    with pytest.raises(TargetError, match="HOST:PORT"):
        parse_tracker(9190)  # type: ignore[arg-type]


def test_rpc_config_defaults_and_address():
    c = RPCConfig()
    assert c.key == "" and c.tracker == DEFAULT_TRACKER
    assert c.check() is c
    assert c.address == ("127.0.0.1", 9190)


# ------------------------------------------------------------------ board targets


@pytest.mark.parametrize("name", BOARDS)
def test_board_targets_load(name):
    t = load_target(name)
    assert t.name == name
    assert t.remote is True
    assert t.triple == "aarch64-linux-gnu"
    assert t.mcpu and t.mcpu != "host"
    assert t.cross_compiler == "aarch64-linux-gnu-gcc"
    assert t.cross_package
    assert t.rpc.key
    assert isinstance(t.cores, int) and t.cores >= 1
    assert t.mattr == ("+neon",)
    parse_tracker(t.rpc.tracker)  # the file's tracker is a valid address
    assert t.rpc.request_timeout_s > 0 and t.rpc.retries >= 0


def test_board_cores_are_the_boards():
    assert load_target("rpi4").cores == 4
    assert load_target("rpi5").cores == 4
    assert load_target("jetson-orin-cpu").cores == 6
    assert load_target("jetson-orin-cpu").rpc.key == "jetson-orin"


def test_llvm_is_local():
    t = load_target("llvm")
    assert t.remote is False
    assert t.rpc.key == ""
    assert t.triple == "" and t.cross_compiler == ""


@pytest.mark.parametrize("name", BOARDS)
def test_board_target_round_trips_through_dict(name):
    t = load_target(name)
    d = t.to_dict()
    assert d["rpc"]["key"] == t.rpc.key
    back = TargetSpec.from_dict(d)
    assert back == t
    assert isinstance(back.mattr, tuple)
    assert isinstance(back.rpc, RPCConfig)
    # and through JSON, as in a dataset's meta (the list there must come back as a tuple)
    back2 = TargetSpec.from_dict(json.loads(json.dumps(d)))
    assert back2 == t
    assert isinstance(back2.mattr, tuple)


# ------------------------------------------------------------------ bad target dicts


def test_good_board_dict_passes():
    t = target_from_dict(board_dict(rpc={"key": "b", "tracker": "10.0.0.1:9000", "retries": 0,
                                         "request_timeout_s": 1.5, "session_timeout_s": 10}))
    assert t.remote and t.rpc.key == "b"
    assert t.rpc.address == ("10.0.0.1", 9000)
    assert t.rpc.retries == 0 and t.rpc.request_timeout_s == 1.5


@pytest.mark.parametrize("raw, needle", [
    (board_dict(rpc={"key": "b", "nope": 1}), "nope"),
    (board_dict(rpc={"key": "b", "retries": -1}), "retries"),
    (board_dict(rpc={"key": "b", "retries": 1.5}), "retries"),
    (board_dict(rpc={"key": "b", "retries": "2"}), "retries"),
    (board_dict(rpc={"key": "b", "retries": True}), "retries"),
    (board_dict(rpc={"key": "b", "request_timeout_s": 0}), "request_timeout_s"),
    (board_dict(rpc={"key": "b", "request_timeout_s": "30"}), "request_timeout_s"),
    (board_dict(rpc={"key": "b", "session_timeout_s": -5}), "session_timeout_s"),
    (board_dict(rpc={"key": "b", "tracker": "nohost"}), "HOST:PORT"),
    (board_dict(rpc={"key": "b", "tracker": "h:99999"}), "HOST:PORT"),
    (board_dict(rpc={"key": 5}), "key"),
    (board_dict(rpc="rpi4"), "[rpc]"),
    (board_dict(cores="auto"), "cores"),
    (board_dict(mcpu="host"), "mcpu"),
    (board_dict(mattr="+neon"), "mattr"),
    (board_dict(mattr=["neon"]), "mattr"),
    (board_dict(mattr=["+"]), "mattr"),
    (board_dict(mattr=[1]), "mattr"),
    (board_dict(cross_compiler=3), "cross_compiler"),
], ids=["rpc-unknown-key", "retries-negative", "retries-float", "retries-str", "retries-bool", "timeout-zero",
        "timeout-str", "session-timeout-negative", "tracker-no-port", "tracker-port-range", "key-not-str",
        "rpc-not-table", "board-cores-auto", "board-mcpu-host", "mattr-not-list", "mattr-no-sign",
        "mattr-sign-only", "mattr-not-str", "cross-compiler-not-str"])
def test_bad_target_dicts(raw, needle):
    with pytest.raises(TargetError) as ei:
        target_from_dict(raw, source="t.toml")
    msg = str(ei.value)
    assert needle in msg, msg
    assert msg.startswith("t.toml:"), msg
    assert "\n" not in msg


def test_board_cores_auto_message_asks_for_a_number():
    with pytest.raises(TargetError, match=r"cores") as ei:
        target_from_dict(board_dict(cores="auto"))
    assert "board" in str(ei.value)


def test_board_mcpu_host_message_names_the_triple():
    with pytest.raises(TargetError, match="host") as ei:
        target_from_dict(board_dict(mcpu="host"))
    assert "aarch64-linux-gnu" in str(ei.value)


def test_bad_board_file_via_load_target(tmp_path):
    p = tmp_path / "myboard.toml"
    p.write_text('kind = "llvm"\ntriple = "aarch64-linux-gnu"\nmcpu = "cortex-a72"\ncores = 4\n'
                 '[rpc]\nkey = "b"\nretries = -2\n')
    with pytest.raises(TargetError, match="retries") as ei:
        load_target(str(p))
    assert str(p) in str(ei.value)


# ------------------------------------------------------------------ with_rpc


@pytest.fixture
def local():
    # like llvm.toml, without the TVM lookup of mcpu = "host"
    return target_from_dict({"name": "loc", "kind": "llvm", "cores": 1})


def test_with_rpc_tracker_without_key_asks_for_rpc_key(local):
    assert not local.remote
    with pytest.raises(TargetError, match="--rpc-key"):
        local.with_rpc(tracker="127.0.0.1:9190")


def test_with_rpc_tracker_and_key_makes_it_remote(local):
    t = local.with_rpc(tracker="10.1.2.3:9999", key="mybox")
    assert t.remote
    assert t.rpc.key == "mybox"
    assert t.rpc.tracker == "10.1.2.3:9999"
    assert t.rpc.address == ("10.1.2.3", 9999)
    assert not local.remote  # the original spec is unchanged (frozen)
    assert t.name == local.name and t.mcpu == local.mcpu


def test_with_rpc_key_alone_keeps_the_default_tracker(local):
    t = local.with_rpc(key="mybox")
    assert t.remote and t.rpc.tracker == DEFAULT_TRACKER


def test_with_rpc_nothing_keeps_everything():
    t = load_target("rpi4")
    assert t.with_rpc() == t


def test_with_rpc_board_keeps_its_key_with_a_new_tracker():
    t = load_target("rpi5").with_rpc(tracker="192.168.1.5:9190")
    assert t.rpc.key == "rpi5" and t.rpc.tracker == "192.168.1.5:9190"


def test_with_rpc_bad_tracker(local):
    with pytest.raises(TargetError, match="HOST:PORT"):
        local.with_rpc(tracker="nonsense", key="k")


@pytest.mark.parametrize("key", ["a b", "a:b", "", "a\tb"])
def test_with_rpc_invalid_key(local, key):
    with pytest.raises(TargetError, match="--rpc-key"):
        local.with_rpc(tracker="127.0.0.1:9190", key=key)


def test_env_tracker_overrides_the_files(monkeypatch):
    monkeypatch.setenv(TRACKER_ENV, "10.9.8.7:4242")
    t = load_target("rpi4").with_rpc()
    assert t.rpc.tracker == "10.9.8.7:4242"
    assert t.rpc.address == ("10.9.8.7", 4242)
    assert t.rpc.key == "rpi4"


def test_explicit_tracker_beats_env(monkeypatch):
    monkeypatch.setenv(TRACKER_ENV, "10.9.8.7:4242")
    t = load_target("rpi4").with_rpc(tracker="172.16.0.1:9190")
    assert t.rpc.tracker == "172.16.0.1:9190"


def test_explicit_tracker_beats_malformed_env(monkeypatch):
    monkeypatch.setenv(TRACKER_ENV, "garbage")
    t = load_target("rpi4").with_rpc(tracker="172.16.0.1:9190")
    assert t.rpc.tracker == "172.16.0.1:9190"


@pytest.mark.parametrize("value", ["garbage", "h:0", "h:1:2"])
def test_malformed_env_tracker(monkeypatch, value):
    monkeypatch.setenv(TRACKER_ENV, value)
    with pytest.raises(TargetError, match="HOST:PORT") as ei:
        load_target("rpi4").with_rpc()
    assert value in str(ei.value)


def test_env_tracker_with_key_on_local_target(monkeypatch, local):
    monkeypatch.setenv(TRACKER_ENV, "10.0.0.2:9190")
    t = local.with_rpc(key="k")
    assert t.remote and t.rpc.tracker == "10.0.0.2:9190"


# ------------------------------------------------------------------ check_toolchain


def test_check_toolchain_missing_cross_compiler_names_it_and_its_package():
    t = dataclasses.replace(load_target("rpi4"), cross_compiler="tvmlat-no-such-cc-xyz",
                            cross_package="gcc-tvmlat-xyz-pkg")
    with pytest.raises(TargetError) as ei:
        t.check_toolchain()
    msg = str(ei.value)
    assert "tvmlat-no-such-cc-xyz" in msg
    assert "gcc-tvmlat-xyz-pkg" in msg
    assert "rpi4" in msg


def test_check_toolchain_missing_cross_compiler_without_package():
    t = dataclasses.replace(load_target("rpi4"), cross_compiler="tvmlat-no-such-cc-xyz", cross_package="")
    with pytest.raises(TargetError, match="tvmlat-no-such-cc-xyz"):
        t.check_toolchain()


def test_check_toolchain_empty_path_hides_everything(monkeypatch):
    monkeypatch.setenv("PATH", "")
    t = load_target("jetson-orin-cpu")
    with pytest.raises(TargetError, match="aarch64-linux-gnu-gcc") as ei:
        t.check_toolchain()
    assert "gcc-aarch64-linux-gnu" in str(ei.value)


def test_check_toolchain_no_cross_compiler_passes(monkeypatch, local):
    monkeypatch.setenv("PATH", "")  # nothing on PATH, and nothing is needed
    assert local.check_toolchain() is None
    assert dataclasses.replace(load_target("rpi4"), cross_compiler="").check_toolchain() is None


# ------------------------------------------------------------------ devices(summary)


def test_devices_two_servers_one_free():
    rows = devices(SUMMARY)
    assert len(rows) == 1
    r = rows[0]
    assert r["key"] == "k"
    assert (r["servers"], r["free"], r["busy"], r["pending"]) == (2, 1, 1, 0)
    assert "127.0.0.1:9091" in r["addresses"] and "127.0.0.1:9092" in r["addresses"]


def test_devices_omits_keys_with_no_servers_and_no_requests():
    s = {"queue_info": {"k": {"free": 1, "pending": 0}, "gone": {"free": 0, "pending": 0}},
         "server_info": SUMMARY["server_info"]}
    assert [r["key"] for r in devices(s)] == ["k"]


def test_devices_lists_pending_requests_without_servers():
    s = {"queue_info": {"wanted": {"free": 0, "pending": 3}}, "server_info": []}
    rows = devices(s)
    assert len(rows) == 1
    assert rows[0]["key"] == "wanted"
    assert (rows[0]["servers"], rows[0]["free"], rows[0]["busy"], rows[0]["pending"]) == (0, 0, 0, 3)
    assert rows[0]["addresses"] == ""


def test_devices_server_without_queue_entry_and_sorted_keys():
    s = {"queue_info": {},
         "server_info": [{"key": "server:zeta", "addr": ["10.0.0.2", 9090]},
                         {"key": "server:alpha", "addr": ["10.0.0.1", 9090]}]}
    rows = devices(s)
    assert [r["key"] for r in rows] == ["alpha", "zeta"]
    assert all(r["servers"] == 1 and r["free"] == 0 and r["busy"] == 1 for r in rows)


@pytest.mark.parametrize("summary", [{}, {"queue_info": {}, "server_info": []}])
def test_devices_empty(summary):
    assert devices(summary) == []


# ------------------------------------------------------------------ tracker_summary against no / wrong trackers


def test_tracker_summary_nothing_listening():
    port = free_port()
    with pytest.raises(RPCError, match="cannot reach") as ei:
        tracker_summary(("127.0.0.1", port), timeout=0.5)
    assert f"127.0.0.1:{port}" in str(ei.value)


def test_tracker_summary_accepts_and_closes():
    with StubServer(lambda conn: None) as srv:
        with pytest.raises(RPCError, match="tracker") as ei:
            tracker_summary(("127.0.0.1", srv.port), timeout=0.5)
        assert srv.connections >= 1
    msg = str(ei.value)
    assert "did not answer as a TVM RPC tracker" in msg or "is not a TVM RPC tracker" in msg, msg
    assert str(srv.port) in msg


def test_tracker_summary_wrong_magic():
    def handle(conn):
        _recv_exact(conn, 4)
        conn.sendall(struct.pack("<i", 12345))

    with StubServer(handle) as srv, pytest.raises(RPCError, match="is not a TVM RPC tracker"):
        tracker_summary(("127.0.0.1", srv.port), timeout=0.5)


def test_tracker_summary_silent_server_times_out():
    def handle(conn):
        try:
            conn.recv(4)
            conn.recv(4)  # never answers; the client's timeout ends this
        except OSError:
            pass

    with StubServer(handle) as srv, pytest.raises(RPCError, match="did not answer as a TVM RPC tracker"):
        tracker_summary(("127.0.0.1", srv.port), timeout=0.3)


def test_tracker_summary_from_a_stub_tracker():
    with StubServer(fake_tracker(SUMMARY)) as srv:
        s = tracker_summary(("127.0.0.1", srv.port), timeout=1.0)
    assert s == SUMMARY
    assert devices(s)[0]["servers"] == 2


# ------------------------------------------------------------------ CLI


def test_cli_devices_unreachable_tracker(capsys):
    port = free_port()
    line = assert_user_error(run_cli(["devices", "--tracker", f"127.0.0.1:{port}"], capsys), "cannot reach")
    assert str(port) in line


def test_cli_devices_malformed_tracker(capsys):
    assert_user_error(run_cli(["devices", "--tracker", "nonsense"], capsys), "HOST:PORT")


def test_cli_devices_malformed_env_tracker(capsys, monkeypatch):
    monkeypatch.setenv(TRACKER_ENV, "nonsense")
    assert_user_error(run_cli(["devices"], capsys), "HOST:PORT")


def test_cli_devices_json_from_stub_tracker(capsys):
    with StubServer(fake_tracker(SUMMARY)) as srv:
        code, out, err = run_cli(["devices", "--tracker", f"127.0.0.1:{srv.port}", "--format", "json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert rows == [{"key": "k", "servers": 2, "free": 1, "busy": 1, "pending": 0,
                     "addresses": "127.0.0.1:9091 127.0.0.1:9092"}]


def test_cli_devices_empty_tracker_says_so(capsys, monkeypatch):
    with StubServer(fake_tracker({"queue_info": {}, "server_info": []})) as srv:
        monkeypatch.setenv(TRACKER_ENV, f"127.0.0.1:{srv.port}")  # the address comes from the environment
        code, out, err = run_cli(["devices"], capsys)
    assert code == 0, err
    assert "holds no servers" in out
    assert f"127.0.0.1:{srv.port}" in out


def test_cli_calibrate_tracker_without_key(capsys, tmp_path):
    out_dir = tmp_path / "ds"
    line = assert_user_error(run_cli(["calibrate", "--tracker", "127.0.0.1:1", "--out", out_dir,
                                      "--no-progress"], capsys), "--rpc-key")
    assert "llvm" in line
    assert not list(tmp_path.rglob("*.parquet"))
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_cli_calibrate_bad_rpc_key(capsys, tmp_path):
    assert_user_error(run_cli(["calibrate", "--tracker", "127.0.0.1:1", "--rpc-key", "a b",
                               "--out", tmp_path / "ds", "--no-progress"], capsys), "--rpc-key")
    assert not list(tmp_path.rglob("*.parquet"))


# ------------------------------------------------------------------ RPCRunner


def test_rpc_runner_rejects_local_target():
    with pytest.raises(RPCError, match="--rpc-key") as ei:
        RPCRunner(load_target("llvm"))
    assert "llvm" in str(ei.value)


def test_rpc_runner_checks_the_toolchain_first():
    t = dataclasses.replace(load_target("rpi4"), cross_compiler="tvmlat-no-such-cc-xyz")
    with pytest.raises(TargetError, match="tvmlat-no-such-cc-xyz"):
        RPCRunner(t)


def test_rpc_runner_on_a_remote_target_needs_no_tracker_yet():
    # constructing it touches nothing on the network; the address is parsed from the target
    t = target_from_dict({"name": "loc", "kind": "llvm", "cores": 1}).with_rpc(tracker="127.0.0.1:1", key="k")
    r = RPCRunner(t)
    assert r.addr == ("127.0.0.1", 1)
    assert r.target.rpc.key == "k"
    assert r.stats["sessions"] == 0


@pytest.mark.parametrize("host,warns", [("127.0.0.1", False), ("localhost", False), ("0.0.0.0", True),
                                        ("192.168.1.5", True)])
def test_public_listen_address_warns(host, warns, capsys):
    from tvmlat.cli.rpc_serve import _warn_if_public

    _warn_if_public(host)
    err = capsys.readouterr().err
    assert ("no authentication" in err) == warns


@pytest.mark.parametrize("args, needle", [
    (["tracker", "--port", "-1"], "--port -1 is not a port number (1..65535)"),
    (["tracker", "--port", "65536"], "--port 65536"),
    # TVM's server tries PORT..PORT+99; at 0 it failed with a ValueError traceback
    (["server", "--key", "k", "--tracker", "127.0.0.1:9190", "--port", "0"], "the server tries it"),
    (["server", "--key", "k", "--tracker", "127.0.0.1:9190", "--port", "65500"], "1..65436"),
    (["server", "--key", "a b", "--tracker", "127.0.0.1:9190"], "not a valid key"),
])
def test_tracker_and_server_refuse_bad_ports_before_starting(args, needle, capsys, monkeypatch):
    monkeypatch.setattr("tvmlat.cli.rpc_serve._exec", lambda *a, **k: pytest.fail("started"))
    assert_user_error(run_cli(args, capsys), needle)
