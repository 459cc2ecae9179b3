"""Compile ahead: a worker process compiles the next blocks while this one times the current one.

On the untuned CPU profile the measured code is single-threaded, and exporting, importing and
compiling a block takes ~0.8 s against ~0.3 s of timing, so doing them side by side nearly halves
a calibration. The worker writes each compiled block as a shared library (``export_library``)
plus its inputs and torch's reference outputs; the runner loads the library and times it. The
same artefact is what a remote board or an offline machine would receive.
"""

from __future__ import annotations

import multiprocessing
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable

from .base import build_error


def _worker_init() -> None:
    """Ctrl-C is the campaign's to handle, not the worker's; torch.export's FutureWarnings are noise."""
    import warnings

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warnings.filterwarnings("ignore", category=FutureWarning)


def compile_spec_to_library(spec_json: str, target: dict[str, Any], out_dir: str,
                            cache_dir: str | None = None) -> dict[str, Any]:
    """Build a block from its spec, compile it, export the library (or take it from the compile
    cache in ``cache_dir``); runs in the worker process, or in-process for uncached targets."""
    from ..blocks import build_block
    from ..specs import BlockSpec
    from ..targets import TargetSpec

    spec = BlockSpec.from_json(spec_json)
    cache = None
    if cache_dir:
        from ..cache import CompileCache

        cache = CompileCache(cache_dir, target)
        hit = cache.get(spec.block_id)
        if hit is not None:
            return hit
    try:
        module, inputs = build_in_turn(lambda: build_block(spec))
    except Exception as e:  # noqa: BLE001
        return {"status": "export_error", "error": build_error(e)}
    art = compile_to_library(module, inputs, TargetSpec.from_dict(target), out_dir, spec.block_id)
    return cache.put(spec.block_id, art) if cache is not None else art


#: torch.export is not thread-safe (two at once in one process fail with "ProxyTorchDispatchMode slot
#: already occupied"): compiles in this process take turns
_COMPILE_LOCK = threading.Lock()


def build_in_turn(make: Callable[[], Any]) -> Any:
    """``make()`` (build a module and its inputs) while no compile of this process runs. Building a torch
    module touches torch.fx's process-wide node metadata, which torch.export reads while it traces: one
    thread building blocks while another exported failed both with ``KeyError: 'custom'`` (19 of 57 tries;
    seen once in CI, in the RPC runner after a stalled compile worker was replaced by threads)."""
    with _COMPILE_LOCK:
        return make()


def compile_to_library(module, inputs, target, out_dir: str, name: str, check: bool = True) -> dict[str, Any]:
    """Compile ``module`` for ``target`` into ``out_dir/name.so`` (cross-linked for boards) plus
    ``name.npz`` with its inputs and torch's reference outputs. Failures come back as a status."""
    import numpy as np

    from ..compile import StageError, compile_module

    try:
        with _COMPILE_LOCK:
            c = compile_module(module, inputs, target, reference=check)
    except StageError as e:
        return {"status": f"{e.stage}_error", "error": str(e)}
    except Exception as e:  # noqa: BLE001 - the block was built already: whatever else fails is the compile's
        return {"status": "compile_error", "error": f"compile failed: {type(e).__name__}: {e}"}
    lib = str(Path(out_dir) / f"{name}.so")
    try:
        target.export_library(c.executable, lib)
    except Exception as e:  # noqa: BLE001
        return {"status": "compile_error", "error": f"export_library failed: {type(e).__name__}: {e}"}
    data = str(Path(out_dir) / f"{name}.npz")
    np.savez(data, **{f"in{i}": a for i, a in enumerate(c.inputs)},
             **{f"ref{i}": a for i, a in enumerate(c.reference or [])})
    return {"status": "ok", "lib": lib, "data": data, "stages": c.stages}


def artefact_name(key: str, spec: str) -> str:
    """File name for a workload's library/data: its block id, or (model entries, whose names may
    hold '/' or spaces) a hash of its key."""
    import hashlib

    return key if spec else hashlib.sha1(key.encode()).hexdigest()[:16]


def load_arrays(data_path: str, check: bool = True) -> tuple[list, list | None]:
    """(inputs, reference outputs or None) from an artefact's .npz."""
    import numpy as np

    with np.load(data_path) as data:
        ins = [data[f"in{i}"] for i in range(sum(k.startswith("in") for k in data.files))]
        refs = [data[f"ref{i}"] for i in range(sum(k.startswith("ref") for k in data.files))]
    return ins, (refs if check and refs else None)


#: seconds a compile worker may go without finishing anything, while a caller waits on it, before it
#: counts as stuck: its pool is then replaced and the block compiled in this process (``CompileAhead``)
COMPILE_STALL_S = 300.0


