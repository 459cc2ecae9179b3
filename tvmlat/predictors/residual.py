"""Tree models: XGBoost on the residual of the linear model, and XGBoost alone (for the ablation).

The residual is taken in log space: the tree predicts r = log(measured / linear prediction), and
the final prediction is ``linear * exp(r)``. A multiplicative correction keeps predictions positive,
treats a block 2x too slow and one 2x too fast alike, and lets one tree split serve blocks of
0.01 ms and 50 ms; an additive residual in ms would be dominated by the largest blocks.

Tree features are derived from the counted features only (no family label and no spec), so they
exist for any module and carry over to families never seen: log1p of every feature column plus
ratios (arithmetic intensity, FLOPs per op, share of long-reduction FLOPs, output per input,
FLOPs per parameter). The models are saved inside the predictor JSON as xgboost's own JSON.
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


def _booster_to_json(booster) -> dict[str, Any]:
    return json.loads(bytes(booster.save_raw("json")))


def _booster_from_json(doc: dict[str, Any], columns: list[str] | None = None):
    b = _xgb().Booster()
    b.load_model(bytearray(json.dumps(doc).encode()))
    if columns is not None and b.num_features() != len(columns) + len(TREE_RATIOS):
        raise PredictorError(f"the embedded xgboost model takes {b.num_features()} inputs, but its "
                             f"{len(columns)} tree columns give {len(columns) + len(TREE_RATIOS)}; refit the predictor")
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

    def _train(self, F: np.ndarray, target: np.ndarray):
        xgb = _xgb()
        params = {**DEFAULT_XGB, **(self.xgb_params or {})}
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
    """Linear model times exp(XGBoost prediction of its log residual)."""

    kind = "linear+xgb"

    def __init__(self, *, linear: dict[str, Any] | None = None, n_estimators: int = 200,
                 xgb_params: dict[str, Any] | None = None):
        super().__init__(n_estimators=n_estimators, xgb_params=xgb_params)
        self.linear = linear

    @property
    def feature_names_in_(self):
        return list(dict.fromkeys(self.linear_.feature_names_in_ + getattr(self, "tree_columns_", FEATURE_COLUMNS)))

    def fit(self, X, y) -> "ResidualPredictor":
        y = np.asarray(y, dtype=float)
        self.linear_ = LinearPredictor(**(self.linear or {})).fit(X, y)
        base = self.linear_.predict(X)
        self.tree_columns_ = list(FEATURE_COLUMNS)
        self.booster_ = self._train(tree_features(X, self.tree_columns_),
                                    np.log(y) - np.log(np.maximum(base, 1e-9)))
        return self

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        base = np.maximum(self.linear_.predict(X), 1e-9)
        return base * np.exp(self.booster_.inplace_predict(tree_features(X, self.tree_columns_)))

    def get_params(self) -> dict[str, Any]:
        return {"linear": self.linear, **super().get_params()}

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {"params": self.get_params(), "linear": self.linear_.to_dict(), "tree_columns": self.tree_columns_,
                "xgboost": _booster_to_json(self.booster_)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ResidualPredictor":
        try:
            self = cls(**d.get("params", {}))
            self.linear_ = LinearPredictor.from_dict(d["linear"])
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
        return self.linear_.describe() + f"\n  x exp(XGBoost log-residual, {self.n_estimators} trees)"
