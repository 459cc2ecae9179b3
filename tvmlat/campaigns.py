"""Several campaigns of one target fitted together: each campaign's host speed divided out.

A 2-vCPU cloud host runs a campaign 1.0-1.5x as long in one hour as in another (docs/accuracy-log.md,
"Absolute speed drifts"), so rows of several campaigns disagree by their campaign's speed, not only by their
blocks. Campaigns of different seeds share no blocks, so the speeds come through the model: fit the
default linear model, take each campaign's median of measured / predicted, divide it out, and fit
again (three rounds). The speeds are scaled to a geometric mean of 1: the labels become "this host in
its average state over these campaigns".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: the column ``dataset.concat_datasets`` names each row's campaign in (its file's stem)
CAMPAIGN = "campaign"
ROUNDS = 3


def campaign_count(df: pd.DataFrame) -> int:
    return int(df[CAMPAIGN].nunique()) if CAMPAIGN in df else 1


def lone_campaigns(df: pd.DataFrame) -> list[str]:
    """Campaigns that share no family with the other campaigns. Their speed (the median of their rows' measured /
    predicted) can't be told from their families' level, so dividing it out divides that out too: e.g. own
    blocks measured apart from the calibration (``calibrate --with`` measures them with it)."""
    if campaign_count(df) < 2:
        return []
    per_family = df.groupby(df["family"].astype(str))[CAMPAIGN].nunique()
    shared = set(per_family.index[per_family > 1])  # families of more than one campaign
    return [str(c) for c, g in df.groupby(CAMPAIGN)["family"] if not set(g.astype(str)) & shared]


def lone_note(df: pd.DataFrame) -> str:
    """One line on ``lone_campaigns`` for a command that divides campaign speeds out ('' when there are none)."""
    lone = lone_campaigns(df)
    if not lone:
        return ""
    return (f"note: {', '.join(lone)} share{'s' if len(lone) == 1 else ''} no block family with the other campaigns, "
            "so a campaign's speed there is also its families' level, and dividing it out divides that out too; "
            "measure such blocks with the calibration (tvmlat calibrate --with), or fit with --no-campaign-speed")


def campaign_speeds(df: pd.DataFrame, y, rows=None, rounds: int = ROUNDS) -> pd.Series:
    """Each campaign's host speed (time factor, geometric mean 1) from ``rows`` (default: all) of
    ``df`` with labels ``y``; a campaign with no such row gets 1."""
    from .predictors.linear import LinearPredictor

    camps = df[CAMPAIGN].astype(str).to_numpy()
    y = np.asarray(y, dtype=float)
    rows = np.arange(len(df)) if rows is None else np.asarray(rows)
    speed = pd.Series(1.0, index=pd.unique(camps))
    if len(speed) < 2:
        return speed
    for _ in range(rounds):
        yn = y[rows] / speed.reindex(camps[rows]).to_numpy()
        model = LinearPredictor(features="loops").fit(df.iloc[rows], yn)
        ratio = pd.Series(y[rows] / model.predict(df.iloc[rows])).groupby(camps[rows]).median()
        speed = ratio.reindex(speed.index)
        known = speed.notna()
        speed[known] = speed[known] / np.exp(np.log(speed[known]).mean())
        speed = speed.fillna(1.0)
    return speed


def divided(df: pd.DataFrame, y, speeds: pd.Series) -> np.ndarray:
    """``y`` with every row's campaign speed divided out."""
    return np.asarray(y, dtype=float) / speeds.reindex(df[CAMPAIGN].astype(str).to_numpy()).fillna(1.0).to_numpy()


def describe(speeds: pd.Series) -> str:
    return (f"host speed of {len(speeds)} campaigns divided out: {speeds.min():.2f}-{speeds.max():.2f}x "
            f"(slowest {speeds.idxmax()}, fastest {speeds.idxmin()})")
