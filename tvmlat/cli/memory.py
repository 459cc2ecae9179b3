"""`tvmlat memory`: peak memory of a dataset's blocks from TVM's memory planning, and a model of it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from ..errors import TvmlatError
from . import app
from .common import Format, console, emit, metrics_table


@app.command("memory")
def memory_cmd(
    dataset: Path = typer.Option(..., "--dataset", "-d", help="dataset parquet whose block rows get peak memory"),
    predictor: Optional[Path] = typer.Option(None, "--predictor", "-p",
                                             help="also store the fitted memory model in this predictor file"),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="target to plan for [the dataset's]"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Plan every block's memory with TVM (weights + inputs + planned activations + outputs), write it
    into the dataset's peak_memory_bytes, and fit and evaluate a model that predicts it from features."""
    import numpy as np
    from rich.progress import track

    from ..blocks import build_block
    from ..dataset import read_dataset, read_meta
    from ..jsonfile import write_json
    from ..memory import MemoryModel, planned_memory
    from ..metrics import accuracy, cross_validate, per_family
    from ..predictors import load_predictor
    from ..specs import BlockSpec
    from ..targets import TargetSpec, load_target

    df = read_dataset(dataset)
    meta = read_meta(dataset)
    # a predictor file that can't take the model is said before the planning, not after it
    doc = load_predictor(predictor).doc if predictor is not None else None
    if target:
        t = load_target(target).with_arch(None)
    elif meta.get("target"):
        t = TargetSpec.from_dict(meta["target"])
    else:
        raise TvmlatError(f"{dataset} has no meta.json naming its target; pass --target")
    rows = df.index[df["spec"].fillna("").astype(str).str.len() > 0]
    if len(rows) == 0:
        raise TvmlatError(f"{dataset} has no block rows (rows with a spec) to plan memory for")
    todo = [i for i in rows if not (df.at[i, "peak_memory_bytes"] == df.at[i, "peak_memory_bytes"])]
    try:
        for i in track(todo, description="planning memory", disable=not progress, console=console()):
            try:
                m, ins = build_block(BlockSpec.from_json(df.at[i, "spec"]))
                df.at[i, "peak_memory_bytes"] = planned_memory(m, ins, t)["peak_memory_bytes"]
            except Exception as e:  # noqa: BLE001 - a block TVM can't plan keeps NaN
                console(stderr=True).print(f"[yellow]{df.at[i, 'name']}: {type(e).__name__}: {e}"[:200])
    except KeyboardInterrupt:
        done = sum(df.at[i, "peak_memory_bytes"] == df.at[i, "peak_memory_bytes"] for i in todo)
        console(stderr=True).print(f"{done} of {len(todo)} blocks planned before the interrupt, kept in {dataset}")
        raise
    finally:  # what was planned before a Ctrl-C is kept; a rerun plans the rest
        if todo:
            tmp = dataset.with_name(dataset.name + ".tmp")
            df.to_parquet(tmp, index=False)
            os.replace(tmp, dataset)
    good = df.loc[rows].dropna(subset=["peak_memory_bytes"])
    good = good[good["peak_memory_bytes"] > 0].reset_index(drop=True)
    if len(good) < 8:
        raise TvmlatError(f"only {len(good)} blocks have a planned memory; need 8 to fit a model")
    y = good["peak_memory_bytes"].to_numpy(dtype=float)
    model = MemoryModel().fit(good, y)
    results = {"in-sample": accuracy(y, model.predict(good), latency=False)}
    if good["family"].nunique() >= 2:
        results["held-out families"], preds = cross_validate(good, MemoryModel, split="family",
                                                                    y_col="peak_memory_bytes")
    results["5-fold"], kf = cross_validate(good, MemoryModel, split="kfold", k=5, y_col="peak_memory_bytes")
    c = model.to_dict()["coefficients"]
    con = console()
    con.print(f"[bold]memory model[/]: peak bytes = {c['weight_elems']:.3g}x4*weights + {c['inp']:.3g}x4*inputs + "
              f"{c['out']:.3g}x4*outputs + {c['acts']:.3g}x4*activations + {c['intercept_kib']:.3g} KiB   ({len(good)} blocks, "
              f"{np.median(y) / 2**20:.2f} MiB median)")
    con.print(metrics_table(results, "accuracy of the memory model (APE of peak bytes)", quantity="peak bytes"))
    emit(per_family(preds if "held-out families" in results else kf).to_dict("records"), Format.table,
         ["family", "n", "median_ape", "within10", "bias"], title="memory: error per family (held out)")
    if predictor is not None:
        doc["memory"] = {**model.to_dict(), "training": {"n": len(good), "metrics": results}}
        write_json(predictor, doc, indent=2, default=float)
        con.print(f"memory model stored in {predictor}")
