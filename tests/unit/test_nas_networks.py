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


def test_a_128_px_network_counts_its_thrashing_project_convs_and_the_same_at_160_px_none():
    """Version 22: at 128 px the first stages' planes are 64 x 64 and 32 x 32 floats (16 / 4 KiB apart), and the
    unpadded 1 x 1 convs over them thrash L1; at 160 px (80 x 80, 40 x 40) nothing does. Network 212 ran 45 % slower
    than its layers' version-21 prediction at 128 px on the AMD host (benchmarks/out/nas_networks_amd_s200.parquet)."""
    import torch

    from tvmlat.features import count_features

    m, _, _ = nas_networks.sample_network(212)
    at = {r: count_features(m, (torch.randn(1, 3, r, r),))["mac_l1thrash"] for r in (128, 160)}
    assert at[128] > 0 and at[160] == 0
