"""IRSTD metrics as the infrared small-target toolboxes report them: mIoU, nIoU, Pd, Fa.

Definitions follow BasicIRSTD (`metrics.py`: mIoU, PD_FA) and, for nIoU, ACM / SCTransNet
(`SamplewiseSigmoidMetric`), so numbers are comparable with published tables (on exported
SIRST-5K predictions mIoU and Pd equal BasicIRSTD's current `metrics.py` bit for bit, Fa to
2e-8 relative):

- mIoU = (sum over images of |pred & gt|) / (sum over images of |pred | gt|): one IoU of the
  whole set, foreground class only.
- nIoU = mean over images of |pred & gt| / |pred | gt|. An image whose union is empty counts
  as 0, as the toolboxes' `inter / (eps + union)` gives.
- Pd = matched GT targets / all GT targets. Targets and predicted objects are the 8-connected
  components (`skimage.measure.label(connectivity=2)`). Each GT target, in label order, takes
  the first still-unmatched predicted component, in label order, whose centroid lies at
  Euclidean distance < `max_distance` (3) pixels from its own; a prediction matches at most once.
- Fa = pixels of predicted components left unmatched / all pixels of all images.

Which components count as false alarms, `fa_rule`:
- "basicirstd" (the default): every predicted component matched to no target, by identity.
  BasicIRSTD has counted this way since January 2024 (it marks the matched components' pixels
  and counts the predicted pixels outside them).
- "dnanet": the older rule of DNANet's `PD_FA` (and of BasicIRSTD before 2024): per image, the
  areas of the matched components are listed, and a predicted component counts only when its
  area is in no entry of that list (`x not in image_area_match`), so a false alarm as large as
  some matched target is dropped. It gives a lower Fa (31-38 % lower on the same predictions, as
  issue 17 measured with both toolboxes' code); use it to compare with papers that scored with it.

Predictions are probabilities (`pred > threshold`, 0.5 by default) or boolean masks; ground
truth is any mask with nonzero = target (0/255 uint8 as in the shards). Arrays may be numpy
or torch (moved to the CPU: the component work is skimage's). The result is a plain
dict of floats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.measure import label

METRIC_NAMES = ("mIoU", "nIoU", "Pd", "Fa")
FA_RULES = ("basicirstd", "dnanet")


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _batch(x) -> np.ndarray:
    """[H, W], [N, H, W] or [N, 1, H, W] -> [N, H, W]."""
    x = _numpy(x)
    if x.ndim == 2:
        return x[None]
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"expected [H, W], [N, H, W] or [N, 1, H, W], got shape {x.shape}")
    return x


def binarize(pred, threshold: float = 0.5) -> np.ndarray:
    """Boolean masks [N, H, W] from probabilities (`> threshold`) or boolean masks (as they are)."""
    pred = _batch(pred)
    return pred if pred.dtype == bool else pred > threshold


def gt_masks(gt) -> np.ndarray:
    """Boolean masks [N, H, W] from label masks, nonzero = target."""
    return _batch(gt) != 0


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image pixel counts of pred & gt and pred | gt.

    pred, gt: bool [N, H, W]. Returns (intersection [N] int64, union [N] int64).
    """
    _check_pair(pred, gt)
    inter = np.logical_and(pred, gt).sum(axis=(1, 2), dtype=np.int64)
    union = np.logical_or(pred, gt).sum(axis=(1, 2), dtype=np.int64)
    return inter, union


