"""Make MetaSchedule affordable on a small machine.

Importing ``tvm.s_tir.tensor_intrin`` (MetaSchedule's build function does, in every builder worker
it starts, and TVM starts fresh workers for every batch of candidates) parses ~250 TVMScript
functions, and TVMScript's ``prim_func`` calls ``inspect.stack()`` for each. ``inspect.stack``
looks up the module of every frame by scanning all of ``sys.modules``, so that import took 43 s
in a bare interpreter here and 68 s with torch loaded: most of a small block's tuning time.
``fast_tensor_intrin`` does the same import with a stack walk that only reads the one source line
TVMScript looks at (4.5 s). It is stdlib-only at import time, so builder workers can run it as
their initializer without importing torch or tvmlat's heavier modules.
"""

from __future__ import annotations

import contextlib
import inspect
import linecache
import sys


def _light_stack(context: int = 1) -> list[inspect.FrameInfo]:
    """``inspect.stack()`` without the per-frame module search: frame, file, line, function and the
    current source line (what TVMScript's parser reads), for the caller's frame and its callers."""
    frame = sys._getframe(1)
    out = []
    while frame is not None:
        filename, lineno = frame.f_code.co_filename, frame.f_lineno
        line = linecache.getline(filename, lineno) if context > 0 else ""
        out.append(inspect.FrameInfo(frame, filename, lineno, frame.f_code.co_name,
                                     [line] if line else None, 0 if line else None))
        frame = frame.f_back
    return out


@contextlib.contextmanager
def light_inspect_stack():
    """Within the block, ``inspect.stack`` is ``_light_stack`` (restored afterwards)."""
    saved = inspect.stack
    inspect.stack = _light_stack
    try:
        yield
    finally:
        inspect.stack = saved


def fast_tensor_intrin() -> None:
    """Import ``tvm.s_tir.tensor_intrin`` quickly (see the module docstring); a no-op once imported.
    Used in this process before tuning and as the initializer of MetaSchedule's builder workers."""
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    with light_inspect_stack():
        import tvm.s_tir.tensor_intrin  # noqa: F401


def _export_library(cross_compiler: str, mod) -> str:
    """MetaSchedule's export step for a board: a shared library linked by the board's cross compiler
    (TVM's default exports a tar that the board would have to link itself)."""
    import os
    import tempfile

    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(), "tvm_tmp_mod.so")
    mod.export_library(path, fcompile=cc.cross_compiler(cross_compiler))
    return path


def reusing_builder(timeout_s: float, max_workers: int | None = None, uses_per_worker: int = 64,
                    cross_compiler: str = ""):
    """A MetaSchedule builder like ``LocalBuilder`` whose worker processes live across batches.

    ``LocalBuilder`` starts new workers for every batch of candidates (and once more for a sanity
    check), because workers leak memory over many builds; each start costs a TVM import plus
    ``tensor_intrin`` (seconds each, see above), paid once per batch of 16 candidates. Here a
    worker is replaced after ``uses_per_worker`` builds instead, which bounds the leak the same
    way. Timeouts and exceptions become failed ``BuilderResult``s exactly as in ``LocalBuilder``.
    ``cross_compiler``: link candidates into shared libraries with it (for a board over RPC).
    """
    import functools
    import os

    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import _serialize_params, _worker_func
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    workers = max_workers or os.cpu_count() or 1
    f_export = functools.partial(_export_library, cross_compiler) if cross_compiler else None

    @derived_object
    class ReusingBuilder(PyBuilder):
        def __init__(self) -> None:
            super().__init__()
            self.pool = None

        def build(self, build_inputs):
            if self.pool is None:
                self.pool = PopenPoolExecutor(max_workers=workers, timeout=timeout_s,
                                              initializer=fast_tensor_intrin,
                                              maximum_process_uses=uses_per_worker)
            args = [(None, f_export, b.mod, b.target, _serialize_params(b.params)) for b in build_inputs]
            results = []
            for r in self.pool.map_with_error_catching(lambda x: _worker_func(*x), args):
                if r.status == StatusKind.COMPLETE:
                    results.append(BuilderResult(r.value, None))
                elif r.status == StatusKind.TIMEOUT:
                    results.append(BuilderResult(None, f"builder: timeout, killed after {timeout_s} s"))
                else:
                    results.append(BuilderResult(None, f"builder: an exception occurred\n{r.value}"))
            return results

        def close(self) -> None:
            if self.pool is not None:
                self.pool.shutdown()
                self.pool = None

    return ReusingBuilder()


