"""The NAS benchmark's search space: networks are reproducible from their seed, differ between seeds, and
every layer is work the shipped Intel predictor has priced (else its sums would be too low)."""

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import nas_networks  # noqa: E402

from tvmlat.analysis import layer_table  # noqa: E402
from tvmlat.predictors import load_predictor  # noqa: E402


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_a_seed_gives_the_same_network_and_seeds_differ():
    a, xa, ca = nas_networks.sample_network(3)
    b, xb, cb = nas_networks.sample_network(3)
    assert ca == cb and _n_params(a) == _n_params(b) and torch.equal(xa[0], xb[0])
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    others = [nas_networks.sample_network(s)[2] for s in range(8)]
    assert len({str(c) for c in others}) == 8
    assert {c["resolution"] for c in others} <= {96, 128, 160}


def test_every_layer_of_a_network_is_priced_by_the_shipped_predictor():
    pred = load_predictor(nas_networks.PREDICTORS[0])
    for seed in range(3):
        m, x, choices = nas_networks.sample_network(seed)
        assert m(*x).shape == (1, 1000)
        t = layer_table(m, x, pred)
        assert len(t) > 3 * len(choices["blocks"]) and (t["latency_ms"] > 0).all()
        assert not any(t.attrs["unpriced"]), t.attrs["unpriced"]


def test_the_interval_check_judges_each_network_against_its_own_interval():
    import pandas as pd

    measured = pd.read_parquet(ROOT / "benchmarks/out/nas_networks.parquet")
    few = measured[measured["name"].isin([f"nas/{i:03d}" for i in range(13)])]  # 10 to size, 3 to judge
    t = nas_networks.factor_check(few, [nas_networks.PREDICTORS[0]], draws=4, coverage=0.9)
    row = t.iloc[0]
    assert 0 <= row["inside_%"] <= 100 and row["width_%"] > 0
    assert 0 <= row["inside_10net_%"] <= 100 and 0 < row["width_10net_%"] < row["width_%"]