def components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of one mask [H, W] (bool), in skimage's label order.

    Returns (centroids [K, 2] float64 (y, x), areas [K] int64).
    """
    labels, k = label(mask, connectivity=2, return_num=True)
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs] - 1
    areas = np.bincount(lab, minlength=k).astype(np.int64)
    if k == 0:
        return np.zeros((0, 2)), areas
    cy = np.bincount(lab, weights=ys, minlength=k) / areas
    cx = np.bincount(lab, weights=xs, minlength=k) / areas
    return np.stack([cy, cx], axis=1), areas


@dataclass(frozen=True)
class TargetMatch:
    """Target-level counts of one image (or, summed, of a set)."""

    n_targets: int
    n_found: int
    false_alarm_pixels: int


def _check_rule(fa_rule: str) -> None:
    if fa_rule not in FA_RULES:
        raise ValueError(f"fa_rule {fa_rule!r}: use {' or '.join(repr(r) for r in FA_RULES)}")


def match_targets(pred: np.ndarray, gt: np.ndarray, max_distance: float = 3.0,
                  fa_rule: str = "basicirstd") -> TargetMatch:
    """Match predicted objects to GT targets by centroid distance, one image.

    pred, gt: bool [H, W]. A GT target is found when a not-yet-matched predicted component's
    centroid is closer than `max_distance` pixels (strictly) to its centroid; the first such
    component in label order is taken, as BasicIRSTD does. False-alarm pixels: those of the
    predicted components matched to no target ("basicirstd"), or of the predicted components
    whose area equals no matched component's area ("dnanet", see the module doc).
    """
    _check_rule(fa_rule)
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must both be [H, W]")
    gt_c, _ = components(gt)
    pred_c, pred_area = components(pred)
    free = np.ones(len(pred_c), dtype=bool)
    found = 0
    for c in gt_c:
        if not free.any():
            break
        near = free & (np.hypot(*(pred_c - c).T) < max_distance)
        hit = np.flatnonzero(near)
        if hit.size:
            free[hit[0]] = False
            found += 1
    if fa_rule == "dnanet":
        unmatched = ~np.isin(pred_area, pred_area[~free])
        return TargetMatch(len(gt_c), found, int(pred_area[unmatched].sum()))
    return TargetMatch(len(gt_c), found, int(pred_area[free].sum()))


class IRSTDMetrics:
    """Accumulates mIoU, nIoU, Pd and Fa over batches: `update(pred, gt)` per batch, then `compute()`.

    pred: probabilities or bool masks, [N, H, W] / [N, 1, H, W] / [H, W]; gt: label masks of the
    same shape (nonzero = target). Images in one set may differ in size. `fa_rule`: which
    unmatched components count as false alarms, "basicirstd" (by identity, the default) or
    "dnanet" (the older area-keyed rule); see the module doc.
    """

    def __init__(self, threshold: float = 0.5, max_distance: float = 3.0, fa_rule: str = "basicirstd"):
        _check_rule(fa_rule)
        self.threshold = threshold
        self.max_distance = max_distance
        self.fa_rule = fa_rule
        self.reset()

    def reset(self) -> None:
        self.image_iou: list[float] = []
        self.intersection = 0
        self.union = 0
        self.n_targets = 0
        self.n_found = 0
        self.false_alarm_pixels = 0
        self.n_pixels = 0

    def update(self, pred, gt) -> None:
        p = binarize(pred, self.threshold)
        g = gt_masks(gt)
        inter, union = intersection_union(p, g)
        self.intersection += int(inter.sum())
        self.union += int(union.sum())
        # an empty union scores 0, as the toolboxes' inter / (eps + union) does
        self.image_iou.extend(np.where(union > 0, inter / np.maximum(union, 1), 0.0).tolist())
        for pi, gi in zip(p, g):
            m = match_targets(pi, gi, self.max_distance, self.fa_rule)
            self.n_targets += m.n_targets
            self.n_found += m.n_found
            self.false_alarm_pixels += m.false_alarm_pixels
            self.n_pixels += pi.size

    @property
    def n_images(self) -> int:
        return len(self.image_iou)

    def compute(self) -> dict[str, float]:
        """{"mIoU", "nIoU", "Pd", "Fa"} as floats. Pd is NaN for a set without targets."""
        if self.n_images == 0:
            raise ValueError("no images were scored")
        return {
            "mIoU": self.intersection / self.union if self.union else 0.0,
            "nIoU": float(np.mean(self.image_iou)),
            "Pd": self.n_found / self.n_targets if self.n_targets else float("nan"),
            "Fa": self.false_alarm_pixels / self.n_pixels,
        }


def irstd_metrics(pred, gt, threshold: float = 0.5, max_distance: float = 3.0,
                  fa_rule: str = "basicirstd") -> dict[str, float]:
    """mIoU, nIoU, Pd and Fa of one batch of predictions [N, H, W] against masks [N, H, W]."""
    acc = IRSTDMetrics(threshold, max_distance, fa_rule)
    acc.update(pred, gt)
    return acc.compute()


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
