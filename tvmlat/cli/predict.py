"""`tvmlat predict`: predict latency of every entry of a MODEL_REF from a predictor file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import typer

from ..errors import ModelRefError, PredictorError
from ..features import count_features
from ..modelref import load_model_ref
from ..predictors import load_predictor
from . import app
from .common import Format, emit, warn_unpriced


@app.command("predict")
def predict_cmd(
    model_ref: str = typer.Argument(..., help="path/file.py:NAME returning (module, inputs) or {name: (module, inputs)}"),
    predictor: Path = typer.Option(..., "--predictor", "-p", help="predictor JSON (from calibrate or fit)"),
    profile: Optional[str] = typer.Option(None, "--profile", help="compile profile you want the prediction for"),
    interval: Optional[float] = typer.Option(None, "--interval", help="add a conformal interval of this coverage, e.g. 0.9"),
    fmt: Format = typer.Option(Format.table, "--format", "-f"),
) -> None:
    """Predict the latency of each entry of MODEL_REF without compiling or running it."""
    pred = load_predictor(predictor)
    if profile is not None and profile != pred.profile:
        raise PredictorError(f"{predictor} was fitted for compile profile {pred.profile!r}, not {profile!r}; "
                             f"calibrate a predictor with that profile")
    rows = []  # loop features counted for the predictor's L1
    if model_ref.endswith(".onnx"):
        from ..onnx_model import load_onnx, onnx_features

        model = load_onnx(model_ref)
        rows.append({"name": model.name, **onnx_features(model, geometry=pred.geometry)})
    entries = {} if rows else load_model_ref(model_ref)
    for n, (m, x) in entries.items():
        try:
            rows.append({"name": n, **count_features(m, x, geometry=pred.geometry)})
        except Exception as e:  # noqa: BLE001 - the user's module does not run on its own example inputs
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelRefError(f"{model_ref}: entry {n!r} does not run on its example inputs: "
                                f"{type(e).__name__}: {msg}") from None
    feats = pd.DataFrame(rows)
    if interval is not None:
        lat, lo, hi = pred.interval(feats, interval)
    else:
        lat = pred.predict(feats)
    warn_unpriced(feats["name"].tolist(), pred.unpriced(feats))
    total = float(np.sum(lat))
    rows = [{"name": r["name"], "latency_ms": float(v), "share_%": 100 * float(v) / total if total > 0 else 0.0,
             "flops": int(r["flops"]), "acts": int(r["acts"]), "inp": int(r["inp"]), "params": int(r["params"])}
            for r, v in zip(feats.to_dict("records"), lat)]
    cols = ["name", "latency_ms", "share_%", "flops", "acts", "inp", "params"]
    if interval is not None:
        for r, a, b in zip(rows, lo, hi):
            r["low_ms"], r["high_ms"] = float(a), float(b)
        cols[2:2] = ["low_ms", "high_ms"]
    if pred.doc.get("memory"):  # a memory model fitted by `tvmlat memory --predictor`
        from ..memory import MemoryModel

        mem = MemoryModel.from_dict(pred.doc["memory"]).predict(feats)
        for r, b in zip(rows, mem):
            r["peak_memory_mib"] = float(b) / 2**20
        cols.append("peak_memory_mib")
    from ..energy import predict_energy

    en = predict_energy(pred, feats, lat)
    if en is not None:  # a target that measured energy (e.g. NVML): energy per inference and average power
        for r, e, w in zip(rows, *en):
            r["energy_mj"], r["power_w"] = float(e), float(w)
        cols += ["energy_mj", "power_w"]
    emit(rows, fmt, cols, title=f"predicted for {pred.describe()} by {predictor.name}"
         + (f", {100 * interval:.0f}% intervals" if interval is not None else ""))
