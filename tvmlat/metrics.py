"""Accuracy metrics and cross-validation splits (random k-fold and leave-one-family-out)."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from .errors import PredictorError

METRIC_LABELS = {
    "n": "blocks",
    "median_ape": "median APE %",
    "median_ape_ge1ms": "median APE % (>= 1 ms)",
    "median_ape_lt1ms": "median APE % (< 1 ms)",
    "within5": "within +-5 %",
    "within10": "within +-10 %",
    "mape": "MAPE %",
    "rmspe": "RMSPE %",
    "spearman": "Spearman rho",
    "r2_log": "R2 (log latency)",
    "worst_x": "worst block: factor off",
}
#: what the metrics tables show: accuracy plus the empirical coverage and width of 90% intervals
TABLE_LABELS = {**METRIC_LABELS, "cov90": "90 % interval: coverage", "width90": "90 % interval: width / pred"}


#: the metrics split at 1 ms: of latency only (bytes or millijoules have no such line)
MS_SPLIT = ("median_ape_ge1ms", "median_ape_lt1ms")


def accuracy(y_true, y_pred, latency: bool = True) -> dict[str, float]:
    """APE-based metrics in percent; shares within +-5/10 % as fractions; R^2 on log10 latency; the worst
    block's factor off, max(predicted / measured, measured / predicted) (an APE can't exceed 100 % for
    an under-prediction, so a block predicted 1000x too fast shows only here). ``latency=False``: of
    another quantity (peak bytes, energy), without the medians split at 1 ms."""
    from scipy.stats import spearmanr  # here: scipy.stats takes 0.5 s to import, and most commands never score

    y = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if len(y) == 0:
        return {k: math.nan for k in METRIC_LABELS if latency or k not in MS_SPLIT} | {"n": 0}
    ape = np.abs(p - y) / y * 100
    big = y >= 1.0

    def med(a):
        return float(np.median(a)) if len(a) else math.nan

    ly, lp = np.log10(y), np.log10(np.maximum(p, 1e-9))
    ss_tot = float(np.sum((ly - ly.mean()) ** 2))
    split = {"median_ape_ge1ms": med(ape[big]), "median_ape_lt1ms": med(ape[~big])} if latency else {}
    return {
        "n": int(len(y)),
        "median_ape": med(ape),
        **split,
        "within5": float(np.mean(ape <= 5)),
        "within10": float(np.mean(ape <= 10)),
        "mape": float(np.mean(ape)),
        "rmspe": float(np.sqrt(np.mean(ape ** 2))),
        "spearman": float(spearmanr(y, p).statistic) if len(y) > 2 else math.nan,
        "r2_log": 1 - float(np.sum((ly - lp) ** 2)) / ss_tot if ss_tot > 0 else math.nan,
        "worst_x": float(10 ** np.max(np.abs(lp - ly))),
    }


def family_splits(df: pd.DataFrame) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Leave-one-family-out: train on every other family, test on this one."""
    fam = df["family"].astype(str).to_numpy()
    for f in sorted(set(fam)):
        test = fam == f
        yield f, np.flatnonzero(~test), np.flatnonzero(test)


def block_groups(df: pd.DataFrame) -> np.ndarray:
    """Each row's block, numbered in order of first appearance: a block measured in several campaigns
    is one group, so that a split never trains on the block it tests (each row its own group when
    ``block_id`` is missing)."""
    if "block_id" not in df:
        return np.arange(len(df))
    return pd.factorize(df["block_id"].astype(str))[0]


def block_draw(df: pd.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(each row's block, the blocks in a seeded random order): what random splits by block draw from."""
    groups = block_groups(df)
    return groups, np.random.default_rng(seed).permutation(groups.max() + 1 if len(groups) else 0)


def kfold_splits(df: pd.DataFrame, k: int = 5, seed: int = 0) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Random k-fold over blocks (rows of one block stay together; with one row per block, a plain
    random k-fold over rows)."""
    groups, perm = block_draw(df, seed)
    for i, part in enumerate(np.array_split(perm, k)):
        test = np.isin(groups, part)
        yield f"fold{i}", np.flatnonzero(~test), np.flatnonzero(test)


def cross_validate(df: pd.DataFrame, make_model: Callable[[], Any], split: str = "family",
                   k: int = 5, seed: int = 0, y_col: str = "latency_ms_median",
                   campaign_speed: bool = False) -> tuple[dict[str, float], pd.DataFrame]:
    """Fit a fresh model per split, predict the held-out rows; metrics over all held-out rows pooled.

    ``campaign_speed``: rows of several campaigns (``campaign`` column) get each campaign's host
    speed divided out, estimated per split from its training rows only (``campaigns.campaign_speeds``);
    "measured" is then the divided label.
    Returns (pooled metrics, per-row predictions with columns block_id, family, measured, predicted, split, and
    for a model with a linear part each term's share of its prediction, ``share:TERM``).
    """
    from .campaigns import campaign_count, campaign_speeds, divided
    from .predictors.conformal import SHARE_PREFIX, cost_shares

    splits = family_splits(df) if split == "family" else kfold_splits(df, k, seed)
    y_raw = df[y_col].to_numpy(dtype=float)
    speeds = campaign_speed and campaign_count(df) > 1
    parts = []
    for name, tr, te in splits:
        if len(tr) == 0 or len(te) == 0:
            continue
        y = divided(df, y_raw, campaign_speeds(df, y_raw, tr)) if speeds else y_raw
        model = make_model().fit(df.iloc[tr], y[tr])
        part = pd.DataFrame({"block_id": df["block_id"].iloc[te].to_numpy(), "family": df["family"].iloc[te].to_numpy(),
                             "measured": y[te], "predicted": model.predict(df.iloc[te]), "split": name})
        shares = cost_shares(model, df.iloc[te])
        if shares is not None:  # what each held-out block's time goes to: its interval's neighbours (conformal)
            part = pd.concat([part, pd.DataFrame(shares[1], columns=[SHARE_PREFIX + t for t in shares[0]])], axis=1)
        parts.append(part)
    if not parts:
        raise PredictorError(f"no {split} split has both training and test rows "
                             f"({df['family'].nunique()} families, {len(df)} rows); measure more blocks or families")
    preds = pd.concat(parts, ignore_index=True)
    return accuracy(preds["measured"], preds["predicted"], latency=y_col.startswith("latency_ms")), preds


def per_family(preds: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for fam, g in preds.groupby("family"):
        m = accuracy(g["measured"], g["predicted"])
        rows.append({"family": fam, "n": m["n"], "median_ape": m["median_ape"], "within10": m["within10"],
                     "bias": float(np.median(g["predicted"] / g["measured"]))})
    return pd.DataFrame(rows)
