"""`tvmlat compare`: the same model on several targets side by side (TVM or PyTorch on this device?)."""

from __future__ import annotations

import math
from typing import Optional

import typer

from ..errors import TvmlatError
from . import app
from .common import Format, emit, make_runner, resolve_target


@app.command("compare")
def compare_cmd(
    model_ref: str = typer.Argument(..., help="path/file.py:NAME returning (module, inputs) or {name: (module, inputs)}"),
    targets: str = typer.Option("llvm,torch-eager", "--targets", help="comma-separated targets to compare"),
    whole: bool = typer.Option(True, "--whole/--layers", help="whole entries [default], or each layer on its own"),
    fmt: Format = typer.Option(Format.table, "--format", "-f"),
    profile: Optional[str] = typer.Option(None, "--profile", help="compile profile for TVM targets"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Measure every entry (or layer) of MODEL_REF on each target; show the latencies and the fastest."""
    from ..measure import module_workloads, run_campaign
    from ..modelref import load_model_ref
    from ..split import split_entries

    names = [x.strip() for x in targets.split(",") if x.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise TvmlatError(f"--targets {targets!r}: name at least two different targets, e.g. llvm,torch-eager")
    ts = [resolve_target(n, profile if not n.startswith("torch") else None) for n in names]
    entries = load_model_ref(model_ref)
    if not whole:
        entries = split_entries(entries, model_ref)
    table: dict[str, dict] = {name: {"name": name} for name in entries}
    for t in ts:
        runner = make_runner(t)
        try:
            rows = run_campaign(module_workloads(entries), runner, t, None, show_progress=progress and fmt == Format.table)
        finally:
            getattr(runner, "close", lambda: None)()
        for r in rows:
            table[r["name"]][t.name] = r["latency_ms_median"] if r["status"] == "ok" else math.nan
            if r["status"] != "ok":
                table[r["name"]][f"{t.name}_error"] = r["error"]
    out = []
    for row in table.values():
        vals = {t.name: row.get(t.name, math.nan) for t in ts}
        ok = {k: v for k, v in vals.items() if v == v}
        row["fastest"] = min(ok, key=ok.get) if ok else "-"
        row["speedup"] = max(ok.values()) / min(ok.values()) if len(ok) > 1 else math.nan
        out.append(row)
    if len(out) > 1:
        total = {"name": "TOTAL"}
        for t in ts:
            total[t.name] = sum(r.get(t.name, math.nan) for r in out)
        ok = {t.name: total[t.name] for t in ts if total[t.name] == total[t.name]}
        total["fastest"] = min(ok, key=ok.get) if ok else "-"
        total["speedup"] = max(ok.values()) / min(ok.values()) if len(ok) > 1 else math.nan
        out.append(total)
    cols = ["name", *[t.name for t in ts], "fastest", "speedup"]
    emit(out, fmt, cols, title="latency (ms, median) per target; speedup = slowest / fastest")
