"""Prediction intervals by split-conformal calibration on held-out residuals.

The score of a block is |log(measured / predicted)|, taken from predictions of models that did
not see the block's family (leave-one-family-out), so the interval is sized for blocks of a
family the predictor has never seen. For coverage 1 - alpha the half-width q is the
ceil((n + 1)(1 - alpha))-th smallest of the n scores (the finite-sample split-conformal
quantile), and the interval is [pred * exp(-q), pred * exp(q)]: symmetric in ratio, as latency
errors are. Guarantee (under exchangeability of families): coverage >= 1 - alpha on average.

Locally scaled (normalised split-conformal, where the calibration records each score's held-out
prediction, ``predicted_ms``): a block's score is divided by ``local_scale``, the median score of the
``NEIGHBOURS`` held-out blocks nearest to it in log predicted latency (itself left out), q is the
conformal quantile of those ratios, and a new block's half-width is q times the local scale at its
predicted latency. Small blocks miss more than large ones (held out on the AMD host, median error
~14 % under 0.1 ms against ~4 % above 1 ms), so one global q covered 72 % of the blocks under 0.1 ms and
94 % of those above 1 ms; scaled, 83 % and 91 %, at the same overall coverage (0.89), with the median
interval 21 % narrower (README, "Intervals"). With fewer than ``2 * NEIGHBOURS`` scores, or a file that
records no predictions, the interval is the global one.

Neighbours by make-up (files fitted since 2026-12-06, which record each calibration block's cost shares,
``cost_shares``): a block's scale is the ``SHARE_QUANTILE`` (90th percentile) of the scores of the
``SHARE_NEIGHBOURS`` calibration blocks nearest in (log predicted latency, ``SHARE_WEIGHT`` x each linear
term's share of the prediction), ``share_scale``, so a pool is sized by the blocks whose time also goes to
window steps and copies, not by any block of its latency. A calibration block's own neighbours are taken
from other families (its score came from a model that did not see its family, and a new block of an unseen
family has no neighbours of its own family); with random folds, from other blocks. On the 44 Intel and 111
AMD campaigns, held out, the 90 % intervals covered 90.7 / 90.6 % of the blocks (89.5 / 89.1 % by latency
alone) at median widths 0.34 / 0.42 (0.50 / 0.55), and held-out pools 79 / 79 % (62 / 65 %).

A block measured in several campaigns (a fit on several datasets) has several scores, nearly alike. Its
other rows are left out of its neighbours too (``block_groups``): otherwise a calibration block's local
scale is partly its own score, its ratio comes out near 1, and q too small. A new block has no such twin
among the calibration blocks. Pooled over the AMD host's 111 campaigns (8,543 of 11,100 rows are blocks
measured more than once), that took the 90 % intervals' coverage from 85 to 90 % on random folds.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

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


#: held-out blocks, nearest in predicted latency, whose median score is a block's local scale
NEIGHBOURS = 20
#: added to every local scale (a log ratio): a run of near-perfect neighbours does not make a zero-width interval
SCALE_FLOOR = 0.01
_CHUNK = 65536  # query rows per pass of local_scale (bounds its memory at ~25 MB)


def local_scale(cal_pred: Sequence[float], cal_scores: Sequence[float], query_pred: Any,
                k: int = NEIGHBOURS, exclude_self: bool = False, groups: Sequence[int] | None = None) -> np.ndarray:
    """For each ``query_pred`` (ms), the median of the ``k`` calibration scores whose predictions lie nearest
    in log latency, plus ``SCALE_FLOOR``. ``exclude_self``: the queries are the calibration blocks
    themselves (``query_pred is cal_pred``, in order), each left out of its own neighbours, and with
    ``groups`` (one block number per score) so is every row of the same block."""
    lp = np.log(np.asarray(cal_pred, dtype=float))
    order = np.argsort(lp, kind="stable")
    n = len(lp)
    g = pd.factorize(np.asarray(groups))[0] if exclude_self and groups is not None else None  # blocks numbered 0..
    same = int(np.bincount(g).max()) if g is not None and n else 1  # rows left out of a block's neighbours, at most
    k = min(k, n - same if exclude_self else n)
    pad = k + same  # sentinels at +-inf: a window never runs off the ends, and they are never among the nearest
    lps = np.concatenate([np.full(pad, -np.inf), lp[order], np.full(pad, np.inf)])
    ss = np.concatenate([np.zeros(pad), np.asarray(cal_scores, dtype=float)[order], np.zeros(pad)])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    q_all = np.log(np.asarray(query_pred, dtype=float))
    offs = np.arange(-pad, pad)
    if g is not None:
        gs = np.concatenate([np.full(pad, -1), g[order], np.full(pad, -1)])
    out = np.empty(len(q_all))
    for a in range(0, len(q_all), _CHUNK):
        q = q_all[a:a + _CHUNK]
        j = (rank[a:a + len(q)] if exclude_self else np.searchsorted(lps[pad:pad + n], q)) + pad
        idx = j[:, None] + offs[None, :]  # every one of the k nearest lies within k + same places of j
        d = np.abs(lps[idx] - q[:, None])
        if g is not None:  # the block's own rows, itself among them
            d[gs[idx] == g[a:a + len(q), None]] = np.inf
        elif exclude_self:
            d[:, pad] = np.inf  # offset 0 is the block itself
        near = np.argpartition(d, k - 1, axis=1)[:, :k]
        out[a:a + len(q)] = np.median(np.take_along_axis(ss[idx], near, axis=1), axis=1)
    return out + SCALE_FLOOR


def interval_bounds(pred, scores: Sequence[float], coverage: float, cal_pred: Sequence[float] | None = None,
                    cal_groups: Sequence[int] | None = None, **shares) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) in ms around ``pred``: global (one half-width) or, given the calibration blocks'
    predictions ``cal_pred`` (aligned with ``scores``) and at least ``2 * NEIGHBOURS`` of them, locally scaled
    (``cal_groups``: each score's block, where a block has several; ``shares``: ``half_widths``' cost shares)."""
    pred = np.asarray(pred, dtype=float)
    half = half_widths(pred, scores, coverage, cal_pred, cal_groups, **shares)
    with np.errstate(over="ignore"):
        return pred * np.exp(-half), pred * np.exp(half)


