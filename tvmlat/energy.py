"""Energy per inference (mJ) and average power (W), predicted the way latency is.

Where a target measures energy (NVML on NVIDIA GPUs, see ``power.py``), each dataset row has
``energy_mj`` (energy of one inference: busy power x time per inference) and ``power_w``. The energy
model is the same two-segment linear model as latency's, on the same features, fitted on
``energy_mj``; average power is not fitted separately but derived, predicted energy / predicted
latency (mJ / ms = W), so the three predictions can never contradict each other. Both are judged
on held-out families like latency. Targets without an energy reading (this CPU VM has no RAPL
``powercap``) have NaN there, and no energy model is fitted: predictions then carry no energy
columns rather than zeros.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .errors import PredictorError
from .metrics import accuracy, cross_validate

#: rows with an energy reading needed before an energy model is fitted (as for latency)
MIN_ROWS = 12


def energy_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with a usable energy reading (finite, > 0) and latency."""
    if "energy_mj" not in df:
        return df.iloc[0:0]
    e = pd.to_numeric(df["energy_mj"], errors="coerce")
    return df[np.isfinite(e) & (e > 0) & (df["latency_ms_median"] > 0)].reset_index(drop=True)


def fit_energy(df: pd.DataFrame, features: str = "ops") -> dict[str, Any] | None:
    """Fit the energy model on ``df``'s rows with a reading; None when fewer than ``MIN_ROWS`` have one.

    Returns the predictor file's ``energy`` section: the model, its features, and held-out metrics
    of energy and of the derived power (predicted energy / predicted latency on the same split).
    """
    from .predictors.linear import LinearPredictor

    good = energy_rows(df)
    if len(good) < MIN_ROWS:
        return None
    make = lambda: LinearPredictor(features=features)  # noqa: E731
    model = make().fit(good, good["energy_mj"].to_numpy(dtype=float))
    split = "family" if good["family"].nunique() >= 2 else "kfold"
    e_metrics, e_pred = cross_validate(good, make, split=split, y_col="energy_mj")
    _, l_pred = cross_validate(good, make, split=split)
    power = pd.DataFrame({"block_id": e_pred["block_id"], "predicted": e_pred["predicted"].to_numpy()
                          / l_pred.set_index("block_id").loc[e_pred["block_id"], "predicted"].to_numpy()})
    by_id = good.set_index("block_id").loc[power["block_id"]]
    measured = by_id["energy_mj"].to_numpy() / by_id["latency_ms_median"].to_numpy()
    name = "held-out families" if split == "family" else "5-fold"
    return {"kind": model.kind, "model": model.to_dict(), "features": list(model.feature_names_in_),
            "power": "energy_mj / latency_ms (both predicted)",
            "training": {"n": int(len(good)), "metrics": {
                f"energy, {name}": e_metrics,
                f"power, {name}": accuracy(measured, power["predicted"], latency=False)}}}


def energy_model(section: dict[str, Any]):
    """The fitted energy model of a predictor file's ``energy`` section."""
    from .predictors.linear import LinearPredictor

    if not isinstance(section, dict) or section.get("kind") != "linear" or not isinstance(section.get("model"), dict):
        raise PredictorError("the predictor's energy section is malformed (expected a linear model); refit it")
    return LinearPredictor.from_dict(section["model"])


def predict_energy(predictor, feats: pd.DataFrame, latency_ms) -> tuple[np.ndarray, np.ndarray] | None:
    """(energy_mj, power_w) per row from a loaded predictor with an energy section, else None."""
    section = getattr(predictor, "doc", {}).get("energy")
    if not section:
        return None
    energy = np.asarray(energy_model(section).predict(feats), dtype=float)
    lat = np.asarray(latency_ms, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        power = np.where(lat > 0, energy / lat, np.nan)
    return energy, power
