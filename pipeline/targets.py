"""Targets of a binary mask: 8-connected components, their centres, areas and boxes.

Components are labelled with `skimage.measure.label(connectivity=2)`, as BasicIRSTD's metrics
count targets, and are numbered in skimage's label order (raster order of each component's
first pixel). Every function here keeps that order, so "target j" means the same component
everywhere in the pipeline.

Centre rule: `centre = floor(centroid + 0.5)` per axis (round half up), centroid = mean pixel
index. The reference coordinates (`sirst5k-reference/inputs/coordinates.txt`) cannot tell floor
from round: all its targets are 3x3 squares whose centroid is an exact pixel index. Round half
up is chosen because for a target of even extent it centres the scripts' even (32 px,
half-open) box on the target: a 2-px target in columns 10..11 has centroid 10.5, centre 11, and
the box `[11 - 16, 11 + 16)` reaches 16 px beyond either edge of the target's pixel span
`[10, 12)`.
"""

from __future__ import annotations

import numpy as np
from skimage.measure import label


def _as_mask(mask) -> np.ndarray:
    if hasattr(mask, "detach"):  # torch tensor, possibly on a GPU
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {mask.shape}")
    return mask != 0


def label_components(mask) -> tuple[np.ndarray, int]:
    """Label the 8-connected foreground components of `mask` [H, W] (nonzero = target).

    Returns (labels [H, W] int, 0 = background, 1..n = components in label order; n).
    """
    labels, n = label(_as_mask(mask), connectivity=2, return_num=True)
    return labels, int(n)


def target_table(mask) -> dict[str, np.ndarray]:
    """Per-target statistics of `mask` [H, W], in label order.

    Returns a dict of arrays, T = number of targets:
      - `center`   [T, 2] int64 (y, x): floor(centroid + 0.5), see the module note;
      - `centroid` [T, 2] float64 (y, x): mean pixel row and column;
      - `area`     [T] int64: pixel count;
      - `bbox`     [T, 4] int64 (y0, x0, y1, x1), half-open.
    """
    labels, n = label_components(mask)
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs] - 1
    area = np.bincount(lab, minlength=n).astype(np.int64)
    if n == 0:
        return {
            "center": np.zeros((0, 2), np.int64),
            "centroid": np.zeros((0, 2), np.float64),
            "area": area,
            "bbox": np.zeros((0, 4), np.int64),
        }
    centroid = np.stack(
        [np.bincount(lab, weights=ys, minlength=n) / area, np.bincount(lab, weights=xs, minlength=n) / area], axis=1
    )
    bbox = np.empty((n, 4), np.int64)
    bbox[:, :2] = np.iinfo(np.int64).max
    bbox[:, 2:] = np.iinfo(np.int64).min
    np.minimum.at(bbox[:, 0], lab, ys)
    np.minimum.at(bbox[:, 1], lab, xs)
    np.maximum.at(bbox[:, 2], lab, ys + 1)
    np.maximum.at(bbox[:, 3], lab, xs + 1)
    return {
        "center": np.floor(centroid + 0.5).astype(np.int64),
        "centroid": centroid,
        "area": area,
        "bbox": bbox,
    }


def target_centers(mask) -> np.ndarray:
    """Centres [T, 2] int64 (y, x) of the targets of `mask` [H, W], in label order."""
    return target_table(mask)["center"]


def count_targets(mask) -> tuple[int, int]:
    """(number of 8-connected targets, total foreground pixels) of `mask` [H, W]."""
    labels, n = label_components(mask)
    return n, int(np.count_nonzero(labels))
