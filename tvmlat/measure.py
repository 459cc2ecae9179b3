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
from .features import block_features, count_features
from .runners.base import RunResult, Runner
from .specs import BlockSpec
from .targets import TargetSpec


@dataclass(frozen=True)
class Workload:
    """One thing to measure: a key (block_id, or the entry name of a model ref) and how to build it."""

    key: str
    name: str
    family: str
    spec: str
    make: Callable[[], tuple[torch.nn.Module, Sequence[torch.Tensor]]]
    features: Callable[[], dict[str, int]] | None = None


def spec_workloads(specs: Iterable[BlockSpec]) -> list[Workload]:
    return [Workload(s.block_id, s.short(), s.family, s.to_json(), (lambda s=s: build_block(s)),
                     (lambda s=s: block_features(s))) for s in specs]


def module_workloads(entries: dict[str, tuple[torch.nn.Module, Sequence[torch.Tensor]]]) -> list[Workload]:
    return [Workload(name, name, "model", "", (lambda e=e: e)) for name, e in entries.items()]


def make_row(w: Workload, res: RunResult, target: TargetSpec, feats: dict[str, int]) -> dict[str, Any]:
    return {"block_id": w.key, "name": w.name, "family": w.family, "spec": w.spec, "target": target.name,
            "profile": target.profile, **res.as_row(), "energy_mj": math.nan, "peak_memory_bytes": math.nan,
            **feats}


def run_campaign(workloads: Sequence[Workload], runner: Runner, target: TargetSpec,
                 writer: CampaignWriter | None = None, show_progress: bool = True,
                 console=None) -> list[dict[str, Any]]:
    """Measure every workload not yet in ``writer``'s dataset; return the new rows."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    done = writer.done_ids() if writer is not None else set()
    todo = [w for w in workloads if w.key not in done]
    rows: list[dict[str, Any]] = []
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[last]}"),
                        console=console, disable=not show_progress, transient=False)
    prefetch = getattr(runner, "prefetch", None)
    with progress:
        task = progress.add_task(f"measuring on {target.name}", total=len(todo), last="")
        for i, w in enumerate(todo):
            if prefetch is not None:  # keep the compile worker one block ahead of the timing
                for nxt in todo[i:i + 2]:
                    prefetch(nxt.key, nxt.spec)
            progress.update(task, last=f"[dim]{w.name[:60]}")
            t0 = time.perf_counter()
            try:
                module, inputs = w.make()
                feats = w.features() if w.features else count_features(module, inputs)
            except Exception as e:  # noqa: BLE001 - a broken workload is a row, not a crash
                res = RunResult(status="export_error", error=f"building the block failed: {type(e).__name__}: {e}")
                feats = {}
            else:
                res = runner.run(module, inputs, key=w.key)
            row = make_row(w, res, target, feats)
            row["wall_s"] = time.perf_counter() - t0
            if writer is not None:
                writer.append(row)
            rows.append(row)
            last = (f"{res.latency_ms_median:.3f} ms" if res.status == "ok" else f"[red]{res.status}")
            progress.update(task, advance=1, last=f"{w.name[:50]} {last}")
    return rows
