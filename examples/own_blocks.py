"""Blocks of families the calibration sampler does not draw, for `tvmlat calibrate --with`: ConvNeXt blocks
(a 7 x 7 depthwise conv, a channels-last layer norm, an inverted MLP with GELU, a residual add) and
EfficientNet-B0's MBConv blocks (SiLU after every conv but the last, a squeeze-excitation gate of SiLU and sigmoid).

    tvmlat calibrate --samples 100 --with examples/own_blocks.py:convnext
    tvmlat calibrate --samples 100 --with examples/own_blocks.py:mbconv

NAME (here ``convnext``) names the family of these blocks in the dataset and in the fit's per-family table."""

import torch
from torch import nn


class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int, expand: int = 4):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pw1 = nn.Linear(c, expand * c)
        self.act = nn.GELU()
        self.pw2 = nn.Linear(expand * c, c)

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.pw2(self.act(self.pw1(self.norm(y)))).permute(0, 3, 1, 2)
        return x + y


SHAPES = [(16, 56), (24, 56), (32, 28), (48, 28), (64, 28), (40, 14), (80, 14), (96, 14), (128, 14), (96, 7),
          (160, 7), (256, 7)]


def convnext():
    """Twelve ConvNeXt blocks, channels x size from 16 x 56 x 56 to 256 x 7 x 7 (batch 1)."""
    torch.manual_seed(0)
    return {f"convnext(c={c},hw={hw})": (ConvNeXtBlock(c).eval(), (torch.randn(1, c, hw, hw),)) for c, hw in SHAPES}


class MBConv(nn.Module):
    """EfficientNet's inverted bottleneck: 1 x 1 expand, k x k depthwise, squeeze-excitation (a quarter of the
    input channels), 1 x 1 project; BN after each conv, SiLU after the first two; a residual where shapes allow."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int = 6):
        super().__init__()
        mid, se = cin * expand, max(1, cin // 4)
        self.expand = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU())
        self.dw = nn.Sequential(nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False), nn.BatchNorm2d(mid),
                                nn.SiLU())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(mid, se, 1), nn.SiLU(), nn.Conv2d(se, mid, 1),
                                nn.Sigmoid())
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.dw(self.expand(x))
        y = self.project(y * self.se(y))
        return x + y if self.residual else y


MB_SHAPES = [(24, 24, 3, 1, 56), (24, 40, 5, 2, 56), (40, 40, 5, 1, 28), (40, 80, 3, 2, 28), (80, 80, 3, 1, 14),
             (80, 112, 5, 1, 14), (112, 112, 5, 1, 14), (112, 192, 5, 2, 14), (192, 192, 5, 1, 7), (192, 320, 3, 1, 7)]


def mbconv():
    """Ten of EfficientNet-B0's MBConv blocks (expansion 6), from 24 channels at 56 x 56 to 192 -> 320 at 7 x 7."""
    torch.manual_seed(0)
    return {f"mbconv(cin={ci},cout={co},k={k},s={st},hw={hw})": (MBConv(ci, co, k, st).eval(),
                                                                   (torch.randn(1, ci, hw, hw),))
            for ci, co, k, st, hw in MB_SHAPES}
