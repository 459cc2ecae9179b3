"""CompileAhead: waiting on a compile worker is bounded, and a stuck worker pool is replaced.

A thread pool stands in for the worker processes and a fake compile for TVM, so these run in
milliseconds; "stuck" is a pool whose futures never complete, as seen once in CI (a worker idle
while the campaign waited on its compile for 18 minutes).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from tvmlat.runners import ahead as ahead_mod
from tvmlat.runners.ahead import CompileAhead


class StuckPool:
    """An executor that accepts work and never runs it."""

    def __init__(self):
        self.submitted = 0
        self.shut = False

    def submit(self, fn, *args, **kwargs):
        self.submitted += 1
        return Future()

    def shutdown(self, wait=True, cancel_futures=False):
        self.shut = True


@pytest.fixture
def fake_compile(monkeypatch):
    """compile_spec_to_library without TVM: records where each spec was compiled."""
    where: list[tuple[str, str]] = []

    def compile_spec(spec_json, target, out_dir, cache_dir=None):
        where.append((spec_json, threading.current_thread().name))
        return {"status": "ok", "lib": f"{out_dir}/{spec_json}.so", "data": "", "stages": {}}

    monkeypatch.setattr(ahead_mod, "compile_spec_to_library", compile_spec)
    return where


def pools(*first):
    """A factory handing out ``first`` pools in turn, then working thread pools."""
    made: list = []
    queue = list(first)

    def factory(workers):
        pool = queue.pop(0) if queue else ThreadPoolExecutor(workers, thread_name_prefix="pool")
        made.append(pool)
        return pool

    return factory, made


def test_a_stuck_pool_is_replaced_and_the_awaited_block_compiled_here(fake_compile, capsys):
    stuck = StuckPool()
    factory, made = pools(stuck)
    ca = CompileAhead({}, stall_s=0.5, executor_factory=factory)
    for k in ("a", "b", "c"):
        ca.submit(k, f"spec-{k}")
    got = ca.take("a")  # without the bound this waits forever
    assert got["status"] == "ok" and got["lib"].endswith("spec-a.so")
    assert ca.stalls == 1 and stuck.shut and len(made) == 2
    assert ("spec-a", threading.current_thread().name) in fake_compile  # compiled in the caller
    # the others went to the new pool and are delivered from there
    assert ca.take("b")["lib"].endswith("spec-b.so") and ca.take("c")["lib"].endswith("spec-c.so")
    assert {w for s, w in fake_compile if s != "spec-a"} <= {f"pool_{i}" for i in range(4)}
    assert "compile worker finished nothing" in capsys.readouterr().err
    ca.close()


def test_wait_replaces_a_stuck_pool_and_returns(fake_compile):
    factory, made = pools(StuckPool())
    ca = CompileAhead({}, stall_s=0.3, executor_factory=factory)
    ca.submit("a", "spec-a")
    ca.wait()  # would never return on the stuck pool
    assert ca.stalls == 1 and ca.futures["a"].done()
    assert ca.take("a")["status"] == "ok"
    ca.close()


def test_wait_gives_up_after_a_second_stall(fake_compile):
    ca = CompileAhead({}, stall_s=0.2, executor_factory=lambda n: StuckPool())  # every pool is stuck
    ca.submit("a", "spec-a")
    ca.wait()  # returns: the next take() compiles the block here
    assert ca.stalls == 2 and not ca.futures["a"].done()
    assert ca.take("a")["status"] == "ok" and ca.stalls == 3
    ca.close()


def test_no_bound_waits_for_a_slow_worker(fake_compile):
    """stall_s=None (the tuned profile): a compile that takes longer is waited for, not replaced."""
    release = threading.Event()

    class Slow(ThreadPoolExecutor):
        def submit(self, fn, *a, **k):
            return super().submit(lambda: release.wait() and fn(*a, **k))

    factory, made = pools(Slow(1))
    ca = CompileAhead({}, stall_s=None, executor_factory=factory)
    ca.submit("a", "spec-a")
    threading.Timer(0.5, release.set).start()
    assert ca.take("a")["status"] == "ok" and ca.stalls == 0 and len(made) == 1
    ca.close()


def test_an_idle_pool_does_not_count_as_stuck_when_work_arrives(fake_compile):
    """The clock starts when an idle pool gets work, not at its last result long ago."""
    factory, made = pools()
    ca = CompileAhead({}, stall_s=1.0, executor_factory=factory)
    ca.submit("a", "spec-a")
    assert ca.take("a")["status"] == "ok"
    threading.Event().wait(1.5)  # idle for longer than stall_s
    gate = threading.Event()
    orig = ahead_mod.compile_spec_to_library
    ahead_mod.compile_spec_to_library = lambda *a: gate.wait(5) and orig(*a)
    try:
        ca.submit("b", "spec-b")
        threading.Timer(0.2, gate.set).start()
        assert ca.take("b")["status"] == "ok"
    finally:
        ahead_mod.compile_spec_to_library = orig
    assert ca.stalls == 0
    ca.close()


def test_take_after_close_is_a_failed_row_not_a_spin(fake_compile):
    factory, made = pools(StuckPool())
    ca = CompileAhead({}, stall_s=None, executor_factory=factory)
    ca.submit("a", "spec-a")
    ca.close()
    got = ca.take("a")
    assert got["status"] == "compile_error" and "cancelled" in got["error"]


def test_a_worker_that_dies_gives_a_failed_row():
    class Dying(ThreadPoolExecutor):
        def submit(self, fn, *a, **k):
            def die():
                raise RuntimeError("LLVM crashed")
            return super().submit(die)

    factory, made = pools(Dying(1))
    ca = CompileAhead({}, executor_factory=factory)
    ca.submit("a", "spec-a")
    got = ca.take("a")
    assert got["status"] == "compile_error" and "LLVM crashed" in got["error"]
    assert ca.take("never-submitted") is None
    ca.close()
