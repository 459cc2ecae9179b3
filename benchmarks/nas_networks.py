"""Random networks of a NAS search space, measured whole, against the predictor's sum of their layers.

Published latency predictors (nn-Meter, LitePred, HELP) state their accuracy as the share of whole
*models* predicted within +-10 %. This benchmark asks the same of tvmlat, in the use it is made for, a
latency oracle in an architecture search: networks drawn from a MobileNetV3 / once-for-all style space
(per stage a depth of 1-3 inverted residual blocks, each with expansion 3, 4 or 6, a 3x3, 5x5 or 7x7
depthwise kernel and, from the second stage on, squeeze-excitation or not; input 96, 128 or 160 px),
each compiled and timed whole by ``tvmlat measure``, and predicted as ``tvmlat analyze`` does: the sum
of its layers' predictions (times the predictor's network correction, where it has one). 40 of the
predictor's calibration blocks are measured in the same campaign, so the host's drift since
calibration is measured and divided out (``tvmlat.anchors``), as in ``network_anchor.py``.

    tvmlat measure benchmarks/nas_networks.py:entries --out runs/nas.parquet      # ~10 min on 2 cores
    python benchmarks/nas_networks.py runs/nas.parquet [-p PREDICTOR.json ...]
    python benchmarks/nas_networks.py runs/nas.parquet --calibrations datasets/llvm/calib-emeraldrapids-n100-s*.predictor.json
    python benchmarks/nas_networks.py runs/nas.parquet --calibrations … --without inverted_residual squeeze_excitation

``TVMLAT_NAS_NETWORKS`` sets how many networks ``entries`` gives (30), from seed ``TVMLAT_NAS_FIRST`` (0); the
report takes those measured. The anchors come from
``datasets/llvm/calib-emeraldrapids-n200-s0.parquet`` unless ``TVMLAT_ANCHOR_DATASET`` names another.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
DATASET = os.environ.get("TVMLAT_ANCHOR_DATASET", str(ROOT / "datasets/llvm/calib-emeraldrapids-n200-s0.parquet"))
PREDICTORS = [str(ROOT / "datasets/llvm/calib-emeraldrapids-n200-s0.predictor.json"),
              str(ROOT / "datasets/llvm/calib-emeraldrapids-n200-s0.linear+xgb.predictor.json")]
NETWORKS = int(os.environ.get("TVMLAT_NAS_NETWORKS", "30"))
#: the first network's seed: a later campaign of networks no earlier one measured (the shipped one is 0-99)
FIRST = int(os.environ.get("TVMLAT_NAS_FIRST", "0"))
ANCHORS = 40
#: with --interval: how many networks of the space `network-correction` measures to size its interval (a 90 %
#: interval needs 9)
MEASURED_NETWORKS = 10
#: (output channels, stride of the stage's first block)
STAGES = [(24, 2), (40, 2), (80, 2), (112, 1), (160, 2)]


def sample_network(seed: int) -> tuple[nn.Module, list[torch.Tensor], dict]:
    """Network ``seed`` of the space: (module in eval mode, example inputs, its choices)."""
    from tvmlat.blocks import InvertedResidual, SqueezeExcitation, conv_bn

    rng = random.Random(seed)
    res = rng.choice([96, 128, 160])
    with torch.random.fork_rng():  # the weights too are the seed's, and the caller's RNG is left alone
        torch.manual_seed(seed)
        layers: list[nn.Module] = [conv_bn(3, 16, 3, 2)]
        cin, choices = 16, {"resolution": res, "blocks": []}
        for i, (cout, stride) in enumerate(STAGES):
            for d in range(rng.choice([1, 2, 3])):
                expand, k, se = rng.choice([3, 4, 6]), rng.choice([3, 5, 7]), i > 0 and rng.random() < 0.5
                layers.append(InvertedResidual(cin, cout, expand, k, stride if d == 0 else 1))
                if se:
                    layers.append(SqueezeExcitation(cout, 4))
                choices["blocks"].append(f"s{i}e{expand}k{k}{'se' if se else ''}")
                cin = cout
        layers += [conv_bn(cin, 640, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(640, 1000)]
        module = nn.Sequential(*layers).eval()
    return module, [torch.randn(1, 3, res, res, generator=torch.Generator().manual_seed(seed))], choices


def entries(device: str = "cpu"):
    """MODEL_REF: the networks (``nas/NNN``) and the anchor blocks (``calib/BLOCK_ID``)."""
    out = {}
    for i in range(FIRST, FIRST + NETWORKS):
        m, x, _ = sample_network(i)
        out[f"nas/{i:03d}"] = (m.to(device), [t.to(device) for t in x])
    return {**out, **_anchor_entries(device)}


def _anchor_entries(device: str) -> dict:
    """``calib/BLOCK_ID``: the anchor blocks drawn from ``DATASET``."""
    from tvmlat.anchors import draw_anchor_specs
    from tvmlat.blocks import build_block

    return {f"calib/{spec.block_id}": build_block(spec, device=device) for spec in draw_anchor_specs(DATASET, ANCHORS)}


@functools.lru_cache(maxsize=None)
def _layer_rows(name: str, geometry) -> pd.DataFrame:
    """Network ``name``'s layer rows for the L1 ``geometry`` (``analysis.layer_features``), counted once: every
    predictor of that L1 predicts the network as the sum of its predictions of them, as ``analyze`` does."""
    from tvmlat.analysis import layer_features

    return layer_features(*sample_network(int(name[4:]))[:2], geometry=geometry)


def _networks(meas: pd.Series) -> list[str]:
    """The networks measured (whatever ``TVMLAT_NAS_NETWORKS`` was when they were)."""
    return sorted(n for n in meas.index if n.startswith("nas/"))


def report(measured: pd.DataFrame, predictor_path: str, coverage: float | None = None) -> pd.DataFrame:
    from scipy.stats import spearmanr

    from tvmlat.anchors import host_factor
    from tvmlat.features import count_features
    from tvmlat.predictors import load_predictor

    pred = load_predictor(predictor_path)
    meas = measured[measured["status"] == "ok"].set_index("name")["latency_ms_median"]
    anchors = {n: e for n, e in _anchor_entries("meta").items() if n in meas.index}
    X = pd.DataFrame([count_features(*anchors[n], geometry=pred.geometry) for n in anchors])
    host, err = host_factor(pred.predict(X), meas[list(anchors)])
    factor = float((pred.doc.get("network_correction") or {}).get("factor", 1.0))
    rows = []
    for name in _networks(meas):
        layer_ms = pred.predict(_layer_rows(name, pred.geometry))
        summed = float(layer_ms.sum())
        rows.append({"network": name, "measured_ms": float(meas[name]), "summed_ms": summed,
                     "error_%": 100 * (summed / host / meas[name] - 1),
                     "corrected_error_%": 100 * (summed * factor / host / meas[name] - 1)})
        if coverage is not None:  # analyze --interval's network interval, against the host-adjusted timing
            mid, lo, hi, how = pred.network_interval(layer_ms, coverage)
            rows[-1].update(low_ms=lo, high_ms=hi, inside=lo <= meas[name] * host <= hi, width=(hi - lo) / mid)
    t = pd.DataFrame(rows)
    print(f"{Path(predictor_path).name}: {len(anchors)} anchor blocks predicted at {host:.3f}x their timings now "
          f"(the host since calibration; {err:.1f} % median error once divided out); network correction x{factor:.3f}")
    for col in ("error_%", "corrected_error_%"):
        e = t[col].abs()
        print(f"  {len(t)} networks, {'sum of layers' if col == 'error_%' else 'with the network correction'}, "
              f"host-adjusted: median |error| {e.median():.1f} %, within +-10 % {100 * np.mean(e <= 10):.0f} %, "
              f"within +-5 % {100 * np.mean(e <= 5):.0f} %, worst {t[col].iloc[e.argmax()]:+.1f} %, "
              f"mean error {t[col].mean():+.1f} %")
    if coverage is not None:
        print(f"  {100 * coverage:g} % network intervals (analyze --interval; sized from {how}): "
              f"{100 * t['inside'].mean():.0f} % of the networks inside, median width {100 * t['width'].median():.1f} % "
              f"of the prediction")
    print(f"  rank correlation (Spearman) of predicted and measured network latency: "
          f"{spearmanr(t['summed_ms'], t['measured_ms']).statistic:.3f}; measured {t['measured_ms'].min():.1f}-"
          f"{t['measured_ms'].max():.1f} ms")
    return t


def _refit_without(path: str, families: list[str]):
    """The default linear model refitted on the dataset beside predictor ``path`` less ``families``."""
    from tvmlat.dataset import load_for_fit, ok_rows
    from tvmlat.predictors import LinearPredictor

    dataset = Path(path.split(".linear+xgb.")[0].split(".predictor.json")[0] + ".parquet")
    if not dataset.is_file():
        raise SystemExit(f"error: --without refits each predictor on its dataset, and {dataset} (beside {path}) "
                         "does not exist; give predictors that sit beside their calibration datasets")
    df = ok_rows(load_for_fit(dataset))
    df = df[~df["family"].isin(families)]
    return LinearPredictor().fit(df, df["latency_ms_median"].to_numpy())


def factor_check(measured: pd.DataFrame, paths: list[str], draws: int = 200,
                 without: list[str] | None = None, coverage: float | None = None) -> pd.DataFrame:
    """Predictors whose calibration blocks were not timed in this campaign (no anchors): their host drift and
    bias are one factor, fitted on 5 networks of the space (what ``network-correction`` does) and judged on
    the other networks, ``draws`` random draws of the five. Layer features are counted once per L1.
    ``without``: each predictor's linear model is refitted on its dataset less these block families, so the
    networks' own families are unseen."""
    from scipy.stats import spearmanr

    from tvmlat.anchors import fitted_correction
    from tvmlat.predictors import load_predictor
    from tvmlat.predictors.conformal import network_conformal

    meas = measured[measured["status"] == "ok"].set_index("name")["latency_ms_median"]
    names = _networks(meas)
    y = meas[names].to_numpy()
    rng = np.random.default_rng(0)
    rows = []
    for path in paths:
        pred = load_predictor(path)
        model = _refit_without(path, without) if without else pred
        layer_ms = [model.predict(_layer_rows(n, pred.geometry)) for n in names]
        summed = np.array([p.sum() for p in layer_ms])
        ratio = summed / y
        if coverage is not None:  # each network's half-width (log ratio) as analyze --interval sizes it
            half = np.log([pred.network_interval(p, coverage)[2] / s for p, s in zip(layer_ms, summed)])
        hits, inside, measured_inside, measured_width = [], [], [], []
        for _ in range(draws):  # network-correction's factor, fitted on 5 networks, judged on the rest
            idx = rng.permutation(len(y))
            factor = fitted_correction(y[idx[:5]], summed[idx[:5]], host_adjusted=False)["factor"]
            hits.append(np.mean(np.abs(ratio[idx[5:]] * factor - 1) <= 0.1))
            if coverage is not None:
                inside.append(np.mean(np.abs(np.log(ratio[idx[5:]] * factor)) <= half[idx[5:]]))
                # the interval network-correction's residuals give, from MEASURED_NETWORKS networks of the space
                k = MEASURED_NETWORKS
                corr = fitted_correction(y[idx[:k]], summed[idx[:k]], host_adjusted=False)
                # around a sum of layers of 1 ms: the interval of measured / summed for the networks left
                mid, lo, hi, _ = network_conformal(1.0, corr, coverage) or (1.0, 0.0, np.inf, "")
                measured_inside.append(np.mean((lo <= 1 / ratio[idx[k:]]) & (1 / ratio[idx[k:]] <= hi)))
                measured_width.append((hi - lo) / mid)
        rows.append({"predictor": Path(path).name, "predicted/measured": float(np.median(ratio)),
                     "within10_%": 100 * float(np.mean(hits)), "worst_draw_%": 100 * float(np.min(hits)),
                     "spearman": float(spearmanr(ratio * y, y).statistic)})
        if coverage is not None:
            rows[-1].update({"inside_%": 100 * float(np.mean(inside)), "width_%": 100 * float(np.median(2 * np.sinh(half))),
                             f"inside_{MEASURED_NETWORKS}net_%": 100 * float(np.mean(measured_inside)),
                             f"width_{MEASURED_NETWORKS}net_%": 100 * float(np.median(measured_width))})
    t = pd.DataFrame(rows)
    print(f"{len(t)} predictors{' refitted without ' + ', '.join(without) if without else ''}, each corrected by "
          f"a factor from 5 of the {len(y)} networks, judged on the rest "
          f"({draws} draws): within +-10 % {t['within10_%'].mean():.1f} % on average (median "
          f"{t['within10_%'].median():.1f} %, lowest {t['within10_%'].min():.1f} %), Spearman "
          f"{t['spearman'].min():.3f}-{t['spearman'].max():.3f}, raw predicted/measured "
          f"{t['predicted/measured'].min():.2f}-{t['predicted/measured'].max():.2f}")
    if coverage is not None:
        k = MEASURED_NETWORKS
        print(f"{100 * coverage:g} % network intervals around the corrected prediction: as analyze --interval sizes them "
              f"from the calibration, {t['inside_%'].mean():.1f} % of the networks inside on average (lowest "
              f"{t['inside_%'].min():.1f} %), median width {t['width_%'].median():.1f} % "
              f"({t['width_%'].min():.1f}-{t['width_%'].max():.1f} %); from {k} measured networks' leave-one-out "
              f"residuals (network-correction), {t[f'inside_{k}net_%'].mean():.1f} % inside (lowest "
              f"{t[f'inside_{k}net_%'].min():.1f} %), median width {t[f'width_{k}net_%'].median():.1f} %")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("measured", help="the parquet `tvmlat measure benchmarks/nas_networks.py:entries --out` wrote")
    ap.add_argument("-p", "--predictor", action="append", help=f"predictor JSON (repeatable; default: {PREDICTORS})")
    ap.add_argument("--csv", help="write every network's figures here")
    ap.add_argument("--interval", type=float, metavar="COVERAGE",
                    help="also check analyze --interval's whole-network intervals of this coverage (e.g. 0.9)")
    ap.add_argument("--calibrations", nargs="+", metavar="PREDICTOR",
                    help="instead: predictors without anchors here, each corrected by a factor from 5 networks")
    ap.add_argument("--without", nargs="+", metavar="FAMILY",
                    help="with --calibrations: refit each on its dataset less these families (e.g. inverted_residual "
                         "squeeze_excitation conv_bn_relu, the networks' own)")
    a = ap.parse_args()
    from _bench import read_rows

    if a.without and not a.calibrations:
        raise SystemExit("error: --without refits the predictors of --calibrations; give those too")
    if a.interval is not None and a.without:
        raise SystemExit("error: --interval checks the intervals the predictor files size, and --without refits "
                         "models that have none; leave one of them out")
    measured = read_rows(a.measured, "measure it with `tvmlat measure benchmarks/nas_networks.py:entries --out "
                                     f"{a.measured}`")
    from tvmlat.errors import TvmlatError

    try:  # a predictor or dataset that is missing or damaged: its one line, not a traceback
        if a.calibrations:
            t = factor_check(measured, a.calibrations, without=a.without, coverage=a.interval)
            print(t.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        else:
            t = pd.concat([report(measured, p, a.interval).assign(predictor=Path(p).name)
                           for p in a.predictor or PREDICTORS])
    except TvmlatError as e:
        raise SystemExit(f"error: {e}") from None
    if a.csv:
        t.to_csv(a.csv, index=False)


if __name__ == "__main__":
    main()
