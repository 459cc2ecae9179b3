"""The closed-form feature calculator equals the meta-device counter exactly, and imports no torch."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from helpers import run_light
from tvmlat import analytic_features as af
from tvmlat.blocks import FAMILIES, sample_specs
from tvmlat.features import FEATURE_COLUMNS, block_features, features_frame
from tvmlat.specs import BlockSpec

M = BlockSpec.make


def _edge_specs() -> list[BlockSpec]:
    out: list[BlockSpec] = []
    # conv: every groups spelling, even/odd kernels, strides 1-3, batch > 1, depthwise without "dw"
    for g, k, stride, batch in itertools.product([1, "1", "dw", 2, "4"], [1, 2, 3, 5], [1, 2, 3], [1, 2]):
        out.append(M("conv_bn_relu", cin=16, cout=16 if g == "dw" else 32, hw=9, k=k, stride=stride, groups=g,
                     batch=batch))
    out += [M("conv_bn_relu", cin=8, cout=8, hw=7, k=3, stride=1, groups=8),
            M("conv_bn_relu", cin=8, cout=16, hw=7, k=1, stride=2, groups=8),
            M("conv_bn_relu", cin=1, cout=8, hw=7, k=3, stride=1, groups="dw")]
    # pool: each kind (unknown kinds are avg), windows 1-4, odd/even sides, reductions short and long
    for kind, k, stride, hw in itertools.product(["max", "avg", "global"], [1, 2, 3, 4], [1, 2], [4, 5]):
        out.append(M("pool", kind=kind, c=8, hw=hw, k=k, stride=stride))
    out += [M("pool", kind="global", c=8, hw=hw, k=2, stride=1, batch=3) for hw in (5, 6, 7)]
    # linear / mlp: tokens = 1, bias False, batch > 1, short and long reductions
    for tokens, bias, batch in itertools.product([1, 3, 64], [True, False], [1, 2]):
        out.append(M("linear", tokens=tokens, din=16 if tokens == 3 else 40, dout=24, bias=bias, batch=batch))
        out.append(M("mlp", tokens=tokens, dim=16, ratio=3, batch=batch))
    # attention: batch / heads / tokens each 1 or more (they decide which reshapes copy)
    for batch, heads, tokens in itertools.product([1, 2], [1, 2, 4], [1, 2, 16]):
        out.append(M("attention", tokens=tokens, dim=64, heads=heads, batch=batch))
    # residual blocks: with and without residual / downsample, stride 2 on odd sides, expand 1
    for cin, cout, stride, hw, expand in itertools.product([8], [8, 16], [1, 2], [5, 8], [1, 3]):
        out.append(M("inverted_residual", cin=cin, cout=cout, hw=hw, expand=expand, k=3, stride=stride))
        if expand == 1:
            out.append(M("basic_block", cin=cin, cout=cout, hw=hw, stride=stride, batch=2))
            out.append(M("bottleneck", cin=4 * cin, width=cin, hw=hw, stride=stride))
            out.append(M("bottleneck", cin=2 * cin, width=cin, hw=hw, stride=stride))
    # squeeze-excitation: mid clamped to 8 and not
    out += [M("squeeze_excitation", c=c, hw=3, reduction=r) for c in (8, 40, 256) for r in (4, 16)]
    out += [M("matmul", b=1, m=3, k=40, n=5), M("matmul", b=3, m=7, k=8, n=1)]
    return out


@pytest.fixture(scope="module")
def specs() -> list[BlockSpec]:
    sampled = [s for seed in (0, 1, 2, 7) for s in sample_specs(60, seed=seed)]
    return sampled + _edge_specs()


def test_families_match():
    assert set(af.FAMILIES) == set(FAMILIES)


def test_analytic_equals_meta_counter(specs):
    assert {s.family for s in specs} == set(FAMILIES)
    assert len(specs) >= 300
    bad = []
    for s in specs:
        got, want = af.analytic_features(s), block_features(s)
        assert list(got) == list(want)
        if got != want:
            bad.append((s.short(), {k: (got[k], want[k]) for k in want if got[k] != want[k]}))
    assert not bad, bad[:5]


def test_analytic_equals_meta_counter_with_an_l2(specs):
    """With an L2 size known, the block-level acts_l2out (footprint past two L2s) comes out the same too;
    a 256 KiB L2 puts the bound inside the sampled blocks' range."""
    from tvmlat.loop_features import CacheGeometry

    g = CacheGeometry(64, 8, 64, l2=256 * 1024)
    got = [af.analytic_features(s, geometry=g) for s in specs]
    assert got == [block_features(s, geometry=g) for s in specs]
    fired = [f["acts_l2out"] > 0 for f in got]
    assert any(fired) and not all(fired)
    frame = af.analytic_frame(specs, geometry=g)
    assert frame["acts_l2out"].tolist() == [f["acts_l2out"] for f in got]


