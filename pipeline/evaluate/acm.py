"""ACM-U-Net: asymmetric contextual modulation for infrared small targets (Dai et al., WACV 2021).

Written from the paper ("Asymmetric Contextual Modulation for Infrared Small Target Detection",
Y. Dai, Y. Wu, F. Zhou, K. Barnard, WACV 2021, arXiv 2009.14530). The network is a U-Net whose
encoder and decoder stages are ResNet basic blocks and whose skip connections are replaced by
the ACM fusion module:

- top-down global channel attention from the deep feature Y: G(Y) = sigmoid(BN(W2 relu(BN(W1 GAP(Y)))))
  (1x1 convolutions, reduction r = 4), which re-weights the channels of the shallow feature X;
- bottom-up point-wise channel attention from the shallow feature X: L(X) =
  sigmoid(BN(PWConv2 relu(BN(PWConv1 X)))), a per-pixel channel weighting that keeps the
  small target's fine detail and modulates the deep feature Y;
- Z = 2 * G(Y) * X + 2 * L(X) * Y, then a 3x3 conv-BN-ReLU (the factor 2 restores the scale of
  two sigmoid gates near 0.5, as in the authors' released code), then the decoder stage.

Backbone (the paper's ResNet-20 setting, ~0.4M parameters): a stem (3x3 stride-2 conv and two
3x3 convs, 8 -> 16 channels, then 3x3 stride-2 max pooling: 1/4 resolution), three encoder
stages of `blocks` basic blocks with channels 16, 32, 64 (strides 1, 2, 2), two decoder stages
(4x4 stride-2 transposed conv, ACM fusion, `blocks` basic blocks) back to 1/4 resolution, an
FCN head (3x3 conv to C/4, BN, ReLU, dropout 0.1, 1x1 conv) and bilinear up-sampling x4 to the
input size. The paper trains it with the SoftIoU loss (`soft_iou_loss` in train.py).

One addition to the paper: the head's output bias starts at the foreground prior `prior`
(1 %, as the yardstick U-Net's; None gives PyTorch's default init). Started at 50 % everywhere,
the SoftIoU loss sat near 1 for the first ~300 of 1,000 steps on SIRST v1 at 128 px
(benchmarks/evaluate_sirst.py calibration), a third of a CPU budget spent un-learning the guess.

Any H, W: the input is zero-padded to a multiple of 16 and the output cropped back. The head's
bilinear up-sampling has a nondeterministic CUDA backward (atomic adds): a seeded run repeats
exactly on the CPU, on a GPU only to rounding.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, identity (or 1x1 stride-s projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.short = (nn.Identity() if stride == 1 and c_in == c_out else
                      nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.short(x))


def _stage(c_in: int, c_out: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(c_in, c_out, stride), *(BasicBlock(c_out, c_out) for _ in range(blocks - 1)))


class AsymBiChaFuse(nn.Module):
    """The ACM module: fuse deep `high` and shallow `low` features of equal shape [B, C, H, W]."""

    def __init__(self, channels: int, r: int = 4):
        super().__init__()
        inter = max(channels // r, 1)
        self.topdown = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, inter, 1),
            nn.BatchNorm2d(inter),
            nn.ReLU(inplace=True),
            nn.Conv2d(inter, channels, 1),
            nn.BatchNorm2d(channels),
            nn.Sigmoid(),
        )
        self.bottomup = nn.Sequential(
            nn.Conv2d(channels, inter, 1),
            nn.BatchNorm2d(inter),
            nn.ReLU(inplace=True),
            nn.Conv2d(inter, channels, 1),
            nn.BatchNorm2d(channels),
            nn.Sigmoid(),
        )
        self.post = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True))

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        return self.post(2 * low * self.topdown(high) + 2 * high * self.bottomup(low))


class ACMUNet(nn.Module):
    """forward: x float [B, in_channels, H, W] -> logits [B, 1, H, W]."""

    MULTIPLE = 16  # stem /2, pool /2, two stride-2 stages

    def __init__(self, in_channels: int = 1, channels: tuple[int, int, int, int] = (8, 16, 32, 64), blocks: int = 3,
                 r: int = 4, dropout: float = 0.1, prior: float | None = 0.01):
        super().__init__()
        if blocks < 1:
            raise ValueError(f"blocks must be at least 1, got {blocks}")
        c0, c1, c2, c3 = channels
        self.stem = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, c0, 3, 2, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU(inplace=True),
            nn.Conv2d(c0, c0, 3, 1, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU(inplace=True),
            nn.Conv2d(c0, c1, 3, 1, 1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        self.layer1 = _stage(c1, c1, blocks, 1)
        self.layer2 = _stage(c1, c2, blocks, 2)
        self.layer3 = _stage(c2, c3, blocks, 2)
        self.deconv2 = nn.ConvTranspose2d(c3, c2, 4, 2, 1)
        self.fuse2 = AsymBiChaFuse(c2, r)
        self.uplayer2 = _stage(c2, c2, blocks, 1)
        self.deconv1 = nn.ConvTranspose2d(c2, c1, 4, 2, 1)
        self.fuse1 = AsymBiChaFuse(c1, r)
        self.uplayer1 = _stage(c1, c1, blocks, 1)
        inter = max(c1 // 4, 1)
        self.head = nn.Sequential(nn.Conv2d(c1, inter, 3, 1, 1, bias=False), nn.BatchNorm2d(inter),
                                  nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Conv2d(inter, 1, 1))
        if prior is not None:
            if not 0.0 < prior < 1.0:
                raise ValueError(f"prior must be in (0, 1), got {prior}")
            nn.init.constant_(self.head[-1].bias, -math.log((1.0 - prior) / prior))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.MULTIPLE
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        c1 = self.layer1(self.stem(x))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        up2 = self.uplayer2(self.fuse2(self.deconv2(c3), c2))
        up1 = self.uplayer1(self.fuse1(self.deconv1(up2), c1))
        out = F.interpolate(self.head(up1), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out[..., :h, :w]
