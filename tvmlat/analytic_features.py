"""Closed-form block features: the numbers ``features.block_features`` counts, without torch.

``features.block_features`` runs a block's torch module on the meta device and counts every aten
op it dispatches. For the families of ``blocks.py`` the op sequence is fixed by a handful of
integers, so every feature is a closed-form expression of the spec's parameters. This module
evaluates those expressions with plain Python integers (one spec) or numpy int64 arrays (many
specs of one family at once), and never imports torch or tvm -- an architecture-search oracle
can score millions of specs per second with it.

The formulas mirror, op by op, what the meta-device counter sees (same conventions as
``features.py``: 4-byte float32 tensors, views not counted, BN running stats read as inputs):

* ``Conv2d(bias=False)`` -> ``convolution``; ``BatchNorm2d`` (eval) -> ``native_batch_norm``;
  ``ReLU`` / ``GELU`` / ``sigmoid`` / residual ``add`` / SE ``mul`` -> elementwise ops.
* ``Linear`` -> ``addmm`` (with bias) or ``mm`` (without) on the folded ``(batch*tokens, din)`` input.
* ``torch.matmul`` on 3-d tensors -> ``bmm``; pooling -> ``max_pool2d_with_indices`` /
  ``avg_pool2d`` / ``mean``; ``LayerNorm`` -> ``native_layer_norm``.
* ``F.scaled_dot_product_attention`` decomposes on the meta device into the math path:
  ``mul.Scalar`` on Q and on K^T (each by ``sqrt(1/sqrt(E))``), ``bmm``, ``_safe_softmax``, ``bmm``;
  ``torch.matmul``'s reshape copies (``clone``) Q and K^T when batch, heads and tokens are all > 1
  and V when batch and heads are > 1 (their strides come from the fused QKV output and do not fold
  into one batch dimension); the head merge ``y.transpose(1, 2).reshape(b, n, d)`` copies when
  heads and tokens are > 1.

This decomposition is that of the torch the counter runs with (checked against torch 2.13);
``tests/unit/test_analytic_features.py`` checks every feature equal to ``block_features``.
All ten families of ``blocks.FAMILIES`` are reproduced exactly; an unknown family raises
``KeyError`` like ``blocks.build_block``, and a spec the torch module itself could not run
(heads not dividing dim, an empty output, a count below 1, a pool kind other than max / avg / global) raises
``ValueError`` instead of returning numbers.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .loop_features import (DEFAULT_GEOMETRY, TRANSC_TENTHS, CacheGeometry, FeatureArrays, conv_loops,  # numpy only
                            block_loops, ew_loops, matmul_loops, pad_loops, pool_loops, reduce_loops, stamp_geometry,
                            transc_elems)
from .features import FEATURE_COLUMNS, REDUCTION_SHORT  # torch-free since the counter moved to op_counter
from .specs import POOL_KINDS, BlockSpec  # stdlib only: no torch

#: bytes per element: every tensor of the blocks is float32
_F32 = 4

#: the families with closed forms (all of ``blocks.FAMILIES``)
FAMILIES = (
    "conv_bn_relu", "pool", "linear", "matmul", "inverted_residual", "basic_block", "bottleneck",
    "squeeze_excitation", "mlp", "attention",
)


# --------------------------------------------------------------------------- scalar/array helpers
# Every formula below works on Python ints (one spec: exact, unbounded) and on numpy int64 arrays
# (many specs of one family). Conditions are 0/1 integers so that they can multiply counts.


def _is_arr(*xs: Any) -> bool:
    return any(isinstance(x, np.ndarray) for x in xs)


def _b(cond: Any) -> Any:
    """A condition as 0/1: an int for scalars, an int64 array for arrays."""
    return cond.astype(np.int64) if isinstance(cond, np.ndarray) else int(bool(cond))


def _max(a: Any, b: Any) -> Any:
    return np.maximum(a, b) if _is_arr(a, b) else max(a, b)


def _conv_out(hw: Any, k: Any, stride: Any) -> Any:
    """Output side of a ``padding=k//2`` conv / pool (floor mode, dilation 1)."""
    return (hw + 2 * (k // 2) - k) // stride + 1


class _Acc:
    """Feature totals, accumulated op by op like ``features.OpCounter`` does.

    ``m`` (a 0/1 mask, scalar or array) switches an op on or off per spec: a residual add that
    only some specs of a batch have, a copy only some strides need.
    """

    def __init__(self, geometry: CacheGeometry):
        self.f: dict[str, Any] = dict.fromkeys(FEATURE_COLUMNS, 0)
        self.geometry = geometry  # the L1 the loop features are counted for

    def add(self, m: Any = 1, **kv: Any) -> None:
        f = self.f
        for k, v in kv.items():
            f[k] = f[k] + v * m

    def _op(self, m: Any, flops: Any, acts: Any, nbytes_elems: Any) -> None:
        self.add(m, flops=flops, acts=acts, bytes=_F32 * nbytes_elems, n_ops=1)

    def _reduction(self, m: Any, flops: Any, length: Any) -> None:
        short = _b(length <= REDUCTION_SHORT)
        self.add(m, flops_redshort=flops * short, flops_redlong=flops * (1 - short))

    # ---- ops

    def conv(self, n, cin, cout, hw, k, stride, groups, bias, m=1):
        """``convolution`` of an (n, cin, hw, hw) input; returns (output side, output elements)."""
        ho = _conv_out(hw, k, stride)
        out = n * cout * ho * ho
        cpg = cin // groups
        kk = k * k
        macs = out * cpg * kk
        w = cout * cpg * kk
        dw = _b(cpg == 1) * _b(groups > 1)
        k1 = _b(kk == 1)
        flops = 2 * macs
        self.add(m, macs=macs, acts_conv=out, weight_elems=w, flops_dwconv=flops * dw,
                 flops_conv1x1=flops * (1 - dw) * k1, flops_conv=flops * (1 - dw) * (1 - k1))
        self._reduction(m, flops, cpg * kk)
        self.add(m, **conv_loops(out, ho, cpg, k, k, stride, hw, hw, dw, geometry=self.geometry,
                                 padded=np.greater(k // 2, 0)))
        self.pad(n * cin, hw, k // 2, m)
        self._op(m, flops, out, n * cin * hw * hw + w + bias * cout + out)
        return ho, out

    def pad(self, planes, hw, p, m=1, pool=False):
        """The padded copy TVM makes of ``planes`` hw x hw planes (``p`` on every side, none for 0) of a
        conv's or a pool's (``pool``) input."""
        self.add(m, **pad_loops(planes, hw, hw, 2 * p, 2 * p, geometry=self.geometry, pool=pool))

    def batch_norm(self, elems, c, width, m=1):
        """``native_batch_norm`` (eval) of square planes ``width`` wide: reads x, weight, bias, running mean
        and var; four nests."""
        self.add(m, elems_norm=elems, **ew_loops(elems, width, 4, height=width, geometry=self.geometry))
        self._op(m, 2 * elems, elems, 2 * elems + 4 * c)

    def elementwise(self, out, in_elems, width, height, m=1, op=""):
        """Any other op: 1 FLOP per output element; ``in_elems``: elements of all its tensor inputs;
        ``width`` / ``height``: the output's innermost / next extent; ``op``: its aten name where it is transcendental
        (``gelu``, ``sigmoid``: ``ew_transc``)."""
        self.add(m, elems_elementwise=out, **ew_loops(out, width, height=height, geometry=self.geometry))
        if op:
            self.add(m, ew_transc=transc_elems(out, TRANSC_TENTHS[op]))
        self._op(m, out, out, in_elems + out)

    def copy(self, elems, width, height, m=1):
        self.add(m, elems_copy=elems, **ew_loops(elems, width, height=height, geometry=self.geometry))
        self._op(m, 0, elems, 2 * elems)

    def matmul(self, rows, kdim, cols, bias, m=1):
        """``addmm`` (bias) / ``mm``: (rows, kdim) @ (kdim, cols); the right operand is the weight."""
        out = rows * cols
        macs = out * kdim
        w = kdim * cols
        self.add(m, macs=macs, weight_elems=w, flops_matmul=2 * macs)
        self._reduction(m, 2 * macs, kdim)
        self.add(m, **matmul_loops(out, kdim, cols, w, weight=True, geometry=self.geometry))
        self._op(m, 2 * macs, out, bias * cols + rows * kdim + w + out)

    def bmm(self, batch, rows, kdim, cols, m=1):
        out = batch * rows * cols
        macs = out * kdim
        self.add(m, macs=macs, flops_bmm=2 * macs)
        self._reduction(m, 2 * macs, kdim)
        self.add(m, **matmul_loops(out, kdim, cols, batch * kdim * cols, weight=False, geometry=self.geometry))
        self._op(m, 2 * macs, out, batch * rows * kdim + batch * kdim * cols + out)

    def norm5(self, elems, last, extra_in, m=1, exp=False):
        """Layer norm / softmax (``exp``: an exp per element, ``ew_transc``): 5 FLOPs per element, reducing over the
        last dimension."""
        self.add(m, elems_norm=elems)
        if exp:
            self.add(m, ew_transc=transc_elems(elems, TRANSC_TENTHS["softmax"]))
        self._reduction(m, 5 * elems, last)
        self._op(m, 5 * elems, elems, elems + extra_in + elems)

    def pool(self, in_elems, out, window, flops, m=1, row=None, stride=None):
        """``row`` (output width) and ``stride`` given: a windowed (max / avg) pooling, with loop features."""
        self.add(m, elems_pool=in_elems)
        self._reduction(m, flops, window)
        if row is not None:
            self.add(m, **pool_loops(out, row, window, stride, geometry=self.geometry))
        else:  # a global mean: one chain of adds per output
            self.add(m, **reduce_loops(in_elems, window))
        self._op(m, flops, out, in_elems + out)

    def conv_bn(self, n, cin, cout, hw, k, stride=1, groups=1, act=True, m=1):
        """``blocks.conv_bn``: conv (no bias) + BN (+ ReLU); returns (output side, output elements)."""
        ho, out = self.conv(n, cin, cout, hw, k, stride, groups, 0, m)
        self.batch_norm(out, cout, ho, m)
        if act:
            self.elementwise(out, out, ho, ho, m)
        return ho, out


def _conv_bn_params(cin, cout, k, groups=1):
    return cout * (cin // groups) * k * k + 2 * cout


# --------------------------------------------------------------------------- families
# Each takes an accumulator (``_Acc(geometry)``) and the spec's parameters (ints, or int64 arrays of
# equal length) and returns the totals.


def _f_conv_bn_relu(a, batch, cin, cout, hw, k, stride, groups):
    _, out = a.conv_bn(batch, cin, cout, hw, k, stride, groups)
    a.f.update(inp=batch * cin * hw * hw, params=_conv_bn_params(cin, cout, k, groups), out=out)
    return a.f


def _f_pool(a, batch, c, hw, k, stride, kind):
    n_in = batch * c * hw * hw
    is_global = _b(kind == "global")
    # global: mean over H, W (window = in / out = hw * hw, 1 FLOP per input element)
    a.pool(n_in, batch * c, hw * hw, n_in, is_global)
    # max / avg (``_check_values`` refuses other kinds): k x k window per output element
    ho = _conv_out(hw, k, stride)
    out_w = batch * c * ho * ho
    a.pool(n_in, out_w, k * k, out_w * k * k, 1 - is_global, row=ho, stride=stride)
    a.pad(batch * c, hw, k // 2, 1 - is_global, pool=True)
    is_avg = (1 - is_global) * (1 - _b(kind == "max"))
    # an average pool divides its window sums in a nest of their own
    a.add(is_avg, **ew_loops(out_w, ho, height=ho, geometry=a.geometry))
    out = is_global * batch * c + (1 - is_global) * out_w
    a.f.update(inp=n_in, params=0, out=out)
    return a.f


def _f_linear(a, batch, tokens, din, dout, bias):
    rows = batch * tokens
    a.matmul(rows, din, dout, bias)
    a.f.update(inp=rows * din, params=din * dout + bias * dout, out=rows * dout)
    return a.f


def _f_matmul(a, b, m, k, n):
    a.bmm(b, m, k, n)
    a.f.update(inp=b * m * k + b * k * n, params=0, out=b * m * n)
    return a.f


def _f_inverted_residual(a, batch, cin, cout, hw, expand, k, stride):
    hidden = cin * expand
    has_exp = _b(expand != 1)
    # 1x1 expand (only when expand != 1)
    a.conv_bn(batch, cin, hidden, hw, 1, m=has_exp)
    ho, _ = a.conv_bn(batch, hidden, hidden, hw, k, stride, groups=hidden)
    _, out = a.conv_bn(batch, hidden, cout, ho, 1, act=False)
    use_res = _b(stride == 1) * _b(cin == cout)
    a.elementwise(out, 2 * out, ho, ho, use_res)
    params = (has_exp * _conv_bn_params(cin, hidden, 1) + _conv_bn_params(hidden, hidden, k, hidden)
              + _conv_bn_params(hidden, cout, 1))
    a.f.update(inp=batch * cin * hw * hw, params=params, out=out)
    return a.f


def _residual_tail(a, batch, cin, cout, hw, stride, out, ho):
    """The end of a ResNet block (output ``ho`` wide): the 1x1 downsample conv-BN when the shape changes,
    the residual add and the ReLU. Returns 1 where there is a downsample branch (0 elsewhere)."""
    down = 1 - _b(stride == 1) * _b(cin == cout)
    a.conv_bn(batch, cin, cout, hw, 1, stride, act=False, m=down)
    a.elementwise(out, 2 * out, ho, ho)  # residual add
    a.elementwise(out, out, ho, ho)  # ReLU
    return down


def _f_basic_block(a, batch, cin, cout, hw, stride):
    ho, _ = a.conv_bn(batch, cin, cout, hw, 3, stride)
    _, out = a.conv_bn(batch, cout, cout, ho, 3, act=False)
    down = _residual_tail(a, batch, cin, cout, hw, stride, out, ho)
    params = _conv_bn_params(cin, cout, 3) + _conv_bn_params(cout, cout, 3) + down * _conv_bn_params(cin, cout, 1)
    a.f.update(inp=batch * cin * hw * hw, params=params, out=out)
    return a.f


def _f_bottleneck(a, batch, cin, width, hw, stride):
    cout = 4 * width
    a.conv_bn(batch, cin, width, hw, 1)
    ho, _ = a.conv_bn(batch, width, width, hw, 3, stride)
    _, out = a.conv_bn(batch, width, cout, ho, 1, act=False)
    down = _residual_tail(a, batch, cin, cout, hw, stride, out, ho)
    params = (_conv_bn_params(cin, width, 1) + _conv_bn_params(width, width, 3) + _conv_bn_params(width, cout, 1)
              + down * _conv_bn_params(cin, cout, 1))
    a.f.update(inp=batch * cin * hw * hw, params=params, out=out)
    return a.f


def _f_squeeze_excitation(a, batch, c, hw, reduction):
    mid = _max(8, c // reduction)
    n_in = batch * c * hw * hw
    a.pool(n_in, batch * c, hw * hw, n_in)  # adaptive_avg_pool2d(x, 1) -> mean over H, W
    a.conv(batch, c, mid, 1, 1, 1, 1, 1)  # fc1 (1x1 conv with bias)
    a.elementwise(batch * mid, batch * mid, 1, 1)  # ReLU
    a.conv(batch, mid, c, 1, 1, 1, 1, 1)  # fc2
    a.elementwise(batch * c, batch * c, 1, 1, op="sigmoid")
    a.elementwise(n_in, n_in + batch * c, hw, hw)  # x * w
    a.f.update(inp=n_in, params=2 * c * mid + mid + c, out=n_in)
    return a.f


def _f_mlp(a, batch, tokens, dim, ratio):
    rows = batch * tokens
    hid = dim * ratio
    x = rows * dim
    a.norm5(x, dim, 2 * dim)  # native_layer_norm: x, weight, bias
    a.matmul(rows, dim, hid, 1)
    a.elementwise(rows * hid, rows * hid, hid, tokens, op="gelu")
    a.matmul(rows, hid, dim, 1)
    a.elementwise(x, 2 * x, dim, tokens)  # residual add
    a.f.update(inp=x, params=2 * dim + 2 * dim * hid + hid + dim, out=x)
    return a.f


def _f_attention(a, batch, tokens, dim, heads):
    rows = batch * tokens
    x = rows * dim
    dh = dim // heads
    bh = batch * heads
    qkv = bh * tokens * dh  # elements of each of Q, K, V
    scores = bh * tokens * tokens
    a.matmul(rows, dim, 3 * dim, 1)  # fused QKV projection
    a.elementwise(qkv, qkv, dh, tokens)  # Q * sqrt(scale)
    a.elementwise(qkv, qkv, tokens, dh)  # K^T * sqrt(scale)
    many_b, many_h, many_n = _b(batch > 1), _b(heads > 1), _b(tokens > 1)
    folds = many_b * many_h * many_n
    a.copy(qkv, dh, tokens, folds)  # Q and K^T do not fold into (b*h, ., .): clone each
    a.copy(qkv, tokens, dh, folds)
    a.bmm(bh, tokens, dh, tokens)  # Q K^T
    a.norm5(scores, tokens, 0, exp=True)  # _safe_softmax
    a.copy(qkv, dh, tokens, many_b * many_h)  # V's strides do not fold: clone
    a.bmm(bh, tokens, tokens, dh)  # A V
    a.copy(qkv, dh, heads, many_h * many_n)  # y.transpose(1, 2).reshape(b, n, d): (b, n, h, dh)
    a.matmul(rows, dim, dim, 1)  # output projection
    a.f.update(inp=x, params=4 * dim * dim + 4 * dim, out=x)
    return a.f


# --------------------------------------------------------------------------- parameters


def _groups_value(g: Any, cin: Any) -> Any:
    """``blocks._build_conv``: ``{"1": 1, "dw": cin}.get(str(g), g)`` then ``int``."""
    if g == "dw" or str(g) == "dw":
        return cin
    return int(g)


def _int(v: Any, name: str) -> int:
    if isinstance(v, (int, np.integer)):  # bool too: an int subclass, and torch takes True as 1
        return int(v)
    raise ValueError(f"parameter {name}={v!r}: the torch layers need an int")


#: family -> (function, [(parameter, default or _REQUIRED, converter)])
_REQUIRED = object()


def _as_int(name):
    return lambda v: _int(v, name)


def _as_bias(v: Any) -> int:
    if isinstance(v, (bool, np.bool_)) or (isinstance(v, (int, np.integer)) and v in (0, 1)):
        return int(v)
    raise ValueError(f"parameter bias={v!r}: give true or false")


def _check_values(family: str, args: Mapping[str, Any]) -> None:
    """Refuse parameter values no block of ``family`` has (the torch layers would raise, or build another block): a
    count below 1, a pool kind other than ``POOL_KINDS``. ``args`` holds ints or int64 arrays (``kind``: strings), as
    the family functions take them; ``groups`` is checked with the shapes (``_check``)."""
    for name, v in args.items():
        if name in ("kind", "bias", "groups") or (isinstance(v, int) and v >= 1):  # one spec's ints: no numpy
            continue
        v = np.asarray(v).reshape(-1)
        bad = v < 1
        if bad.any():
            raise ValueError(f"{family}: {name} must be 1 or more, got {int(v[int(np.argmax(bad))])}")
    if family == "pool":
        kinds = np.asarray(args["kind"]).reshape(-1)
        bad = ~np.isin(kinds, POOL_KINDS)
        if bad.any():
            raise ValueError(f"pool: kind {str(kinds[int(np.argmax(bad))])!r}; give one of {', '.join(POOL_KINDS)}")


_SPECS: dict[str, tuple[Callable[..., dict], list[tuple[str, Any, Callable[[Any], Any]]]]] = {
    "conv_bn_relu": (_f_conv_bn_relu, [("batch", 1, _as_int("batch")), ("cin", _REQUIRED, _as_int("cin")),
                                       ("cout", _REQUIRED, _as_int("cout")), ("hw", _REQUIRED, _as_int("hw")),
                                       ("k", _REQUIRED, _as_int("k")), ("stride", _REQUIRED, _as_int("stride")),
                                       ("groups", _REQUIRED, None)]),
    "pool": (_f_pool, [("batch", 1, _as_int("batch")), ("c", _REQUIRED, _as_int("c")), ("hw", _REQUIRED, _as_int("hw")),
                       ("k", _REQUIRED, _as_int("k")), ("stride", _REQUIRED, _as_int("stride")),
                       ("kind", _REQUIRED, str)]),
    "linear": (_f_linear, [("batch", 1, _as_int("batch")), ("tokens", _REQUIRED, _as_int("tokens")),
                           ("din", _REQUIRED, _as_int("din")), ("dout", _REQUIRED, _as_int("dout")),
                           ("bias", _REQUIRED, _as_bias)]),
    "matmul": (_f_matmul, [("b", _REQUIRED, _as_int("b")), ("m", _REQUIRED, _as_int("m")),
                           ("k", _REQUIRED, _as_int("k")), ("n", _REQUIRED, _as_int("n"))]),
    "inverted_residual": (_f_inverted_residual, [
        ("batch", 1, _as_int("batch")), ("cin", _REQUIRED, _as_int("cin")), ("cout", _REQUIRED, _as_int("cout")),
        ("hw", _REQUIRED, _as_int("hw")), ("expand", _REQUIRED, _as_int("expand")), ("k", _REQUIRED, _as_int("k")),
        ("stride", _REQUIRED, _as_int("stride"))]),
    "basic_block": (_f_basic_block, [("batch", 1, _as_int("batch")), ("cin", _REQUIRED, _as_int("cin")),
                                     ("cout", _REQUIRED, _as_int("cout")), ("hw", _REQUIRED, _as_int("hw")),
                                     ("stride", _REQUIRED, _as_int("stride"))]),
    "bottleneck": (_f_bottleneck, [("batch", 1, _as_int("batch")), ("cin", _REQUIRED, _as_int("cin")),
                                   ("width", _REQUIRED, _as_int("width")), ("hw", _REQUIRED, _as_int("hw")),
                                   ("stride", _REQUIRED, _as_int("stride"))]),
    "squeeze_excitation": (_f_squeeze_excitation, [("batch", 1, _as_int("batch")), ("c", _REQUIRED, _as_int("c")),
                                                   ("hw", _REQUIRED, _as_int("hw")),
                                                   ("reduction", _REQUIRED, _as_int("reduction"))]),
    "mlp": (_f_mlp, [("batch", 1, _as_int("batch")), ("tokens", _REQUIRED, _as_int("tokens")),
                     ("dim", _REQUIRED, _as_int("dim")), ("ratio", _REQUIRED, _as_int("ratio"))]),
    "attention": (_f_attention, [("batch", 1, _as_int("batch")), ("tokens", _REQUIRED, _as_int("tokens")),
                                 ("dim", _REQUIRED, _as_int("dim")), ("heads", _REQUIRED, _as_int("heads"))]),
}
assert tuple(_SPECS) == FAMILIES


def _family(family: str):
    try:
        return _SPECS[family]
    except KeyError:
        raise KeyError(f"unknown block family {family!r}; known: {', '.join(FAMILIES)}") from None


@lru_cache(maxsize=None)
def family_parameters(family: str) -> dict[str, bool]:
    """A family's spec parameters, in order, each with whether a spec must give it (else it has a default). Cached:
    a spec file asks once a line; the dict is shared, so don't change it."""
    return {name: default is _REQUIRED for name, default, _ in _family(family)[1]}


def _spec_args(spec: BlockSpec) -> tuple[Callable[..., dict], dict[str, Any]]:
    fn, fields = _family(spec.family)
    params = dict(spec.params)
    args: dict[str, Any] = {}
    for name, default, conv in fields:
        if name in params:
            v = params[name]
        elif default is _REQUIRED:
            raise KeyError(name)  # what BlockSpec.__getitem__ raises in the torch builder
        else:
            v = default
        args[name] = conv(v) if conv is not None else v
    if spec.family == "conv_bn_relu":
        args["groups"] = _groups_value(args["groups"], args["cin"])
    return fn, args


def _finished(f: dict[str, Any], geometry: CacheGeometry) -> dict[str, Any]:
    """A family's totals with the block-level columns that need all of them (``block_loops``)."""
    f.update(block_loops(f["acts"], f["inp"], f["out"], geometry=geometry))
    return f


def _check(family: str, args: Mapping[str, Any], f: Mapping[str, Any]) -> None:
    """Reject specs the torch module cannot run (it would raise, not count)."""
    bad = None
    if family == "attention":
        bad = np.asarray(args["dim"] % args["heads"] != 0) | np.asarray(args["heads"] < 1)
        what = "dim not divisible by heads"
    elif family == "conv_bn_relu":
        bad = np.asarray(args["groups"] < 1) | np.asarray(args["cin"] % args["groups"] != 0) \
            | np.asarray(args["cout"] % args["groups"] != 0)
        what = "cin and cout must be divisible by groups"
    if bad is not None and bad.any():
        raise ValueError(f"{family}: {what}")
    if np.any(np.asarray(f["out"]) <= 0) or np.any(np.asarray(f["acts"]) < 0):
        raise ValueError(f"{family}: spec gives an empty or negative output shape")


# --------------------------------------------------------------------------- public API


def analytic_features(spec: BlockSpec, *, geometry: CacheGeometry = DEFAULT_GEOMETRY) -> dict[str, int]:
    """Same keys, order and values as ``features.block_features(spec, geometry=geometry)``, in closed form."""
    fn, args = _spec_args(spec)
    _check_values(spec.family, args)
    f = _finished(fn(_Acc(geometry), **args), geometry)
    _check(spec.family, args, f)
    return {k: int(f[k]) for k in FEATURE_COLUMNS}


def analytic_arrays(family: str, *, geometry: CacheGeometry = DEFAULT_GEOMETRY, **params: Any) -> dict[str, np.ndarray]:
    """Vectorised features of many specs of one family: ``params`` are equal-length arrays.

    Parameters take the spec names of ``blocks.py`` (``batch`` defaults to 1); ``groups`` of
    ``conv_bn_relu`` may hold ``"dw"`` strings, ``kind`` of ``pool`` is a string array. Loop
    features are counted for the L1 ``geometry`` (a predictor's ``.geometry``). Returns one int64
    array per feature column (a ``FeatureArrays`` dict that records ``geometry``: a loaded predictor
    of another L1 refuses it). This is the fast path for a search oracle: no spec objects.
    """
    fn, fields = _family(family)
    n = None
    args: dict[str, Any] = {}
    for name, default, _ in fields:
        if name in params:
            v = np.asarray(params[name])
        elif default is _REQUIRED:
            raise KeyError(name)
        else:
            v = None
        if v is not None:
            if v.ndim != 1:
                v = v.reshape(-1)
            if n is None:
                n = len(v)
            elif len(v) != n:
                raise ValueError(f"parameter {name!r} has {len(v)} values, expected {n}")
        args[name] = v
    unknown = set(params) - {name for name, _, _ in fields}
    if unknown:
        raise KeyError(f"{family}: unknown parameters {sorted(unknown)}")
    n = 0 if n is None else n
    for name, default, _ in fields:
        v = args[name]
        if v is None:
            args[name] = np.full(n, default, dtype=np.int64)
        elif name == "kind":
            args[name] = v.astype(str)
        elif name == "groups":
            if v.dtype.kind in "iub":
                args[name] = v.astype(np.int64)
            else:
                cin = args["cin"]
                args[name] = np.array([_groups_value(g, int(c)) for g, c in zip(v.tolist(), np.asarray(cin).tolist())],
                                      dtype=np.int64)
        elif name == "bias":
            if not (v.dtype.kind == "b" or (v.dtype.kind in "iu" and np.isin(v, (0, 1)).all())):
                raise ValueError("parameter 'bias' must be booleans (or 0 / 1)")
            args[name] = v.astype(bool).astype(np.int64)
        else:
            if v.dtype.kind == "f":
                raise ValueError(f"parameter {name!r} must be integers, got floats")
            args[name] = v.astype(np.int64)
    if family == "conv_bn_relu":
        args["cin"] = np.asarray(args["cin"], dtype=np.int64)
    if n == 0:
        return stamp_geometry(FeatureArrays({k: np.zeros(0, dtype=np.int64) for k in FEATURE_COLUMNS}), geometry)
    _check_values(family, args)
    f = _finished(fn(_Acc(geometry), **args), geometry)
    _check(family, args, f)
    return stamp_geometry(FeatureArrays({k: np.broadcast_to(np.asarray(f[k], dtype=np.int64), (n,)).copy()
                                         for k in FEATURE_COLUMNS}), geometry)


def _spec_json_and_id(spec: BlockSpec) -> tuple[str, str]:
    j = spec.to_json()  # BlockSpec.block_id hashes exactly this string
    return j, hashlib.sha1(j.encode()).hexdigest()[:12]


def analytic_frame(specs: Iterable[BlockSpec], *, geometry: CacheGeometry = DEFAULT_GEOMETRY):
    """Same as ``features.features_frame(specs, geometry=geometry)`` (block_id, family, spec JSON, feature columns).

    Features are computed per family on numpy arrays; the block id / JSON (sha1 of the canonical
    JSON, as ``BlockSpec.block_id``) is the per-spec Python cost that remains.
    """
    import pandas as pd

    specs = list(specs)
    n = len(specs)
    ids: list[str] = [""] * n
    jsons: list[str] = [""] * n
    fams: list[str] = [""] * n
    by_family: dict[str, list[int]] = {}
    for i, s in enumerate(specs):
        jsons[i], ids[i] = _spec_json_and_id(s)
        fams[i] = s.family
        by_family.setdefault(s.family, []).append(i)
    cols = {k: np.zeros(n, dtype=np.int64) for k in FEATURE_COLUMNS}
    for fam, idx in by_family.items():
        _, fields = _family(fam)
        values: dict[str, list[Any]] = {name: [] for name, _, _ in fields}
        for i in idx:
            d = dict(specs[i].params)
            for name, default, conv in fields:
                v = d.get(name, default)
                if v is _REQUIRED:
                    raise KeyError(name)
                values[name].append(conv(v) if conv is not None else v)
        if fam == "conv_bn_relu":
            values["groups"] = [_groups_value(g, c) for g, c in zip(values["groups"], values["cin"])]
        arrs = analytic_arrays(fam, geometry=geometry, **{k: np.asarray(v) for k, v in values.items()})
        ix = np.asarray(idx, dtype=np.int64)
        for k in FEATURE_COLUMNS:
            cols[k][ix] = arrs[k]
    df = pd.DataFrame({"block_id": ids, "family": fams, "spec": jsons, **cols},
                      columns=["block_id", "family", "spec", *FEATURE_COLUMNS])
    return stamp_geometry(df, geometry)


def analytic_features_many(specs: Sequence[BlockSpec], *,
                           geometry: CacheGeometry = DEFAULT_GEOMETRY) -> list[dict[str, int]]:
    """``analytic_features`` for each spec (a convenience; ``analytic_frame`` is the fast path)."""
    return [analytic_features(s, geometry=geometry) for s in specs]
