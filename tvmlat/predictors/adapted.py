"""Few-shot adaptation to a new target: a predictor fitted on another target (the prior), mapped
onto the new one by a log-affine correction learned from a handful of its measurements:

    log latency_new = a + b * log prior(x)

With few samples, ``b`` is pulled towards 1 (ridge, weight ``shrink``): with 3 samples the model is
essentially "the prior times a constant", with 50 it can also bend the slope (a faster device
speeds up big blocks more than small ones, whose launch and framework overheads stay). Chosen
over per-family factors by experiment (benchmarks/few_shot.py): the shape of latency across
blocks carries over between targets; its scale and slope don't.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import NotFittedError, PredictorError


class AdaptedPredictor:
    kind = "adapted"

    def __init__(self, *, prior: dict[str, Any] | None = None, shrink: float = 3.0):
        self.prior = prior
        self.shrink = shrink

    def _prior_model(self):
        if getattr(self, "_prior", None) is None:
            from .io import _kinds

            if not self.prior or "kind" not in self.prior or "model" not in self.prior:
                raise PredictorError("an adapted predictor needs a prior predictor document (kind + model)")
            kinds = _kinds()
            if self.prior["kind"] not in kinds or self.prior["kind"] == "adapted":
                raise PredictorError(f"prior of kind {self.prior['kind']!r} can't be adapted")
            self._prior = kinds[self.prior["kind"]].from_dict(self.prior["model"])
        return self._prior

    @property
    def feature_names_in_(self):
        return list(self._prior_model().feature_names_in_)

    @property
    def linear_part(self):
        """The prior's linear model (``conformal.cost_shares``): the make-up of a block is the prior's."""
        return getattr(self._prior_model(), "linear_part", None)

    def fit(self, X, y) -> "AdaptedPredictor":
        z = np.log(np.maximum(self._prior_model().predict(X), 1e-9))
        t = np.log(np.asarray(y, dtype=float))
        n = len(t)
        if n < 1:
            raise PredictorError("no samples to adapt the prior with")
        lam = np.sqrt(self.shrink)
        A = np.vstack([np.column_stack([np.ones(n), z]), [0.0, lam]])
        rhs = np.concatenate([t, [lam * 1.0]])
        (self.a_, self.b_), *_ = np.linalg.lstsq(A, rhs, rcond=None)
        self.n_samples_ = n
        return self

    def predict(self, X) -> np.ndarray:
        if not hasattr(self, "a_"):
            raise NotFittedError("this AdaptedPredictor is not fitted yet; call fit(X, y) first")
        z = np.log(np.maximum(self._prior_model().predict(X), 1e-9))
        return np.exp(self.a_ + self.b_ * z)

    def get_params(self) -> dict[str, Any]:
        return {"prior": self.prior, "shrink": self.shrink}

    def to_dict(self) -> dict[str, Any]:
        if not hasattr(self, "a_"):
            raise NotFittedError("this AdaptedPredictor is not fitted yet")
        return {"prior": self.prior, "shrink": self.shrink, "a": float(self.a_), "b": float(self.b_),
                "n_samples": int(self.n_samples_)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AdaptedPredictor":
        try:
            m = cls(prior=d["prior"], shrink=float(d.get("shrink", 3.0)))
            m.a_, m.b_, m.n_samples_ = float(d["a"]), float(d["b"]), int(d.get("n_samples", 0))
        except (KeyError, TypeError, ValueError) as e:
            raise PredictorError(f"adapted predictor is missing or has a bad field ({e})") from None
        m._prior_model()
        return m

    def describe(self) -> str:
        src = self.prior.get("target", {}).get("name", "?") if self.prior else "?"
        return (f"latency = exp({self.a_:+.3f}) x prior^{self.b_:.3f}   (prior: {self.prior.get('kind')} predictor "
                f"of target {src}; {self.n_samples_} samples of this target; slope pulled to 1 with weight "
                f"{self.shrink:g})")
