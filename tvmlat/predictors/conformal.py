"""Prediction intervals by split-conformal calibration on held-out residuals.

The score of a block is |log(measured / predicted)|, taken from predictions of models that did
not see the block's family (leave-one-family-out), so the interval is sized for blocks of a
family the predictor has never seen. For coverage 1 - alpha the half-width q is the
ceil((n + 1)(1 - alpha))-th smallest of the n scores (the finite-sample split-conformal
quantile), and the interval is [pred * exp(-q), pred * exp(q)]: symmetric in ratio, as latency
errors are. Guarantee (under exchangeability of families): coverage >= 1 - alpha on average.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..errors import PredictorError


def conformal_quantile(scores: Sequence[float], coverage: float) -> float:
    if not 0 < coverage < 1:
        raise PredictorError(f"interval coverage must be between 0 and 1 (e.g. 0.9), got {coverage}")
    s = np.sort(np.asarray(scores, dtype=float))
    n = len(s)
    if n == 0:
        raise PredictorError("no held-out residuals to size the interval")
    k = math.ceil((n + 1) * coverage)
    return float("inf") if k > n else float(s[k - 1])


def interval_bounds(pred, scores: Sequence[float], coverage: float) -> tuple[np.ndarray, np.ndarray]:
    q = conformal_quantile(scores, coverage)
    pred = np.asarray(pred, dtype=float)
    return pred * math.exp(-q), pred * math.exp(q) if math.isfinite(q) else np.full_like(pred, np.inf)


def heldout_scores(preds) -> list[float]:
    """|log(measured/predicted)| of held-out predictions (a cross_validate frame), sorted."""
    return sorted(np.abs(np.log(preds["measured"] / preds["predicted"])).astype(float).tolist())


def split_coverage(preds, coverage: float) -> dict[str, float]:
    """Empirical coverage and width of conformal intervals in a cross-validation: each split's
    interval is sized from the held-out residuals of the *other* splits, then checked on its own."""
    hit, width = [], []
    score = np.abs(np.log(preds["measured"] / preds["predicted"])).to_numpy()
    split = preds["split"].to_numpy()
    for s in np.unique(split):
        mine = split == s
        if (~mine).sum() < 2:
            continue
        q = conformal_quantile(score[~mine], coverage)
        hit.append(score[mine] <= q)
        width.append(np.full(mine.sum(), math.exp(q) - math.exp(-q) if math.isfinite(q) else math.inf))
    if not hit:
        return {"coverage": math.nan, "width": math.nan}
    return {"coverage": float(np.mean(np.concatenate(hit))), "width": float(np.median(np.concatenate(width)))}