def half_widths(pred, scores: Sequence[float], coverage: float, cal_pred: Sequence[float] | None = None,
                cal_groups: Sequence[int] | None = None, *, cal_shares=None, query_shares=None,
                cal_families: Sequence[str] | None = None, cal_scale: np.ndarray | None = None) -> np.ndarray:
    """The interval's half-width in log ratio for each of ``pred`` (see ``interval_bounds``). With the
    calibration blocks' and the queries' cost shares (``cal_shares``, ``query_shares``: ``cost_shares`` rows)
    the neighbours are those of ``share_scale``, each calibration block's taken from other families
    (``cal_families``; without them, or where they are one family, from other blocks). ``cal_scale``: those
    calibration blocks' own scales (``calibration_scale``), where the caller keeps them between calls."""
    pred = np.asarray(pred, dtype=float)
    scores = np.asarray(scores, dtype=float)
    n_blocks = len(np.unique(cal_groups)) if cal_groups is not None else len(scores)
    if cal_pred is None or n_blocks < 2 * NEIGHBOURS:
        return np.full(pred.shape, conformal_quantile(scores, coverage))
    by_makeup = cal_shares is not None and query_shares is not None
    if by_makeup:
        own = cal_scale if cal_scale is not None else calibration_scale(cal_pred, scores, cal_shares, cal_groups,
                                                                        cal_families)
    else:
        own = local_scale(cal_pred, scores, cal_pred, exclude_self=True, groups=cal_groups)
    q = conformal_quantile(scores / own, coverage)
    if not math.isfinite(q):
        return np.full(pred.shape, np.inf)
    scale = (share_scale(cal_pred, scores, cal_shares, pred.ravel(),
                         np.asarray(query_shares, dtype=float).reshape(pred.size, -1), **share_statistic(cal_groups))
             if by_makeup else local_scale(cal_pred, scores, pred.ravel()))
    return q * scale.reshape(pred.shape)


#: how much a block's cost shares weigh against its log predicted latency in ``share_scale``'s distance
SHARE_WEIGHT = 10.0
#: calibration blocks of the same make-up whose scores give a block's scale (``share_scale``)
SHARE_NEIGHBOURS = 30
#: the quantile of those neighbours' scores taken as the scale: their tail, not their middle
SHARE_QUANTILE = 0.9


def calibration_scale(cal_pred, scores, cal_shares, cal_groups=None, cal_families=None) -> np.ndarray:
    """Each calibration block's own ``share_scale``, its neighbours taken from other families (from other blocks
    where there are no families, or one)."""
    fams = None if cal_families is None else np.asarray(cal_families)
    if fams is not None and len(np.unique(fams)) < 2:  # one family: its blocks have no other to take from
        fams = None
    labels = fams if fams is not None else np.asarray(cal_groups) if cal_groups is not None else np.arange(len(scores))
    return share_scale(cal_pred, scores, cal_shares, cal_pred, cal_shares, exclude=labels,
                       **share_statistic(cal_groups))


