"""Power-of-two twins: the calibration's image blocks at 8 / 16 / 32 / 64 / 128 px instead of 7 / 14 / 28 / 56 / 112.

The sampler draws planes of 7-112 px (ImageNet-style networks at 224 px). Networks at 32, 128 or 256 px
(CIFAR, many search spaces) have planes of powers of two, which no calibration block has: rows 4 or 16 KiB
apart fall in one L1 set (``mac_l1thrash`` of convs, features version 22), and elementwise nests 16 or 32
wide are as slow as 14- or 28-wide ones. This benchmark takes the image blocks (conv-BN-ReLU, pools, inverted
residuals, basic blocks, bottlenecks, squeeze-excitation) of a calibration dataset and measures each twice in
one campaign: as sampled (``orig/ID``) and with its plane size mapped to the next power of two (``pow2/ID``).
The report compares the predictor's error on both, and for the twins whose convs thrash, the share of their
multiply-adds that ``mac_l1thrash`` would have to count to predict them exactly (0.7 is counted,
``loop_features.CONV_THRASH``).

    TVMLAT_TWINS_DATASET=datasets/llvm/calib-znver5-n200-s0.parquet \\
        tvmlat measure benchmarks/pow2_twins.py:entries --out runs/twins.parquet     # ~3 min for 240 blocks
    python benchmarks/pow2_twins.py runs/twins.parquet -p datasets/llvm/calib-znver5-n200-s0.predictor.json

The twins come from ``TVMLAT_TWINS_DATASET`` (the AMD Zen 4 200-block campaign unless set); the same
dataset's predictor is the natural one to report with, since the originals are its own blocks.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATASET = os.environ.get("TVMLAT_TWINS_DATASET", str(ROOT / "datasets/llvm/calib-znver4-n200-s0.parquet"))



def pairs(dataset: str = DATASET) -> list[tuple[str, object, object]]:
    """(block_id, spec as sampled, its power-of-two twin) of every measured image block of ``dataset``."""
    from tvmlat.blocks import IMAGE_FAMILIES, PLANES
    from tvmlat.specs import BlockSpec

    pow2 = dict(zip(PLANES["default"], PLANES["pow2"]))  # each sampled plane size to the next power of two
    df = pd.read_parquet(dataset, columns=["block_id", "family", "spec", "status"])
    df = df[(df["status"] == "ok") & df["family"].isin(IMAGE_FAMILIES)]
    out = []
    for bid, spec in zip(df["block_id"], df["spec"]):
        d = json.loads(spec)
        out.append((bid, BlockSpec.from_json(spec), BlockSpec.from_json(json.dumps({**d, "hw": pow2[d["hw"]]}))))
    return out


def entries():
    """MODEL_REF: ``orig/ID`` and ``pow2/ID`` for every image block of ``TVMLAT_TWINS_DATASET``, in pairs (each twin
    timed next to its original)."""
    from tvmlat.blocks import build_block

    e = {}
    for bid, orig, twin in pairs():
        e[f"orig/{bid}"] = build_block(orig)
        e[f"pow2/{bid}"] = build_block(twin)
    return e


def report(measured_path: str, predictor_path: str) -> pd.DataFrame:
    """Per pair: the predictor's ratio (predicted / measured) of the original and of its twin; printed by family
    and by whether the twin's convs thrash, with the share of ``mac_l1thrash`` each thrashing twin wants."""
    from tvmlat.dataset import load_for_fit, ok_rows
    from tvmlat.predictors import load_predictor

    pred = load_predictor(predictor_path)
    df = ok_rows(load_for_fit(measured_path, pred.geometry))
    df = df.assign(predicted=pred.predict(df), kind=df["name"].str.split("/").str[0],
                   bid=df["name"].str.split("/").str[1])
    o, t = (df[df["kind"] == k].set_index("bid") for k in ("orig", "pow2"))
    both = o.index.intersection(t.index)
    o, t = o.loc[both], t.loc[both]
    specs = {b: twin for b, _, twin in pairs()}
    price = pred.doc["model"]["coefficients"].get("mac_l1thrash", 0.0)
    w = pd.DataFrame({"family": [specs[b].family if b in specs else "?" for b in both],
                      "ratio_orig": (o["predicted"] / o["latency_ms_median"]).to_numpy(),
                      "ratio_twin": (t["predicted"] / t["latency_ms_median"]).to_numpy(),
                      "thrash_ms": t["mac_l1thrash"].astype(float).to_numpy() * price,
                      "twin_ms": t["latency_ms_median"].to_numpy()}, index=both)
    # mac_l1thrash counts 0.7 of a thrashing conv's multiply-adds: the share that would predict the twin exactly
    conv = w["thrash_ms"] > 0
    w["share_wanted"] = np.where(conv, 0.7 * (1 - (w["ratio_twin"] - 1) * w["twin_ms"] / w["thrash_ms"].where(conv)),
                                 np.nan)
    within = lambda r: 100 * float(np.mean(np.abs(r - 1) <= 0.1))  # noqa: E731
    print(f"{Path(predictor_path).name}: {len(w)} pairs; within +-10 %: as sampled {within(w['ratio_orig']):.0f} %, "
          f"power-of-two twins {within(w['ratio_twin']):.0f} %")
    table = w.assign(thrash=conv).groupby(["thrash", "family"]).agg(
        pairs=("ratio_orig", "size"), ratio_orig=("ratio_orig", "median"), ratio_twin=("ratio_twin", "median"),
        within_orig=("ratio_orig", within), within_twin=("ratio_twin", within))
    print(table.round(2).to_string())
    if conv.any():
        s = w.loc[conv, "share_wanted"]
        print(f"the {int(conv.sum())} twins whose convs thrash want a share of {s.median():.2f} (quartiles "
              f"{s.quantile(0.25):.2f}-{s.quantile(0.75):.2f}) of their multiply-adds in mac_l1thrash; 0.7 is counted")
    return w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("measured", help="the parquet `tvmlat measure benchmarks/pow2_twins.py:entries --out` wrote")
    ap.add_argument("-p", "--predictor", required=True, help="predictor JSON (the twins' dataset's, for its blocks)")
    ap.add_argument("--csv", help="write every pair's figures here")
    a = ap.parse_args()
    from _bench import read_rows

    from tvmlat.errors import TvmlatError

    read_rows(a.measured, f"measure it with `tvmlat measure benchmarks/pow2_twins.py:entries --out {a.measured}`")
    try:
        w = report(a.measured, a.predictor)
    except TvmlatError as e:
        raise SystemExit(f"error: {e}") from None
    if a.csv:
        w.to_csv(a.csv)


if __name__ == "__main__":
    main()
