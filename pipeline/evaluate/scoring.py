"""Scores of one model's predictions kept image by image: what a reviewer looks at after the means.

- `per_image`: each test image's IoU (intersection, union), targets, targets found, false-alarm
  pixels at one threshold;
- `false_alarms`: where each false alarm is (centroid, area, peak probability): the predicted
  components no target claimed, by the same matching rule as `sirst5k.method.metrics`
  (a target takes the first free component, in label order, whose centroid lies closer than
  `max_distance` pixels; what is left over is a false alarm);
- `pd_fa_curve`: mIoU, nIoU, Pd and Fa of the whole set at each threshold.

Each takes `fa_rule` ("basicirstd", the default, or "dnanet"; `sirst5k.method.metrics`): with
"dnanet" an unmatched component whose area equals a matched component's area (in that image) is
not a false alarm, as in the metrics.

Inputs are probabilities float [N, H, W] and label masks [N, H, W] (nonzero = target); pure
numpy (the component work is skimage's, through the metrics module).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from skimage.measure import label

from sirst5k.method.metrics import IRSTDMetrics, components, gt_masks, intersection_union, match_targets

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.96, 0.05))


def false_alarm_components(pred: np.ndarray, gt: np.ndarray, prob: np.ndarray | None = None,
                           max_distance: float = 3.0, fa_rule: str = "basicirstd") -> list[dict]:
    """Predicted components of one image [H, W] that match no target: {y, x, area, peak}.

    y, x: the component's centroid (row, column); peak: its highest probability (NaN without `prob`).
    """
    gt_c, _ = components(gt)
    labels, k = label(pred, connectivity=2, return_num=True)
    pred_c, pred_area = components(pred)
    free = np.ones(k, dtype=bool)
    for c in gt_c:
        if not free.any():
            break
        hit = np.flatnonzero(free & (np.hypot(*(pred_c - c).T) < max_distance))
        if hit.size:
            free[hit[0]] = False
    alarms = free & ~np.isin(pred_area, pred_area[~free]) if fa_rule == "dnanet" else free
    peaks = np.full(k, np.nan)
    if prob is not None and k:
        lab = labels.ravel()
        sel = lab > 0
        peaks = np.full(k, -np.inf)
        np.maximum.at(peaks, lab[sel] - 1, prob.ravel()[sel])
    return [{"y": float(pred_c[i, 0]), "x": float(pred_c[i, 1]), "area": int(pred_area[i]), "peak": float(peaks[i])}
            for i in np.flatnonzero(alarms)]


def per_image(prob: np.ndarray, gt, threshold: float = 0.5, max_distance: float = 3.0,
              fa_rule: str = "basicirstd") -> list[dict]:
    """One row per image: iou, intersection, union, n_targets, n_found, fa_pixels, fa_objects."""
    pred = prob > threshold
    g = gt_masks(gt)
    inter, union = intersection_union(pred, g)
    rows = []
    for i, (pi, gi) in enumerate(zip(pred, g)):
        m = match_targets(pi, gi, max_distance, fa_rule)
        fa = false_alarm_components(pi, gi, None, max_distance, fa_rule)
        rows.append({"iou": float(inter[i] / union[i]) if union[i] else 0.0, "intersection": int(inter[i]),
                     "union": int(union[i]), "n_targets": m.n_targets, "n_found": m.n_found,
                     "fa_pixels": m.false_alarm_pixels, "fa_objects": len(fa)})
    return rows


def false_alarms(prob: np.ndarray, gt, threshold: float = 0.5, max_distance: float = 3.0,
                 fa_rule: str = "basicirstd") -> list[dict]:
    """Every false alarm of the set: {image (index), y, x, area, peak}."""
    pred = prob > threshold
    g = gt_masks(gt)
    out = []
    for i, (pi, gi, p) in enumerate(zip(pred, g, prob)):
        out.extend({"image": i, **fa} for fa in false_alarm_components(pi, gi, p, max_distance, fa_rule))
    return out


def pd_fa_curve(prob: np.ndarray, gt, thresholds: Sequence[float] = THRESHOLDS,
                fa_rule: str = "basicirstd") -> list[dict]:
    """{threshold, mIoU, nIoU, Pd, Fa} of the whole set at each threshold."""
    rows = []
    for t in thresholds:
        acc = IRSTDMetrics(threshold=float(t), fa_rule=fa_rule)
        acc.update(prob, gt)
        rows.append({"threshold": float(t), **acc.compute()})
    return rows
