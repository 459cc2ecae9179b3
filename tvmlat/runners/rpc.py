"""RPCRunner: compile here, time on devices behind TVM's RPC tracker.

Per block: a session is requested from the tracker (with a timeout: a key with no free server is an
error after ``request_timeout_s``, never a hang), the exported library is uploaded, timed there
with the same adaptive evaluator as the local runner (``vmtime.time_vm``), and removed.
Sessions carry ``session_timeout`` so the server ends one that runs too long.

A campaign runs one worker thread per server under the key (one block per server at a time),
while a process compiles the following blocks. Each worker talks to its server through a session
process of its own (``SessionProcess``): a frozen board never answers, and the TVM client would
wait on it forever, so a session silent past ``session_timeout`` (+ a grace) is ended by killing
that process; nothing of the dead session stays in the campaign's process. A block whose server
dies or hangs is tried again on a new session, up to ``retries`` times, then recorded as a failed
row; the other servers carry on. If no server is left, the campaign stops with a clear error;
every row measured is already on disk and running the same command again resumes.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import queue
import socket
import struct
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import RPCError
from ..targets import TargetSpec
from .ahead import COMPILE_STALL_S
from .base import RunResult, target_device

#: extra seconds after session_timeout before a silent session is given up on
HANG_GRACE_S = 10.0


def _tracker_socket(addr: tuple[str, int], timeout: float = 5.0) -> socket.socket:
    from tvm.rpc import base

    host, port = addr
    start = "start one with `python -m tvm.exec.rpc_tracker --host 127.0.0.1 --port {}`".format(port)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror:
        raise RPCError(f"tracker host {host!r} is unknown (name lookup failed); check --tracker HOST:PORT") from None
    except OSError as e:
        raise RPCError(f"cannot reach the RPC tracker at {host}:{port} ({e.strerror or e}); {start}, "
                       f"or pass --tracker HOST:PORT") from None
    try:
        sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
        magic = struct.unpack("<i", base.recvall(sock, 4))[0]
    except (OSError, RuntimeError, struct.error):
        sock.close()
        raise RPCError(f"{host}:{port} accepted a connection but did not answer as a TVM RPC tracker") from None
    if magic != base.RPC_TRACKER_MAGIC:
        sock.close()
        raise RPCError(f"{host}:{port} is not a TVM RPC tracker (it answered something else)")
    return sock


def _ask_tracker(addr: tuple[str, int], message: list, what: str, wait: float | None = None,
                 connect_timeout: float = 5.0) -> Any:
    """Send one message to the tracker and return its answer's payload. ``wait``: how long to wait
    for the answer (TimeoutError after that; closing the socket withdraws a pending request)."""
    from tvm.rpc import base

    sock = _tracker_socket(addr, connect_timeout)
    try:
        if wait is not None:
            sock.settimeout(wait)
        base.sendjson(sock, message)
        value = base.recvjson(sock)
    except (OSError, ValueError) as e:
        if isinstance(e, TimeoutError) and wait is not None:
            raise
        raise RPCError(f"the tracker at {addr[0]}:{addr[1]} did not answer a {what} ({e})") from None
    finally:
        sock.close()
    if not isinstance(value, list) or value[0] != base.TrackerCode.SUCCESS:
        raise RPCError(f"the tracker at {addr[0]}:{addr[1]} answered {value!r} to a {what}")
    return value[1]


def tracker_summary(addr: tuple[str, int], timeout: float = 5.0) -> dict[str, Any]:
    """The tracker's summary: ``{"queue_info": {key: {free, pending}}, "server_info": [...]}``."""
    from tvm.rpc import base

    return _ask_tracker(addr, [base.TrackerCode.SUMMARY], "summary request", connect_timeout=timeout)


