"""`tvmlat predict`: predict latency of every entry of a MODEL_REF from a predictor file."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import typer

from ..errors import ModelRefError, TvmlatError
from . import app
from .common import NETWORK_CORRECTION_HELP, Format, console, emit, load_requested, warn_unpriced


class TakeAs(str, Enum):
    auto = "auto"
    block = "block"
    network = "network"


@app.command("predict")
def predict_cmd(
    model_ref: str = typer.Argument(..., help="path/file.py:NAME returning (module, inputs) or {name: (module, inputs)}; "
                                              "a model.onnx; or specs.jsonl, block specs one JSON object a line "
                                              "(counted in closed form: no torch, no TVM)"),
    predictor: Path = typer.Option(..., "--predictor", "-p", help="predictor JSON (from calibrate or fit)"),
    profile: Optional[str] = typer.Option(None, "--profile", help="compile profile you want the prediction for"),
    interval: Optional[float] = typer.Option(None, "--interval", help="add a conformal interval of this coverage, e.g. 0.9"),
    fmt: Format = typer.Option(Format.table, "--format", "-f"),
    take_as: TakeAs = typer.Option(TakeAs.auto, "--as", help="auto: an entry that splits into more layers than a "
                                   "calibration block (more than 4) is a network, predicted as `analyze` predicts it "
                                   "(the sum of its layers, the network correction, a network's interval); block: "
                                   "every entry as one block; network: every entry layer by layer"),
    network_correction: bool = typer.Option(True, "--network-correction/--no-network-correction",
                                            help=NETWORK_CORRECTION_HELP),
) -> None:
    """Predict the latency of each entry of MODEL_REF without compiling or running it."""
    from ..spec_file import is_spec_file, spec_frame

    specs = is_spec_file(model_ref)  # a search's candidates: block parameters, no module to run
    if specs and take_as == TakeAs.network:
        raise TvmlatError(f"--as network: {model_ref} holds block specs, each predicted as one block; leave --as out")
    pred = load_requested(predictor, profile, interval, network_correction=network_correction)
    if specs:
        feats, nets = spec_frame(model_ref, pred.geometry), {}
    else:
        rows, nets = _counted(model_ref, pred, take_as, interval)
        feats = pd.DataFrame(rows)
    lo = hi = None
    if interval is not None:
        lat, lo, hi = (np.array(v, dtype=float) for v in pred.interval(feats, interval))
    else:
        lat = np.array(pred.predict(feats), dtype=float)
    blocks = [(n, u) for n, u in zip(feats["name"], pred.unpriced(feats)) if n not in nets]  # networks: per layer
    warn_unpriced([n for n, _ in blocks], [u for _, u in blocks])
    notes = _as_networks(feats["name"].tolist(), nets, pred, interval, lat, lo, hi)
    if nets and take_as == TakeAs.auto:
        notes[0] += "; `--as block` takes them as one block each"
    total = float(np.sum(lat))
    rows = [{"name": r["name"], "latency_ms": float(v), "share_%": 100 * float(v) / total if total > 0 else 0.0,
             "as": f"network, {_layers(len(nets[r['name']]))}" if r["name"] in nets else "block",
             "flops": int(r["flops"]), "acts": int(r["acts"]), "inp": int(r["inp"]), "params": int(r["params"])}
            for r, v in zip(feats.to_dict("records"), lat)]
    cols = ["name", "latency_ms", "share_%", "as", "flops", "acts", "inp", "params"]
    if interval is not None:
        for r, a, b in zip(rows, lo, hi):
            r["low_ms"], r["high_ms"] = float(a), float(b)
        cols[2:2] = ["low_ms", "high_ms"]
    if pred.doc.get("memory"):  # a memory model fitted by `tvmlat memory --predictor`
        from ..memory import MemoryModel

        mem = MemoryModel.from_dict(pred.doc["memory"]).predict(feats)
        for i, n in enumerate(feats["name"]):  # a network's layers run one after another (memory.network_peak)
            if n in nets and len(nets[n]):
                mem[i] = nets[n].attrs["peak_memory_bytes"]
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
    if notes and fmt == Format.table:
        for line in notes:
            console().print(line)


def _counted(model_ref: str, pred, take_as: TakeAs, interval: float | None) -> tuple[list[dict], dict]:
    """The rows (name and features, counted for the predictor's L1) of each entry of a MODEL_REF or ONNX file, and
    the layer tables (predicted, with intervals) of those taken as networks."""
    from ..analysis import BLOCK_LAYERS, onnx_traced, table_of, traced

    rows, nets = [], {}  # nets: entry -> its layers (analysis.traced)
    if model_ref.endswith(".onnx"):
        from ..onnx_model import load_onnx

        model = load_onnx(model_ref)
        graph = onnx_traced(model, pred.geometry)  # one walk of the graph counts the model and its layers
        rows.append({"name": model.name, **graph[2]})
        if take_as != TakeAs.block:
            nets[model.name] = graph
    entries = {}
    if not rows:  # a torch MODEL_REF: these import torch (0.9 s), which an ONNX file does without
        from ..modelref import load_model_ref
        from ..op_counter import count_features

        entries = load_model_ref(model_ref)
    for n, (m, x) in entries.items():
        try:
            if take_as == TakeAs.block:
                rows.append({"name": n, **count_features(m, x, geometry=pred.geometry)})
            else:  # one run counts the entry and its layers
                nets[n] = traced(m, x, pred.geometry)
                rows.append({"name": n, **nets[n][2]})
        except Exception as e:  # noqa: BLE001 - the user's module does not run on its own example inputs
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelRefError(f"{model_ref}: entry {n!r} does not run on its example inputs: "
                                f"{type(e).__name__}: {msg}") from None
    # a block's layers were only counted (t[0]); the networks' are predicted
    return rows, {n: table_of(t, pred, interval) for n, t in nets.items()
                  if take_as == TakeAs.network or len(t[0]) > BLOCK_LAYERS}


def _layers(n: int) -> str:
    return f"{n} layer" + ("" if n == 1 else "s")


def _as_networks(names: list[str], nets: dict, pred, interval: float | None, lat: np.ndarray,
                 lo: np.ndarray | None = None, hi: np.ndarray | None = None) -> list[str]:
    """Put each network's prediction (and interval) in place of its one-block one, as `analyze` gives them: the
    sum of its layers (``nets``: name -> its ``analysis.layer_table``) times the network correction, and the
    network's interval. Returns the lines that say so."""
    if not nets:
        return []
    from ..analysis import BLOCK_LAYERS

    factor, hows, none = pred.network_factor(), set(), []
    for i, n in enumerate(names):
        if n not in nets:
            continue
        table = nets[n]
        warn_unpriced(table["name"].tolist(), table.attrs.get("unpriced", []), f"layers of {n}")
        if interval is None:
            lat[i] = float(table["latency_ms"].sum()) * (factor or 1.0)
            continue
        net = table.attrs["network_interval"]
        lat[i], lo[i], hi[i] = net["predicted_ms"], net["low_ms"], net["high_ms"]
        hows.add(net["method"])
        if not np.isfinite(hi[i]):  # too few measured networks or families for this coverage
            lo[i] = hi[i] = np.nan
            none.append(n)
    notes = [f"{len(nets)} of {len(names)} entries are networks (more than {BLOCK_LAYERS} layers, or --as network), "
             f"predicted as `tvmlat analyze` predicts them: the sum of their layers"
             + (f" times the network correction x{factor:.3f}" if factor not in (None, 1.0) else "")
             + (f"; their intervals sized from {'; '.join(sorted(hows))}" if hows else "")]
    if none:
        notes.append(f"no {100 * interval:g} % interval for {', '.join(none)}: too few for that coverage; ask for a "
                     f"lower --interval")
    return notes
