"""`tvmlat evaluate`: accuracy of a predictor on a dataset, and of its configuration on held-out families."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from ..dataset import concat_datasets, dataset_hash, ok_rows, read_meta
from ..errors import PredictorError
from ..metrics import accuracy, per_family
from ..predictors import load_predictor
from ..predictors.io import target_chip
from . import app
from .common import Format, console, emit, metrics_table
from .fit import evaluation_suite


@app.command("evaluate")
def evaluate_cmd(
    predictor: Path = typer.Option(..., "--predictor", "-p", help="predictor JSON"),
    dataset: List[Path] = typer.Option(..., "--dataset", "-d", help="dataset parquet file(s) with measured blocks"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG of predicted against measured latency "
                                                             "(this predictor, and refitted on held-out families)"),
    fmt: Format = typer.Option(Format.table, "--format", "-f"),
) -> None:
    """Metrics of PREDICTOR on DATASET as is, and of the same model configuration refitted on
    held-out splits of DATASET (leave-one-family-out and 5-fold)."""
    from ..plots import check_plot

    check_plot(plot)
    pred = load_predictor(predictor)
    mine, other = target_chip(pred.target), set()
    for p in dataset:
        meta = read_meta(p)
        chip = target_chip(meta.get("target") or {})
        if chip and mine and chip != mine:
            other.add(chip)
        if meta.get("profile") not in (None, pred.profile):
            raise PredictorError(f"{p} was measured with profile {meta['profile']!r} but {predictor} predicts "
                                 f"profile {pred.profile!r}")
        pt = pred.target.get("name")
        if meta.get("target_name") and pt and meta["target_name"] != pt:
            raise PredictorError(f"{p} was measured on target {meta['target_name']!r} but {predictor} predicts "
                                 f"target {pt!r}; evaluate it on that target's dataset")
    fitted_on = set(str(pred.doc.get("dataset_hash", "")).split(",")) - {""}
    seen = [p.name for p in dataset if dataset_hash(p) in fitted_on]
    if seen:  # its own calibration rows: not to be mistaken for the accuracy on blocks it has not seen
        console(stderr=True).print(f"[yellow]note: {predictor.name} was fitted on the rows of {', '.join(seen)}: "
                                   "'this predictor' is in-sample; the held-out columns are what to expect on new "
                                   "blocks[/]")
    if other:  # allowed (how well a predictor transfers is worth knowing), but not to be mistaken for its accuracy
        console(stderr=True).print(f"[yellow]note: {', '.join(map(str, dataset))} measured on {', '.join(sorted(other))}; {predictor.name} "
                        f"was calibrated on {mine}: 'this predictor' is how well it transfers[/]")
    df = ok_rows(concat_datasets(dataset, geometry=pred.geometry))  # features as the predictor counts them
    if df.empty:
        raise PredictorError(f"no successfully measured rows in {', '.join(map(str, dataset))}")
    y = df["latency_ms_median"].to_numpy()
    has_interval = bool(pred.doc.get("interval", {}).get("abs_log_residuals"))
    predicted, lo, hi = pred.interval(df, 0.9) if has_interval else (pred.predict(df), None, None)
    results = {"this predictor": accuracy(y, predicted)}
    params, cls = pred.model.get_params(), type(pred.model)
    cv, fam_preds = evaluation_suite(df, lambda: cls(**params))
    if has_interval:
        results["this predictor"].update(cov90=float(np.mean((y >= lo) & (y <= hi))),
                                         width90=float(np.median((hi - lo) / predicted)))
    results.update(cv)
    if plot is not None:
        from ..plots import accuracy_plot

        held = "held-out families" if "held-out families" in cv else "5-fold"
        accuracy_plot({predictor.name: df[["family"]].assign(measured=y, predicted=predicted),
                       f"{held}, refitted without them": fam_preds}, plot,
                      f"{predictor.name} on {', '.join(p.name for p in dataset)}")
        console().print(f"plot: {plot}")
    if fmt == Format.table:
        con = console()
        con.print(metrics_table(results, f"{predictor.name} on {len(df)} blocks"))
        emit(per_family(fam_preds).to_dict("records"), Format.table,
             ["family", "n", "median_ape", "within10", "bias"],
             title="held-out families: error per family" if "held-out families" in results else "5-fold: error per family")
    else:
        emit([{"name": k, **v} for k, v in results.items()], fmt, ["name", *next(iter(results.values())).keys()])

