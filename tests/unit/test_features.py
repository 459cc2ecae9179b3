import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tvmlat.blocks import FAMILIES, build_block, sample_specs
from tvmlat.features import FEATURE_COLUMNS, block_features, count_features, features_frame
from tvmlat.specs import BlockSpec


def _out_hw(hw: int, k: int, stride: int) -> int:
    pad = k // 2
    return (hw + 2 * pad - k) // stride + 1


CONV_CASES = [
    # (groups spec value, numeric groups, cin, cout, hw, k, stride, expected class)
    (1, 1, 32, 64, 14, 3, 2, "flops_conv"),
    (1, 1, 32, 48, 14, 1, 1, "flops_conv1x1"),
    (1, 1, 16, 16, 28, 5, 1, "flops_conv"),
    ("dw", 32, 32, 32, 14, 3, 1, "flops_dwconv"),
    ("dw", 64, 64, 64, 28, 5, 2, "flops_dwconv"),
    (4, 4, 32, 64, 14, 3, 1, "flops_conv"),
    (8, 8, 64, 128, 7, 7, 2, "flops_conv"),
    (2, 2, 32, 64, 14, 1, 1, "flops_conv1x1"),
]


@pytest.mark.parametrize("gspec,groups,cin,cout,hw,k,stride,cls", CONV_CASES)
def test_conv_macs_and_class(gspec, groups, cin, cout, hw, k, stride, cls):
    spec = BlockSpec.make("conv_bn_relu", cin=cin, cout=cout, hw=hw, k=k, stride=stride, groups=gspec)
    f = block_features(spec)
    ho = _out_hw(hw, k, stride)
    macs = cout * ho * ho * (cin // groups) * k * k
    assert f["macs"] == macs
    conv_classes = ["flops_conv", "flops_conv1x1", "flops_dwconv"]
    assert f[cls] == 2 * macs
    for other in conv_classes:
        if other != cls:
            assert f[other] == 0, other
    assert f["inp"] == cin * hw * hw
    assert f["out"] == cout * ho * ho
    # conv + BN + ReLU: the total also has the elementwise terms
    assert f["flops"] == 2 * macs + 2 * f["out"] + f["out"]
    module, _ = build_block(spec)
    assert f["params"] == sum(p.numel() for p in module.parameters())
    assert f["weight_elems"] == cout * (cin // groups) * k * k


@pytest.mark.parametrize("tokens,din,dout,bias", [(49, 128, 256, True), (1, 64, 1000, False), (16, 768, 96, True)])
def test_linear_macs_params_inp(tokens, din, dout, bias):
    spec = BlockSpec.make("linear", tokens=tokens, din=din, dout=dout, bias=bias)
    f = block_features(spec)
    assert f["macs"] == tokens * din * dout
    assert f["flops_matmul"] == 2 * tokens * din * dout
    assert f["flops_conv"] == f["flops_dwconv"] == f["flops_bmm"] == 0
    assert f["params"] == din * dout + (dout if bias else 0)
    assert f["inp"] == tokens * din
    assert f["out"] == tokens * dout
    assert f["acts"] >= f["out"]


@pytest.mark.parametrize("tokens,dim,heads", [(49, 128, 4), (196, 64, 1), (16, 384, 12)])
def test_attention_macs(tokens, dim, heads):
    spec = BlockSpec.make("attention", tokens=tokens, dim=dim, heads=heads)
    f = block_features(spec)
    qkv = tokens * dim * 3 * dim
    qk = tokens * tokens * dim  # heads x n x n x (dim / heads)
    av = tokens * tokens * dim
    proj = tokens * dim * dim
    assert f["macs"] == qkv + qk + av + proj
    # the score products are counted, wherever they show up (bmm on meta, or a fused attention op)
    assert f["flops_bmm"] + f["flops_attn"] >= 2 * (qk + av)
    assert f["flops_matmul"] == 2 * (qkv + proj)
    assert f["flops"] > 2 * f["macs"]  # + softmax and scaling
    assert f["params"] == 3 * dim * dim + 3 * dim + dim * dim + dim


def _flop_counter_total(module, inputs) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        module(*inputs)
    return fc.get_total_flops()


@pytest.mark.parametrize("spec", [
    BlockSpec.make("conv_bn_relu", cin=32, cout=64, hw=14, k=3, stride=2, groups=1),
    BlockSpec.make("conv_bn_relu", cin=32, cout=32, hw=14, k=3, stride=1, groups="dw"),
    BlockSpec.make("conv_bn_relu", cin=32, cout=64, hw=14, k=5, stride=1, groups=4),
    BlockSpec.make("linear", tokens=49, din=128, dout=256, bias=True),
    BlockSpec.make("linear", tokens=16, din=96, dout=64, bias=False),
    BlockSpec.make("matmul", b=4, m=49, k=64, n=128),
    BlockSpec.make("mlp", tokens=16, dim=64, ratio=4),
    BlockSpec.make("basic_block", cin=16, cout=32, hw=14, stride=2),
], ids=lambda s: s.short())
def test_macs_match_flop_counter_mode(spec):
    module, inputs = build_block(spec, device="meta")
    fc = _flop_counter_total(module, inputs)
    f = count_features(module, inputs)
    assert fc > 0
    assert fc == 2 * f["macs"]
    assert f["flops"] >= fc


@pytest.mark.parametrize("family", list(FAMILIES))
def test_features_cpu_equal_meta(family):
    spec = sample_specs(1, seed=21, families=[family])[0]
    m_cpu, x_cpu = build_block(spec)
    m_meta, x_meta = build_block(spec, device="meta")
    f_cpu = count_features(m_cpu, x_cpu)
    f_meta = count_features(m_meta, x_meta)
    assert f_cpu == f_meta
    assert set(f_cpu) == set(FEATURE_COLUMNS)
    assert f_cpu["params"] == sum(p.numel() for p in m_cpu.parameters())
    assert f_cpu["inp"] == sum(t.numel() for t in x_cpu)
    # counting must not move or alter the caller's module
    assert all(p.device.type == "cpu" for p in m_cpu.parameters())


def test_count_features_of_plain_module():
    m = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU())
    x = torch.randn(3, 10)
    f = count_features(m, [x])
    assert f["macs"] == 3 * 10 * 20
    assert f["inp"] == 30
    assert f["out"] == 60
    assert f["params"] == 10 * 20 + 20
    assert f["elems_elementwise"] == 60  # the ReLU
    assert f["n_ops"] == 2


def test_features_frame_columns(dataset_specs):
    specs = dataset_specs[:5]
    df = features_frame(specs)
    assert list(df.columns) == ["block_id", "family", "spec", *FEATURE_COLUMNS]
    assert list(df["block_id"]) == [s.block_id for s in specs]
    assert (df["flops"] > 0).all()
    assert df.iloc[0]["macs"] == block_features(specs[0])["macs"]
