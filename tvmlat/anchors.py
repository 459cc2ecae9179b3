"""Anchor blocks: calibration blocks measured again next to something new, so the host's drift
since calibration (this VM's speed moves by 10-50 % between campaigns) can be measured and
divided out. Used by ``network-correction --anchors`` and ``benchmarks/network_anchor.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import TvmlatError
from .specs import BlockSpec


def draw_anchor_specs(dataset: str | Path, n: int) -> list[BlockSpec]:
    """``n`` (at most all) measured blocks with a spec drawn from a calibration dataset (seed 0)."""
    from .dataset import ok_rows, read_dataset, spec_of

    df = ok_rows(read_dataset(dataset))
    df = df[df["spec"].fillna("").astype(str).str.len() > 0]
    if len(df) < 3:
        raise TvmlatError(f"{dataset} has {len(df)} measured blocks with a spec; anchors need a calibration "
                          "dataset (tvmlat calibrate) with at least 3")
    return [spec_of(s, str(dataset)) for s in df.sample(min(n, len(df)), random_state=0)["spec"]]


def host_factor(predicted: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """(median predicted/measured of the anchors, their median |error| % once it is divided out)."""
    ratio = np.asarray(predicted, dtype=float) / np.asarray(measured, dtype=float)
    host = float(np.exp(np.median(np.log(ratio))))
    return host, float(np.median(np.abs(ratio / host - 1)) * 100)


def network_factor(measured: Sequence[float], predicted: Sequence[float]) -> float:
    """The whole-network correction ``network-correction`` stores: the geometric mean of measured/predicted
    over the networks it is fitted on (a prediction times it is the corrected one)."""
    return float(np.exp(np.mean(np.log(np.asarray(measured, dtype=float) / np.asarray(predicted, dtype=float)))))


def loo_factors(measured: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """For each network, the geometric-mean factor measured/predicted of all the *other* networks."""
    lr = np.log(np.asarray(measured, dtype=float) / np.asarray(predicted, dtype=float))
    return np.exp((lr.sum() - lr) / (len(lr) - 1))


def loo_log_residuals(measured: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """log(measured / corrected prediction) of each network, its factor fitted on the others: the scores that
    size a whole network's interval (``predictors.conformal.network_conformal``)."""
    m, p = np.asarray(measured, dtype=float), np.asarray(predicted, dtype=float)
    return np.log(m / (p * loo_factors(m, p)))


def fitted_correction(measured: Sequence[float], predicted: Sequence[float], *, host_adjusted: bool) -> dict:
    """What ``network-correction`` stores for networks measured at ``measured`` ms whose layers sum to
    ``predicted``: the geometric-mean factor (``network_factor``), or 1 where it does not pay, and each network's
    log error against that correction, which sizes a network's interval (``conformal.network_conformal``).

    Timings with the host's drift since calibration in them (``host_adjusted`` False: no anchors) always keep the
    factor: every network shares that drift. With the drift divided out (anchors) the factor is the model's
    bias on these networks, which networks of another kind need not share: the ten example networks gave
    x0.986, 3.5 % median error before and 5.3 % leave-one-out, and it put 85 % of a search space's networks
    within +-10 % against 96 % for the plain sums (README, "Whole networks"). So there it is kept only where
    each network corrected by the factor of the *others* is closer (median |error|) than the plain sums; where
    not, the errors stored are the plain sums' (nothing fitted: each is already out of sample)."""
    m, p = np.asarray(measured, dtype=float), np.asarray(predicted, dtype=float)
    fitted = network_factor(m, p)
    before = float(np.median(np.abs(p / m - 1)))
    loo = float(np.median(np.abs(p * loo_factors(m, p) / m - 1)))
    pays = loo < before or not host_adjusted
    return {"factor": fitted if pays else 1.0, "fitted_factor": fitted, "applied": bool(pays),
            "median_abs_error_%_before": 100 * before, "median_abs_error_%_loo_corrected": 100 * loo,
            "loo_log_residuals": (loo_log_residuals(m, p) if pays else np.log(m / p)).tolist()}