def test_frame_equals_features_frame(specs):
    pd.testing.assert_frame_equal(af.analytic_frame(specs), features_frame(specs))
    empty = af.analytic_frame([])
    assert list(empty.columns) == ["block_id", "family", "spec", *FEATURE_COLUMNS] and len(empty) == 0


def test_arrays_match_per_spec():
    g = ["dw", 1, "4", 2]
    a = af.analytic_arrays("conv_bn_relu", cin=[16, 16, 32, 16], cout=[16, 32, 32, 16], hw=[7, 7, 14, 9],
                           k=[3, 1, 3, 5], stride=[1, 2, 1, 2], groups=g)
    for i in range(4):
        s = M("conv_bn_relu", cin=[16, 16, 32, 16][i], cout=[16, 32, 32, 16][i], hw=[7, 7, 14, 9][i],
              k=[3, 1, 3, 5][i], stride=[1, 2, 1, 2][i], groups=g[i])
        assert {k: int(v[i]) for k, v in a.items()} == block_features(s)
    a = af.analytic_arrays("pool", kind=np.array(["max", "global"]), c=[8, 8], hw=[7, 7], k=[3, 3], stride=[2, 2])
    assert a["out"].tolist() == [8 * 4 * 4, 8]


def test_invalid_specs_raise():
    with pytest.raises(KeyError):
        af.analytic_features(M("no_such_family", a=1))
    with pytest.raises(KeyError):
        af.analytic_features(M("linear", tokens=4, din=8, bias=True))  # no dout
    with pytest.raises(ValueError):
        af.analytic_features(M("attention", tokens=4, dim=64, heads=3))
    with pytest.raises(ValueError):
        af.analytic_features(M("conv_bn_relu", cin=12, cout=32, hw=7, k=3, stride=1, groups=8))


BAD_VALUES = [  # (family, parameters, what the error names): blocks torch cannot run, or would build as another block
    ("conv_bn_relu", dict(cin=-32, cout=64, hw=56, k=3, stride=1, groups=1), "cin must be 1 or more, got -32"),
    ("conv_bn_relu", dict(cin=32, cout=64, hw=56, k=3, stride=0, groups=1), "stride must be 1 or more"),
    ("matmul", dict(b=1, m=0, k=3, n=4), "m must be 1 or more, got 0"),
    ("mlp", dict(tokens=4, dim=64, ratio=0), "ratio must be 1 or more"),
    ("linear", dict(batch=-1, tokens=4, din=8, dout=8, bias=True), "batch must be 1 or more"),
    ("pool", dict(c=8, hw=14, k=2, stride=1, kind="min"), "kind 'min'"),  # forward() would average it
    ("linear", dict(tokens=4, din=8, dout=8, bias=2), "bias=2"),
]


@pytest.mark.parametrize("family,params,said", BAD_VALUES, ids=[f"{f}-{s.split()[0]}" for f, _, s in BAD_VALUES])
def test_bad_values_raise_in_both_paths(family, params, said):
    """One spec and a batch of arrays refuse the same values, naming them (before this, a negative cin gave numbers,
    and a pool kind 'min' was priced as an average pool)."""
    with pytest.raises(ValueError, match=said.replace("(", r"\(")):
        af.analytic_features(M(family, **params))
    arrays = {k: np.array([v, v]) for k, v in params.items()}
    with pytest.raises(ValueError):
        af.analytic_arrays(family, **arrays)


def test_good_values_still_pass():
    """The checks leave valid specs alone: bias as 0 / 1, every pool kind, groups "dw"."""
    assert af.analytic_features(M("linear", tokens=4, din=8, dout=8, bias=1)) == \
        af.analytic_features(M("linear", tokens=4, din=8, dout=8, bias=True))
    for kind in ("max", "avg", "global"):
        af.analytic_features(M("pool", c=8, hw=14, k=2, stride=1, kind=kind))
    a = af.analytic_arrays("linear", tokens=[4, 4], din=[8, 8], dout=[8, 8], bias=[0, 1])
    assert a["params"].tolist() == [64, 72]


def test_torch_builder_refuses_an_unknown_pool_kind():
    from tvmlat.blocks import build_block

    with pytest.raises(ValueError, match="pool kind 'min'"):
        build_block(M("pool", c=8, hw=14, k=2, stride=1, kind="min"))


def test_import_leaves_torch_and_tvm_out():
    r = run_light("import tvmlat.analytic_features as a\na.analytic_frame([])\n")
    assert r.returncode == 0, r.stderr
