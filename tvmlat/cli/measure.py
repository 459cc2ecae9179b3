"""`tvmlat measure`: compile and time every entry of a MODEL_REF on a target."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import TvmlatError
from ..dataset import CampaignWriter, model_ref_record, versions
from ..features import FEATURES_VERSION
from . import app
from .common import RPC_KEY_HELP, TRACKER_HELP, Format, emit, make_runner, provenance, resolve_target

COLUMNS = ["name", "status", "latency_ms", "latency_ms_p10", "latency_ms_p90", "latency_cov", "n_runs", "flops",
           "params", "error"]
TABLE_COLUMNS = ["name", "status", "latency_ms", "p10_ms", "p90_ms", "cov_%", "runs", "flops", "params"]


@app.command("measure")
def measure_cmd(
    model_ref: str = typer.Argument(..., help="path/file.py:NAME returning (module, inputs) or {name: (module, inputs)}"),
    target: str = typer.Option("llvm", "--target", "-t", help="target name or .toml path"),
    profile: Optional[str] = typer.Option(None, "--profile", help="compile profile: default | tuned [the target file's]"),
    fmt: Format = typer.Option(Format.table, "--format", "-f"),
    out: Optional[Path] = typer.Option(None, "--out", help="also append the rows to this dataset (.parquet)"),
    whole: bool = typer.Option(True, "--whole/--layers",
                               help="time each entry as one complete network [default], or split it into the "
                                    "layers `analyze` shows and time each layer on its own"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    tracker: Optional[str] = typer.Option(None, "--tracker", help=TRACKER_HELP),
    rpc_key: Optional[str] = typer.Option(None, "--rpc-key", help=RPC_KEY_HELP),
    arch: Optional[str] = typer.Option(None, "--arch", help="CUDA architecture, e.g. sm_90 [the GPU here]"),
) -> None:
    """Measure each entry of MODEL_REF on TARGET (median latency, spread, status)."""
    from ..measure import module_workloads, run_campaign  # here: these import torch
    from ..modelref import load_model_ref
    from ..split import split_entries

    t = resolve_target(target, profile, tracker, rpc_key, arch)
    if model_ref.endswith(".onnx"):
        if t.remote:
            raise TvmlatError("measuring an .onnx model over RPC is not supported yet; export it from torch, "
                              "or measure it on this host")
        _measure_onnx(model_ref, t, fmt)
        return
    entries = load_model_ref(model_ref)
    if not whole:
        entries = split_entries(entries, model_ref)
    writer = None
    runner = make_runner(t)  # before the dataset: a runner refused (bad setting, no device) leaves no file
    if out is not None:  # run_campaign counts the rows' loop features for the target's L1: the meta says which
        writer = CampaignWriter(out, {"target_name": t.name, "target": t.to_dict(), "profile": t.profile,
                                      "versions": versions(), **provenance(t), "command": "measure",
                                      "evaluator": t.evaluator.__dict__, "features_version": FEATURES_VERSION,
                                      "cache_geometry": t.geometry().to_dict(),
                                      # where the rows come from: a later features version recounts them from it
                                      "model_refs": [model_ref_record(model_ref, layers=not whole)]})
    rows = run_campaign(module_workloads(entries), runner, t, writer,
                        show_progress=progress and fmt == Format.table)
    for r in rows:
        _display_fields(r)
    emit(rows, fmt, TABLE_COLUMNS if fmt == Format.table else COLUMNS, title=f"measured on {t.name} ({t.profile})")
    if writer is not None:
        writer.finish()
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        first = failed[0]
        msg = first["error"]
        if first["status"] == "import_error" and first["name"] in entries:
            from ..analysis import explain_import_error

            msg = explain_import_error(*entries[first["name"]], msg)
        raise TvmlatError(f"{len(failed)} of {len(rows)} entries failed; {first['name']}: {msg}"
                          + ("" if out is None else f" (the rows are saved in {out})"))


def _display_fields(r: dict) -> dict:
    """Add the columns the table and JSON show (latency_ms is the median) to a measured row."""
    r.update({"latency_ms": r["latency_ms_median"], "p10_ms": r["latency_ms_p10"], "p90_ms": r["latency_ms_p90"],
              "cov_%": 100 * r["latency_cov"], "runs": r["n_runs"]})
    return r


def _measure_onnx(path: str, t, fmt: Format) -> None:
    """Compile an ONNX model through TVM's Relax ONNX frontend and time it (one row)."""
    from ..onnx_model import load_onnx, onnx_features, random_inputs, relax_from_onnx
    from ..runners.local import LocalRunner

    model = load_onnx(path)
    res = LocalRunner(t).run_relax(relax_from_onnx(model), random_inputs(model), key=model.name)
    feats = onnx_features(model)
    row = _display_fields({"name": model.name, **res.as_row(), "flops": feats["flops"], "params": feats["params"]})
    emit([row], fmt, TABLE_COLUMNS if fmt == Format.table else COLUMNS, title=f"measured on {t.name} ({t.profile})")
    if res.status != "ok":
        raise TvmlatError(f"{model.name}: {res.error}")
