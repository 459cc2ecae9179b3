import pytest
import torch

from tvmlat.blocks import FAMILIES, build_block, log10_span, sample_specs
from tvmlat.features import block_features
from tvmlat.specs import BlockSpec


@pytest.fixture(scope="module")
def one_per_family():
    return {fam: sample_specs(1, seed=7, families=[fam])[0] for fam in FAMILIES}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_builds_and_runs(family, one_per_family):
    spec = one_per_family[family]
    assert spec.family == family
    module, inputs = build_block(spec)
    assert isinstance(module, torch.nn.Module)
    assert not module.training
    assert inputs and all(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in inputs)
    with torch.no_grad():
        out = module(*inputs)
    assert isinstance(out, torch.Tensor)
    assert out.numel() > 0
    assert torch.isfinite(out).all()
    assert out.shape[0] == inputs[0].shape[0]  # batch is kept


@pytest.mark.parametrize("family", ["conv_bn_relu", "linear", "attention"])
def test_build_is_deterministic(family, one_per_family):
    spec = one_per_family[family]
    m1, x1 = build_block(spec)
    m2, x2 = build_block(spec)
    for a, b in zip(x1, x2):
        assert torch.equal(a, b)
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k


def test_build_on_meta_has_no_data(one_per_family):
    module, inputs = build_block(one_per_family["basic_block"], device="meta")
    assert all(t.device.type == "meta" for t in inputs)
    assert all(p.device.type == "meta" for p in module.parameters())


@pytest.mark.parametrize("groups,cin,cout,expect_groups", [(1, 16, 32, 1), ("dw", 24, 24, 24), (4, 16, 32, 4)])
def test_conv_groups(groups, cin, cout, expect_groups):
    spec = BlockSpec.make("conv_bn_relu", cin=cin, cout=cout, hw=8, k=3, stride=1, groups=groups)
    module, (x,) = build_block(spec)
    conv = module[0]
    assert isinstance(conv, torch.nn.Conv2d)
    assert conv.groups == expect_groups
    assert tuple(x.shape) == (1, cin, 8, 8)


def test_sample_same_seed_same_specs():
    a = sample_specs(15, seed=123)
    b = sample_specs(15, seed=123)
    assert a == b
    assert [s.block_id for s in a] == [s.block_id for s in b]


def test_sample_different_seed_different_specs():
    a = sample_specs(15, seed=1)
    b = sample_specs(15, seed=2)
    assert [s.block_id for s in a] != [s.block_id for s in b]
    assert {s.block_id for s in a} != {s.block_id for s in b}


def test_sample_30_covers_all_families_distinct_and_in_flops_window():
    specs = sample_specs(30, seed=0)
    assert len(specs) == 30
    assert {s.family for s in specs} == set(FAMILIES)
    assert len({s.block_id for s in specs}) == 30
    for s in specs:
        assert 2e4 <= block_features(s)["flops"] <= 6e7, s.short()


def test_sample_respects_custom_window_and_families():
    lo, hi = 1e5, 1e6
    specs = sample_specs(8, seed=4, families=["linear", "matmul"], min_flops=lo, max_flops=hi)
    assert {s.family for s in specs} <= {"linear", "matmul"}
    assert all(lo <= block_features(s)["flops"] <= hi for s in specs)


def test_unknown_family_raises():
    with pytest.raises(KeyError, match="nosuch"):
        build_block(BlockSpec.make("nosuch", a=1))
    with pytest.raises(KeyError, match="nosuch"):
        sample_specs(3, families=["linear", "nosuch"])


def test_log10_span():
    assert log10_span([0.01, 1.0, 10.0]) == pytest.approx(3.0)
    assert log10_span([0.0, -1.0]) == 0.0