class DeferredInterrupts:
    """Ctrl-C during tuning, deferred to the next chunk boundary.

    A KeyboardInterrupt raised while MetaSchedule's C++ loop is calling back into Python ends in a
    segmentation fault (seen here). So the first Ctrl-C only sets ``pending`` (and says so); the
    caller raises KeyboardInterrupt between chunks, when every finished candidate is in the
    database. A second Ctrl-C interrupts at once. Outside the main thread this does nothing.
    """

    def __init__(self, console=None):
        import signal
        import threading

        self.pending = 0
        self._saved = None
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                self.pending += 1
                if self.pending > 1:
                    raise KeyboardInterrupt
                msg = "Ctrl-C: stopping after the kernels being tuned now (Ctrl-C again to stop at once)"
                (console.print(f"[yellow]{msg}[/]") if console is not None else print(msg, file=sys.stderr))
            self._saved = signal.signal(signal.SIGINT, handler)

    def restore(self) -> None:
        import signal

        if self._saved is not None:
            signal.signal(signal.SIGINT, self._saved)
            self._saved = None


def tuning_pipeline(mod, tvm_target):
    """The Relax passes before task extraction (the same as ``tvm.s_tir.meta_schedule.tune_relax``'s)."""
    import tvm
    from tvm import relax

    with tvm_target:
        return tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                         relax.transform.CanonicalizeBindings(),
                                         relax.pipeline.zero_pipeline()])(mod)


_DATABASES: dict[str, object] = {}
DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")


def unpack_database(work_dir) -> bool:
    """A shipped database is gzipped (the JSON of ~380 kernels' IR is ~30 MB, gzipped ~2 MB; git keeps
    the .gz). Unpack ``*.json.gz`` where its ``*.json`` is missing; True if anything was unpacked."""
    import gzip
    import shutil
    from pathlib import Path

    done = False
    for name in DATABASE_FILES:
        plain, packed = Path(work_dir) / name, Path(work_dir) / (name + ".gz")
        if packed.exists() and not plain.exists():
            tmp = plain.with_suffix(".json.tmp")
            with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.replace(plain)
            done = True
    return done


def open_database(target):
    """The target's shared MetaSchedule JSON database (created if missing), opened once per process.

    Loading parses every workload's IR: ~7 s for 124 tasks here, ~20 s for a 100-block campaign's
    ~380, which measuring a tuned campaign would pay per block. Records this process adds go through
    the same object (and to disk); records another process adds meanwhile are not seen, which at
    worst tunes a task twice.
    """
    from tvm.s_tir import meta_schedule as ms

    work_dir = target.database_dir()
    work_dir.mkdir(parents=True, exist_ok=True)
    unpack_database(work_dir)
    key = str(work_dir.resolve())
    if key not in _DATABASES or not (work_dir / "database_workload.json").exists():  # new, or deleted since
        _DATABASES[key] = ms.database.JSONDatabase(work_dir=key)
    return _DATABASES[key]


def candidate_builder(target):
    """The candidate builder for ``target`` (cross-linking for a board)."""
    return reusing_builder(target.tuning.builder_timeout_s, cross_compiler=target.cross_compiler)


def candidate_runner(target):
    """Where candidates run: this machine, or the target's board through its RPC tracker and key
    (MetaSchedule's RPC runner, with the target's session timeout, so a hung board can't hang tuning)."""
    from tvm.s_tir import meta_schedule as ms

    from .targets import parse_tracker

    if not target.remote:
        return ms.runner.LocalRunner(timeout_sec=target.tuning.builder_timeout_s)
    host, port = parse_tracker(target.rpc.tracker)
    return ms.runner.RPCRunner(rpc_config=ms.runner.RPCConfig(
        tracker_host=host, tracker_port=port, tracker_key=target.rpc.key,
        session_timeout_sec=int(target.rpc.session_timeout_s)), max_workers=1)


