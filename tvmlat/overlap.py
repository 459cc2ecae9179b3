"""Features version 23: how much of a multiply-add chain the core hides, fitted per host.

Without a schedule, TVM's CPU code runs each output of a conv or a matrix product as one chain of
dependent multiply-adds. The next output's chain starts while this one runs and hides up to
``chain_overlap`` of its steps (``loop_features.chain_steps``: ``red**2 // (red + overlap)`` exposed). How
many is the core's: its out-of-order window, not a cache size that sysfs lists. Versions 16-22 counted 70
on every host, what the AMD Zen 4 host's 1x1 convs gave (``znver4``; the Intel host's gave 49-71).

On an AMD Zen 5 host (family 26, ``znver5``, 48 KiB 12-way L1) the same blocks ran 1.66x faster than
on Zen 4 (median), but long chains only 1.22-1.33x (3 x 3 convs over 32-128 channels, k = 512 matmuls)
and short ones ~2x: the chain's latency did not shrink, the overlap grew. Refitted with overlaps of
40-300, its 200-block campaign's held-out families went from 57 % within +-10 % at 70 to 75 / 78 % at
100 / 140; the Zen 4 host's stayed at 68 % from 40 to 70, and fell to 61 % at 100; the Intel host's were
66 / 67 % at 70 / 100.

So the fit chooses the overlap (``choose_overlap``): for each candidate of ``OVERLAP_GRID`` it counts
the rows' loop features again, fits the linear ``loops`` model on all of them, and keeps the candidate
with the lowest loss of that fit (the soft-L1 of the log error the linear fit itself minimises). The
predictor file records it in its ``cache_geometry`` (``chain_overlap``), so every prediction counts
with it. Chosen that way on the training families only, held out per campaign: Zen 5 48.1 -> 68.7 % within
+-10 % (10 campaigns; overlap 140 in all but one), docs/accuracy-log.md, "Version 23".
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from .loop_features import CHAIN_OVERLAP, CacheGeometry

#: the overlaps a fit tries (steps)
OVERLAP_GRID = (40, 55, 70, 85, 100, 120, 140, 170, 200)
#: the scale of the soft-L1 loss the linear fit minimises (``predictors.linear._fit_log``'s ``f_scale``)
LOSS_SCALE = 0.1


def fit_loss(predicted: Any, measured: Any) -> float:
    """The mean soft-L1 loss of the log error at ``LOSS_SCALE``: what the linear fit minimises, per block."""
    z = (np.log(np.asarray(predicted, dtype=float) / np.asarray(measured, dtype=float)) / LOSS_SCALE) ** 2
    return float(np.mean(2 * (np.sqrt(1 + z) - 1)))


#: the loop columns the overlap changes (a chain's exposed steps, and those of them that miss L1); the rest of a row
#: stays as stored
OVERLAP_COLUMNS = ("mac_excess", "mac_l1miss_exc")
#: with at least this many rows counted from a spec, the choice is made on those alone (rows measured from a model
#: reference are counted again by loading it, for the overlap chosen only)
SPEC_ROWS = 20


def with_overlap(rows: pd.DataFrame, geometry: CacheGeometry, model_refs: list[dict[str, Any]] | None = None,
                 where: str = "the dataset") -> pd.DataFrame:
    """``rows`` with ``OVERLAP_COLUMNS`` counted again for ``geometry`` (its ``chain_overlap``), from each row's spec,
    or from ``model_refs`` for rows measured from a model reference."""
    from .dataset import refresh_features

    fresh = refresh_features(rows, geometry, model_refs, where)
    out = rows.copy()
    for c in OVERLAP_COLUMNS:
        out[c] = fresh[c]
    return out


def choose_overlap(rows: pd.DataFrame, geometry: CacheGeometry, y: Any, *, make_model: Callable[[], Any] | None = None,
                   model_refs: list[dict[str, Any]] | None = None, where: str = "the dataset",
                   grid=OVERLAP_GRID) -> tuple[CacheGeometry, pd.DataFrame, dict[int, float]]:
    """The overlap of ``grid`` whose fit on ``rows`` (labels ``y``) has the lowest ``fit_loss``: (``geometry`` with
    it, ``rows`` counted for it, ``{overlap: loss}``). Only ``OVERLAP_COLUMNS`` are counted again: from each row's
    spec, or from ``model_refs`` (a dataset's meta.json's) for rows measured from a model reference; with
    ``SPEC_ROWS`` rows or more that have a spec, those alone choose. ``make_model``: the model that chooses (the
    linear ``loops`` model). Ties keep the overlap nearest 70, what earlier versions counted."""
    from .dataset import spec_rows
    from .predictors.linear import LinearPredictor

    make = make_model or (lambda: LinearPredictor(features="loops"))
    y = np.asarray(y, dtype=float)
    has_spec = spec_rows(rows).to_numpy()
    pick = has_spec if SPEC_ROWS <= has_spec.sum() < len(rows) else np.ones(len(rows), bool)
    part, yp = rows[pick], y[pick]
    losses, counted = {}, {}
    for a in grid:
        counted[a] = with_overlap(part, geometry.with_overlap(a), model_refs, where)
        losses[a] = fit_loss(make().fit(counted[a], yp).predict(counted[a]), yp)
    best = min(losses, key=lambda a: (round(losses[a], 12), abs(a - CHAIN_OVERLAP)))
    chosen = geometry.with_overlap(best)
    if pick.all():  # every row chose: they are counted for it already
        return chosen, counted[best], losses
    # the rows as given are counted for ``geometry``: nothing to count again where it is the one chosen
    return chosen, rows if chosen == geometry else with_overlap(rows, chosen, model_refs, where), losses


def describe_choice(best: int, losses: dict[int, float]) -> str:
    """One line: the overlap chosen and its loss against the default's."""
    base = losses.get(CHAIN_OVERLAP)
    return (f"chain overlap {best} steps, chosen by the fit over {min(losses)}-{max(losses)} (its loss "
            f"{losses[best]:.4f}" + (f"; at {CHAIN_OVERLAP}, what versions before 23 counted: {base:.4f}"
                                     if base is not None and best != CHAIN_OVERLAP else "") + ")")
