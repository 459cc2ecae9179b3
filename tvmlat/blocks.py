"""The block zoo: families of network blocks as specs, their torch modules, and a seeded sampler.

Every family has a builder (spec -> ``(module, example_inputs)``) and a parameter space the
sampler draws from. Modules are built in eval mode with deterministic weights and inputs
derived from the block id, so a block is the same everywhere.
"""

from __future__ import annotations

import math
import random
from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .specs import POOL_KINDS, BlockSpec

CHANNELS = [8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 512]
SPATIAL = [7, 14, 28, 56, 112]
#: the plane sizes (px) image blocks are drawn from (`calibrate --planes`): ImageNet-style networks' at 224 px
#: ("default"), those of networks at 32, 128 or 256 px ("pow2": rows 4 or 16 KiB apart share an L1 set, which no
#: default plane does; benchmarks/pow2_twins.py), or both
PLANES = {"default": SPATIAL, "pow2": [8, 16, 32, 64, 128], "both": sorted(SPATIAL + [8, 16, 32, 64, 128])}
#: the families with an image plane (``hw``): the ones --planes draws for
IMAGE_FAMILIES = ("conv_bn_relu", "pool", "inverted_residual", "basic_block", "bottleneck", "squeeze_excitation")
TOKENS = [1, 16, 49, 64, 128, 196, 256]
DIMS = [64, 96, 128, 192, 256, 384, 512, 768]


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, kxk depthwise, 1x1 project, residual when shapes allow."""

    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(cin, hidden, 1))
        layers += [conv_bn(hidden, hidden, k, stride, groups=hidden), conv_bn(hidden, cout, 1, act=False)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.use_res else y


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, residual (1x1 conv-BN downsample when needed)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = conv_bn(cin, cout, 3, stride)
        self.c2 = conv_bn(cout, cout, 3, act=False)
        self.down = conv_bn(cin, cout, 1, stride, act=False) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x):
        return F.relu(self.c2(self.c1(x)) + self.down(x))


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce, 3x3, 1x1 expand (x4), residual."""

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * 4
        self.c1 = conv_bn(cin, width, 1)
        self.c2 = conv_bn(width, width, 3, stride)
        self.c3 = conv_bn(width, cout, 1, act=False)
        self.down = conv_bn(cin, cout, 1, stride, act=False) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x):
        return F.relu(self.c3(self.c2(self.c1(x))) + self.down(x))


class SqueezeExcitation(nn.Module):
    def __init__(self, c: int, reduction: int):
        super().__init__()
        mid = max(8, c // reduction)
        self.fc1 = nn.Conv2d(c, mid, 1)
        self.fc2 = nn.Conv2d(mid, c, 1)

    def forward(self, x):
        w = F.adaptive_avg_pool2d(x, 1)
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(w))))
        return x * w


