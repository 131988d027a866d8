"""Rotated negatives: mirror and rotate a box around a target, in image and mask alike.

A negative takes the `patch` x `patch` box around one target (`--patch N` means an N-pixel
box; the original scripts' variants named 3/5/7/9 cut 2/4/6/8-pixel boxes), mirrors it
left-right when `flip`, rotates it by `k` x 90 degrees counter-clockwise (PIL `rotate(90 * k)`,
= `np.rot90(box, k)`) and pastes it back at the same place. The mask gets the same operation, so
the label stays true.

Parameters (box corner, k, flip) are drawn by `draw_negative_params`, apart from the
transform `apply_negatives`, so any sample can be replayed from its parameters alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from pipeline.targets import label_components

CLAMPS = ("script", "clip")


def _check_patch(patch: int, image_size: tuple[int, int]) -> tuple[int, int, int]:
    height, width = (int(s) for s in image_size)
    patch = int(patch)
    if patch < 1:
        raise ValueError(f"patch must be >= 1 pixel, got {patch}")
    if patch > min(height, width):
        raise ValueError(f"patch {patch} does not fit an image of {height}x{width}")
    return patch, height, width


def negative_boxes(centers, image_size: tuple[int, int], patch: int, clamp: str = "script") -> np.ndarray:
    """Top-left corners [T, 2] int64 (y0, x0) of the `patch`-pixel boxes around `centers`.

    centers: [T, 2] int (y, x). image_size: (H, W). The box is rows y0..y0+patch-1, columns
    x0..x0+patch-1, always inside the image. Per axis, with c the centre and S the image size:
      - "script": the original `rot_patch_32` rule generalised to any P and S:
        x0 = c - P//2 when P <= c <= S - P; 0 when c < P; S - P when c > S - P. Near a border
        the box is pushed flush against it, not just inside (c=230, P=32, S=256 gives 224,
        not 214). Needed to reproduce the reference outputs.
      - "clip": the minimal shift, clip(c - P//2, 0, S - P).
    Raises ValueError when the patch does not fit the image or `clamp` is unknown.
    """
    patch, height, width = _check_patch(patch, image_size)
    c = np.asarray(centers, dtype=np.int64).reshape(-1, 2)
    size = np.array([height, width], np.int64)
    if clamp == "script":
        inside = c - patch // 2
        corner = np.where(c < patch, 0, np.where(c > size - patch, size - patch, inside))
    elif clamp == "clip":
        corner = np.clip(c - patch // 2, 0, size - patch)
    else:
        raise ValueError(f"clamp must be one of {CLAMPS}, got {clamp!r}")
    return corner.astype(np.int64)


@dataclass(frozen=True)
class NegativeParams:
    """Everything needed to replay N negatives; arrays are [N], `center` is [N, 2] (y, x).

    `source` indexes the image (within the batch the params were drawn for) and
    `target_index` the target (label order) each negative is built around.
    """

    patch: int
    source: np.ndarray
    target_index: np.ndarray
    center: np.ndarray
    y0: np.ndarray
    x0: np.ndarray
    k: np.ndarray
    flip: np.ndarray

    def __len__(self) -> int:
        return int(self.k.shape[0])

    def tensors(self, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """The per-sample fields as tensors on `device`, ready for `apply_negatives`."""
        return {
            "source": torch.as_tensor(self.source, device=device),
            "y0": torch.as_tensor(self.y0, device=device),
            "x0": torch.as_tensor(self.x0, device=device),
            "k": torch.as_tensor(self.k, device=device),
            "flip": torch.as_tensor(self.flip, device=device),
        }


def draw_negative_params(
    centers: np.ndarray | Sequence[np.ndarray],
    image_size: tuple[int, int],
    patch: int,
    *,
    rotations: Sequence[int] = (0, 1, 2, 3),
    mirror: bool = True,
    clamp: str = "script",
    rng: np.random.Generator | None = None,
    n_per_target: int | None = None,
) -> NegativeParams:
    """Parameters of the negatives of a batch of images.

    centers: one [T_i, 2] (y, x) array per image (a single 2-D array = one image).
    By default (the paper) every target gets one negative per rotation in `rotations`, ordered
    image, then target, then rotation, as the original scripts write `<id>_k<k>_j<j>`. With
    `rng` and `n_per_target`, each target instead gets `n_per_target` distinct rotations drawn
    from `rotations`. `flip` is `mirror` for every negative (the 32-pixel script mirrors).
    """
    if isinstance(centers, np.ndarray) and centers.ndim == 2:
        centers = [centers]
    rotations = np.asarray(list(rotations), dtype=np.int64)
    if rotations.size == 0:
        raise ValueError("rotations must not be empty")
    if (rng is None) != (n_per_target is None):
        raise ValueError("give both rng and n_per_target, or neither")
    if n_per_target is not None and not 1 <= n_per_target <= rotations.size:
        raise ValueError(f"n_per_target must be in 1..{rotations.size}, got {n_per_target}")
    source, target, cen, ks = [], [], [], []
    for i, c in enumerate(centers):
        c = np.asarray(c, dtype=np.int64).reshape(-1, 2)
        for j in range(c.shape[0]):
            chosen = rotations if rng is None else rng.choice(rotations, size=n_per_target, replace=False)
            ks.append(chosen)
            source.append(np.full(chosen.size, i, np.int64))
            target.append(np.full(chosen.size, j, np.int64))
            cen.append(np.repeat(c[j : j + 1], chosen.size, axis=0))
    if ks:
        source, target, cen, ks = (np.concatenate(a) for a in (source, target, cen, ks))
    else:
        source, target, ks = (np.zeros(0, np.int64) for _ in range(3))
        cen = np.zeros((0, 2), np.int64)
    corners = negative_boxes(cen, image_size, patch, clamp)
    return NegativeParams(
        patch=int(patch),
        source=source,
        target_index=target,
        center=cen,
        y0=corners[:, 0].copy(),
        x0=corners[:, 1].copy(),
        k=ks % 4,
        flip=np.full(ks.shape, bool(mirror)),
    )


def _source_offsets(patch: int, k: torch.Tensor, flip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each sample and box position (i, j), the box position it is read from: [B, P, P] each.

    out = rot90(fliplr(box), k) reads rot90's source of (i, j), then undoes the mirror.
    """
    idx = torch.arange(patch, device=k.device)
    i, j = torch.meshgrid(idx, idx, indexing="ij")
    last = patch - 1
    rows = torch.stack([i, j, last - i, last - j])  # np.rot90 (CCW) source row for k = 0..3
    cols = torch.stack([j, last - i, last - j, i])
    a, b = rows[k], cols[k]
    b = torch.where(flip.view(-1, 1, 1), last - b, b)
    return a, b


def apply_negatives(
    images: torch.Tensor,
    masks: torch.Tensor,
    y0,
    x0,
    patch: int,
    k,
    flip,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror (where `flip`) then rotate by `k` x 90 degrees CCW the box of each sample.

    images, masks: [B, H, W] (any dtype; uint8 in the pipeline). y0, x0: [B] top-left corners
    (from `negative_boxes`). k: [B] int (taken mod 4). flip: [B] bool. Returns new (images,
    masks); the inputs are not modified. One gather/scatter for the whole batch, on the inputs'
    device.
    """
    if images.ndim != 3 or masks.shape != images.shape:
        raise ValueError(f"images and masks must both be [B, H, W], got {tuple(images.shape)} and {tuple(masks.shape)}")
    batch, height, width = images.shape
    patch, _, _ = _check_patch(patch, (height, width))
    device = images.device

    def vec(v, dtype):
        t = torch.as_tensor(v, device=device).to(dtype).reshape(-1)
        if t.numel() == 1 and batch != 1:
            t = t.expand(batch)
        if t.shape[0] != batch:
            raise ValueError(f"expected {batch} values per parameter, got {t.shape[0]}")
        return t

    y0, x0, k = vec(y0, torch.long), vec(x0, torch.long), vec(k, torch.long) % 4
    flip = vec(flip, torch.bool)
    if batch == 0:
        return images.clone(), masks.clone()
    # Out-of-range corners would wrap around silently under advanced indexing.
    if bool(((y0 < 0) | (x0 < 0) | (y0 > height - patch) | (x0 > width - patch)).any()):
        raise ValueError(f"a box of {patch} px starts outside a {height}x{width} image")
    a, b = _source_offsets(patch, k, flip)
    idx = torch.arange(patch, device=device)
    dst_r = (y0.view(-1, 1, 1) + idx.view(1, -1, 1)).expand(-1, -1, patch)
    dst_c = (x0.view(-1, 1, 1) + idx.view(1, 1, -1)).expand(-1, patch, -1)
    src_r = y0.view(-1, 1, 1) + a
    src_c = x0.view(-1, 1, 1) + b
    bi = torch.arange(batch, device=device).view(-1, 1, 1).expand(-1, patch, patch)
    out_images, out_masks = images.clone(), masks.clone()
    out_images[bi, dst_r, dst_c] = images[bi, src_r, src_c]
    out_masks[bi, dst_r, dst_c] = masks[bi, src_r, src_c]
    return out_images, out_masks


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def label_check(masks_before, masks_after, y0, x0, patch: int) -> dict[str, np.ndarray]:
    """Did the negative keep the label sane? Per sample, all arrays [B].

    masks_before, masks_after: [B, H, W] (numpy or tensors). Returns:
      - `n_targets_before`, `n_targets_after`: 8-connected component counts;
      - `area_before`, `area_after`: foreground pixel counts (a rotation keeps the area);
      - `straddle`: some target of the original mask lies partly inside, partly outside the box;
      - `cut`: `straddle` and the mask inside the box changed, so that target was cut apart
        (k = 0 without flip, or a box whose content is symmetric, changes nothing).
    """
    before, after = _numpy(masks_before), _numpy(masks_after)
    if before.ndim != 3 or before.shape != after.shape:
        raise ValueError(f"masks must both be [B, H, W], got {before.shape} and {after.shape}")
    batch, height, width = before.shape
    patch, _, _ = _check_patch(patch, (height, width))
    y0 = np.broadcast_to(_numpy(y0).astype(np.int64).reshape(-1), (batch,))
    x0 = np.broadcast_to(_numpy(x0).astype(np.int64).reshape(-1), (batch,))
    out = {name: np.zeros(batch, np.int64) for name in ("n_targets_before", "n_targets_after", "area_before", "area_after")}
    out["straddle"] = np.zeros(batch, bool)
    out["cut"] = np.zeros(batch, bool)
    for s in range(batch):
        labels, n = label_components(before[s])
        _, n_after = label_components(after[s])
        out["n_targets_before"][s], out["n_targets_after"][s] = n, n_after
        out["area_before"][s] = np.count_nonzero(before[s])
        out["area_after"][s] = np.count_nonzero(after[s])
        box = (slice(y0[s], y0[s] + patch), slice(x0[s], x0[s] + patch))
        inside = np.zeros((height, width), bool)
        inside[box] = True
        hit_in = np.unique(labels[inside & (labels > 0)])
        hit_out = np.unique(labels[~inside & (labels > 0)])
        straddle = np.intersect1d(hit_in, hit_out).size > 0
        out["straddle"][s] = straddle
        out["cut"][s] = straddle and bool(((before[s][box] != 0) != (after[s][box] != 0)).any())
    return out
