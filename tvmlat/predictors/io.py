"""Predictor files: one versioned JSON document per predictor. Never pickle."""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PredictorError
from ..jsonfile import read_json, write_json

SCHEMA_VERSION = 1


def _kinds():
    from .adapted import AdaptedPredictor
    from .linear import LinearPredictor
    from .residual import ResidualPredictor, XGBPredictor

    return {"linear": LinearPredictor, "linear+xgb": ResidualPredictor, "xgb": XGBPredictor,
            "adapted": AdaptedPredictor}


def predictor_document(model, *, target: dict[str, Any], profile: str, dataset_hash: str = "",
                       training: dict[str, Any] | None = None, interval: dict[str, Any] | None = None,
                       energy: dict[str, Any] | None = None, geometry=None) -> dict[str, Any]:
    """The predictor file's document; ``energy``: an energy section from ``energy.fit_energy`` (optional);
    ``geometry``: the L1 its training rows' loop features were counted for (None: ``DEFAULT_GEOMETRY``)."""
    from .. import __version__
    from ..features import FEATURES_VERSION
    from ..loop_features import DEFAULT_GEOMETRY

    doc = {
        "schema_version": SCHEMA_VERSION,
        "features_version": FEATURES_VERSION,
        "kind": model.kind,
        "tvmlat_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "target": target,
        "profile": profile,
        "dataset_hash": dataset_hash,
        "training": training or {},
        "model": model.to_dict(),
        "features": list(model.feature_names_in_),
        "cache_geometry": (geometry or DEFAULT_GEOMETRY).to_dict(),  # the L1 its loop features were counted for
        "interval": interval or {},
    }
    if energy:
        doc["energy"] = energy
    return doc


def save_predictor(model, path: str | Path, **kw: Any) -> dict[str, Any]:
    return write_predictor(predictor_document(model, **kw), path)