def share_statistic(cal_groups=None) -> dict[str, Any]:
    """``share_scale``'s neighbours and statistic for a calibration: the ``SHARE_QUANTILE`` of
    ``SHARE_NEIGHBOURS`` where each block has one row (a campaign), the median of ``NEIGHBOURS`` where some
    blocks have several (a fit on several campaigns). There the nearest rows are a few blocks measured again
    and again, and a tail quantile of them is about one block's score: pooled over the AMD host's 111
    campaigns, the 90th percentile of 30 took the held-out pools from 89 to 70 % inside and random folds'
    coverage from 90.3 to 89.6 % (Intel 90.0 to 89.3 %); the median of 20 kept them (docs/accuracy-log.md)."""
    g = None if cal_groups is None else pd.factorize(np.asarray(cal_groups))[0]
    repeated = g is not None and len(g) > 0 and np.bincount(g).max() > 1
    return {"k": NEIGHBOURS, "quantile": 0.5} if repeated else {"k": SHARE_NEIGHBOURS, "quantile": SHARE_QUANTILE}


def cost_shares(model, X) -> tuple[list[str], np.ndarray] | None:
    """Each row's make-up in the eyes of ``model``'s linear part: (the terms, then ``intercept``; every row's
    shares of its main-segment prediction, summing to 1); None for a model without one (XGBoost alone). A
    residual model's is its linear model's, an adapted one's its prior's."""
    lin = getattr(model, "linear_part", None)
    if lin is None or not hasattr(lin, "coef_"):
        return None
    return [*lin.feature_names_in_, "intercept"], lin.term_shares(X)[0]


def share_scale(cal_pred, cal_scores, cal_shares, query_pred, query_shares, k: int = SHARE_NEIGHBOURS,
                exclude: Sequence | None = None, quantile: float = SHARE_QUANTILE) -> np.ndarray:
    """For each query, the ``quantile`` of the ``k`` calibration scores nearest to it in (log predicted latency,
    ``SHARE_WEIGHT`` x cost shares), plus ``SCALE_FLOOR``: blocks whose time goes to the same kinds of work.
    ``exclude`` (the queries are the calibration blocks, in order): a label per block, its family; each block's
    neighbours are taken from other labels only, as a new block of an unseen family has none of its own.

    Chosen over ``local_scale`` (log latency alone, a block's own rows left out) on the 44 Intel and 111 AMD
    100-block campaigns, each fitted on its own, held-out families, nominal 90 %: coverage 89.5 -> 90.4 % and
    89.1 -> 90.3 %, median width 0.50 -> 0.41 and 0.55 -> 0.44, held-out pools 62 -> 73 % and 65 -> 75 % inside
    (README, "Intervals"). Leaving out the family alone raised coverage as much but widened the intervals
    (0.54 / 0.60); weights 3 and 30 gave the same coverage, 0.44 and 0.42 wide on the Intel host.

    The 90th percentile of 30 neighbours, rather than the median of 20: where a kind of block misses now and
    then by much (small blocks, pools), the median of its neighbours does not show it, and the one conformal q
    that covers the rest left those blocks short. Same checks: coverage 90.4 -> 90.7 % (Intel) and 90.3 ->
    90.6 % (AMD), median width 0.42 -> 0.34 and 0.45 -> 0.42; blocks under 0.1 ms 80 -> 84 % and 83 -> 87 %,
    held-out pools 73 -> 79 % and 75 -> 79 % inside. Random 5-fold: 90.6 -> 90.7 % and 90.4 -> 90.4 %, width
    0.38 -> 0.31 and 0.37 -> 0.33 (docs/accuracy-log.md). A fit on several campaigns keeps the median of 20
    (``share_statistic``)."""
    from scipy.spatial import cKDTree

    def coords(p, sh):
        return np.column_stack([np.log(np.asarray(p, dtype=float)), SHARE_WEIGHT * np.asarray(sh, dtype=float)])

    a, b = coords(cal_pred, cal_shares), coords(query_pred, query_shares)
    scores = np.asarray(cal_scores, dtype=float)
    out = np.empty(len(b))
    lab = None if exclude is None else pd.factorize(np.asarray(exclude))[0]
    if lab is not None and lab.max(initial=-1) >= 32:  # many small labels (blocks): one tree, own rows dropped
        count = np.bincount(lab)
        kk = min(k, len(a) - int(count.max()))
        if kk <= 0:
            return np.full(len(b), np.inf)
        _, idx = cKDTree(a).query(b, k=kk + int(count.max()), workers=-1)
        idx = np.asarray(idx).reshape(len(b), -1)
        keep = lab[idx] != lab[:, None]  # a row's own label holds at most count.max() of its nearest
        order = np.argsort(~keep, axis=1, kind="stable")[:, :kk]  # the kept ones, nearest first
        return np.quantile(scores[np.take_along_axis(idx, order, axis=1)], quantile, axis=1) + SCALE_FLOOR
    if lab is None:
        parts = [(np.arange(len(a)), np.arange(len(b)))]
    else:  # few labels (families): a tree of the other labels' blocks for each
        parts = [(np.flatnonzero(lab != v), np.flatnonzero(lab == v)) for v in np.unique(lab)]
    for cal, query in parts:
        kk = min(k, len(cal))
        if kk == 0:
            out[query] = np.inf
            continue
        _, idx = cKDTree(a[cal]).query(b[query], k=kk, workers=-1)
        out[query] = np.quantile(scores[cal][np.asarray(idx).reshape(len(query), kk)], quantile, axis=1)
    return out + SCALE_FLOOR


