"""IRSTD metrics on hand-made masks whose scores are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sirst5k.method.metrics import IRSTDMetrics, components, intersection_union, irstd_metrics, match_targets

H = W = 32


def square(y: int, x: int, side: int = 3, shape=(H, W)) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    m[y : y + side, x : x + side] = 255
    return m


def test_perfect_prediction():
    gt = np.stack([square(4, 4), square(20, 10, 2) | square(5, 25)])
    out = irstd_metrics(gt > 0, gt)
    assert out == {"mIoU": 1.0, "nIoU": 1.0, "Pd": 1.0, "Fa": 0.0}


def test_empty_prediction():
    gt = np.stack([square(4, 4), square(20, 10)])
    out = irstd_metrics(np.zeros((2, H, W)), gt)
    assert out == {"mIoU": 0.0, "nIoU": 0.0, "Pd": 0.0, "Fa": 0.0}


def test_one_false_alarm_blob():
    gt = square(4, 4)[None]
    pred = (square(4, 4) | square(20, 20, side=4))[None] > 0  # a 16-pixel blob far from the target
    out = irstd_metrics(pred, gt)
    assert out["Pd"] == 1.0
    assert out["Fa"] == pytest.approx(16 / (H * W))
    assert out["mIoU"] == pytest.approx(9 / 25)
    assert out["nIoU"] == pytest.approx(9 / 25)


def test_offset_target_within_and_beyond_three_pixels():
    gt = square(10, 10)[None]
    near = irstd_metrics(square(12, 12)[None] > 0, gt)  # centroid offset (2, 2): 2.83 px
    assert near["Pd"] == 1.0 and near["Fa"] == 0.0
    assert near["mIoU"] == pytest.approx(1 / 17)
    far = irstd_metrics(square(10, 13)[None] > 0, gt)  # offset 3 px exactly: not < 3
    assert far["Pd"] == 0.0
    assert far["Fa"] == pytest.approx(9 / (H * W))
    assert far["mIoU"] == 0.0


def test_two_targets_one_found():
    gt = (square(2, 2) | square(20, 20))[None]
    pred = square(3, 2)[None] > 0  # overlaps and is near the first target only
    out = irstd_metrics(pred, gt)
    assert out["Pd"] == 0.5
    assert out["Fa"] == 0.0
    assert out["mIoU"] == pytest.approx(6 / 21)


def test_a_prediction_matches_only_one_target():
    # two 1-pixel targets 2 px apart, one prediction between them: only one can be found
    gt = np.zeros((1, H, W), np.uint8)
    gt[0, 10, 10] = gt[0, 10, 13] = 255
    pred = np.zeros((1, H, W), bool)
    pred[0, 10, 11:13] = True
    out = irstd_metrics(pred, gt)
    assert out["Pd"] == 0.5
    assert out["Fa"] == 0.0


def test_diagonal_pixels_are_one_component():
    mask = np.zeros((8, 8), bool)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = True  # 8-connected, not 4-connected
    centroids, areas = components(mask)
    assert areas.tolist() == [3]
    assert centroids.tolist() == [[2.0, 2.0]]


def test_false_alarm_of_same_area_as_a_matched_target_still_counts():
    # BasicIRSTD (since January 2024) counts unmatched components by identity, as we do by default;
    # DNANet's older area-keyed rule drops a blob as large as a matched target
    gt = square(2, 2)[None]
    pred = (square(2, 2) | square(20, 20))[None] > 0
    assert irstd_metrics(pred, gt)["Fa"] == pytest.approx(9 / (H * W))
    assert irstd_metrics(pred, gt, fa_rule="basicirstd")["Fa"] == pytest.approx(9 / (H * W))
    assert irstd_metrics(pred, gt, fa_rule="dnanet")["Fa"] == 0.0


def test_dnanet_rule_keys_false_alarms_by_area():
    # per image: matched areas {9}; unmatched blobs of 9 (dropped), 4 and 4 (both counted) pixels
    gt = square(2, 2)[None]
    pred = (square(2, 2) | square(20, 20) | square(10, 20, side=2) | square(26, 2, side=2))[None] > 0
    identity = irstd_metrics(pred, gt)
    area = irstd_metrics(pred, gt, fa_rule="dnanet")
    assert identity["Fa"] == pytest.approx(17 / (H * W)) and area["Fa"] == pytest.approx(8 / (H * W))
    assert {k: v for k, v in identity.items() if k != "Fa"} == {k: v for k, v in area.items() if k != "Fa"}
    # the list of matched areas is per image: a second image's 9-pixel false alarm counts
    gt2 = np.stack([square(2, 2), np.zeros((H, W), np.uint8)])
    pred2 = np.stack([square(2, 2), square(20, 20)]) > 0
    acc = IRSTDMetrics(fa_rule="dnanet")
    acc.update(pred2, gt2)
    assert acc.false_alarm_pixels == 9
    assert match_targets(pred[0], gt[0] > 0, fa_rule="dnanet").false_alarm_pixels == 8


def test_unknown_fa_rule_is_an_error():
    with pytest.raises(ValueError, match="fa_rule 'area'"):
        IRSTDMetrics(fa_rule="area")
    with pytest.raises(ValueError, match="basicirstd"):
        irstd_metrics(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4)), fa_rule="DNANet")


def test_accumulator_pools_images_for_miou_and_averages_for_niou():
    acc = IRSTDMetrics()
    gt_a, pred_a = square(0, 0, side=10)[None], square(0, 0, side=10)[None] > 0  # IoU 1, union 100
    gt_b, pred_b = square(5, 5, side=2)[None], square(5, 5, side=1)[None] > 0  # IoU 1/4, union 4
    acc.update(pred_a, gt_a)
    acc.update(pred_b, gt_b)
    out = acc.compute()
    assert out["mIoU"] == pytest.approx(101 / 104)
    assert out["nIoU"] == pytest.approx((1 + 0.25) / 2)
    assert acc.n_images == 2 and acc.n_targets == 2 and acc.n_found == 2
    assert out == irstd_metrics(np.concatenate([pred_a, pred_b]), np.concatenate([gt_a, gt_b]))


def test_probabilities_are_thresholded_and_torch_is_accepted():
    gt = square(4, 4)[None]
    prob = torch.zeros(1, 1, H, W)
    prob[0, 0, 4:7, 4:7] = 0.9
    prob[0, 0, 20, 20] = 0.5  # not above 0.5
    out = irstd_metrics(prob, torch.from_numpy(gt))
    assert out == {"mIoU": 1.0, "nIoU": 1.0, "Pd": 1.0, "Fa": 0.0}
    assert irstd_metrics(prob, gt, threshold=0.95)["Pd"] == 0.0


def test_target_free_image_scores_zero_iou_and_no_pd():
    out = irstd_metrics(np.zeros((1, H, W), bool), np.zeros((1, H, W), np.uint8))
    assert out["mIoU"] == 0.0 and out["nIoU"] == 0.0 and out["Fa"] == 0.0
    assert math.isnan(out["Pd"])


def test_match_targets_counts():
    gt = (square(2, 2) | square(20, 20)) > 0
    pred = (square(2, 3) | square(12, 12, side=2)) > 0
    assert match_targets(pred, gt) == match_targets(pred, gt, 3.0)
    m = match_targets(pred, gt)
    assert (m.n_targets, m.n_found, m.false_alarm_pixels) == (2, 1, 4)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        intersection_union(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 5), bool))
    with pytest.raises(ValueError):
        IRSTDMetrics().compute()