class MLP(nn.Module):
    """Transformer MLP: LayerNorm, Linear(d, r*d), GELU, Linear(r*d, d), residual."""

    def __init__(self, dim: int, ratio: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * ratio)
        self.fc2 = nn.Linear(dim * ratio, dim)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class Attention(nn.Module):
    """Multi-head self-attention: fused QKV projection, scaled dot-product attention, output projection."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class MatMul(nn.Module):
    def forward(self, a, b):
        return torch.matmul(a, b)


class Pool(nn.Module):
    def __init__(self, kind: str, k: int, stride: int):
        super().__init__()
        if kind not in POOL_KINDS:  # forward() would run any other kind as an average pool
            raise ValueError(f"pool kind {kind!r}; give one of {', '.join(POOL_KINDS)}")
        self.kind, self.k, self.stride = kind, k, stride

    def forward(self, x):
        if self.kind == "global":
            return F.adaptive_avg_pool2d(x, 1)
        if self.kind == "max":
            return F.max_pool2d(x, self.k, self.stride, padding=self.k // 2)
        return F.avg_pool2d(x, self.k, self.stride, padding=self.k // 2)


# --------------------------------------------------------------------------- builders


def _image(spec: BlockSpec) -> tuple[int, ...]:
    return (spec.get("batch", 1), spec["cin"] if "cin" in dict(spec.params) else spec["c"], spec["hw"], spec["hw"])


def _build_conv(s: BlockSpec):
    groups = {"1": 1, "dw": s["cin"]}.get(str(s["groups"]), s["groups"])
    return conv_bn(s["cin"], s["cout"], s["k"], s["stride"], groups=int(groups)), [_image(s)]


def _build_pool(s: BlockSpec):
    return Pool(s["kind"], s["k"], s["stride"]), [_image(s)]


def _build_linear(s: BlockSpec):
    return nn.Linear(s["din"], s["dout"], bias=bool(s["bias"])), [(s.get("batch", 1), s["tokens"], s["din"])]


def _build_matmul(s: BlockSpec):
    return MatMul(), [(s["b"], s["m"], s["k"]), (s["b"], s["k"], s["n"])]


def _build_ir(s: BlockSpec):
    return InvertedResidual(s["cin"], s["cout"], s["expand"], s["k"], s["stride"]), [_image(s)]


def _build_basic(s: BlockSpec):
    return BasicBlock(s["cin"], s["cout"], s["stride"]), [_image(s)]


def _build_bottleneck(s: BlockSpec):
    return Bottleneck(s["cin"], s["width"], s["stride"]), [_image(s)]


def _build_se(s: BlockSpec):
    return SqueezeExcitation(s["c"], s["reduction"]), [_image(s)]


def _build_mlp(s: BlockSpec):
    return MLP(s["dim"], s["ratio"]), [(s.get("batch", 1), s["tokens"], s["dim"])]


def _build_attention(s: BlockSpec):
    return Attention(s["dim"], s["heads"]), [(s.get("batch", 1), s["tokens"], s["dim"])]


def _pick(rng: random.Random, xs):
    return xs[rng.randrange(len(xs))]


def _sample_conv(rng, spatial=SPATIAL):
    cin = _pick(rng, CHANNELS)
    mode = _pick(rng, ["1", "1", "g", "dw"])
    if mode == "dw":
        cout, groups = cin, "dw"
    elif mode == "g":
        g = _pick(rng, [2, 4, 8])
        cin = max(cin, 8 * g) // g * g
        cout = _pick(rng, [c for c in CHANNELS if c % g == 0 and c >= g])
        groups = g
    else:
        cout, groups = _pick(rng, CHANNELS), 1
    return dict(cin=cin, cout=cout, hw=_pick(rng, spatial), k=_pick(rng, [1, 3, 5, 7]),
                stride=_pick(rng, [1, 2]), groups=groups)


def _sample_pool(rng, spatial=SPATIAL):
    return dict(kind=_pick(rng, ["max", "avg", "global"]), c=_pick(rng, CHANNELS), hw=_pick(rng, spatial),
                k=_pick(rng, [2, 3]), stride=_pick(rng, [1, 2]))


def _sample_linear(rng):
    return dict(tokens=_pick(rng, TOKENS), din=_pick(rng, DIMS + [1024, 2048]), dout=_pick(rng, DIMS + [1000, 1024]),
                bias=_pick(rng, [True, False]))


def _sample_matmul(rng):
    return dict(b=_pick(rng, [1, 4, 8, 12]), m=_pick(rng, [16, 49, 64, 128, 196, 256]),
                k=_pick(rng, [32, 64, 128, 256, 512]), n=_pick(rng, [16, 49, 64, 128, 196, 256]))


def _sample_ir(rng, spatial=SPATIAL):
    return dict(cin=_pick(rng, CHANNELS[:10]), cout=_pick(rng, CHANNELS[:10]), hw=_pick(rng, spatial),
                expand=_pick(rng, [1, 3, 6]), k=_pick(rng, [3, 5]), stride=_pick(rng, [1, 2]))


def _sample_basic(rng, spatial=SPATIAL):
    c = _pick(rng, [16, 32, 64, 128, 256])
    return dict(cin=c, cout=_pick(rng, [c, 2 * c]), hw=_pick(rng, spatial), stride=_pick(rng, [1, 2]))


def _sample_bottleneck(rng, spatial=SPATIAL):
    w = _pick(rng, [16, 32, 64, 128])
    return dict(cin=_pick(rng, [w * 2, w * 4]), width=w, hw=_pick(rng, spatial), stride=_pick(rng, [1, 2]))


def _sample_se(rng, spatial=SPATIAL):
    return dict(c=_pick(rng, CHANNELS), hw=_pick(rng, spatial), reduction=_pick(rng, [4, 8, 16]))


def _sample_mlp(rng):
    return dict(tokens=_pick(rng, TOKENS), dim=_pick(rng, DIMS), ratio=_pick(rng, [2, 4]))


def _sample_attention(rng):
    dim = _pick(rng, DIMS)
    heads = _pick(rng, [h for h in (1, 2, 4, 8, 12) if dim % h == 0 and dim // h >= 16])
    return dict(tokens=_pick(rng, TOKENS[1:]), dim=dim, heads=heads)


Builder = Callable[[BlockSpec], tuple[nn.Module, list[tuple[int, ...]]]]

FAMILIES: dict[str, tuple[Builder, Callable[[random.Random], dict]]] = {
    "conv_bn_relu": (_build_conv, _sample_conv),
    "pool": (_build_pool, _sample_pool),
    "linear": (_build_linear, _sample_linear),
    "matmul": (_build_matmul, _sample_matmul),
    "inverted_residual": (_build_ir, _sample_ir),
    "basic_block": (_build_basic, _sample_basic),
    "bottleneck": (_build_bottleneck, _sample_bottleneck),
    "squeeze_excitation": (_build_se, _sample_se),
    "mlp": (_build_mlp, _sample_mlp),
    "attention": (_build_attention, _sample_attention),
}


def _seed_of(spec: BlockSpec) -> int:
    return int(spec.block_id, 16) % (2**31)


def build_block(spec: BlockSpec, device: str | torch.device = "cpu") -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Return ``(module in eval mode, example inputs)`` for a spec, deterministic in its block_id."""
    if spec.family not in FAMILIES:
        raise KeyError(f"unknown block family {spec.family!r}; known: {', '.join(FAMILIES)}")
    builder = FAMILIES[spec.family][0]
    gen = torch.Generator().manual_seed(_seed_of(spec))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed_of(spec))
        with torch.device(device):
            module, shapes = builder(spec)
        module.eval()
        if str(device) != "meta":
            for m in module.modules():
                if isinstance(m, nn.BatchNorm2d):  # non-trivial BN statistics, so the fold is checked too
                    m.running_mean.uniform_(-0.5, 0.5, generator=gen)
                    m.running_var.uniform_(0.5, 1.5, generator=gen)
    if str(device) == "meta":
        inputs = tuple(torch.empty(s, device="meta") for s in shapes)
    else:
        inputs = tuple(torch.randn(s, generator=gen) for s in shapes)
    return module, inputs


