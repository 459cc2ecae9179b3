"""Whole networks against the predictor, with the host's drift measured in the same campaign.

On a shared VM the speed of the same code drifts by 10-30 % between campaigns. A network measured
today compared with a predictor calibrated yesterday mixes that drift into the "error". This
benchmark measures every layer of some networks *and* a sample of the predictor's own calibration
blocks in one campaign (interleaved rounds put them through the same host states). The calibration
blocks' median predicted/measured ratio is the host factor now; dividing it out leaves the model's
error on the networks.

    tvmlat measure benchmarks/network_anchor.py:entries --out runs/anchor.parquet      # ~5 min
    python benchmarks/network_anchor.py runs/anchor.parquet [-p PREDICTOR.json]

Anchor blocks are 40 drawn (seed 0) from the predictor's dataset,
``datasets/llvm/calib-emeraldrapids-n200-s0.parquet`` unless ``TVMLAT_ANCHOR_DATASET`` names
another; the networks are ``examples/networks.py``'s small CNN, ResNet-18 and MobileNetV2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATASET = os.environ.get("TVMLAT_ANCHOR_DATASET", str(ROOT / "datasets/llvm/calib-emeraldrapids-n200-s0.parquet"))
PREDICTOR = str(ROOT / "datasets/llvm/calib-emeraldrapids-n200-s0.predictor.json")
NETWORKS = ("small_cnn", "resnet18", "mobilenet_v2")
ANCHORS = 40


def entries(device: str = "cpu"):
    """MODEL_REF: every layer of the networks (``NET/layer``) and the anchor blocks (``calib/BLOCK_ID``)."""
    sys.path.insert(0, str(ROOT / "examples"))
    import networks

    from tvmlat.anchors import draw_anchor_specs
    from tvmlat.blocks import build_block
    from tvmlat.split import split_layers

    out = {}
    for net in NETWORKS:
        m, x = getattr(networks, net)()
        for name, entry in split_layers(m, x).items():
            out[f"{net}/{name}"] = entry
    for spec in draw_anchor_specs(DATASET, ANCHORS):
        out[f"calib/{spec.block_id}"] = build_block(spec, device=device)
    return out


def report(measured: pd.DataFrame, predictor_path: str) -> pd.DataFrame:
    from tvmlat.anchors import host_factor
    from tvmlat.features import count_features
    from tvmlat.predictors import load_predictor

    pred = load_predictor(predictor_path)
    ents = entries(device="meta")
    meas = measured[measured["status"] == "ok"].set_index("name")["latency_ms_median"]
    names = [n for n in ents if n in meas.index]
    X = pd.DataFrame([count_features(*ents[n], geometry=pred.geometry) for n in names])
    p = pd.Series(pred.predict(X), index=names)
    group = pd.Series([n.split("/")[0] for n in names], index=names)
    calib = group == "calib"
    host, err = host_factor(p[calib], meas[names][calib])
    within = np.mean(np.abs(p[calib] / meas[names][calib] / host - 1) <= 0.1) * 100
    print(f"{int(calib.sum())} anchor blocks: predicted/measured {host:.3f} (the host now vs. at calibration); "
          f"after dividing that out, median error {err:.1f} %, {within:.0f} % within +-10 %")
    rows = []
    for net in NETWORKS:
        sel = group == net
        if not sel.any():
            continue
        m, q = float(meas[names][sel].sum()), float(p[sel].sum())
        rows.append({"network": net, "layers": int(sel.sum()), "measured_ms": m, "predicted_ms": q,
                     "error_%": 100 * (q / m - 1), "host_adjusted_error_%": 100 * (q / host / m - 1)})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("measured", help="the parquet `tvmlat measure benchmarks/network_anchor.py:entries --out` wrote")
    ap.add_argument("-p", "--predictor", default=PREDICTOR)
    a = ap.parse_args()
    from _bench import read_rows

    report(read_rows(a.measured, "measure it with `tvmlat measure benchmarks/network_anchor.py:entries --out "
                                 f"{a.measured}`"), a.predictor)


if __name__ == "__main__":
    main()
