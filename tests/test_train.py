"""The networks (U-Net, ACM), seeded training with augmentation, on a few constructed samples."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from sirst5k.evaluate.acm import ACMUNet, AsymBiChaFuse
from sirst5k.evaluate.train import (
    ArraySamples,
    TrainConfig,
    apply_symmetries,
    draw_crops,
    draw_mixed_schedule,
    draw_schedule,
    draw_symmetries,
    lr_factor,
    predict,
    soft_iou_bce_loss,
    soft_iou_loss,
    to_tensors,
    train_and_score,
    train_model,
)
from sirst5k.evaluate.unet import UNet, count_parameters

SIZE = 64


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread (and the machine's cores are shared)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def blob_samples(seed: int, n: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Noisy backgrounds with one or two bright 3x3 targets each; masks mark the targets."""
    gen = np.random.default_rng(seed)
    images = gen.normal(80, 6, size=(n, size, size)).clip(0, 255)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        for _ in range(gen.integers(1, 3)):
            y, x = gen.integers(2, size - 5, size=2)
            images[i, y : y + 3, x : x + 3] += 90
            masks[i, y : y + 3, x : x + 3] = 255
    return images.clip(0, 255).astype(np.uint8), masks


TINY = TrainConfig(steps=20, batch_size=4, size=SIZE, crop=48, lr=5e-3, warmup=2, seed=3, eval_batch=8)


def test_unet_shapes_and_size():
    model = UNet()
    assert 100_000 <= count_parameters(model) <= 300_000
    for h, w in ((64, 64), (37, 50)):  # odd sizes are padded and cropped back
        assert model(torch.zeros(2, 1, h, w)).shape == (2, 1, h, w)
    # the output bias starts at the 1 % prior
    assert torch.sigmoid(model.head.bias).item() == pytest.approx(0.01)


def test_schedule_is_seeded_and_covers_every_sample_each_epoch():
    order = draw_schedule(7, 10, 5, 4)
    assert order.shape == (5, 4)
    np.testing.assert_array_equal(order, draw_schedule(7, 10, 5, 4))
    assert not np.array_equal(order, draw_schedule(8, 10, 5, 4))
    assert sorted(order.ravel()[:10]) == list(range(10))
    crops = draw_crops(7, (64, 64), 48, 5, 4)
    assert crops.shape == (5, 4, 2) and crops.min() >= 0 and crops.max() <= 16
    assert (draw_crops(7, (64, 64), 100, 5, 4) == 0).all()


def test_lr_schedule_warms_up_then_decays():
    f = [lr_factor(s, 100, 10) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[9:], f[10:]))
    assert f[-1] == pytest.approx(0.01, abs=0.01)


def test_downsampling_keeps_a_one_pixel_target_as_a_partial_target():
    masks = np.zeros((1, 8, 8), np.uint8)
    masks[0, 2, 3] = 255
    x, y = to_tensors(np.zeros((1, 8, 8), np.uint8), masks, 4, "cpu")
    assert x.shape == y.shape == (1, 1, 4, 4)
    assert y.sum().item() == pytest.approx(0.25)
    assert y[0, 0, 1, 1].item() == pytest.approx(0.25)


def test_loss_is_low_for_a_confident_correct_prediction():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:4, 2:4] = 1
    good = soft_iou_bce_loss((target * 2 - 1) * 20, target)
    bad = soft_iou_bce_loss(-(target * 2 - 1) * 20, target)
    assert good.item() < 0.05 < 1.0 < bad.item()


def test_tiny_training_is_finite_learns_and_repeats():
    train = ArraySamples(*blob_samples(0, 12))
    test = ArraySamples(*blob_samples(1, 6))
    a = train_and_score(train, test, TINY, "cpu", threads=1)
    assert len(a.losses) == TINY.steps and all(math.isfinite(v) for v in a.losses)
    assert np.mean(a.losses[-5:]) < np.mean(a.losses[:5])
    assert set(a.metrics) == {"mIoU", "nIoU", "Pd", "Fa"}
    b = train_and_score(train, test, TINY, "cpu", threads=1)
    assert a.metrics == b.metrics
    assert a.losses == b.losses
    c = train_and_score(train, test, replace(TINY, seed=4), "cpu", threads=1)
    assert c.losses != a.losses


def test_predict_returns_probabilities_at_stored_size(device):
    model = UNet().to(device)
    images, _ = blob_samples(2, 3)
    prob = predict(model, images, size=32, device=device)
    assert prob.shape == (3, SIZE, SIZE)
    assert float(prob.min()) >= 0.0 and float(prob.max()) <= 1.0


def test_acm_shapes_size_and_fusion():
    model = ACMUNet()
    assert 350_000 <= count_parameters(model) <= 450_000  # the paper's ~0.4M (ResNet-20 setting)
    model.eval()
    for h, w in ((64, 64), (37, 50)):  # padded to a multiple of 16 and cropped back
        assert model(torch.zeros(2, 1, h, w)).shape == (2, 1, h, w)
    fuse = AsymBiChaFuse(8).eval()
    high, low = torch.rand(2, 8, 6, 6), torch.rand(2, 8, 6, 6)
    assert fuse(high, low).shape == (2, 8, 6, 6)


def test_soft_iou_loss():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:4, 2:4] = 1
    assert soft_iou_loss((target * 2 - 1) * 30, target).item() < 0.01
    assert soft_iou_loss(-(target * 2 - 1) * 30, target).item() > 0.9


def test_mixed_schedule_balances_pools_and_repeats():
    order = draw_mixed_schedule(1, 10, 90, 50, 8, 0.5)
    assert order.shape == (50, 8)
    np.testing.assert_array_equal(order, draw_mixed_schedule(1, 10, 90, 50, 8, 0.5))
    first = (order < 10).mean()
    assert 0.4 < first < 0.6  # half the slots from the 10 originals, against 10 % unbalanced
    assert set(order[order < 10].ravel()[:10].tolist()) == set(range(10))  # epochs within the pool
    np.testing.assert_array_equal(draw_mixed_schedule(1, 10, 90, 5, 4, None), draw_schedule(1, 100, 5, 4))
    assert (draw_mixed_schedule(1, 10, 90, 5, 4, 1.0) < 10).all()


def test_symmetries_cover_the_eight_and_keep_masks_aligned():
    sym = draw_symmetries(0, 100, 8, square=True)
    assert {tuple(s) for s in sym.reshape(-1, 2).tolist()} == {(f, k) for f in (0, 1) for k in range(4)}
    assert set(draw_symmetries(0, 20, 8, square=False)[..., 1].ravel().tolist()) <= {0, 2}
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4)
    out = apply_symmetries(x, np.array([[1, 1], [0, 0]]))
    assert torch.equal(out[0, 0], torch.rot90(torch.flip(x[0, 0], dims=(-1,)), 1))
    assert torch.equal(out[1], x[1])


def test_acm_tiny_training_repeats_and_checkpoints():
    train = ArraySamples(*blob_samples(0, 12))
    config = replace(TINY, model="acm", steps=4, batch_size=2, crop=32)
    seen = []
    _, a = train_model(train, config, "cpu", checkpoint=lambda step, m: seen.append((step, m.training)), every=3)
    assert seen == [(3, False), (4, False)]
    _, b = train_model(train, config, "cpu")
    assert a == b and all(math.isfinite(v) for v in a)
