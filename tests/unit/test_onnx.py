"""ONNX models: counted from the graph (no TVM), same conventions as the torch counter."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnx")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnx_models import SmallTwin, small_onnx  # noqa: E402

from tvmlat.analysis import layer_table, onnx_layer_table, totals_row  # noqa: E402
from tvmlat.errors import ModelRefError  # noqa: E402
from tvmlat.onnx_model import load_onnx  # noqa: E402
from helpers import assert_user_error, run_cli, run_light  # noqa: E402


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("onnx") / "small.onnx"
    small_onnx(p)
    return p


def test_onnx_counts_match_the_torch_twin(onnx_path):
    import torch

    df = onnx_layer_table(load_onnx(onnx_path))
    twin = layer_table(SmallTwin().eval(), (torch.randn(1, 3, 32, 32),))
    a, b = totals_row(df), totals_row(twin)
    assert a["params"] == b["params"]
    assert a["macs"] == b["macs"]
    assert a["flops"] == b["flops"]
    assert list(df["name"]) == ["stem.conv", "pool", "block.conv", "gap", "fc"]
    assert list(df["op"])[0] == "conv+norm+elementwise"


def test_onnx_analyze_and_predict_cli(onnx_path, predictor_path, capsys):
    code, out, err = run_cli(["analyze", onnx_path, "-p", predictor_path, "--format", "json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert [r["name"] for r in rows][:2] == ["stem.conv", "pool"] or "latency_ms" in rows[0]
    assert all(r["latency_ms"] > 0 for r in rows)
    code, out, err = run_cli(["predict", onnx_path, "-p", predictor_path, "--format", "json"], capsys)
    assert code == 0, err
    [row] = json.loads(out)
    assert row["name"] == "small" and row["latency_ms"] > 0
    # five layers: a network, predicted as analyze predicts it (this predictor keeps no network correction)
    assert row["as"] == "network, 5 layers" and row["latency_ms"] == pytest.approx(sum(r["latency_ms"] for r in rows))
    code, out, err = run_cli(["predict", onnx_path, "-p", predictor_path, "--format", "json", "--as", "block"], capsys)
    [block] = json.loads(out)
    assert code == 0 and block["as"] == "block" and block["latency_ms"] > 0


def test_onnx_analyze_and_predict_run_without_torch(onnx_path):
    # an ONNX file is counted from its graph: `analyze` and `predict` on it load neither torch (0.9 s) nor TVM
    predictor_path = Path(__file__).resolve().parents[2] / "datasets/llvm/calib-znver5-n200-s0.predictor.json"
    r = run_light("import sys\n"
                  "from tvmlat.cli import main\n"
                  f"for argv in (['analyze', {str(onnx_path)!r}, '-p', {str(predictor_path)!r}, '--interval', '0.9'],\n"
                  f"             ['predict', {str(onnx_path)!r}, '-p', {str(predictor_path)!r}],\n"
                  f"             ['predict', {str(onnx_path)!r}, '-p', {str(predictor_path)!r}, '--as', 'block']):\n"
                  "    sys.argv = ['tvmlat', *argv]\n"
                  "    try:\n"
                  "        main()\n"
                  "    except SystemExit as e:\n"
                  "        assert not e.code, (argv, e.code)\n")
    assert r.returncode == 0, r.stderr
    assert "small" in r.stdout and "TOTAL" in r.stdout


def test_corrupt_or_missing_onnx_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf model \xff\xfe")
    with pytest.raises(ModelRefError, match="not a valid ONNX model"):
        load_onnx(bad)
    assert_user_error(run_cli(["analyze", bad], capsys), "not a valid ONNX model")
    assert_user_error(run_cli(["analyze", tmp_path / "missing.onnx"], capsys), "does not exist")


def test_onnx_loop_features_match_the_torch_twin(onnx_path):
    """The loop-nest columns (loop_features.py) come out the same from the ONNX graph and from torch."""
    import torch

    from tvmlat.features import count_features
    from tvmlat.loop_features import LOOP_COLUMNS
    from tvmlat.onnx_model import onnx_features

    a = onnx_features(load_onnx(onnx_path))
    b = count_features(SmallTwin().eval(), (torch.randn(1, 3, 32, 32),))
    assert {c: a[c] for c in LOOP_COLUMNS} == {c: b[c] for c in LOOP_COLUMNS}
    from tvmlat.loop_features import CacheGeometry

    tiny = CacheGeometry(64, 8, 64, l2=16 * 1024)  # two 16 KiB L2s: the twin's footprint does not fit
    a2 = onnx_features(load_onnx(onnx_path), geometry=tiny)
    assert a2["acts_l2out"] == b["acts"] + b["inp"] > 0
    assert a2["acts_l2out"] == count_features(SmallTwin().eval(), (torch.randn(1, 3, 32, 32),), geometry=tiny)["acts_l2out"]
    assert a["mac_excess"] > 0 and a["short_vec"] > 0  # the 3x3 convs reduce over 27 and 72 elements
    assert a["red_chain"] > 0  # GlobalAveragePool / adaptive_avg_pool2d: a chain of adds per channel
    assert a["ew_slow"] > 0  # 34-wide padded copies, 32-wide BatchNorms and ReLUs


def test_auto_pad_counts_like_pads(tmp_path):
    """SAME_UPPER on a 3x3 stride-1 conv pads one on each side, like pads=[1,1,1,1]: the same shapes,
    the same features, whatever the L1. (The L1 rule walks the unpadded 16x16 planes, 1 KiB and
    line-aligned: in a direct-mapped 64-set L1 the second conv's 8 channels x 3 rows conflict.)"""
    from tvmlat.loop_features import CacheGeometry
    from tvmlat.onnx_model import onnx_features

    small_onnx(tmp_path / "auto.onnx", auto_pad=True)
    small_onnx(tmp_path / "pads.onnx")
    got = {}
    for g in (CacheGeometry(64, 1, 64), CacheGeometry()):
        got[g] = onnx_features(load_onnx(tmp_path / "auto.onnx"), geometry=g)
        assert got[g] == onnx_features(load_onnx(tmp_path / "pads.onnx"), geometry=g)
    assert got[CacheGeometry(64, 1, 64)]["mac_l1miss_exc"] > got[CacheGeometry()]["mac_l1miss_exc"]


def test_onnx_analyze_prints_the_peak_memory_predict_gives(onnx_path, capsys):
    """With a predictor that has a memory model, an ONNX network gets the peak-memory line and each layer's
    working set, as a torch network does, and the same peak as `predict`."""
    import re

    p = Path(__file__).resolve().parents[2] / "datasets" / "llvm" / "calib-emeraldrapids-n200-s0.predictor.json"
    code, out, err = run_cli(["analyze", onnx_path, "-p", p], capsys)
    assert code == 0, err
    line = re.search(r"peak memory ([\d,.]+) MiB predicted.*?([\d,.]+) MiB in (\S+)", out)
    assert line, out
    code, out, err = run_cli(["analyze", onnx_path, "-p", p, "-f", "json"], capsys)
    rows = json.loads(out)
    top = max(rows, key=lambda r: r["work_mib"])
    assert line.group(3) == top["name"] and float(line.group(2)) == pytest.approx(top["work_mib"], abs=0.006)
    code, out, err = run_cli(["predict", onnx_path, "-p", p, "-f", "json"], capsys)
    assert code == 0, err
    assert float(line.group(1).replace(",", "")) == pytest.approx(json.loads(out)[0]["peak_memory_mib"], abs=0.006)


def test_onnx_trace_totals_are_the_whole_models_features(onnx_path):
    """`predict` counts an ONNX model once: its trace's totals are onnx_features key for key (the input, output
    and parameters included, which a network's peak memory holds whole)."""
    from tvmlat.analysis import onnx_traced
    from tvmlat.loop_features import DEFAULT_GEOMETRY
    from tvmlat.onnx_model import onnx_features

    model = load_onnx(onnx_path)
    totals = onnx_traced(model, DEFAULT_GEOMETRY)[2]
    assert totals == onnx_features(model, geometry=DEFAULT_GEOMETRY)
    assert totals["inp"] == 3 * 32 * 32 and totals["out"] == 10 and totals["params"] > 0


def test_onnx_counts_transcendental_elements_as_torch_does(tmp_path):
    """Sigmoid, Softmax and Tanh evaluate exp / tanh per element (ew_transc, version 20), Relu does not: the ONNX
    graph and its torch twin count the same."""
    import torch

    from onnx_models import TranscTwin, transc_onnx
    from tvmlat.features import count_features
    from tvmlat.onnx_model import onnx_features

    transc_onnx(tmp_path / "t.onnx")
    a = onnx_features(load_onnx(tmp_path / "t.onnx"))
    b = count_features(TranscTwin(), (torch.randn(1, 4, 8, 8),))
    n = 4 * 8 * 8
    assert a["ew_transc"] == b["ew_transc"] == n * 6 // 10 + 2 * n  # the sigmoid's at 0.6, the softmax's, the tanh's