def write_predictor(doc: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """Write a predictor document (``predictor_document``, perhaps with sections added) to ``path``, in one
    replacement of the file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_json(p, doc, indent=2, default=float)
    return doc


class LoadedPredictor:
    """A predictor file: the model plus what it was fitted for."""

    def __init__(self, doc: dict[str, Any], model, geometry=None):
        from ..loop_features import CacheGeometry

        self.doc = doc
        self.model = model
        #: the L1 geometry its loop features are counted for: pass ``geometry=p.geometry`` to the
        #: feature counters (``count_features``, ``analytic_frame``, ...) before ``predict``
        self.geometry = geometry or CacheGeometry.from_dict(doc.get("cache_geometry"))

    @property
    def target(self) -> dict[str, Any]:
        return self.doc.get("target", {})

    @property
    def profile(self) -> str:
        return self.doc.get("profile", "default")

    def describe(self) -> str:
        """What it predicts for, for a title: the target's name, the CPU or GPU it was calibrated on (a
        predictor of another host's CPU predicts that CPU, not this one's) and the compile profile,
        e.g. ``llvm (znver4, default)``."""
        chip = target_chip(self.target)
        return f"{self.target.get('name', '?')} ({chip + ', ' if chip else ''}{self.profile})"

    def check_geometry(self, X) -> None:
        """PredictorError when ``X`` records (``loop_features.stamp_geometry``) that its loop features were
        counted for another L1 than this predictor's: its predictions would be silently off."""
        from ..loop_features import stamped_geometry

        g = stamped_geometry(X)
        if g is not None and g != self.geometry:
            raise PredictorError(f"these features were counted for a {g.describe()}, this predictor for a "
                                 f"{self.geometry.describe()}; count them with geometry=predictor.geometry")

    def predict(self, X):
        self.check_geometry(X)
        return self.model.predict(X)

    def unpriced(self, X) -> list[list[str]]:
        """For each row of ``X``, the features it has (> 0) that no training block had: the fit could not price
        that work, so the prediction leaves it out (too low). Empty lists for files before 2026-12-05, which
        record no ``training.feature_max``."""
        seen = self.doc.get("training", {}).get("feature_max") or {}
        never = [f for f, v in seen.items() if isinstance(v, (int, float)) and v <= 0 and f in X]
        if not never:
            return [[] for _ in range(len(X))]
        has = X[never].to_numpy(dtype=float) > 0
        return [[f for f, h in zip(never, row) if h] for row in has]

    def interval(self, X, coverage: float):
        """(predicted, low, high) in ms for every row, from the file's conformal residuals."""
        from .conformal import interval_bounds

        pred = self.predict(X)
        cal = self.interval_calibration()
        lo, hi = interval_bounds(pred, cal["abs_log_residuals"], coverage, cal_pred=cal.get("predicted_ms"),
                                 cal_groups=cal.get("block_groups"), **self._share_args(cal, X))
        return pred, lo, hi

    def _share_args(self, cal: dict[str, Any], X) -> dict[str, Any]:
        """``half_widths``' cost-share arguments where the file records the calibration blocks' shares (files
        before 2026-12-06 do not: their neighbours are by predicted latency alone)."""
        from .conformal import cost_shares

        if cal.get("cost_shares") is None or cal.get("predicted_ms") is None:
            return {}
        shares = cost_shares(self.model, X)
        if shares is None or shares[0] != cal.get("share_terms"):
            raise PredictorError("this predictor file's interval calibration (cost_shares, share_terms) does not "
                                 "match its model's terms; the file is damaged: refit it with `tvmlat fit`")
        if getattr(self, "_cal_shares", (None,))[0] is not cal:  # the calibration's own part, once per file
            from .conformal import calibration_scale

            sh = np.asarray(cal["cost_shares"], dtype=float)
            self._cal_shares = (cal, sh, calibration_scale(cal["predicted_ms"], cal["abs_log_residuals"], sh,
                                                           cal.get("block_groups"), cal.get("families")))
        _, sh, own = self._cal_shares
        return {"cal_shares": sh, "query_shares": shares[1], "cal_scale": own,
                "cal_families": cal.get("families")}  # one family (a 5-fold calibration): from other blocks

    def network_interval(self, layer_ms, coverage: float) -> tuple[float, float, float, str]:
        """For a network whose layers this predictor predicted at ``layer_ms`` (``predict`` of their rows): (the
        network's prediction, low, high, how the interval was sized). The prediction is the sum of the layers,
        times the factor ``network-correction`` stored where the file has one. The interval comes from that
        command's leave-one-out residuals where they are enough networks for ``coverage``
        (``conformal.network_conformal``), otherwise from the calibration (``conformal.network_interval``)."""
        from .conformal import network_conformal, network_interval

        pred = np.asarray(layer_ms, dtype=float)
        cal = self.interval_calibration()
        factor = self.network_factor()
        corr = self.doc.get("network_correction") or {}
        res = corr.get("loo_log_residuals")
        if res is not None and not (isinstance(res, list) and all(_finite(v) for v in res)):
            raise PredictorError(_DAMAGED_CORRECTION)
        measured = network_conformal(float(pred.sum()), corr if res is not None else {}, coverage)
        if measured:
            return measured
        total, lo, hi, how = network_interval(pred, cal, coverage)
        if factor in (None, 1.0):
            return total, lo, hi, how
        # too few measured networks for this coverage: the calibration's interval, around the corrected sum
        return total * factor, lo * factor, hi * factor, f"{how}, times the network correction x{factor:.3f}"

    def without_network_correction(self) -> "LoadedPredictor":
        """This predictor with the ``network-correction`` section it carries left out (in memory; the file is left as
        it is): a network is then the plain sum of its layers, its interval the calibration's (`predict` and `analyze`
        ``--no-network-correction``)."""
        self.doc = {k: v for k, v in self.doc.items() if k != "network_correction"}
        return self

    def network_factor(self) -> float | None:
        """The factor ``network-correction`` stored (a whole network is the sum of its layers' predictions times
        it), or None where the file has none."""
        corr = self.doc.get("network_correction")
        if not corr:
            return None
        factor = corr.get("factor") if isinstance(corr, dict) else None
        if not (_finite(factor) and factor > 0):
            raise PredictorError(_DAMAGED_CORRECTION)
        return float(factor)

    def interval_calibration(self) -> dict[str, Any]:
        """The file's interval calibration, checked (once: a pooled fit's holds ~10^5 numbers): PredictorError
        (refit) where it is missing or damaged."""
        if getattr(self, "_checked_cal", None) is not None and self._checked_cal is self.doc.get("interval"):
            return self._checked_cal
        cal = self.doc.get("interval")
        scores = cal.get("abs_log_residuals") if isinstance(cal, dict) else None
        if not scores:
            raise PredictorError("this predictor file holds no interval calibration; refit it with `tvmlat fit`")
        if not isinstance(scores, list) or not all(isinstance(s, (int, float)) and s >= 0 for s in scores):
            raise PredictorError("this predictor file's interval calibration (abs_log_residuals) is not a list of "
                                 "non-negative numbers; the file is damaged: refit it with `tvmlat fit`")
        cal_pred = cal.get("predicted_ms")  # files before 2026-12-05 record none: one global half-width
        if cal_pred is not None and (not isinstance(cal_pred, list) or len(cal_pred) != len(scores) or not all(
                _finite(v) and v > 0 for v in cal_pred)):
            raise PredictorError("this predictor file's interval calibration (predicted_ms) is not a list of positive "
                                 "numbers, one per residual; the file is damaged: refit it with `tvmlat fit`")
        fams, signed = cal.get("families"), cal.get("log_residuals")  # files before 2026-12-06 record neither
        if (fams, signed) != (None, None) and not (
                isinstance(fams, list) and isinstance(signed, list) and len(fams) == len(signed) == len(scores)
                and all(isinstance(f, str) for f in fams)
                and all(_finite(v) for v in signed)):
            raise PredictorError("this predictor file's interval calibration (families, log_residuals) is not one "
                                 "family name and one number per residual; the file is damaged: refit it with "
                                 "`tvmlat fit`")
        sh, terms = cal.get("cost_shares"), cal.get("share_terms")  # files before 2026-12-06 record neither
        if (sh, terms) != (None, None) and not (
                isinstance(sh, list) and isinstance(terms, list) and len(sh) == len(scores)
                and all(isinstance(t, str) for t in terms)
                and all(isinstance(r, list) and len(r) == len(terms) and all(_finite(v) for v in r) for r in sh)):
            raise PredictorError("this predictor file's interval calibration (cost_shares, share_terms) is not one "
                                 "row of shares per residual, one per term; the file is damaged: refit it with "
                                 "`tvmlat fit`")
        groups = cal.get("block_groups")  # a fit on several campaigns: each residual's block
        if groups is not None and not (isinstance(groups, list) and len(groups) == len(scores) and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in groups)):
            raise PredictorError("this predictor file's interval calibration (block_groups) is not one block number "
                                 "per residual; the file is damaged: refit it with `tvmlat fit`")
        self._checked_cal = cal
        return cal


