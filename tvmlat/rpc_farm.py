"""A tracker and RPC servers on 127.0.0.1, as real processes: for tests, benchmarks and trying things.

Each TVM tracker and server forks helper processes (``tvm.exec.popen_worker``, one more per session),
so they are ended as process trees, by PID. Everything binds to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _die_with_parent_fn():
    """A function for ``preexec_fn`` (Linux): the child gets SIGKILL when the process that started it
    dies, so a test run ended hard (faulthandler's watchdog, SIGKILL) leaves no tracker or server
    behind, a frozen (SIGSTOP) one included. Resolved here, in the parent: the child runs between
    fork and exec, where importing could deadlock on a lock another thread held at the fork."""
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the farm's close() still ends them
        return None
    sig = int(signal.SIGKILL)
    return lambda: prctl(1, sig)  # PR_SET_PDEATHSIG


def kill_tree(proc: subprocess.Popen, sig: int | None = None) -> None:
    """Kill a process and every process it forked (SIGKILL unless ``sig`` says otherwise)."""
    import signal

    import psutil

    try:
        parent = psutil.Process(proc.pid)
        family = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        try:
            p.send_signal(sig or signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    if sig is None:
        psutil.wait_procs(family, timeout=5)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class LocalFarm:
    """A tracker plus ``n_servers`` servers under ``key``, all on 127.0.0.1; a context manager."""

    def __init__(self, n_servers: int = 1, key: str = "local", log_dir: str | Path | None = None,
                 env: dict[str, str] | None = None, server_cmd: list[str] | None = None):
        self.key = key
        self.port = free_port()
        self.log_dir = Path(log_dir) if log_dir else None
        self.env = {**os.environ, **(env or {})}
        self.server_cmd = server_cmd or [sys.executable]
        self.tracker: subprocess.Popen | None = None
        self.servers: list[subprocess.Popen] = []
        self.n_servers = n_servers
        self._preexec = _die_with_parent_fn()  # resolved once, for every process the farm starts

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _log(self, name: str):
        if self.log_dir is None:
            return subprocess.DEVNULL
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115 - lives as long as the process

    def start(self) -> "LocalFarm":
        self.tracker = subprocess.Popen(
            [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", LOOPBACK, "--port", str(self.port),
             "--port-end", str(self.port + 1)], stdout=self._log("tracker"), stderr=subprocess.STDOUT, env=self.env,
            preexec_fn=self._preexec)
        self._wait_tracker()
        for _ in range(self.n_servers):
            self.add_server()
        self.wait_servers(self.n_servers)
        return self

    def add_server(self, key: str | None = None) -> subprocess.Popen:
        port = free_port()
        p = subprocess.Popen(
            self.server_cmd + ["-m", "tvm.exec.rpc_server", "--tracker", self.address, "--key", key or self.key,
                               "--host", LOOPBACK, "--port", str(port), "--port-end", str(port + 1)],
            stdout=self._log(f"server{len(self.servers)}"), stderr=subprocess.STDOUT, env=self.env,
            preexec_fn=self._preexec)
        self.servers.append(p)
        return p

    def _wait_tracker(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.tracker.poll() is not None:
                raise RuntimeError(f"the tracker exited with {self.tracker.returncode} (is tornado installed?)")
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the tracker did not listen on {self.address} within {timeout} s")

    def wait_servers(self, n: int, timeout: float = 60) -> None:
        from .runners.rpc import devices, tracker_summary

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = {r["key"]: r for r in devices(tracker_summary((LOOPBACK, self.port)))}
            if rows.get(self.key, {}).get("free", 0) >= n:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{n} servers did not register under {self.key!r} within {timeout} s")

    def kill_server(self, i: int) -> None:
        kill_tree(self.servers[i])

    def close(self) -> None:
        for p in self.servers:
            kill_tree(p)
        if self.tracker is not None:
            kill_tree(self.tracker)

    def __enter__(self) -> "LocalFarm":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()
