"""`tvmlat network-correction`: fit the factor between the sum of layer predictions and measured
whole networks, and store it in the predictor file for `analyze` to apply."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from ..errors import TvmlatError
from ..modelref import load_model_ref
from . import app
from .common import Format, console, emit


def loo_factors(measured: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """For each network, the geometric-mean factor measured/predicted of all the *other* networks."""
    lr = np.log(measured / predicted)
    n = len(lr)
    return np.exp((lr.sum() - lr) / (n - 1))


@app.command("network-correction")
def network_correction_cmd(
    model_refs: List[str] = typer.Argument(..., help="MODEL_REFs of whole networks (path/file.py:NAME)"),
    predictor: Path = typer.Option(..., "--predictor", "-p", help="predictor JSON to correct"),
    target: str = typer.Option("llvm", "--target", "-t", help="target to measure the networks on"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the corrected predictor here [update -p in place]"),
    fmt: Format = typer.Option(Format.table, "--format", "-f"),
) -> None:
    """Measure whole networks, compare with the sum of their layers' predictions, and store the
    geometric-mean factor (with its leave-one-network-out error) in the predictor file."""
    from ..analysis import layer_table
    from ..predictors import load_predictor
    from ..runners.local import LocalRunner
    from ..targets import load_target

    pred = load_predictor(predictor)
    t = load_target(target)
    if pred.target.get("name") not in (None, t.name):
        raise TvmlatError(f"{predictor} predicts target {pred.target.get('name')!r}, not {t.name!r}")
    rows = []
    runner = LocalRunner(t)
    for ref in model_refs:
        for name, (module, inputs) in load_model_ref(ref).items():
            predicted = float(layer_table(module, inputs, pred)["latency_ms"].sum())
            res = runner.run(module, inputs, key=name)
            if res.status != "ok":
                raise TvmlatError(f"measuring {name!r} failed: {res.error}")
            rows.append({"name": name, "measured_ms": res.latency_ms_median, "predicted_ms": predicted})
    if len(rows) < 3:
        raise TvmlatError(f"need at least 3 networks to fit and check a correction, got {len(rows)}")
    m = np.array([r["measured_ms"] for r in rows])
    p = np.array([r["predicted_ms"] for r in rows])
    factor = float(np.exp(np.mean(np.log(m / p))))
    loo = loo_factors(m, p)
    for r, f_loo in zip(rows, loo):
        r["ratio"] = r["predicted_ms"] / r["measured_ms"]
        r["error_%"] = 100 * (r["ratio"] - 1)
        r["corrected_error_%"] = 100 * (r["predicted_ms"] * f_loo / r["measured_ms"] - 1)
    emit(rows, fmt, ["name", "measured_ms", "predicted_ms", "ratio", "error_%", "corrected_error_%"],
         title=f"whole networks on {t.name}: sum of layer predictions vs measured "
               "(corrected: factor fitted on the other networks)")
    doc = json.loads(predictor.read_text())
    doc["network_correction"] = {
        "factor": factor, "networks": [r["name"] for r in rows],
        "median_abs_error_%_before": float(np.median(np.abs([r["error_%"] for r in rows]))),
        "median_abs_error_%_loo_corrected": float(np.median(np.abs([r["corrected_error_%"] for r in rows]))),
        "note": "multiply the sum of layer predictions by factor to predict a whole network",
    }
    dest = out or predictor
    dest.write_text(json.dumps(doc, indent=2))
    if fmt == Format.table:
        console().print(f"factor {factor:.3f} (median |error| {doc['network_correction']['median_abs_error_%_before']:.1f} % "
                        f"-> {doc['network_correction']['median_abs_error_%_loo_corrected']:.1f} % leave-one-out); "
                        f"saved in {dest}")
    if not math.isfinite(factor):
        raise TvmlatError("the correction factor is not finite")