_DAMAGED_CORRECTION = ("this predictor file's network correction (factor, loo_log_residuals) is not a positive factor "
                       "and a list of numbers; the file is damaged: run `tvmlat network-correction` again")


def _finite(v) -> bool:
    """A JSON number that is finite (not a bool, not NaN or infinity)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def target_chip(target: dict[str, Any]) -> str:
    """The CPU (``mcpu``) or GPU architecture (``arch``) a target dict (a predictor's, a dataset meta's) was
    resolved to; '' where it was not ("host" or unset)."""
    chip = target.get("arch") or target.get("mcpu") or ""
    return "" if chip == "host" else chip


def feature_max(rows, features) -> dict[str, float]:
    """The largest value of each numeric feature over the training ``rows`` (a predictor file's
    ``training.feature_max``): a feature that is 0 in every row has no price the data could tell, so a
    block that has it is predicted as if that work were free (``LoadedPredictor.unpriced``)."""
    import pandas as pd

    return {f: float(rows[f].max()) for f in features
            if f in rows and pd.api.types.is_numeric_dtype(rows[f]) and len(rows)}


def load_predictor(path: str | Path) -> LoadedPredictor:
    p = Path(path)
    if not p.is_file():
        raise PredictorError(f"predictor file {p} does not exist; fit one with `tvmlat calibrate` or `tvmlat fit`")
    doc = read_json(p, PredictorError, "a JSON predictor file", "fit one with `tvmlat fit`")
    if not isinstance(doc, dict) or "schema_version" not in doc or "kind" not in doc:
        raise PredictorError(f"{p} is not a tvmlat predictor (no schema_version/kind)")
    v = doc["schema_version"]
    if not isinstance(v, int) or v > SCHEMA_VERSION:
        raise PredictorError(f"{p} has schema_version {v!r}; this tvmlat reads up to {SCHEMA_VERSION}: upgrade tvmlat")
    from ..features import FEATURES_VERSION

    fv = doc.get("features_version", FEATURES_VERSION)
    if fv != FEATURES_VERSION:
        raise PredictorError(f"{p} was fitted on features version {fv}, this tvmlat computes version "
                             f"{FEATURES_VERSION}; refit it with `tvmlat fit --dataset ...`")
    from ..loop_features import CacheGeometry

    try:
        geometry = CacheGeometry.from_dict(doc.get("cache_geometry"))
    except ValueError as e:
        raise PredictorError(f"{p}: {e}") from None
    kinds = _kinds()
    if not isinstance(doc["kind"], str) or doc["kind"] not in kinds:
        raise PredictorError(f"{p} is a {doc['kind']!r} predictor; this tvmlat knows {sorted(kinds)}")
    if not isinstance(doc.get("model"), dict):
        raise PredictorError(f"{p} has no 'model' object")
    try:
        model = kinds[doc["kind"]].from_dict(doc["model"])
    except KeyError:
        raise PredictorError(f"{p} has no 'model' section") from None
    except PredictorError as e:
        raise PredictorError(f"{p}: {e}") from None
    return LoadedPredictor(doc, model, geometry)


def predict_specs(predictor, specs) -> "list[float]":
    """Latency (ms) of block specs without compiling anything: the architecture-search oracle.

    ``predictor`` is a loaded predictor (or any model with ``predict``); ``specs`` an iterable of
    BlockSpec. Features come in closed form from the spec (``analytic_features``: no torch, no TVM,
    ~60k specs/s per core; ``analytic_arrays`` for millions of one family at once).
    """
    from ..analytic_features import analytic_frame
    from ..loop_features import geometry_of

    return predictor.predict(analytic_frame(list(specs), geometry=geometry_of(predictor)))
