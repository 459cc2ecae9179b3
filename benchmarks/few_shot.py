"""Few-shot adaptation between targets: error on the new target vs. its own samples, with and without
the other target's predictor as prior.

For every ordered pair of datasets (same blocks measured on two targets): 30 % of the new target's
blocks are the test set (never seen by either model, nor by the prior); for N new-target samples
(drawn from the rest, 20 draws each) it fits (a) the linear `ops` model from scratch on N samples and
(b) the prior (a linear `ops` model fitted on the other target, test blocks excluded) adapted with
the same N samples. Prints median APE and share within +-10 % on the test set, and the reference:
from scratch on all remaining new-target samples.

    python benchmarks/few_shot.py datasets/llvm/calib-znver3-n100-s0.parquet datasets/torch-eager/....parquet
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd

from tvmlat.dataset import load_for_fit, ok_rows, read_meta
from tvmlat.metrics import accuracy
from tvmlat.predictors import LinearPredictor
from tvmlat.predictors.adapted import AdaptedPredictor
from tvmlat.predictors.io import predictor_document

SIZES = (3, 5, 10, 20, 50, 100)


def run_pair(src: pd.DataFrame, dst: pd.DataFrame, src_name: str, dst_name: str, draws: int, seed: int):
    common = sorted(set(src["block_id"]) & set(dst["block_id"]))
    rng = np.random.default_rng(seed)
    test_ids = set(rng.choice(common, size=int(0.3 * len(common)), replace=False))
    src_train = src[~src["block_id"].isin(test_ids)]
    prior = LinearPredictor(features="ops").fit(src_train, src_train["latency_ms_median"].to_numpy())
    prior_doc = predictor_document(prior, target={"name": src_name}, profile="default")
    test = dst[dst["block_id"].isin(test_ids)]
    pool = dst[~dst["block_id"].isin(test_ids)]
    yt = test["latency_ms_median"].to_numpy()
    rows = []
    try:
        full = LinearPredictor(features="ops").fit(pool, pool["latency_ms_median"].to_numpy())
        ref = accuracy(yt, full.predict(test))
    except Exception:  # noqa: BLE001 - too few new-target blocks for a model of its own
        ref = {"median_ape": float("nan"), "within10": float("nan")}
    prior_only = accuracy(yt, prior.predict(test))
    for n in [s for s in SIZES if s <= len(pool)]:
        res = {"scratch": [], "adapted": []}
        for d in range(draws):
            tr = pool.sample(n=n, random_state=seed * 1000 + d)
            y = tr["latency_ms_median"].to_numpy()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    m = LinearPredictor(features="ops").fit(tr, y)
                    res["scratch"].append(accuracy(yt, m.predict(test)))
                except Exception:  # noqa: BLE001 - too few samples for this model
                    pass
            a = AdaptedPredictor(prior={"kind": "linear", "model": prior_doc["model"]}).fit(tr, y)
            res["adapted"].append(accuracy(yt, a.predict(test)))
        for model, accs in res.items():
            if accs:
                rows.append({"pair": f"{src_name} -> {dst_name}", "n_new": n, "model": model,
                             "median_ape": float(np.median([a["median_ape"] for a in accs])),
                             "within10": float(np.median([a["within10"] for a in accs])), "draws": len(accs)})
    rows.append({"pair": f"{src_name} -> {dst_name}", "n_new": len(pool), "model": "scratch, all new samples",
                 "median_ape": ref["median_ape"], "within10": ref["within10"], "draws": 1})
    rows.append({"pair": f"{src_name} -> {dst_name}", "n_new": 0, "model": "prior alone (other target)",
                 "median_ape": prior_only["median_ape"], "within10": prior_only["within10"], "draws": 1})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--csv", default=None)
    a = ap.parse_args()
    dfs = {}
    for p in a.datasets:
        name = read_meta(p).get("target_name", p)
        dfs[name] = ok_rows(load_for_fit(p))
    rows = []
    names = list(dfs)
    for s in names:
        for d in names:
            if s != d:
                rows += run_pair(dfs[s], dfs[d], s, d, a.draws, a.seed)
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if a.csv:
        df.to_csv(a.csv, index=False)


if __name__ == "__main__":
    main()