def _scores(preds) -> np.ndarray:
    """|log(measured / predicted)| of each row of a cross_validate frame: the conformal score."""
    return np.abs(np.log(preds["measured"] / preds["predicted"])).to_numpy(dtype=float)


def heldout_calibration(preds) -> dict[str, list]:
    """What a predictor file keeps to size its intervals: each held-out block's score
    (``abs_log_residuals``), prediction (``predicted_ms``), signed log residual (``log_residuals``) and
    family (``families``), in order of the prediction. The last two size a whole network's interval
    (``network_interval``)."""
    order = np.argsort(preds["predicted"].to_numpy(dtype=float), kind="stable")
    signed = np.log(preds["measured"] / preds["predicted"]).to_numpy(dtype=float)
    sh = share_columns(preds)
    return {"abs_log_residuals": np.abs(signed)[order].tolist(),
            "predicted_ms": preds["predicted"].to_numpy(dtype=float)[order].tolist(),
            "log_residuals": signed[order].tolist(),
            "families": preds["family"].astype(str).to_numpy()[order].tolist(),
            **({"block_groups": groups[order].tolist()} if (groups := _block_groups(preds)) is not None else {}),
            **({"cost_shares": np.round(preds[sh].to_numpy(float)[order], 6).tolist(),
                "share_terms": [c.removeprefix(SHARE_PREFIX) for c in sh]} if sh else {})}


#: the prefix of cross_validate's cost-share columns (one per linear term and the intercept)
SHARE_PREFIX = "share:"


def share_columns(preds) -> list[str]:
    """The cost-share columns of a cross_validate frame that every row has (none for a model without a linear
    part, or a frame of several models' predictions where this model has none)."""
    return [c for c in preds.columns if str(c).startswith(SHARE_PREFIX) and preds[c].notna().all()]


def _block_groups(preds) -> np.ndarray | None:
    """Each row's block, numbered, where some block has several rows (a fit on several campaigns); else None."""
    from ..metrics import block_groups

    groups = block_groups(preds)
    return groups if len(groups) and np.bincount(groups).max() > 1 else None