class CompileAhead:
    """``workers`` worker processes compiling block specs into a temporary folder, keyed by block id.

    Waiting on a worker is bounded. A campaign once waited 18 minutes on a compile that the
    (idle) worker never received (README, "Tests, CI and benchmarks"); the cause was not found.
    So when a caller has waited ``stall_s`` seconds and no compile finished meanwhile, the pool is
    taken as stuck: it is shut down, a new one gets every compile still pending, and the awaited
    block is compiled in this process. ``stalls`` counts how often that happened. ``stall_s=None``
    waits forever (the tuned profile, whose compiles may tune for minutes). Safe to call from
    several threads (the RPC runner's workers)."""

    def __init__(self, target: dict[str, Any], cache_dir: str | None = None, workers: int = 1,
                 stall_s: float | None = COMPILE_STALL_S, executor_factory: Callable[[int], Any] | None = None):
        self.target = target
        self.cache_dir = cache_dir
        self.workers = max(1, int(workers))
        self.stall_s = stall_s
        self.dir = tempfile.mkdtemp(prefix="tvmlat-ahead-")
        self._factory = executor_factory or _spawn_pool
        self.pool = self._factory(self.workers)
        self.futures: dict[str, Future] = {}
        self.specs: dict[str, str] = {}
        self.stalls = 0
        self._last_done = time.monotonic()  # when a compile last finished (or the pool was last replaced)
        self._lock = threading.RLock()

    def submit(self, key: str, spec_json: str) -> None:
        with self._lock:
            if key not in self.futures and spec_json:
                if all(f.done() for f in self.futures.values()):
                    self._last_done = time.monotonic()  # an idle pool gets work: its clock starts now
                self.specs[key] = spec_json
                self.futures[key] = self._submit(spec_json)

    def _submit(self, spec_json: str) -> Future:
        fut = self.pool.submit(compile_spec_to_library, spec_json, self.target, self.dir, self.cache_dir)
        fut.add_done_callback(self._finished)
        return fut

    def _finished(self, fut: Future) -> None:
        if not fut.cancelled():
            self._last_done = time.monotonic()

    def _stalled(self) -> bool:
        return self.stall_s is not None and time.monotonic() - self._last_done > self.stall_s

    def _replace_pool(self) -> None:
        """Shut the stuck pool down (killing its workers) and give its pending compiles to a new one."""
        old = self.pool
        self.stalls += 1
        sys.stderr.write(f"warning: the compile worker finished nothing in {self.stall_s:g} s; replaced it (the block "
                         f"waited for is compiled in this process)\n")
        self.pool = self._factory(self.workers)
        self._last_done = time.monotonic()
        for key, fut in list(self.futures.items()):
            if not fut.done():
                fut.cancel()
                self.futures[key] = self._submit(self.specs[key])
        old.shutdown(wait=False, cancel_futures=True)
        for proc in list((getattr(old, "_processes", None) or {}).values()):
            try:
                proc.kill()
            except Exception:  # noqa: BLE001 - already gone
                pass

    def wait(self) -> None:
        """Block until every submitted compile has finished (results stay for ``take``); a stuck
        pool is replaced, and after that a second stall stops the waiting (``take`` copes)."""
        for _ in range(2):
            while True:
                with self._lock:
                    pending = [f for f in self.futures.values() if not f.done()]
                    if not pending:
                        return
                    if self._stalled():
                        self._replace_pool()
                        break
                wait(pending, timeout=1.0)

    def take(self, key: str) -> dict[str, Any] | None:
        """The worker's result for ``key`` (waits for it), or None if it was never submitted."""
        while True:
            with self._lock:
                fut = self.futures.get(key)
                if fut is None:
                    return None
                stuck = not fut.done() and self._stalled()
                if fut.done() or stuck:
                    del self.futures[key]
                    spec = self.specs.pop(key)
                    if stuck:
                        self._replace_pool()
                    break
            try:
                fut.result(timeout=1.0)
            except Exception:  # noqa: BLE001 - still running (timeout), or failed: both handled above
                pass
        if stuck:  # the block the caller waits for is compiled here, now, rather than queued again
            return compile_spec_to_library(spec, self.target, self.dir, self.cache_dir)
        if fut.cancelled():
            return {"status": "compile_error", "error": "the compile was cancelled (the campaign is closing)"}
        try:
            return fut.result()
        except Exception as e:  # noqa: BLE001 - the worker died (e.g. a crash in LLVM): a failed row
            return {"status": "compile_error", "error": f"compile worker failed: {type(e).__name__}: {e}"}

    def close(self) -> None:
        with self._lock:
            for f in self.futures.values():
                f.cancel()
            self.pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def _spawn_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init)
