"""The interpretable linear latency model, with a separate low-latency segment.

Main segment:  latency_ms = sum_i coef_i * feature_i + intercept,  coef_i >= 0, intercept >= 0,
fitted by minimising the error of log(predicted / measured) under non-negativity bounds, so a
0.05 ms block counts as much as a 50 ms one and over- and under-prediction by the same factor
cost the same (plain relative least squares drifts to under-prediction across decades).

Low segment: blocks whose main-segment prediction (``initial``) is below ``breakpoint_ms_`` get
``latency_ms = low_slope_ * initial + low_offset_`` instead, fitted on the rows below the
breakpoint (the main segment is then refitted on the rows above). The breakpoint is chosen by
search over quantiles of ``initial``, minimising the squared log error, and kept only if it pays
for its three parameters (AIC); otherwise the model has one segment. Small blocks are dominated
by fixed per-kernel overheads that a model fitted on large blocks gets wrong; this segment
absorbs them. ``segmented=None`` (the default) uses the segment for the ``published`` features
and not for ``ops`` or ``loops``, whose op count already carries the per-kernel overhead: on the 200-block
CPU campaign the segment lowered the in-sample squared log error of ``ops`` but raised its
held-out-family median APE (18.1% -> 19.8%), while for ``published`` it helped in-sample
(25.5% -> 22.0%) and was neutral held out.

Feature sets:
* ``published``: ACTS, INP, FLOPs, the form used by earlier predictors (the ablation baseline).
* ``loops`` (the default): the loop-nest features of ``loop_features.py`` -- each reduction's
  multiply-adds split into the exposed, latency-bound steps of a chain longer than 32
  (``mac_excess``, ``red**2 // (red + 70)`` per output since features version 16), the
  overlapped first steps in whole vectors (``short_vec``) or not (``short_scal``), the chain steps
  whose strided operand misses L1 (``mac_l1miss_exc``), weights read with a TLB miss each
  (``w_tlbmiss``), the multiply-adds of matmuls whose weights fill the L2 (``mac_l2miss``), a
  linear layer's weights once per call (``w_matmul``), the activations of a block past two L2s
  (``acts_l2out``, version 17), the elements of GELUs, sigmoids and softmaxes (``ew_transc``, version 20)
  -- plus the activations written and read back (``acts_rw``: ACTS plus those another op reads, version 21),
  INP and the op count. Every term is a cost the untuned loop nest
  pays whatever family the op sits in, so they carry over to unseen families: on the CI host's
  200 blocks 8.3 % median error on held-out families against 25.6 % for ``ops`` (README).
* ``ops``: ACTS, INP, FLOPs shared by all blocks, plus the FLOPs and elements of each class of
  operation (dense conv, 1x1 conv, depthwise conv, matmul, batched matmul, elementwise,
  normalisation, pooling, copies) and the weights. A block of an unseen family is made of the
  same operation classes, so these carry over to held-out families where one global FLOPs
  coefficient cannot. The per-class coefficients are pulled towards zero by ``penalty``, so a
  class seen in few training blocks falls back on the shared terms instead of a wild estimate.

Tied per-element costs (``tie``, on by default for ``loops``): an element of the block's input
(INP) is read once, an element of every op's output (ACTS) written once, and nothing else tells
the two apart in most blocks -- in all but pooling, INP grows with ACTS. Fitted freely, the split
between them is arbitrary, and without pooling blocks INP's cost went to 0 in some fits: a held-out
global mean, which is nearly all input, was then predicted up to 1776x too fast. A prior term
``tie * (c_acts - c_inp) / (c_acts + c_inp)``, weighed like one block's log error, makes the two
costs equal unless the data say otherwise; the fully fitted 200-block model has them within 1 %
anyway (0.529 / 0.523 ns). On the seven campaigns of the CI host (held-out families), the worst
block error fell from 3-1776x to 2-4x, pooling's median error from 22-45 % to 15-37 %, the overall
median moved by -1.3 to +1.1 points. Two campaigns measured after the choice (seeds 6, 7): worst
block 3x and 622x free, 3x and 3x tied; median 9.6 -> 9.0 % and 7.4 -> 7.5 % (docs/accuracy-log.md).
Since features version 21 ``loops`` ties ``acts_rw`` (each activation written, and read back where another op of
the block reads it) to INP: one price per element and pass.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..errors import NotFittedError, PredictorError

#: feature sets: (shared features, per-class features pulled towards zero by ``penalty``)
FEATURE_SETS: dict[str, tuple[list[str], list[str]]] = {
    "published": (["acts", "inp", "flops"], []),
    "ops": (["acts", "inp", "flops_redshort", "flops_redlong", "n_ops"],
            ["flops_conv", "flops_conv1x1", "flops_dwconv", "flops_matmul", "flops_bmm", "flops_attn",
             "elems_elementwise", "elems_norm", "elems_pool", "elems_copy", "weight_elems"]),
    "loops": (["mac_excess", "short_vec", "short_scal", "acts_rw", "inp", "n_ops", "mac_l1miss_exc", "w_tlbmiss",
               "mac_l2miss", "w_matmul", "red_chain", "mac_l1thrash", "ew_slow", "win_slow", "acts_l2out",
               "ew_transc", "mac_l1thrash_far"], []),
}
#: the activation terms tied to INP (``tie``): ``loops`` prices ``acts_rw`` (features version 21), the others ``acts``
ACTS_TERMS = ("acts_rw", "acts")
#: the feature set predictors use unless told otherwise
DEFAULT_FEATURES = "loops"


def _matrix(X, features: Sequence[str]) -> np.ndarray:
    try:
        cols = [np.asarray(X[f], dtype=float) for f in features]
    except KeyError as e:
        raise PredictorError(f"input lacks the feature column {e.args[0]!r}; needed: {list(features)}") from None
    return np.column_stack(cols) if cols else np.zeros((len(X), 0))


def _fit_log(A: np.ndarray, y: np.ndarray, penalized: np.ndarray | None = None, penalty: float = 0.0,
             loss: str = "soft_l1", ties: Sequence[tuple[int, int]] = (), tie: float = 0.0) -> np.ndarray:
    """Non-negative w minimising sum(rho(log(A w) - log y)) + sum_j (penalty * w_j * max|A_j| / max y)^2
    over the ``penalized`` columns + sum over column pairs (a, b) in ``ties`` of
    (tie * (w_a - w_b) / (w_a + w_b))^2: a prior that the two cost the same per unit.

    Squared *relative* error is lopsided (predicting 10x too little costs 0.81, 10x too much 81),
    so a relative least-squares fit of blocks spanning decades drifts to under-prediction; the log
    ratio is symmetric. ``soft_l1`` keeps a few outlying blocks from dragging the fit. The penalty
    pulls per-class coefficients towards zero, so where a class is rare in the training data the
    shared terms (ACTS, INP, FLOPs) carry the prediction. Columns that are zero in every row get
    coefficient 0. The last column of ``A`` must be the intercept (ones; kept >= 1e-6 ms).
    """
    from scipy.optimize import least_squares, nnls  # here: scipy.optimize takes 0.3 s; predicting needs none

    n_cols = A.shape[1]
    penalized = np.zeros(n_cols, bool) if penalized is None else np.asarray(penalized, bool)
    live = np.abs(A).max(axis=0) > 0
    live[-1] = True
    A, pen = A[:, live], penalized[live]
    col = np.cumsum(live) - 1  # index of each original column among the live ones
    pairs = np.array([(col[a], col[b]) for a, b in ties if live[a] and live[b]] if tie > 0 else [],
                     dtype=int).reshape(-1, 2)
    scale = np.abs(A).max(axis=0)
    As = A / scale
    w0, _ = nnls(As / y[:, None], np.ones_like(y), maxiter=50 * A.shape[1] + 500)
    lower = np.zeros(A.shape[1])
    lower[-1] = 1e-6
    w0 = np.maximum(w0, lower + 1e-9)
    if not np.all(As @ w0 > 0):
        w0[-1] = max(w0[-1], float(np.min(y)) / 2)
    ly, ymax = np.log(y), float(np.max(y))

    def resid(w):
        parts = [np.log(np.maximum(As @ w, 1e-12)) - ly]
        if penalty > 0 and pen.any():
            parts.append(penalty * w[pen] / ymax)
        if len(pairs):
            c = w / scale  # the coefficients in the features' own units
            a, b = c[pairs[:, 0]], c[pairs[:, 1]]
            parts.append(tie * (a - b) / (a + b + 1e-300))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    sol = least_squares(resid, w0, bounds=(lower, np.inf), loss=loss, f_scale=0.1, method="trf",
                        x_scale="jac", max_nfev=2000)
    out = np.zeros(n_cols)
    out[live] = sol.x / scale
    return out


class LinearPredictor:
    """scikit-learn style: ``fit(X, y)`` returns self; learned attributes end in ``_``."""

    kind = "linear"

    def __init__(self, *, features: Sequence[str] | str = DEFAULT_FEATURES, segmented: bool | None = None,
                 penalty: float = 1.0, min_segment_rows: int = 6, tie: float | None = None):
        self.features = features
        self.segmented = segmented
        self.penalty = penalty
        self.min_segment_rows = min_segment_rows
        self.tie = tie  # None: 1.0 for the loops features, 0 (free) for the others (see the module doc)

    def _feature_split(self) -> tuple[list[str], list[str]]:
        if isinstance(self.features, str):
            if self.features not in FEATURE_SETS:
                raise PredictorError(f"unknown feature set {self.features!r}; known: {sorted(FEATURE_SETS)}")
            shared, extra = FEATURE_SETS[self.features]
            return list(shared), list(extra)
        return list(self.features), []

    @property
    def linear_part(self) -> "LinearPredictor":
        """The linear model whose terms make up the prediction (``conformal.cost_shares``): this one."""
        return self

    @property
    def feature_names(self) -> list[str]:
        shared, extra = self._feature_split()
        return shared + extra

    # ----------------------------------------------------------------------------- fit

    @property
    def tie_strength(self) -> float:
        """How strongly the ACTS and INP costs are tied (0: fitted freely)."""
        if self.tie is None:
            return 1.0 if self.features == "loops" else 0.0
        t = self.tie
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise PredictorError(f"tie must be a non-negative number (0: ACTS and INP fitted freely), not {t!r}")
        return float(t)

    def _fit_main(self, A: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        shared, extra = self._feature_split()
        names = shared + extra
        pen = np.array([False] * len(shared) + [True] * len(extra) + [False])
        acts = next((a for a in ACTS_TERMS if a in names), None)  # loops' acts_rw, the others' acts
        ties = [(names.index(acts), names.index("inp"))] if acts and "inp" in names else []
        w = _fit_log(np.column_stack([A, np.ones(len(y))]), y, pen, self.penalty, ties=ties, tie=self.tie_strength)
        return w[:-1], float(w[-1])

    def fit(self, X, y) -> "LinearPredictor":
        names = self.feature_names
        A = _matrix(X, names)
        y = np.asarray(y, dtype=float)
        if len(y) < 8:
            raise PredictorError(f"need at least 8 measured blocks to fit the linear model, got {len(y)}")
        if np.any(~np.isfinite(y)) or np.any(y <= 0):
            raise PredictorError("latencies must be finite and positive; drop failed rows before fitting")
        coef, icpt = self._fit_main(A, y)
        self.breakpoint_ms_, self.low_slope_, self.low_offset_ = 0.0, 1.0, 0.0
        segmented = self.segmented if self.segmented is not None else self.features == "published"
        if segmented and len(y) >= 2 * self.min_segment_rows:
            init = A @ coef + icpt
            best = (float(np.sum(np.log(init / y) ** 2)), 0.0, 1.0, 0.0, coef, icpt)
            for q in np.linspace(0.1, 0.6, 11):
                b = float(np.quantile(init, q))
                lo = init < b
                if lo.sum() < self.min_segment_rows or (~lo).sum() < self.min_segment_rows:
                    continue
                c_hi, i_hi = self._fit_main(A[~lo], y[~lo])
                s_lo = _fit_log(np.column_stack([init[lo], np.ones(lo.sum())]), y[lo])
                pred = np.where(lo, s_lo[0] * init + s_lo[1], A @ c_hi + i_hi)
                err = float(np.sum(np.log(pred / y) ** 2))
                if err < best[0]:
                    best = (err, b, float(s_lo[0]), float(s_lo[1]), coef, icpt)
            # keep the segment only if it pays for its 3 extra parameters (AIC on the log errors)
            sse_one = float(np.sum(np.log(init / y) ** 2))
            if best[1] > 0 and len(y) * math.log(max(best[0], 1e-12) / max(sse_one, 1e-12)) + 2 * 3 < 0:
                _, self.breakpoint_ms_, self.low_slope_, self.low_offset_, _, _ = best
            if self.breakpoint_ms_ > 0:
                lo = init < self.breakpoint_ms_
                coef, icpt = self._fit_main(A[~lo], y[~lo])
        # coefficients whose largest contribution is below a nanosecond are numerical dust: zero them
        coef = np.where(np.abs(A).max(axis=0) * coef < 1e-6, 0.0, coef)
        self.coef_ = np.asarray(coef, dtype=float)
        self.intercept_ = float(icpt)
        self.feature_names_in_ = names
        self.n_train_ = int(len(y))
        return self

    # ----------------------------------------------------------------------------- predict

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("this LinearPredictor is not fitted yet; call fit() or load a predictor file")

    def predict_initial(self, X) -> np.ndarray:
        """Main-segment prediction (ms) for every row, before the low segment is applied."""
        self._check_fitted()
        return _matrix(X, self.feature_names_in_) @ self.coef_ + self.intercept_

    def term_shares(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(each term's share of the main-segment prediction, then the intercept's, a row per row of ``X``; that
        prediction in ms): what a block's time goes to, for the residual tree's inputs and the intervals'
        neighbours (``conformal.cost_shares``)."""
        self._check_fitted()
        parts = _matrix(X, self.feature_names_in_) * self.coef_
        total = np.maximum(parts.sum(axis=1) + self.intercept_, 1e-12)
        return np.column_stack([parts / total[:, None], self.intercept_ / total]), total

    def predict(self, X) -> np.ndarray:
        """Predicted latency (ms) for every row of ``X`` (a DataFrame or a mapping of columns). Vectorised."""
        return self.apply_segment(self.predict_initial(X))

    def apply_segment(self, init: np.ndarray) -> np.ndarray:
        """The prediction from the main-segment one (``predict_initial``): the low segment applied below the
        breakpoint."""
        if self.breakpoint_ms_ > 0:
            return np.where(init < self.breakpoint_ms_, self.low_slope_ * init + self.low_offset_, init)
        return init

    # ----------------------------------------------------------------------------- JSON

    def get_params(self) -> dict[str, Any]:
        return {"features": self.features, "segmented": self.segmented, "penalty": self.penalty,
                "min_segment_rows": self.min_segment_rows, "tie": self.tie_strength}

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "params": self.get_params(),
            "features": self.feature_names_in_,
            "coefficients": dict(zip(self.feature_names_in_, map(float, self.coef_))),
            "intercept_ms": self.intercept_,
            "segments": {"breakpoint_ms": self.breakpoint_ms_,
                         "low": {"slope": self.low_slope_, "offset_ms": self.low_offset_}},
            "n_train": self.n_train_,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LinearPredictor":
        if not isinstance(d, dict) or not isinstance(d.get("params", {}), dict):
            raise PredictorError("linear model section is malformed: expected a JSON object with a 'params' object")
        try:
            p = d.get("params", {})
            self = cls(features=p.get("features", d["features"]), segmented=p.get("segmented"),
                       penalty=p.get("penalty", 1.0), min_segment_rows=p.get("min_segment_rows", 6),
                       tie=p.get("tie", 0.0))  # files from before the tie were fitted freely
            self.tie_strength  # noqa: B018 - a malformed tie fails on load, not on the next refit
            self.feature_names_in_ = list(d["features"])
            self.coef_ = np.array([float(d["coefficients"][f]) for f in self.feature_names_in_])
            self.intercept_ = float(d["intercept_ms"])
            seg = d["segments"]
            self.breakpoint_ms_ = float(seg["breakpoint_ms"])
            self.low_slope_ = float(seg["low"]["slope"])
            self.low_offset_ = float(seg["low"]["offset_ms"])
            self.n_train_ = int(d.get("n_train", 0))
        except (KeyError, TypeError, ValueError) as e:
            raise PredictorError(f"linear model section is malformed: missing or bad {e}") from None
        if any(not math.isfinite(v) for v in [*self.coef_, self.intercept_, self.breakpoint_ms_]):
            raise PredictorError("linear model section holds non-finite numbers")
        return self

    def describe(self) -> str:
        """The fitted formula, one line per segment."""
        self._check_fitted()
        terms = " + ".join(f"{c:.3e}·{f}" for f, c in zip(self.feature_names_in_, self.coef_) if c > 0)
        s = f"latency_ms = {terms or '0'} + {self.intercept_:.4f}"
        if self.breakpoint_ms_ > 0:
            s += (f"\n  below {self.breakpoint_ms_:.4f} ms: latency_ms = {self.low_slope_:.4f}·initial"
                  f" + {self.low_offset_:.4f}")
        return s