def devices(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per key: servers registered, free, busy (in a session) and requests waiting."""
    servers: dict[str, list[str]] = {}
    for s in summary.get("server_info", []):
        key = str(s.get("key", "")).split(":", 1)[-1]
        servers.setdefault(key, []).append(":".join(map(str, s.get("addr", []))))
    rows = []
    for key in sorted(set(servers) | set(summary.get("queue_info", {}))):
        q = summary.get("queue_info", {}).get(key, {})
        n = len(servers.get(key, []))
        free = int(q.get("free", 0))
        if n == 0 and not q.get("pending"):
            continue
        rows.append({"key": key, "servers": n, "free": free, "busy": max(0, n - free),
                     "pending": int(q.get("pending", 0)), "addresses": " ".join(sorted(servers.get(key, [])))})
    return rows


def wait_for_servers(addr: tuple[str, int], key: str, timeout: float) -> int:
    """Number of servers registered under ``key``; waits up to ``timeout`` s for the first one."""
    deadline = time.monotonic() + timeout
    while True:
        rows = {r["key"]: r for r in devices(tracker_summary(addr))}
        if key in rows and rows[key]["servers"] > 0:
            return rows[key]["servers"]
        if time.monotonic() >= deadline:
            held = ", ".join(f"{k} ({r['servers']})" for k, r in rows.items()) or "none"
            raise RPCError(
                f"the tracker at {addr[0]}:{addr[1]} has no server under key {key!r} (waited {timeout:g} s; keys "
                f"it holds: {held}); on the device run `python -m tvm.exec.rpc_server --tracker "
                f"{addr[0]}:{addr[1]} --key {key}`, or fix --rpc-key / the target's [rpc] key")
        time.sleep(0.5)


class NoFreeServer(RPCError):
    """No server under the key became free within the request timeout."""


def request_server(addr: tuple[str, int], key: str, request_timeout: float,
                   skip: set[str] | frozenset[str] = frozenset()) -> tuple[str, int, str]:
    """(url, port, match key) of a free server under ``key``, or NoFreeServer after ``request_timeout`` s.

    TVM's ``TrackerSession.request`` waits forever for a free server; here the request's socket
    has a timeout, and closing it withdraws the request (the tracker skips closed requesters).
    Servers in ``skip`` ("url:port", found hung in this campaign) are not taken: a frozen server
    can't tell the tracker it is busy, so the tracker may hand it out again."""
    from tvm.rpc import base

    deadline = time.monotonic() + request_timeout
    while True:
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            url, port, matchkey = _ask_tracker(addr, [base.TrackerCode.REQUEST, key, "", 1], "session request",
                                               wait=left)
        except TimeoutError:
            raise NoFreeServer(f"no server under key {key!r} became free within {request_timeout:g} s "
                               f"(tracker {addr[0]}:{addr[1]})"
                               + (f"; skipped the hung {', '.join(sorted(skip))}" if skip else "")) from None
        if f"{url}:{port}" not in skip:
            return url, port, matchkey


@dataclass
class Job:
    """One block on its way: the workload, how to get its compiled artefact (``fetch`` waits for the
    compile; its result is kept in ``art`` for retries), its features."""

    index: int
    workload: Any
    fetch: Callable[[], dict]
    features: dict
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    art: dict | None = None

    def artefact(self) -> dict:
        if self.art is None:
            try:
                self.art = self.fetch()
            except Exception as e:  # noqa: BLE001 - the compile failed outside a worker's own error handling
                self.art = {"status": "compile_error", "error": f"compile failed: {type(e).__name__}: {e}"}
        return self.art


class RPCRunner:
    """Measures workloads on the servers registered under the target's RPC key."""

    name = "rpc"
    parallel = True

    def __init__(self, target: TargetSpec, check: bool = True, max_servers: int | None = None,
                 hang_grace_s: float = HANG_GRACE_S, cache_dir: str | None = None,
                 compile_stall_s: float | None = None, executor_factory: Callable[[int], Any] | None = None):
        if not target.remote:
            raise RPCError(f"target {target.name!r} names no RPC key; pass --rpc-key KEY or use a board target")
        target.check_toolchain()
        self.target = target
        self.check = check
        self.max_servers = max_servers
        self.hang_grace_s = hang_grace_s
        self.cache_dir = str(cache_dir) if cache_dir else None
        self.addr = target.rpc.address
        # a compile worker that finishes nothing for this long is replaced (ahead.CompileAhead); tuned
        # compiles may tune for minutes, so they are waited for
        self.compile_stall_s = compile_stall_s if compile_stall_s is not None else (
            None if target.profile == "tuned" else COMPILE_STALL_S)
        self.executor_factory = executor_factory  # tests: a pool that never delivers
        self.stats = {"sessions": 0, "retried": 0, "failed": 0, "hung": 0, "servers_lost": 0, "compile_stalls": 0}

    # -- a campaign over all servers ---------------------------------------------------------
    def run_all(self, jobs_in: Sequence[tuple[Any, Callable[[], tuple], dict]],
                on_row: Callable[[Any, RunResult, dict, dict], None],
                on_state: Callable[[dict[int, str]], None] | None = None) -> None:
        """Measure ``(workload, make, features)`` items on every server of the key; ``on_row(w, res,
        feats, extra)`` is called in this thread for each finished block, in completion order."""
        if not jobs_in:
            return
        rpc = self.target.rpc
        n_servers = wait_for_servers(self.addr, rpc.key, rpc.request_timeout_s)
        n_workers = max(1, min(n_servers, len(jobs_in), self.max_servers or n_servers))
        tmp = tempfile.mkdtemp(prefix="tvmlat-rpc-")
        from .ahead import CompileAhead, artefact_name, build_in_turn, compile_to_library

        ahead = CompileAhead(self.target.to_dict(), self.cache_dir, workers=1, stall_s=self.compile_stall_s,
                             executor_factory=self.executor_factory)
        inline = ThreadPoolExecutor(max_workers=1)
        work: queue.Queue = queue.Queue()
        events: queue.Queue = queue.Queue()
        for i, (w, make, feats) in enumerate(jobs_in):
            if w.spec:
                key = f"{i}:{w.key}"
                ahead.submit(key, w.spec)
                fetch = (lambda key=key: ahead.take(key))
            else:
                fut = inline.submit(lambda make=make, key=w.key: compile_to_library(
                    *build_in_turn(make), self.target, tmp, artefact_name(key, ""), check=self.check))
                fetch = fut.result
            work.put(Job(i, w, fetch, feats))
        stop = threading.Event()
        state: dict[int, str] = {}
        hung_servers: set[str] = set()  # "url:port" of servers found hung: never taken again in this campaign
        lock = threading.Lock()
        hang_after = rpc.session_timeout_s + self.hang_grace_s
        sessions = [SessionProcess(self.target.to_dict(), self.check) for _ in range(n_workers)]

        def worker(wid: int) -> None:
            while not stop.is_set():
                try:
                    job = work.get(timeout=0.2)
                except queue.Empty:
                    continue
                try:
                    if not one_job(wid, job):
                        return
                except Exception as e:  # noqa: BLE001 - whatever broke, the job goes back to the main loop
                    job.attempts += 1  # counts against its retries, so a job that always breaks ends as a row
                    events.put(("retry", wid, job, f"worker error: {type(e).__name__}: {_last_line(e)}"))

        def one_job(wid: int, job: Job) -> bool:
            """Measure one job; False when this worker must stop (no server is free for it). Every path
            hands the job on: a row, a retry, or back to the queue."""
            session = sessions[wid]
            # started before a server is taken, and while the block compiles: it takes seconds to import TVM
            session.start(stop)
            art = job.artefact()  # bounded: a stuck compile worker is replaced (CompileAhead)
            if art["status"] != "ok":
                events.put(("row", wid, job, RunResult(status=art["status"], error=art["error"]), ""))
                return True
            if stop.is_set():  # the campaign is closing (it stopped early)
                work.put(job)
                return False
            events.put(("state", wid, f"[yellow]waiting for a session[/] {job.workload.name[:40]}"))
            try:
                with lock:
                    skip = set(hung_servers)
                url, port, matchkey = request_server(self.addr, rpc.key, rpc.request_timeout_s, skip)
            except RPCError as e:
                work.put(job)  # not its fault: another worker (or a later run) measures it
                events.put(("lost", wid, str(e)))
                return False
            server = f"{url}:{port}"
            job.attempts += 1
            events.put(("state", wid, f"[green]{server}[/] {job.workload.name[:40]}"
                                      + (f" (attempt {job.attempts})" if job.attempts > 1 else "")))
            try:
                res = session.measure(url, port, matchkey, art, hang_after, stop)
            except SessionHung as e:
                with lock:
                    hung_servers.add(server)  # a frozen server can't tell the tracker it is busy
                events.put(("hung", wid, job, f"{server}: {e} (session_timeout {rpc.session_timeout_s:g} s)"))
                return True
            except RPCError as e:
                events.put(("retry", wid, job, f"{server}: {e}"))
                return True
            events.put(("row", wid, job, res, server))
            return True

        threads: dict[int, threading.Thread] = {}
        for wid in range(n_workers):
            state[wid] = "[dim]starting"
            threads[wid] = threading.Thread(target=worker, args=(wid,), daemon=True, name=f"tvmlat-rpc-{wid}")
            threads[wid].start()
        done = 0
        lost_msg = ""
        try:
            while done < len(jobs_in):
                try:
                    ev = events.get(timeout=0.2)
                except queue.Empty:
                    ev = None
                if ev is not None:
                    kind, wid = ev[0], ev[1]
                    if kind == "state":
                        state[wid] = ev[2]
                    elif kind == "row":
                        _, _, job, res, server = ev
                        done += 1
                        self.stats["sessions"] += job.attempts
                        self.stats["failed"] += res.status != "ok"
                        state[wid] = "[dim]idle"
                        on_row(job.workload, res, job.features,
                               {"server": server, "attempts": job.attempts, "rpc_errors": " | ".join(job.errors)})
                    elif kind in ("retry", "hung"):
                        _, _, job, err = ev
                        if kind == "hung":
                            self.stats["hung"] += 1
                        self._retry_or_fail(job, err, work, events, wid)
                        state[wid] = f"[red]{'hung; ' if kind == 'hung' else ''}retrying[/] " \
                                     f"{job.workload.name[:30]}: {err[:60]}"
                    elif kind == "lost":
                        lost_msg = ev[2]
                        self.stats["servers_lost"] += 1
                        state[wid] = f"[red]stopped[/]: {lost_msg[:70]}"
                        threads.pop(wid, None)
                if on_state is not None:
                    on_state(dict(state))
                if not threads and done < len(jobs_in):
                    left = len(jobs_in) - done
                    raise RPCError(f"{lost_msg}; {left} blocks were not measured (all others are saved): start "
                                   f"or free servers under key {rpc.key!r} and run the same command again to resume")
        finally:
            stop.set()
            for th in threads.values():
                th.join(5)
            for session in sessions:
                session.close()
            self.stats["compile_stalls"] += ahead.stalls
            ahead.close()
            inline.shutdown(wait=False, cancel_futures=True)
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)

    def _retry_or_fail(self, job: Job, err: str, work: queue.Queue, events: queue.Queue, wid: int) -> None:
        job.errors.append(err)
        if job.attempts <= self.target.rpc.retries:
            self.stats["retried"] += 1
            work.put(job)
        else:
            events.put(("row", wid, job, RunResult(
                status="run_error", error=f"failed on {job.attempts} sessions; last: {err}"[:400]), ""))