def network_interval(layer_pred, cal: dict, coverage: float) -> tuple[float, float, float, str]:
    """(sum, low, high, how) for a network predicted as the sum of its layers ``layer_pred`` (ms), from a
    predictor file's interval calibration ``cal`` (``heldout_calibration``).

    A network's error is not its layers' errors taken as independent: the layers share the bias of the kind
    of block they are (on the shipped NAS campaign, independent layer errors covered 41 % of the networks at a
    nominal 90 %). So the log error is split in two. The *common* part is one family's offset, the median
    held-out log residual of a family, sized by the conformal quantile of the families' |offsets| (the
    network's layers are priced by a model that did not see their kind, as a held-out family's are). The
    *independent* part is each layer's scatter around its family's offset, sized per layer by the locally
    scaled conformal half-width of those scatters, summed in quadrature in ms. The two half-widths are added
    in quadrature. With fewer than two families (or a file before 2026-12-06, which records no families),
    the interval is the bound every layer's own interval gives at once (sum of lows, sum of highs): it
    holds whenever every layer's does, and is wide."""
    p = np.asarray(layer_pred, dtype=float)
    total = float(p.sum())
    fams, signed = cal.get("families"), cal.get("log_residuals")
    scores, cal_pred = cal["abs_log_residuals"], cal.get("predicted_ms")
    if not fams or not signed or len(set(fams)) < 2:
        lo, hi = interval_bounds(p, scores, coverage, cal_pred=cal_pred, cal_groups=cal.get("block_groups"))
        return (total, float(lo.sum()), float(hi.sum()),
                "every layer's own interval at its end at once, a wide bound (a predictor refitted with "
                "`tvmlat fit` since 2026-12-06 gives a tighter one)")
    lr = np.asarray(signed, dtype=float)
    by_family = pd.Series(lr).groupby(np.asarray(fams))
    offsets = by_family.median()
    q_common = conformal_quantile(np.abs(offsets.to_numpy()), coverage)
    h = half_widths(p, np.abs(lr - by_family.transform("median").to_numpy()), coverage, cal_pred,
                    cal.get("block_groups"))
    with np.errstate(over="ignore", invalid="ignore"):
        q_ind = float(np.sqrt(np.sum((p * np.expm1(h)) ** 2)) / total) if total > 0 else 0.0
        q = math.hypot(q_common, q_ind)
    how = f"the {len(offsets)} held-out families' offsets and each layer's scatter"
    if not math.isfinite(q):
        return total, 0.0, math.inf, how
    return total, total * math.exp(-q), total * math.exp(q), how


def network_conformal(predicted: float, correction: dict, coverage: float) -> tuple[float, float, float, str] | None:
    """(corrected, low, high, how) from the leave-one-network-out residuals ``network-correction`` stored
    (``loo_log_residuals``), or None where it stored none or too few networks for ``coverage`` (a 90 % interval
    needs 9)."""
    res = correction.get("loo_log_residuals")
    factor = correction.get("factor")
    if not res or not factor:
        return None
    q = conformal_quantile(np.abs(np.asarray(res, dtype=float)), coverage)
    if not math.isfinite(q):
        return None
    mid = predicted * float(factor)
    # a factor of 1 was not fitted (anchors.fitted_correction): the errors are the plain sums', nothing left out
    return mid, mid * math.exp(-q), mid * math.exp(q), f"{len(res)} measured networks" + (
        ", each left out" if float(factor) != 1.0 else "")


def _split_hits(preds, coverage: float):
    """(split, whether each of its blocks fell inside, the intervals' widths) for every split of a
    cross-validation, its interval sized from the held-out residuals of the *other* splits."""
    score = _scores(preds)
    pred = preds["predicted"].to_numpy(dtype=float)
    split = preds["split"].to_numpy()
    groups = _block_groups(preds)
    sh = share_columns(preds)
    shares = preds[sh].to_numpy(dtype=float) if sh else None
    # held-out families: a calibration block's neighbours come from other families, as a held-out one's do;
    # random folds: from other blocks (a held-out block's family is among the calibration blocks)
    fams = (preds["family"].astype(str).to_numpy() if "family" in preds
            and (preds["split"].astype(str) == preds["family"].astype(str)).all() else None)
    for s in np.unique(split):
        mine = split == s
        if (~mine).sum() < 2:
            continue
        extra = {} if shares is None else {"cal_shares": shares[~mine], "query_shares": shares[mine],
                                           "cal_families": None if fams is None else fams[~mine]}
        half = half_widths(pred[mine], score[~mine], coverage, cal_pred=pred[~mine],
                           cal_groups=None if groups is None else groups[~mine], **extra)
        with np.errstate(over="ignore", invalid="ignore"):
            width = np.exp(half) - np.exp(-half)
        yield s, score[mine] <= half, width


def split_coverage(preds, coverage: float) -> dict[str, Any]:
    """Empirical coverage and width of conformal intervals in a cross-validation: each split's
    interval is sized from the held-out residuals of the *other* splits, then checked on its own.
    ``by_split``: the coverage within each split (with leave-one-family-out splits, each family's)."""
    parts = list(_split_hits(preds, coverage))
    if not parts:
        return {"coverage": math.nan, "width": math.nan, "by_split": {}}
    return {"coverage": float(np.mean(np.concatenate([h for _, h, _ in parts]))),
            "width": float(np.median(np.concatenate([w for _, _, w in parts]))),
            "by_split": {s: float(np.mean(h)) for s, h, _ in parts}}