def tune_extracted(tasks, target, db, builder=None, runner=None) -> None:
    """MetaSchedule-tune ``tasks`` (extracted tasks not yet in ``db``) with the target's budget per task;
    every measured candidate is committed to ``db`` as it comes, so an interruption keeps them.
    Candidates are measured where the target is: locally, or on its board over RPC."""
    import logging

    from tvm.s_tir import meta_schedule as ms

    # MetaSchedule logs every search step at INFO/DEBUG; keep its warnings only
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    ms_logger.setLevel(logging.WARNING)
    # MetaSchedule re-configures this logger with the *names* of its handlers; an unnamed handler
    # someone attached (seen under pytest's log capture) makes that fail with "'NoneType' object has
    # no attribute 'format'", so such handlers are detached for the tuning run
    for h in [h for h in ms_logger.handlers if h.get_name() is None]:
        ms_logger.removeHandler(h)
    fast_tensor_intrin()
    work_dir = str(target.database_dir())
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        tasks, work_dir=work_dir,
        strategy=ms.search_strategy.EvolutionarySearch(population_size=target.tuning.population))
    n = target.tuning.trials_per_task
    own = builder is None
    builder = builder or candidate_builder(target)
    try:
        ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=work_dir, max_trials_global=n * len(tasks),
                      max_trials_per_task=n, num_trials_per_iter=min(n, 16), database=db, builder=builder,
                      runner=runner or candidate_runner(target))
    finally:
        if own:
            builder.close()


def block_tasks(module, inputs, target) -> list:
    """MetaSchedule's tasks (fused kernels) of one torch block for ``target``."""
    from tvm.s_tir import meta_schedule as ms

    from .compile import to_relax

    tvm_target = target.tvm_target()
    return list(ms.relax_integration.extract_tasks(tuning_pipeline(to_relax(module, inputs), tvm_target), tvm_target))


def tune_ahead(workloads, target, *, budget_s: float | None = None, console=None, show_progress: bool = True,
               chunk: int = 4) -> dict:
    """Tune the kernels of many blocks before any is measured (the tuned profile's first phase).

    Every block's tasks are extracted, deduplicated by workload (structurally equal kernels are one
    task) and against the target's shared database, then tuned a few tasks at a time with one
    builder and one runner for the whole run, in block order, so the blocks become ready one
    after another. ``budget_s`` stops tuning between chunks once that much time is spent. Returns
    ``{"ready": keys of blocks whose every task is in the database, "tasks_of": {key: number of tasks}, "blocks", "tasks", "unique",
    "already_tuned", "tuned", "extract_s", "tune_s", "stopped"}``. Blocks that fail to export or
    import are left out here; measuring them reports the failure as a row.
    """
    import time

    import tvm_ffi
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    t0 = time.perf_counter()
    db = open_database(target)
    per_block: dict[str, list[int]] = {}
    unique: dict[int, object] = {}  # structural hash -> task, first block first
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("{task.fields[last]}"), console=console,
                        disable=not show_progress, transient=False)
    with progress:
        bar = progress.add_task("extracting kernels", total=len(workloads), last="")
        for w in workloads:
            try:
                module, inputs = w.make()
                tasks = block_tasks(module, inputs, target)
            except Exception:  # noqa: BLE001 - measured (and reported) as a failed row later
                tasks = None
            if tasks is not None:
                keys = []
                for task in tasks:
                    h = tvm_ffi.structural_hash(task.dispatched[0])
                    unique.setdefault(h, task)
                    keys.append(h)
                per_block[w.key] = keys
            progress.update(bar, advance=1, last=w.name)
        extract_s = time.perf_counter() - t0
        done = {h for h, task in unique.items() if db.has_workload(task.dispatched[0])}
        todo = [(h, task) for h, task in unique.items() if h not in done]
        bar = progress.add_task("tuning kernels", total=len(todo), last="")
        t1 = time.perf_counter()
        stopped = ""
        builder = candidate_builder(target)
        runner = candidate_runner(target) if todo else None
        interrupts = DeferredInterrupts(console)
        try:
            for i in range(0, len(todo), chunk):
                if interrupts.pending:  # Ctrl-C while the last chunk was tuning: its records are saved
                    raise KeyboardInterrupt
                if budget_s is not None and time.perf_counter() - t1 >= budget_s:
                    stopped = f"tuning budget spent ({time.perf_counter() - t1:.0f} s)"
                    break
                part = todo[i:i + chunk]
                progress.update(bar, last=", ".join(t.task_name for _, t in part)[:60])
                tune_extracted([t for _, t in part], target, db, builder=builder, runner=runner)
                done.update(h for h, _ in part)
                progress.update(bar, advance=len(part))
        finally:
            interrupts.restore()
            builder.close()
    ready = [k for k, keys in per_block.items() if all(h in done for h in keys)]
    already = len(unique) - len(todo)
    return {"ready": ready, "tasks_of": {k: len(v) for k, v in per_block.items()}, "blocks": len(workloads),
            "tasks": sum(len(k) for k in per_block.values()), "unique": len(unique), "already_tuned": already,
            "tuned": len(done) - already, "extract_s": extract_s, "tune_s": time.perf_counter() - t1,
            "stopped": stopped}
