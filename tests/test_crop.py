"""Training crops and test-time padding (`method.crop`): BasicIRSTD's conventions, replayable."""

import numpy as np
import pytest

from sirst5k.method.crop import CropBox, apply_crop, batch_shape, draw_crop, pad_to, padded_size


def _rng(i: int = 0) -> np.random.Generator:
    return np.random.default_rng(i)


def test_target_crop_always_holds_a_target_pixel_even_at_the_borders():
    mask = np.zeros((96, 135), np.uint8)
    mask[0, 0] = 1          # corner pixel
    mask[95, 134] = 1       # opposite corner
    mask[40:43, 70:73] = 1  # a 3x3 target
    for i in range(300):
        box = draw_crop(mask, 64, 1.0, _rng(i))
        assert box.target
        assert apply_crop(mask, box).any(), box
        assert 0 <= box.y0 <= 96 - 64 and 0 <= box.x0 <= 135 - 64


def test_target_pixel_is_chosen_among_all_of_them():
    mask = np.zeros((200, 200), np.uint8)
    mask[5, 5] = 1
    mask[190, 190] = 1
    hits = {"a": 0, "b": 0}
    for i in range(200):
        box = draw_crop(mask, 32, 1.0, _rng(i))
        hits["a" if box.y0 <= 5 < box.y0 + 32 else "b"] += 1
    assert hits["a"] > 50 and hits["b"] > 50


def test_share_of_target_placed_crops_follows_pos_prob():
    mask = np.zeros((256, 256), np.uint8)
    mask[100:102, 100:102] = 1
    placed = [draw_crop(mask, 64, 0.5, _rng(i)).target for i in range(2000)]
    assert 0.45 < np.mean(placed) < 0.55


def test_no_target_falls_back_to_a_uniform_crop_and_reaches_every_start():
    mask = np.zeros((10, 12), np.uint8)
    boxes = [draw_crop(mask, 8, 1.0, _rng(i)) for i in range(400)]
    assert not any(b.target for b in boxes)
    assert {b.y0 for b in boxes} == {0, 1, 2}
    assert {b.x0 for b in boxes} == {0, 1, 2, 3, 4}


def test_small_image_is_zero_padded_bottom_right_like_basicirstd():
    image = np.full((3, 96, 135), 7, np.uint8)
    mask = np.zeros((96, 135), np.uint8)
    box = draw_crop(mask, 256, 0.5, _rng(1))
    assert (box.y0, box.x0, box.pad_h, box.pad_w) == (0, 0, 160, 121)
    out = apply_crop(image, box)
    assert out.shape == (3, 256, 256) and out.dtype == np.uint8
    assert (out[:, :96, :135] == 7).all() and out[:, 96:].sum() == 0 and out[:, :, 135:].sum() == 0


def test_crop_replays_from_its_box_and_the_same_draw():
    rng_image = np.random.default_rng(5).integers(0, 255, (2, 100, 120), dtype=np.uint8)
    mask = np.zeros((100, 120), np.uint8)
    mask[50, 60] = 1
    a, b = draw_crop(mask, 48, 0.5, _rng(9)), draw_crop(mask, 48, 0.5, _rng(9))
    assert a == b
    assert np.array_equal(apply_crop(rng_image, a), rng_image[:, a.y0:a.y0 + 48, a.x0:a.x0 + 48])


def test_box_for_another_size_is_refused():
    with pytest.raises(ValueError, match="another image size"):
        apply_crop(np.zeros((300, 300)), CropBox(0, 0, 256, pad_h=10))
    with pytest.raises(ValueError):
        draw_crop(np.zeros((10, 10)), 0, 0.5, _rng())
    with pytest.raises(ValueError):
        draw_crop(np.zeros((10, 10)), 4, 1.5, _rng())


def test_test_time_padding_to_multiples_of_32():
    assert padded_size(96, 135) == (96, 160)
    assert padded_size(388, 456) == (416, 480)
    assert batch_shape([(96, 135), (388, 200)]) == (416, 224)
    x = np.ones((1, 96, 135), np.float32)
    y = pad_to(x, padded_size(96, 135))
    assert y.shape == (1, 96, 160) and y[..., 135:].sum() == 0 and y[..., :135].sum() == 96 * 135
    with pytest.raises(ValueError):
        pad_to(x, (64, 64))
