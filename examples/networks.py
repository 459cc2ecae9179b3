"""Reference networks defined here (no downloads, random weights): MODEL_REFs for `tvmlat analyze`,
`measure` and `predict`, e.g. `tvmlat analyze examples/networks.py:mobilenet_v2`.

MobileNetV2 (also at half width) and the ResNets follow torchvision's definitions layer for layer
(same parameter counts), so their totals can be checked against published figures. ``all_networks``
is the ten `tvmlat network-correction` was run with (README, "Whole networks").
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _image(size: int = 224) -> tuple[torch.Tensor]:
    return (torch.randn(1, 3, size, size),)


# ----------------------------------------------------------------------------- MobileNetV2


class ConvNormAct(nn.Sequential):
    def __init__(self, cin, cout, k=3, stride=1, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res = stride == 1 and cin == cout
        layers = [] if expand == 1 else [ConvNormAct(cin, hidden, 1)]
        layers += [ConvNormAct(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, cout, 1, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


def _divisible(v: float, d: int = 8) -> int:
    """torchvision's _make_divisible: ``v`` rounded to a multiple of ``d``, never below 90 % of ``v``."""
    out = max(d, int(v + d / 2) // d * d)
    return out + d if out < 0.9 * v else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=1000, width=1.0):
        super().__init__()
        cfg = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
        cin = _divisible(32 * width)
        feats = [ConvNormAct(3, cin, stride=2)]
        for t, c, n, s in cfg:
            c = _divisible(c * width)
            for i in range(n):
                feats.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        last = _divisible(1280 * max(1.0, width))
        feats.append(ConvNormAct(cin, last, 1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


# ----------------------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, width, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, width, 1, stride, bias=False), nn.BatchNorm2d(width))
                           if stride != 1 or cin != width else None)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride=1):
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (n, width) in enumerate(zip(layers, (64, 128, 256, 512))):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, width, 2 if (j == 0 and i > 0) else 1))
                cin = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ----------------------------------------------------------------------------- small ViT and CNN


class EncoderBlock(nn.Module):
    def __init__(self, dim, heads, ratio=4):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ratio * dim)
        self.fc2 = nn.Linear(ratio * dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TinyViT(nn.Module):
    def __init__(self, dim=192, depth=4, heads=3, patch=16, size=224, num_classes=1000):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.pos = nn.Parameter(torch.zeros(1, (size // patch) ** 2, dim))
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.norm(self.blocks(x)).mean(1))


class SmallCNN(nn.Module):
    """A VGG-style stack: conv-BN-ReLU pairs and max pooling, then a classifier."""

    def __init__(self, num_classes=10):
        super().__init__()
        chans, layers, cin = [32, 64, 128, 256], [], 3
        for c in chans:
            layers += [ConvNormAct(cin, c), ConvNormAct(c, c), nn.MaxPool2d(2)]
            cin = c
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def mobilenet_v2():
    return MobileNetV2().eval(), _image()


def resnet18():
    return ResNet(BasicBlock, [2, 2, 2, 2]).eval(), _image()


def resnet50():
    return ResNet(Bottleneck, [3, 4, 6, 3]).eval(), _image()


def vit_tiny():
    return TinyViT().eval(), _image()


def small_cnn():
    return SmallCNN().eval(), _image(64)


def mobilenet_v2_050():
    """MobileNetV2 at half width (torchvision's ``width_mult=0.5``)."""
    return MobileNetV2(width=0.5).eval(), _image()


def resnet34():
    return ResNet(BasicBlock, [3, 4, 6, 3]).eval(), _image()


def resnet18_160():
    """ResNet-18 on 160 x 160 images: the same layers at other sizes."""
    return ResNet(BasicBlock, [2, 2, 2, 2]).eval(), _image(160)


def vit_small():
    """A 4-block ViT at twice the tiny one's width (384, 6 heads)."""
    return TinyViT(dim=384, heads=6).eval(), _image()


def small_cnn_128():
    return SmallCNN().eval(), _image(128)


def all_networks():
    """Every network above, as a {name: (module, inputs)} MODEL_REF."""
    return {f.__name__: f() for f in (mobilenet_v2, resnet18, resnet50, vit_tiny, small_cnn,
                                                   mobilenet_v2_050, resnet34, resnet18_160, vit_small, small_cnn_128)}
