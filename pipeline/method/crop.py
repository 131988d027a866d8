"""Training crops and test-time padding, as BasicIRSTD does them, with the draw kept apart.

BasicIRSTD reads each image at its own size, trains on random `patch_size` crops (an image
smaller than the crop is first padded with zeros at the bottom and right) and, with probability
`pos_prob` (0.5 in its configs), places the crop so that it holds a target pixel chosen at random;
at test time it pads each image with zeros at the bottom and right to a multiple of 32 and crops
the prediction back. Here the random part is drawn first (`draw_crop`, from a generator the caller
seeds, e.g. per (seed, epoch, sample)), and applied second (`apply_crop`), so a crop can be
replayed from its box.

One difference, on purpose: BasicIRSTD draws the start of a target-holding crop from
`[y - patch, y]`, and a start of `y - patch` leaves the chosen pixel one row outside the crop; here
the range is `[y - patch + 1, y]`, clamped to the image, so the pixel is always inside.

Arrays are numpy, images and masks `[..., H, W]` (any leading axes, one crop for all of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class CropBox:
    """A crop of `size` x `size` starting at (y0, x0) of the image padded to at least that size.

    `pad_h`, `pad_w`: zero rows added at the bottom, columns at the right, before cropping (0 for
    an image at least `size` on that side). `target`: whether the crop was placed on a target pixel.
    """

    y0: int
    x0: int
    size: int
    pad_h: int = 0
    pad_w: int = 0
    target: bool = False


def draw_crop(mask: np.ndarray, size: int, pos_prob: float, rng: np.random.Generator) -> CropBox:
    """Draw a crop box for one sample.

    mask: [H, W] (non-zero = target). With probability `pos_prob`, and when the mask has a target
    pixel, the crop holds a target pixel drawn uniformly from all of them; otherwise its start is
    uniform over the padded image. Always three draws from `rng` (u, pixel, start), so how many
    numbers a sample takes does not depend on its mask.
    """
    if size < 1:
        raise ValueError(f"crop size must be >= 1, got {size}")
    if not 0.0 <= pos_prob <= 1.0:
        raise ValueError(f"pos_prob must be in [0, 1], got {pos_prob}")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {mask.shape}")
    h, w = mask.shape
    pad_h, pad_w = max(size - h, 0), max(size - w, 0)
    hp, wp = h + pad_h, w + pad_w
    u = rng.random()
    pick = rng.random()
    start = rng.random(2)
    ys, xs = np.nonzero(mask)
    if u < pos_prob and ys.size:
        i = min(int(pick * ys.size), ys.size - 1)
        y, x = int(ys[i]), int(xs[i])
        y_lo, y_hi = max(0, y - size + 1), min(y, hp - size)
        x_lo, x_hi = max(0, x - size + 1), min(x, wp - size)
        y0 = y_lo + min(int(start[0] * (y_hi - y_lo + 1)), y_hi - y_lo)
        x0 = x_lo + min(int(start[1] * (x_hi - x_lo + 1)), x_hi - x_lo)
        return CropBox(y0, x0, size, pad_h, pad_w, True)
    y0 = min(int(start[0] * (hp - size + 1)), hp - size)
    x0 = min(int(start[1] * (wp - size + 1)), wp - size)
    return CropBox(y0, x0, size, pad_h, pad_w, False)


def apply_crop(array: np.ndarray, box: CropBox) -> np.ndarray:
    """Crop `array` [..., H, W] by `box`: zero-padded at the bottom/right as drawn, then sliced.

    Returns a new array [..., size, size] of the input's dtype.
    """
    array = np.asarray(array)
    h, w = array.shape[-2:]
    if box.pad_h != max(box.size - h, 0) or box.pad_w != max(box.size - w, 0):
        raise ValueError(f"crop box drawn for another image size (array is {h}x{w}, box {box})")
    if box.pad_h or box.pad_w:
        widths = [(0, 0)] * (array.ndim - 2) + [(0, box.pad_h), (0, box.pad_w)]
        array = np.pad(array, widths, mode="constant")
    return array[..., box.y0:box.y0 + box.size, box.x0:box.x0 + box.size].copy()


def padded_size(h: int, w: int, times: int = 32) -> tuple[int, int]:
    """The smallest (H', W') >= (h, w) that are multiples of `times`."""
    if times < 1:
        raise ValueError(f"pad multiple must be >= 1, got {times}")
    return -(-h // times) * times, -(-w // times) * times


def pad_to(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Zero-pad `array` [..., H, W] at the bottom and right to `shape` (each >= the array's)."""
    array = np.asarray(array)
    h, w = array.shape[-2:]
    if shape[0] < h or shape[1] < w:
        raise ValueError(f"cannot pad {h}x{w} to the smaller {shape[0]}x{shape[1]}")
    if (h, w) == tuple(shape):
        return array
    widths = [(0, 0)] * (array.ndim - 2) + [(0, shape[0] - h), (0, shape[1] - w)]
    return np.pad(array, widths, mode="constant")


def batch_shape(sizes: Sequence[tuple[int, int]], times: int = 32) -> tuple[int, int]:
    """The padded (H, W) one batch of images of these sizes shares: the largest of each side,
    rounded up to a multiple of `times` (BasicIRSTD's test-time padding for a batch of one)."""
    if not sizes:
        raise ValueError("no images to batch")
    return padded_size(max(h for h, _ in sizes), max(w for _, w in sizes), times)
