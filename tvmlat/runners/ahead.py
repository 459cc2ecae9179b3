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
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any


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
        module, inputs = build_block(spec)
    except Exception as e:  # noqa: BLE001
        return {"status": "export_error", "error": f"building the block failed: {type(e).__name__}: {e}"}
    art = compile_to_library(module, inputs, TargetSpec.from_dict(target), out_dir, spec.block_id)
    return cache.put(spec.block_id, art) if cache is not None else art


def compile_to_library(module, inputs, target, out_dir: str, name: str, check: bool = True) -> dict[str, Any]:
    """Compile ``module`` for ``target`` into ``out_dir/name.so`` (cross-linked for boards) plus
    ``name.npz`` with its inputs and torch's reference outputs. Failures come back as a status."""
    import numpy as np

    from ..compile import StageError, compile_module

    try:
        c = compile_module(module, inputs, target, reference=check)
    except StageError as e:
        return {"status": f"{e.stage}_error", "error": str(e)}
    except Exception as e:  # noqa: BLE001
        return {"status": "export_error", "error": f"building the block failed: {type(e).__name__}: {e}"}
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


class CompileAhead:
    """``workers`` worker processes compiling block specs into a temporary folder, keyed by block id."""

    def __init__(self, target: dict[str, Any], cache_dir: str | None = None, workers: int = 1):
        self.target = target
        self.cache_dir = cache_dir
        self.workers = max(1, int(workers))
        self.dir = tempfile.mkdtemp(prefix="tvmlat-ahead-")
        self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_worker_init)
        self.futures: dict[str, Future] = {}

    def submit(self, key: str, spec_json: str) -> None:
        if key not in self.futures and spec_json:
            self.futures[key] = self.pool.submit(compile_spec_to_library, spec_json, self.target, self.dir,
                                                 self.cache_dir)

    def wait(self) -> None:
        """Block until every submitted compile has finished (results stay for ``take``)."""
        wait(list(self.futures.values()))

    def take(self, key: str) -> dict[str, Any] | None:
        """The worker's result for ``key`` (waits for it), or None if it was never submitted."""
        fut = self.futures.pop(key, None)
        if fut is None:
            return None
        try:
            return fut.result()
        except Exception as e:  # noqa: BLE001 - the worker died (e.g. a crash in LLVM): a failed row
            return {"status": "compile_error", "error": f"compile worker failed: {type(e).__name__}: {e}"}

    def close(self) -> None:
        for f in self.futures.values():
            f.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.dir, ignore_errors=True)