def time_on_session(sess, artefact: dict[str, Any], target: TargetSpec, check: bool = True) -> RunResult:
    """Upload the library, time it on the session's device, remove it. Raises on RPC trouble."""
    from tvm import relax

    from .ahead import load_arrays
    from .vmtime import time_vm

    t0 = time.perf_counter()
    name = os.path.basename(artefact["lib"])
    sess.upload(artefact["lib"])
    try:
        dev = target_device(sess, target.kind)
        vm = relax.VirtualMachine(sess.load_module(name), dev)
        ins, ref = load_arrays(artefact["data"], check)
        t1 = time.perf_counter()
        res = time_vm(vm, dev, ins, ref, target.evaluator)
    finally:
        try:
            sess.remove(name)
        except Exception:  # noqa: BLE001 - the session may be gone; the server's temp dir goes with it
            pass
    res.stages = {**artefact.get("stages", {}), **res.stages, "upload_s": t1 - t0}
    return res


class SessionHung(RPCError):
    """The session answered nothing for longer than the server's own timeout allows."""


def _session_main(conn, target: dict[str, Any], check: bool) -> None:
    """A session process: say it is ready, then for each ``(url, port, key, artefact)`` received,
    connect, time the artefact and send back ``("ok", RunResult)`` or ``("error", text)``; ends on
    ``None`` or when the campaign's end of the pipe closes."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the campaign's to handle
    from tvm import rpc as tvm_rpc

    spec = TargetSpec.from_dict(target)
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        url, port, key, art = msg
        sess = None
        try:
            sess = tvm_rpc.connect(url, port, key, session_timeout=spec.rpc.session_timeout_s)
            answer = ("ok", time_on_session(sess, art, spec, check))
        except Exception as e:  # noqa: BLE001 - the server died, hung up or failed the block
            answer = ("error", f"{type(e).__name__}: {_last_line(e)}")
        finally:
            # the session ends (and the server goes back to the tracker) only when the last
            # reference to it goes; remote modules and tensors hold some in reference cycles
            del sess
            gc.collect()
        conn.send(answer)


class SessionProcess:
    """A worker's own process for RPC sessions (``_session_main``), started on first use.

    TVM's client waits forever on a server that stops answering (a frozen board accepts the TCP
    connection and never replies). Here the waiting is on a pipe, with a deadline: past it the
    process is killed, which ends everything of that session at once, and the next block gets a
    fresh process. Before, the session ran in the worker thread, which could only be abandoned,
    still blocked, with the dead session's objects in the campaign's own process."""

    #: seconds a new session process may take to start (it imports TVM)
    START_S = 120.0

    def __init__(self, target: dict[str, Any], check: bool):
        self.target, self.check = target, check
        self.proc = None
        self.conn = None

    def _wait(self, seconds: float, stop: threading.Event | None) -> bool:
        """Whether an answer arrived within ``seconds`` (False also when ``stop`` is set meanwhile)."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                return False
            if self.conn.poll(min(left, 0.2)):
                return True

    def start(self, stop: threading.Event | None = None) -> None:
        """Start the process (if not running) and wait until it has imported TVM."""
        if self.proc is not None and self.proc.is_alive():
            return
        self.kill()
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_session_main, args=(child, self.target, self.check), daemon=True,
                                name="tvmlat-rpc-session")
        self.proc.start()
        child.close()
        answered = self._wait(self.START_S, stop)
        try:
            ready = answered and self.conn.recv()[0] == "ready"
        except (EOFError, OSError):  # it died while starting
            ready = False
        if not ready:
            code = self._end(2 if answered else 0)
            raise RPCError("the RPC session process " + (
                f"died while starting (exit code {code})" if code is not None else
                "was stopped while starting" if stop is not None and stop.is_set() else
                f"did not start within {self.START_S:g} s"))

    def measure(self, url: str, port: int, key: str, art: dict[str, Any], deadline_s: float,
                stop: threading.Event | None = None) -> RunResult:
        """Time ``art`` on the server; SessionHung past ``deadline_s`` s (the process is killed), RPCError
        when the session failed (its last error line) or the process died."""
        self.start(stop)
        t0 = time.monotonic()
        self.conn.send((url, port, key, art))
        try:
            if not self._wait(deadline_s, stop):
                self.kill()
                if stop is not None and stop.is_set():
                    raise RPCError("the campaign stopped during the session")
                raise SessionHung(f"session hung for {time.monotonic() - t0:.0f} s")
            kind, value = self.conn.recv()
        except (EOFError, OSError):
            raise RPCError(f"the session process died (exit code {self._end(2)})") from None
        if kind == "ok":
            return value
        raise RPCError(value)

    def _end(self, wait_s: float) -> int | None:
        """Kill the process after waiting up to ``wait_s`` for it to exit; its exit code (None: it had not
        exited by itself)."""
        self.proc.join(wait_s)
        code = self.proc.exitcode
        self.kill()
        return code

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(5)
        if self.conn is not None:
            self.conn.close()
        self.proc = self.conn = None

    def close(self) -> None:
        """Ask an idle process to end; kill it if it does not (it may be in a hung session)."""
        if self.proc is not None and self.proc.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(2)
        self.kill()


def _last_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""
