"""benchmarks/kernel_pool.py: a kernel's loop terms, counted from its buffer shapes, are the ones the op counter
gives the aten op it was lowered from (its bad-input tests are in test_benchmark_errors.py)."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import kernel_pool  # noqa: E402

from tvmlat.features import OpCounter  # noqa: E402
from tvmlat.loop_features import LOOP_COLUMNS, CacheGeometry  # noqa: E402

GEOMETRIES = [CacheGeometry(), CacheGeometry(sets=64, ways=12, line=64, l2=2 * 2**20, avx512=True)]


def _op_loops(module, shape, geometry) -> dict:
    counter = OpCounter(geometry)
    with torch.no_grad(), counter:
        module.to("meta")(torch.empty(shape, device="meta"))
    total = dict.fromkeys(LOOP_COLUMNS, 0)
    for rec in counter.records:
        for k in LOOP_COLUMNS:
            total[k] += rec["feat"].get(k, 0)
    return total


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=["32k8w", "48k12w-avx512"])
@pytest.mark.parametrize("cin,cout,hw,k,stride,groups", [
    (16, 32, 28, 3, 1, 1), (64, 64, 56, 5, 2, 64), (32, 96, 14, 1, 1, 1), (48, 48, 7, 7, 1, 48),
    (128, 256, 14, 3, 2, 1), (24, 144, 112, 1, 2, 1), (96, 96, 28, 3, 2, 96)])
def test_a_conv_kernels_loop_terms_are_its_aten_ops(cin, cout, hw, k, stride, groups, geometry):
    conv = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False)
    out = (hw + 2 * (k // 2) - k) // stride + 1
    shapes = [(1, cin, hw, hw), (cout, cin // groups, k, k), (1, cout, out, out)]
    got = kernel_pool.kernel_loops("conv2d", shapes, geometry)
    assert {c: got[c] for c in LOOP_COLUMNS} == _op_loops(conv, (1, cin, hw, hw), geometry)


@pytest.mark.parametrize("tokens,din,dout", [(1, 512, 1000), (16, 256, 1024), (196, 192, 768), (49, 2048, 64)])
def test_a_linear_layers_matmul_and_weight_transpose_kernels_sum_to_its_aten_ops(tokens, din, dout):
    geometry = GEOMETRIES[1]
    linear = torch.nn.Linear(din, dout, bias=False)
    mm = kernel_pool.kernel_loops("matmul", [(tokens, din), (din, dout), (tokens, dout)], geometry)
    tr = kernel_pool.kernel_loops("transpose", [(dout, din), (din, dout)], geometry)
    assert tr["w_matmul"] == din * dout and mm["w_matmul"] == 0  # the weight's copy is the transpose kernel's
    got = {c: mm[c] + tr[c] for c in LOOP_COLUMNS}
    assert got == _op_loops(linear, (tokens, din), geometry)
