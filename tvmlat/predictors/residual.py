"""Tree models: XGBoost on the residual of the linear model, and XGBoost alone (for the ablation).

The residual is taken in log space: the tree predicts r = log(measured / linear prediction), and
the final prediction is ``linear * exp(r)``. A multiplicative correction keeps predictions positive,
treats a block 2x too slow and one 2x too fast alike, and lets one tree split serve blocks of
0.01 ms and 50 ms; an additive residual in ms would be dominated by the largest blocks.

The residual tree's inputs (``inputs``) are, by default, the linear model's own make-up of each
prediction (``"shares"``): every term's share of the main-segment prediction (coefficient x feature /
prediction), the intercept's share and the log of the prediction. A block of a family never seen then
meets training blocks whose cost has the same make-up (mostly exposed chain steps, mostly elements, ...)
rather than the same sizes, and the inputs are numbers between 0 and 1 wherever the sizes lie. Held out
(leave-one-family-out, per campaign), against the earlier inputs (``"features"``, below) with the same tree
settings: Intel seeds 17-30 65.3 against 62.4 % within +-10 %, AMD seeds 93-110 66.7 against 64.5 %; on
random 5-fold 68.6 against 68.9 % and 74.5 against 73.1 % (README, "What limits the linear model now").

``weight`` is the share of the tree's correction applied: the prediction is ``linear * exp(weight * r)``,
1 (all of it) unless told otherwise (``tvmlat fit --residual-weight``). Trees fitted on 100 blocks can
over-correct a block unlike those they saw. Per campaign, within +-10 % at weight 0 (linear alone) / 0.5 / 1
(features version 18): held-out families, AMD 111 campaigns 69.0 / 67.6 / 64.7 %, Intel 37 campaigns 64.8 /
67.3 / 66.4 %, and on seven Intel campaigns measured afterwards to check it (seeds 38-44) 62.3 / 63.6 / 64.4 %;
random 5-fold AMD 73.0 / 74.0 / 72.2 %, Intel 69.6 / 72.8 / 71.8 % and 66.9 / 70.1 / 72.3 %. Half is the AMD
host's better residual, not the Intel one's, so the default stays 1 and ``tvmlat ablation`` shows both
(README, "Where the default model stands"; docs/accuracy-log.md, "three more ways"). Files saved before the
weight existed record none: 1.

``inputs="features"`` (files saved before the shares, and the XGBoost-only model): derived from the
counted features only (no family label and no spec), so they exist for any module: log1p of every
feature column plus ratios (arithmetic intensity, FLOPs per op, share of long-reduction FLOPs, output per
input, FLOPs per parameter). The models are saved inside the predictor JSON as xgboost's own JSON.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..errors import MissingExtraError, NotFittedError, PredictorError
from ..features import FEATURE_COLUMNS
from ..loop_features import LOOP_COLUMNS
from .linear import LinearPredictor, _matrix

TREE_RATIOS = ["intensity", "flops_per_op", "redlong_share", "redshort_share", "out_per_inp", "flops_per_param",
               "acts_per_op"]
DEFAULT_XGB = {"max_depth": 3, "eta": 0.1, "subsample": 0.8, "colsample_bynode": 0.8, "min_child_weight": 2.0,
               "lambda": 1.0, "objective": "reg:squarederror", "nthread": 2, "seed": 0}
#: a residual on the shares learns slower and wants more blocks per leaf (over DEFAULT_XGB)
SHARES_XGB = {"eta": 0.05, "min_child_weight": 3.0, "colsample_bynode": 1.0}
#: what the residual tree is given: the linear terms' shares (default) or the counted features
TREE_INPUTS = ("shares", "features")
#: the share of the tree's log correction a residual predictor applies unless told (files without one: 1)
RESIDUAL_WEIGHT = 1.0


def _is_weight(w) -> bool:
    return not isinstance(w, bool) and isinstance(w, (int, float)) and 0 <= w <= 1


def _xgb():
    try:
        import xgboost
    except ImportError:  # pragma: no cover - depends on the install
        raise MissingExtraError("xgboost", "xgb") from None
    return xgboost


#: the count columns trees were trained on before the loop features existed (files without "tree_columns")
LEGACY_TREE_COLUMNS = [c for c in FEATURE_COLUMNS if c not in LOOP_COLUMNS]


def tree_features(X, columns=None) -> np.ndarray:
    """Matrix of tree inputs: log1p of the counted feature ``columns`` (default: all), then the
    ratios in TREE_RATIOS. A fitted tree keeps its columns (``tree_columns_``), so a predictor
    saved before a feature column was added still gets the inputs it was trained on."""
    columns = list(FEATURE_COLUMNS if columns is None else columns)
    A = _matrix(X, columns)
    col = {c: A[:, i] for i, c in enumerate(columns)}
    eps = 1.0
    ratios = [
        col["flops"] / (col["bytes"] + eps),
        col["flops"] / (col["n_ops"] + eps),
        col["flops_redlong"] / (col["flops"] + eps),
        col["flops_redshort"] / (col["flops"] + eps),
        col["out"] / (col["inp"] + eps),
        col["flops"] / (col["params"] + eps),
        col["acts"] / (col["n_ops"] + eps),
    ]
    return np.column_stack([np.log1p(np.maximum(A, 0)), *[np.log1p(r) for r in ratios]])


def share_inputs(linear: LinearPredictor, X) -> np.ndarray:
    """Matrix of the residual tree's ``"shares"`` inputs: ``LinearPredictor.term_shares`` (each linear term's
    share of the main-segment prediction, the intercept's share) and the log of that prediction (ms)."""
    return _shares_and_initial(linear, X)[0]


