"""A compact U-Net for the `evaluate` stage: a yardstick for the data, not a competitor to DNANet.

It only has to be the same network, trained the same way, on two training sets, so that the
difference in its scores is the difference the data makes; small enough to train on two CPU
cores in minutes. Defaults (depth 4, base 8: 8-16-32-64 channels, ~121k parameters) cost about
a third of a 3-level base-16 net per pixel for the same parameter count, with a wider view
(the bottleneck sees 1/8 resolution).

Upsampling is nearest-neighbour, not bilinear or transposed convolution: its CUDA backward is
deterministic, so a seeded run repeats on a GPU as it does on the CPU.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with `depth` resolution levels and `base * 2**level` channels per level.

    forward: x float [B, in_channels, H, W] -> logits [B, 1, H, W]. Any H, W: the input is
    zero-padded to a multiple of 2**(depth-1) and the output cropped back (zeros, not reflect:
    reflection padding has a nondeterministic CUDA backward).

    prior: initial foreground probability of the output bias. Targets cover ~0.1 % of the
    pixels; starting near that (the focal-loss prior) keeps the first steps from being spent
    un-learning a 50 % guess everywhere.
    """

    def __init__(self, in_channels: int = 1, base: int = 8, depth: int = 4, prior: float = 0.01):
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be at least 2, got {depth}")
        if not 0.0 < prior < 1.0:
            raise ValueError(f"prior must be in (0, 1), got {prior}")
        widths = [base * 2**i for i in range(depth)]
        self.depth = depth
        self.down = nn.ModuleList([_block(in_channels, widths[0])])
        self.down.extend(_block(widths[i - 1], widths[i]) for i in range(1, depth))
        self.up = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth - 1)))
        self.head = nn.Conv2d(widths[0], 1, 1)
        nn.init.constant_(self.head.bias, -math.log((1.0 - prior) / prior))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2 ** (self.depth - 1)
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)[..., :h, :w]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
