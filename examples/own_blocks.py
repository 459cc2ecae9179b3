"""Blocks of a family the calibration sampler does not draw, for `tvmlat calibrate --with`: ConvNeXt blocks
(a 7 x 7 depthwise conv, a channels-last layer norm, an inverted MLP with GELU, a residual add).

    tvmlat calibrate --samples 100 --with examples/own_blocks.py:convnext

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