def _shares_and_initial(linear: LinearPredictor, X) -> tuple[np.ndarray, np.ndarray]:
    """``share_inputs`` and the main-segment prediction they are shares of, from one feature matrix."""
    shares, total = linear.term_shares(X)
    return np.column_stack([shares, np.log(total)]), total


def _booster_to_json(booster) -> dict[str, Any]:
    return json.loads(bytes(booster.save_raw("json")))


def _booster_from_json(doc: dict[str, Any], columns: list[str] | None = None, n_inputs: int | None = None):
    """The embedded booster; ``columns`` (tree columns) or ``n_inputs`` say how many inputs it must take."""
    b = _xgb().Booster()
    b.load_model(bytearray(json.dumps(doc).encode()))
    if columns is not None and b.num_features() != len(columns) + len(TREE_RATIOS):
        raise PredictorError(f"the embedded xgboost model takes {b.num_features()} inputs, but its "
                             f"{len(columns)} tree columns give {len(columns) + len(TREE_RATIOS)}; refit the predictor")
    if n_inputs is not None and b.num_features() != n_inputs:
        raise PredictorError(f"the embedded xgboost model takes {b.num_features()} inputs, but the linear model's "
                             f"terms give {n_inputs}; refit the predictor")
    return b


def _tree_columns(d: dict[str, Any]) -> list[str]:
    cols = d.get("tree_columns", LEGACY_TREE_COLUMNS)
    if not isinstance(cols, list) or any(c not in FEATURE_COLUMNS for c in cols):
        raise PredictorError(f"tree_columns {cols!r} are not feature columns of this tvmlat; refit the predictor")
    return list(cols)


class _TreeBase:
    def __init__(self, *, n_estimators: int = 300, xgb_params: dict[str, Any] | None = None):
        self.n_estimators = n_estimators
        self.xgb_params = xgb_params

    def _train(self, F: np.ndarray, target: np.ndarray, defaults: dict[str, Any] | None = None):
        xgb = _xgb()
        params = {**DEFAULT_XGB, **(defaults or {}), **(self.xgb_params or {})}
        return xgb.train(params, xgb.DMatrix(F, label=target), num_boost_round=self.n_estimators)

    def _check_fitted(self) -> None:
        if not hasattr(self, "booster_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit() or load a predictor file")

    def get_params(self) -> dict[str, Any]:
        return {"n_estimators": self.n_estimators, "xgb_params": self.xgb_params}


