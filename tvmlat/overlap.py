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

So the fit chooses the overlap (``choose_core``; ``choose_overlap`` until the thrash reach joined it in version 24):
for each candidate of ``OVERLAP_GRID`` it counts the rows' loop features again, fits the linear ``loops`` model on
all of them, and keeps the candidate with the lowest loss of that fit (the soft-L1 of the log error the linear fit
itself minimises). The predictor file records it in its ``cache_geometry`` (``chain_overlap``), so every prediction
counts with it. Chosen that way on the training families only, held out per campaign: Zen 5 48.1 -> 68.7 % within
+-10 % (10 campaigns; overlap 140 in all but one), docs/accuracy-log.md, "Version 23".

Version 24 fits a second parameter of the core with it, the same way: up to how many L1 lines a strided walk that L1
holds only that many lines of still thrashes (``CacheGeometry.thrash_lines``), the walks past 16 lines counted in a
column of their own, ``mac_l1thrash_far``. Versions 8-23 counted walks of up to 16 lines on every host (on the Zen 4
host's 8-way L1 one or two sets; ``mac_l1thrash``). On the Zen 5 host's 12-way L1 a matmul's column walk 2 KiB apart
(24 lines, two sets: 512 columns) ran 0.45-0.68x its prediction and ones 1 or 3 KiB apart (48 lines, four sets)
0.66-0.98x; the Intel host, with an L1 of the same shape, pays little even at 12 lines. The fit tries ``THRASH_LINES``
(no far walks) and two and four sets' lines (``thrash_candidates``) with every overlap. Chosen on the training
families only, held out per campaign within +-10 %: Zen 5 69.1 -> 73.3 % (16 campaigns: 14 gained, none lost;
48 lines chosen in 13), Zen 4 73.6 -> 73.9 % (27), Intel 65.6 -> 65.6 % (22); docs/accuracy-log.md, "Version 24".
A reach past 16 lines is kept only where it lowers the fit's loss by more than ``THRASH_SLACK``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from .loop_features import CHAIN_OVERLAP, THRASH_LINES, CacheGeometry

#: the overlaps a fit tries (steps)
OVERLAP_GRID = (40, 55, 70, 85, 100, 120, 140, 170, 200)
#: the scale of the soft-L1 loss the linear fit minimises (``predictors.linear._fit_log``'s ``f_scale``)
LOSS_SCALE = 0.1


def fit_loss(predicted: Any, measured: Any) -> float:
    """The mean soft-L1 loss of the log error at ``LOSS_SCALE``: what the linear fit minimises, per block."""
    z = (np.log(np.asarray(predicted, dtype=float) / np.asarray(measured, dtype=float)) / LOSS_SCALE) ** 2
    return float(np.mean(2 * (np.sqrt(1 + z) - 1)))


#: the loop columns the core's parameters change (a chain's exposed steps, those of them that miss L1, and the
#: multiply-adds of thrashing walks past 16 lines); the rest of a row stays as stored
CORE_COLUMNS = ("mac_excess", "mac_l1miss_exc", "mac_l1thrash_far")


def thrash_candidates(geometry: CacheGeometry) -> tuple[int, ...]:
    """The thrash reaches a fit tries on ``geometry``'s L1 (version 24): ``THRASH_LINES`` (what versions 8-23 counted
    everywhere: no walk past it), and the lines of two and of four of its sets."""
    return tuple(sorted({THRASH_LINES, 2 * geometry.ways, 4 * geometry.ways}))


#: a thrash reach past ``THRASH_LINES`` (a column more for the fit) is kept only where it lowers the fit's loss by more
#: than this share of it (or by 1e-6): where the walks past 16 lines do not pay, their column is not fitted to noise
THRASH_SLACK = 0.002
#: with at least this many rows counted from a spec, the choice is made on those alone (rows measured from a model
#: reference are counted again by loading it, for the overlap chosen only)
SPEC_ROWS = 20


def recount_core(rows: pd.DataFrame, geometry: CacheGeometry, model_refs: list[dict[str, Any]] | None = None,
                 where: str = "the dataset") -> pd.DataFrame:
    """``rows`` with ``CORE_COLUMNS`` counted again for ``geometry`` (its ``chain_overlap`` and ``thrash_lines``),
    from each row's spec, or from ``model_refs`` for rows measured from a model reference."""
    from .dataset import refresh_features

    return refresh_features(rows, geometry, model_refs, where, columns=CORE_COLUMNS)


def counted_with_core(rows: pd.DataFrame, geometry: CacheGeometry, other: CacheGeometry,
                      model_refs: list[dict[str, Any]] | None = None) -> tuple[CacheGeometry, pd.DataFrame]:
    """(``geometry`` with ``other``'s core parameters, ``rows`` -- counted for ``geometry`` -- counted for them): how a
    predictor whose prices were fitted with ``other``'s core counts these rows (`calibrate --from`, the few-shot
    models); ``rows`` as they are where the two cores are the same."""
    if other.core == geometry.core:
        return geometry, rows
    geometry = geometry.with_core(other)
    return geometry, recount_core(rows, geometry, model_refs)


def choose_core(rows: pd.DataFrame, geometry: CacheGeometry, y: Any, *, make_model: Callable[[], Any] | None = None,
                model_refs: list[dict[str, Any]] | None = None, where: str = "the dataset",
                grid=OVERLAP_GRID, thrash_grid=None
                ) -> tuple[CacheGeometry, pd.DataFrame, dict[tuple[int, int], float]]:
    """The core's parameters, (overlap of ``grid``, thrash reach of ``thrash_grid``; None: ``thrash_candidates``),
    whose fit on ``rows`` (labels ``y``) has the lowest ``fit_loss``: (``geometry`` with them, ``rows`` counted for
    them, ``{(overlap, thrash_lines): loss}``). Only ``CORE_COLUMNS`` are counted again: from each row's spec, or
    from ``model_refs`` (a dataset's meta.json's) for rows measured from a model reference; with ``SPEC_ROWS`` rows or
    more that have a spec, those alone choose. ``make_model``: the model that chooses (the linear ``loops`` model).
    Ties keep the overlap nearest 70; a reach past 16 lines (what earlier versions counted) must lower the loss by more
    than ``THRASH_SLACK`` of it."""
    from .dataset import spec_rows
    from .predictors.linear import LinearPredictor

    make = make_model or (lambda: LinearPredictor(features="loops"))
    y = np.asarray(y, dtype=float)
    has_spec = spec_rows(rows).to_numpy()
    pick = has_spec if SPEC_ROWS <= has_spec.sum() < len(rows) else np.ones(len(rows), bool)
    part, yp = rows[pick], y[pick]
    losses, counted = {}, {}
    for t in (thrash_candidates(geometry) if thrash_grid is None else thrash_grid):
        for a in grid:
            counted[a, t] = recount_core(part, geometry.with_overlap(a, t), model_refs, where)
            losses[a, t] = fit_loss(make().fit(counted[a, t], yp).predict(counted[a, t]), yp)
    per_reach = [min((k for k in losses if k[1] == t), key=lambda k: (round(losses[k], 12), abs(k[0] - CHAIN_OVERLAP)))
                 for t in sorted({t for _, t in losses})]
    floor = min(losses[k] for k in per_reach)
    best = min((k for k in per_reach if losses[k] <= floor + max(THRASH_SLACK * floor, 1e-6)),
               key=lambda k: abs(k[1] - THRASH_LINES))
    chosen = geometry.with_overlap(*best)
    if pick.all():  # every row chose: they are counted for it already
        return chosen, counted[best], losses
    # the rows as given are counted for ``geometry``: nothing to count again where it is the one chosen
    return chosen, rows if chosen == geometry else recount_core(rows, chosen, model_refs, where), losses


def describe_choice(best: CacheGeometry, losses: dict[tuple[int, int], float]) -> str:
    """One line: the core's parameters chosen (``best``'s) and their loss against the defaults'."""
    key = best.core
    base = losses.get((CHAIN_OVERLAP, THRASH_LINES))
    overlaps, reaches = sorted({a for a, _ in losses}), sorted({t for _, t in losses})
    tried = (f"over {overlaps[0]}-{overlaps[-1]}" if len(overlaps) > 1 else f"at {overlaps[0]}") + (
        f" steps and {'/'.join(map(str, reaches))} lines" if len(reaches) > 1 else " steps")
    return (f"chain overlap {key[0]} steps, thrashing walks up to {key[1]} L1 lines, chosen by the fit {tried} (its "
            f"loss {losses[key]:.4f}" + (f"; at {CHAIN_OVERLAP} and {THRASH_LINES}, what versions before 23 counted: "
                                          f"{base:.4f}" if base is not None and key != (CHAIN_OVERLAP, THRASH_LINES)
                                          else "") + ")")
