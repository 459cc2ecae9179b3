"""The campaign loop: workloads -> runner -> rows, appended to a dataset as they come.

Resumable: workloads whose key is already in the dataset are skipped. A failing block becomes
a row with its status and error; only KeyboardInterrupt (Ctrl-C) stops the loop, and every row
measured before it is already on disk.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch

from .blocks import build_block
from .dataset import CampaignWriter
from .features import spec_features
from .op_counter import count_features
from .loop_features import CacheGeometry
from .runners.base import (CompilesAhead, KeepsForRounds, RunResult, Runner, build_error, common_drift,
                           rounds_stats)
from .specs import BlockSpec
from .targets import TargetSpec


@dataclass(frozen=True)
class Workload:
    """One thing to measure: a key (block_id, or the entry name of a model ref) and how to build it.

    ``features(geometry)`` counts its features without building it (block specs); None: they are
    counted from the built module. Either way for the cache geometry of the target measured on."""

    key: str
    name: str
    family: str
    spec: str
    make: Callable[[], tuple[torch.nn.Module, Sequence[torch.Tensor]]]
    features: Callable[[CacheGeometry], dict[str, int]] | None = None

    def count(self, module: torch.nn.Module, inputs: Sequence[torch.Tensor], geometry: CacheGeometry) -> dict[str, int]:
        """Its feature row for the L1 ``geometry`` (``module``/``inputs``: what ``make`` built)."""
        return self.features(geometry) if self.features else count_features(module, inputs, geometry=geometry)


def spec_workloads(specs: Iterable[BlockSpec]) -> list[Workload]:
    return [Workload(s.block_id, s.short(), s.family, s.to_json(), (lambda s=s: build_block(s)),
                     (lambda g, s=s: spec_features(s, g))) for s in specs]


def module_workloads(entries: dict[str, tuple[torch.nn.Module, Sequence[torch.Tensor]]],
                     family: str = "model") -> list[Workload]:
    """A workload per MODEL_REF entry, keyed by its name (``family``: the rows' family column)."""
    return [Workload(name, name, family, "", (lambda e=e: e)) for name, e in entries.items()]


def make_row(w: Workload, res: RunResult, target: TargetSpec, feats: dict[str, int]) -> dict[str, Any]:
    return {"block_id": w.key, "name": w.name, "family": w.family, "spec": w.spec, "target": target.name,
            "profile": target.profile, "energy_mj": math.nan, "peak_memory_bytes": math.nan, **res.as_row(),
            **feats}


def run_campaign(workloads: Sequence[Workload], runner: Runner, target: TargetSpec,
                 writer: CampaignWriter | None = None, show_progress: bool = True,
                 console=None, stop: Callable[[list[dict[str, Any]]], str] | None = None) -> list[dict[str, Any]]:
    """Measure every workload not yet in ``writer``'s dataset; return the new rows.

    ``stop(rows)`` is asked after each row; a non-empty answer (why) ends the campaign early
    (e.g. a tuning budget spent); what is measured stays, and the same command resumes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    done = writer.done_ids() if writer is not None else set()
    todo = [w for w in workloads if w.key not in done]
    rows: list[dict[str, Any]] = []
    # the L1 the rows' loop features are counted for: the one the dataset's meta.json states (calibrate and
    # measure write the target's there), so a file's rows always agree with it
    geometry = writer.geometry if writer is not None else target.geometry()
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[last]}"),
                        console=console, disable=not show_progress, transient=False)
    if getattr(runner, "parallel", False):
        return _run_parallel(todo, runner, target, writer, progress, geometry)
    ahead = runner if isinstance(runner, CompilesAhead) else None
    depth = max(1, int(ahead.ahead_depth)) if ahead is not None else 1
    rounds = _Rounds(runner, writer, rows, progress)
    with progress:
        task = progress.add_task(f"measuring on {target.name}", total=len(todo), last="")
        for i, w in enumerate(todo):
            if ahead is not None:  # keep each compile worker a block ahead of the timing
                for nxt in todo[i:i + 1 + depth]:
                    ahead.prefetch(nxt.key, nxt.spec)
            progress.update(task, last=f"[dim]{w.name[:60]}")
            t0 = time.perf_counter()
            try:
                module, inputs = w.make()
                feats = w.count(module, inputs, geometry)
            except Exception as e:  # noqa: BLE001 - a broken workload is a row, not a crash
                res, feats = _build_failed(e), {}
            else:
                res = runner.run(module, inputs, key=w.key)
            row = make_row(w, res, target, feats)
            row["wall_s"] = time.perf_counter() - t0
            _keep_row(row, res, w, writer, rows, progress, task)
            rounds.measured(row)
            why = stop(rows) if stop is not None else ""
            if why:
                progress.update(task, last=f"[yellow]stopped: {why}")
                break
        rounds.finish(workloads)
    return rows


class _Rounds:
    """Interleaved rounds for a runner that keeps measured blocks (``runner.rounds`` > 0): every
    ``MAX_KEPT`` blocks and at the end of the campaign, the kept blocks are timed round after
    round and their rows rewritten with the statistics of those spread-out repeats. A row left
    without them (a run interrupted before its rounds) gets them when the campaign resumes."""

    MAX_KEPT = 128

    def __init__(self, runner, writer: CampaignWriter | None, rows: list[dict[str, Any]], progress):
        self.runner, self.writer, self.rows, self.progress = runner, writer, rows, progress
        self.n = int(runner.rounds or 0) if isinstance(runner, KeepsForRounds) else 0
        self.first: dict[str, tuple[float, int]] = {}  # key -> (consecutive median ms, its runs)
        if self.n:
            runner.keeping = True

    def measured(self, row: dict[str, Any]) -> None:
        if not self.n or row["status"] != "ok":
            return
        self.first[row["block_id"]] = (float(row["latency_ms_median"]), int(row["n_runs"]))
        if self.runner.kept >= self.MAX_KEPT:
            self.run()

    def finish(self, workloads: Sequence[Workload]) -> None:
        if not self.n:
            return
        if self.writer is not None:  # rows of an earlier, interrupted run that never got their rounds
            df = self.writer.df
            stale = df[(df["status"] == "ok") & (df["rounds"].fillna(0) == 0)] if "rounds" in df else df[:0]
            stale = {str(r.block_id): r for r in stale.itertuples()}
            for w in workloads:
                r = stale.get(w.key)
                if r is None or w.key in self.first:
                    continue
                try:
                    module, inputs = w.make()
                except Exception:  # noqa: BLE001 - it keeps its consecutive measurement
                    continue
                if self.runner.keep(module, inputs, w.key, int(r.number), w.spec):
                    self.first[w.key] = (float(r.latency_ms_median), int(r.n_runs))
                    if self.runner.kept >= self.MAX_KEPT:
                        self.run()
        self.run()
        self.runner.keeping = False  # after the campaign, a single run keeps nothing again

    def run(self) -> None:
        if not self.runner.kept:
            return
        if isinstance(self.runner, CompilesAhead):  # a chunk's rounds must not share the cores with compiles
            self.runner.settle()                  # of the next blocks
        task = self.progress.add_task(f"interleaved rounds, {self.runner.kept} blocks", total=self.n, last="")
        got = self.runner.interleave(on_round=lambda r: self.progress.update(task, completed=r))
        drift = common_drift({k: samples for k, (samples, _) in got.items()})
        changes = {k: rounds_stats(samples, number, *self.first[k], drift=drift)
                   for k, (samples, number) in got.items()}
        if self.writer is not None:
            self.writer.update(changes)
        for row in self.rows:
            if row["block_id"] in changes:
                row.update(changes[row["block_id"]])


def _build_failed(e: Exception) -> RunResult:
    """The result of a workload whose module or features could not be built: a row, not a crash."""
    return RunResult(status="export_error", error=build_error(e))


def _keep_row(row: dict[str, Any], res: RunResult, w: Workload, writer: CampaignWriter | None,
              rows: list[dict[str, Any]], progress, task) -> None:
    """Write a finished row (at once: a crash loses at most the block in flight) and show it."""
    if writer is not None:
        writer.append(row)
    rows.append(row)
    last = f"{res.latency_ms_median:.3f} ms" if res.status == "ok" else f"[red]{res.status}"
    progress.update(task, advance=1, last=f"{w.name[:50]} {last}")


def _run_parallel(todo: Sequence[Workload], runner, target: TargetSpec, writer: CampaignWriter | None,
                  progress, geometry: CacheGeometry) -> list[dict[str, Any]]:
    """A runner that measures several blocks at once (one per remote server): rows arrive in
    completion order and are written one by one; a line per server shows what it is doing."""
    items = []
    early: list[dict[str, Any]] = []
    for w in todo:
        try:
            if w.features is not None:
                feats, make = w.features(geometry), w.make
            else:
                module, inputs = w.make()
                feats, make = w.count(module, inputs, geometry), (lambda m=module, i=inputs: (m, i))
        except Exception as e:  # noqa: BLE001 - a broken workload is a row, not a crash
            early.append(make_row(w, _build_failed(e), target, {}))
            continue
        items.append((w, make, feats))
    rows: list[dict[str, Any]] = []
    for row in early:
        if writer is not None:
            writer.append(row)
        rows.append(row)
    with progress:
        task = progress.add_task(f"measuring on {target.name}", total=len(todo), last="", completed=len(early))
        lines: dict[int, int] = {}
        t_last = [time.perf_counter()]

        def on_row(w: Workload, res: RunResult, feats: dict, extra: dict) -> None:
            row = {**make_row(w, res, target, feats), **extra}
            now = time.perf_counter()
            row["wall_s"] = now - t_last[0]  # time between finished rows (several servers: < a block's time)
            t_last[0] = now
            _keep_row(row, res, w, writer, rows, progress, task)

        def on_state(state: dict[int, str]) -> None:
            for wid, text in state.items():
                if wid not in lines:
                    lines[wid] = progress.add_task(f"  server slot {wid}", total=None, last="")
                progress.update(lines[wid], last=text)

        runner.run_all(items, on_row, on_state)
    return rows