class XGBPredictor(_TreeBase):
    """XGBoost alone, on log latency (the ablation's tree-only model)."""

    kind = "xgb"

    @property
    def feature_names_in_(self):
        return list(getattr(self, "tree_columns_", FEATURE_COLUMNS))

    def fit(self, X, y) -> "XGBPredictor":
        y = np.asarray(y, dtype=float)
        if len(y) < 8 or np.any(y <= 0):
            raise PredictorError("need at least 8 blocks with positive latency to fit")
        self.tree_columns_ = list(FEATURE_COLUMNS)
        self.booster_ = self._train(tree_features(X, self.tree_columns_), np.log(y))
        return self

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        return np.exp(self.booster_.inplace_predict(tree_features(X, self.tree_columns_)))

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {"params": self.get_params(), "tree_columns": self.tree_columns_,
                "xgboost": _booster_to_json(self.booster_)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "XGBPredictor":
        try:
            self = cls(**d.get("params", {}))
            self.tree_columns_ = _tree_columns(d)
            self.booster_ = _booster_from_json(d["xgboost"], self.tree_columns_)
        except PredictorError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise PredictorError(f"xgb model section is malformed: {e}") from None
        except Exception as e:  # noqa: BLE001 - xgboost's own parse errors
            raise PredictorError(f"embedded xgboost model does not load: {str(e).splitlines()[0]}") from None
        return self

    def describe(self) -> str:
        return f"XGBoost on log latency, {self.n_estimators} trees"


class ResidualPredictor(_TreeBase):
    """Linear model times exp(XGBoost prediction of its log residual); the tree sees the linear terms'
    shares (``inputs="shares"``, the default) or the counted features (``"features"``, files saved before)."""

    kind = "linear+xgb"

    def __init__(self, *, linear: dict[str, Any] | None = None, n_estimators: int = 200,
                 xgb_params: dict[str, Any] | None = None, inputs: str = "shares", weight: float = RESIDUAL_WEIGHT):
        super().__init__(n_estimators=n_estimators, xgb_params=xgb_params)
        if inputs not in TREE_INPUTS:
            raise PredictorError(f"residual tree inputs must be one of {', '.join(TREE_INPUTS)}, got {inputs!r}")
        if not _is_weight(weight):
            raise PredictorError(f"the residual's weight must be a number from 0 (linear alone) to 1 (the tree's "
                                 f"whole correction), not {weight!r}")
        self.linear = linear
        self.inputs = inputs
        self.weight = float(weight)

    @property
    def linear_part(self) -> LinearPredictor | None:
        """The linear model the trees correct (``conformal.cost_shares``)."""
        return getattr(self, "linear_", None)

    @property
    def feature_names_in_(self):
        if self.inputs == "shares":
            return list(self.linear_.feature_names_in_)
        return list(dict.fromkeys(self.linear_.feature_names_in_ + getattr(self, "tree_columns_", FEATURE_COLUMNS)))

    def _tree_inputs(self, X) -> np.ndarray:
        if self.inputs == "shares":
            return share_inputs(self.linear_, X)
        return tree_features(X, self.tree_columns_)

    def fit(self, X, y) -> "ResidualPredictor":
        y = np.asarray(y, dtype=float)
        self.linear_ = LinearPredictor(**(self.linear or {})).fit(X, y)
        base = self.linear_.predict(X)
        if self.inputs == "features":
            self.tree_columns_ = list(FEATURE_COLUMNS)
        self.booster_ = self._train(self._tree_inputs(X), np.log(y) - np.log(np.maximum(base, 1e-9)),
                                    SHARES_XGB if self.inputs == "shares" else None)
        return self

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        if self.inputs == "shares":  # the shares come with the linear prediction: one feature matrix, not two
            F, init = _shares_and_initial(self.linear_, X)
            base = self.linear_.apply_segment(init)
        else:
            F, base = tree_features(X, self.tree_columns_), self.linear_.predict(X)
        return np.maximum(base, 1e-9) * np.exp(self.weight * self.booster_.inplace_predict(F))

    def get_params(self) -> dict[str, Any]:
        return {"linear": self.linear, **super().get_params(), "inputs": self.inputs, "weight": self.weight}

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        d = {"params": self.get_params(), "linear": self.linear_.to_dict(), "xgboost": _booster_to_json(self.booster_)}
        if self.inputs == "features":
            d["tree_columns"] = self.tree_columns_
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ResidualPredictor":
        try:
            # no "inputs": saved before the shares existed; no "weight": before the half correction
            params = {"inputs": "features", "weight": 1.0, **d.get("params", {})}
            if params["inputs"] not in TREE_INPUTS:  # not the constructor's message: this is a file to refit
                raise PredictorError(f"this file's residual tree inputs {params['inputs']!r} are not known to this "
                                     f"tvmlat ({', '.join(TREE_INPUTS)}); refit it with `tvmlat fit --model linear+xgb`")
            if not _is_weight(params["weight"]):
                raise PredictorError(f"this file's residual weight {params['weight']!r} is not a number from 0 to 1; "
                                     "the file is damaged: refit it with `tvmlat fit --model linear+xgb`")
            self = cls(**params)
            self.linear_ = LinearPredictor.from_dict(d["linear"])
            if self.inputs == "shares":
                self.booster_ = _booster_from_json(d["xgboost"], n_inputs=len(self.linear_.feature_names_in_) + 2)
            else:
                self.tree_columns_ = _tree_columns(d)
                self.booster_ = _booster_from_json(d["xgboost"], self.tree_columns_)
        except (KeyError, TypeError, ValueError) as e:
            raise PredictorError(f"linear+xgb model section is malformed: {e}") from None
        except PredictorError:
            raise
        except Exception as e:  # noqa: BLE001
            raise PredictorError(f"embedded xgboost model does not load: {str(e).splitlines()[0]}") from None
        return self

    def describe(self) -> str:
        on = "the linear terms' shares" if self.inputs == "shares" else "the counted features"
        return self.linear_.describe() + (f"\n  x exp({self.weight:g} x XGBoost log-residual on {on}, "
                                          f"{self.n_estimators} trees)")
