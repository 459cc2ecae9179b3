import dataclasses
import json

import pytest

from tvmlat.specs import BlockSpec


def test_make_sorts_params_and_is_frozen_and_hashable():
    s = BlockSpec.make("conv_bn_relu", k=3, cin=16, cout=32)
    assert s.params == (("cin", 16), ("cout", 32), ("k", 3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.family = "linear"  # type: ignore[misc]
    # hashable: usable in sets and as dict keys; equal specs collapse
    same = BlockSpec.make("conv_bn_relu", cout=32, cin=16, k=3)
    assert {s, same} == {s}
    assert {s: 1}[same] == 1


def test_block_id_stable_and_order_independent():
    a = BlockSpec.make("linear", tokens=49, din=128, dout=256, bias=True)
    b = BlockSpec.make("linear", bias=True, dout=256, din=128, tokens=49)
    assert a == b
    assert a.block_id == b.block_id
    assert len(a.block_id) == 12 and int(a.block_id, 16) >= 0
    # the id is a pure function of the canonical JSON: recomputing it gives the same value
    assert BlockSpec.from_json(a.to_json()).block_id == a.block_id


@pytest.mark.parametrize("change", [dict(din=129), dict(tokens=50), dict(bias=False), dict(extra=1)])
def test_block_id_changes_with_params(change):
    base = dict(tokens=49, din=128, dout=256, bias=True)
    a = BlockSpec.make("linear", **base)
    b = BlockSpec.make("linear", **{**base, **change})
    assert a != b
    assert a.block_id != b.block_id


def test_block_id_changes_with_family():
    assert BlockSpec.make("pool", c=8, hw=7).block_id != BlockSpec.make("squeeze_excitation", c=8, hw=7).block_id


@pytest.mark.parametrize("spec", [
    BlockSpec.make("conv_bn_relu", cin=32, cout=32, hw=14, k=3, stride=2, groups="dw"),
    BlockSpec.make("linear", tokens=16, din=64, dout=96, bias=False),
    BlockSpec.make("x", f=0.5, s="a b", t=True, i=-3),
])
def test_json_roundtrip(spec):
    text = spec.to_json()
    assert " " not in text.replace("a b", "")  # canonical: no whitespace
    assert json.loads(text)["family"] == spec.family
    back = BlockSpec.from_json(text)
    assert back == spec
    assert back.block_id == spec.block_id
    # from a mapping as well
    assert BlockSpec.from_json(json.loads(text)) == spec


def test_getitem_get_and_short():
    s = BlockSpec.make("pool", kind="max", c=8, hw=7, k=3, stride=2)
    assert s["kind"] == "max"
    assert s.get("missing", 42) == 42
    with pytest.raises(KeyError):
        s["missing"]
    assert s.short() == "pool(c=8,hw=7,k=3,kind=max,stride=2)"


def test_make_rejects_non_scalar():
    with pytest.raises(TypeError, match="scalar"):
        BlockSpec.make("linear", din=[1, 2])
