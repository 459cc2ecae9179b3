"""A user's own blocks counted several times in a fit (`tvmlat calibrate --with`, `tvmlat fit --own-weight`).

A calibration of ~100 sampled blocks plus a few of the user's own, of a family the sampler lacks: counted once, those
few rows hardly move the fit, and the family's other blocks are predicted nearly as if it were held out. Counted
``OWN_WEIGHT`` (3) times each, they were predicted better on both hosts' shipped campaigns
(`benchmarks/family_shots.py`; docs/accuracy-log.md, "Counting a new family's blocks"):

* 5 of the family's blocks in each 100-block campaign, its other blocks scored (AMD 117 campaigns / Intel 44):
  counted once 73.7 / 68.6 % within +-10 %, twice 74.3 / 69.9, 3 times 74.5 / 70.0, 5 times 74.5 / 69.8;
* 12 of them into the first 100 blocks of a 200-block campaign (40 draws): once 68.6 / 62.0 %, 3 times 70.4 / 65.0;
* what it costs the other families, held out (``--others``): with 5 blocks counted 3 times instead of once about
  0.2 points (AMD 69.7 -> 69.5 %, Intel 63.9 -> 63.7), with 12 up to 0.8 (61.5 -> 60.8 %, Intel 58.5 -> 58.5),
  still above where they were without the new family's blocks (68.4 / 63.0 %; 60.1 / 57.3 %).

The same file records the weight (meta.json ``own_families``, the predictor's ``training.counted``). Splits are
made before a fit, so a held-out row is never among its own training rows however many times it counts there.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from ..errors import PredictorError

#: how many times each of a user's own blocks counts in the fit by default (module docstring)
OWN_WEIGHT = 3


def check_weight(weight: Any, option: str = "--with-weight") -> int:
    """``weight`` as the int it must be (1..100), else a one-line error naming ``option``."""
    if isinstance(weight, bool) or not isinstance(weight, (int, np.integer)) or not 1 <= int(weight) <= 100:
        raise PredictorError(f"{option} {weight!r}: give how many times each of your own blocks counts in the fit, "
                             f"an integer from 1 (once, as a sampled block) to 100 [{OWN_WEIGHT}]")
    return int(weight)


def times(weight: int) -> str:
    """``3 times``, ``once``."""
    return "once" if int(weight) == 1 else f"{int(weight)} times"


def counted_rows(families: np.ndarray, counted: Mapping[str, int]) -> np.ndarray:
    """Row indices of a fit's training rows with the rows of each family in ``counted`` repeated that many times
    in all (the others once, in their order)."""
    extra = [np.flatnonzero(families == fam) for fam, w in counted.items() for _ in range(int(w) - 1)]
    return np.concatenate([np.arange(len(families))] + extra) if extra else np.arange(len(families))


def recorded_counts(meta: Mapping[str, Any] | None, where: str = "meta.json") -> dict[str, int]:
    """A campaign's own families (``calibrate --with``) and how many times each counts in its fit, from its meta.json
    (``where``, for the error): ``own_families``; a campaign calibrated before it was recorded counted each once (its
    MODEL_REFs' NAMEs); none for other datasets."""
    meta = meta or {}
    if isinstance(meta.get("own_families"), dict):
        return {str(f): check_weight(w, f"{where}: own_families[{f!r}]") for f, w in meta["own_families"].items()}
    if meta.get("command") == "calibrate":
        return {str(r.get("ref", "")).rpartition(":")[2]: 1 for r in meta.get("model_refs") or []
                if isinstance(r, dict) and ":" in str(r.get("ref", ""))}
    return {}


class Counted:
    """An unfitted predictor (from ``make``) whose ``fit`` counts the rows of the families in ``counted`` that many
    times each and returns the predictor it fitted, so what callers keep is the model itself (saved, described and
    predicted from as any other). Splits are made before ``fit``: a held-out row is never in its own training rows,
    however many times it counts when it is in them."""

    def __init__(self, make: Callable[[], Any], counted: Mapping[str, int]):
        self._make, self.counted = make, dict(counted)

    def fit(self, X, y):
        rows = counted_rows(X["family"].astype(str).to_numpy(), self.counted)
        return self._make().fit(X.iloc[rows], np.asarray(y, dtype=float)[rows])


def counted_factory(make: Callable[[], Any], counted: Mapping[str, int] | None) -> Callable[[], Any]:
    """``make`` itself where nothing counts more than once, else a factory of ``Counted`` wrappers of it."""
    counted = {str(f): check_weight(w, f"weight of {f!r}") for f, w in (counted or {}).items()}
    counted = {f: w for f, w in counted.items() if w != 1}
    return (lambda: Counted(make, counted)) if counted else make
