"""Predictors: latency models fitted on dataset rows. They never import TVM or torch."""

from .io import load_predictor, predict_specs, save_predictor
from .linear import FEATURE_SETS, LinearPredictor

__all__ = ["LinearPredictor", "FEATURE_SETS", "load_predictor", "predict_specs", "save_predictor"]