def sample_specs(n: int, seed: int = 0, families: Iterable[str] | None = None,
                 min_flops: float = 2e4, max_flops: float = 6e7, planes: str = "default") -> list[BlockSpec]:
    """Draw ``n`` distinct specs, families in turn, rejecting blocks outside [min_flops, max_flops].

    The FLOPs window bounds calibration time (untuned CPU code runs at ~1-10 GFLOP/s) while
    spanning more than three decades of latency. Same seed (and ``planes``) -> same specs in the same order.
    ``planes``: the plane sizes of the image families, a key of ``PLANES``.
    """
    from .features import spec_features  # local: features imports blocks

    fams = list(families) if families else list(FAMILIES)
    unknown = [f for f in fams if f not in FAMILIES]
    if unknown:
        raise KeyError(f"unknown block families {unknown}; known: {', '.join(FAMILIES)}")
    if planes not in PLANES:
        raise KeyError(f"unknown planes {planes!r}; known: {', '.join(PLANES)}")
    spatial = PLANES[planes]
    rng = random.Random(seed)
    out: list[BlockSpec] = []
    seen: set[str] = set()
    order: list[str] = []
    tries = 0
    while len(out) < n:
        if not order:
            order = fams[:]
            rng.shuffle(order)
        fam = order.pop()
        for _ in range(200):
            tries += 1
            draw = FAMILIES[fam][1]
            spec = BlockSpec.make(fam, **(draw(rng, spatial) if fam in IMAGE_FAMILIES else draw(rng)))
            if spec.block_id in seen:
                continue
            fl = spec_features(spec)["flops"]  # in closed form, as campaign rows are
            if min_flops <= fl <= max_flops:
                seen.add(spec.block_id)
                out.append(spec)
                break
        if tries > 200 * (n + 10) * 4:
            raise RuntimeError("sampler could not find enough distinct blocks in the FLOPs window")
    return out


def log10_span(values: Iterable[float]) -> float:
    v = [x for x in values if x > 0]
    return math.log10(max(v) / min(v)) if v else 0.0
