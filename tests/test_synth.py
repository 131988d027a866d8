"""The built-in synthetic infrared source: determinism, labels, targets, sequences, split."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from skimage.measure import label, regionprops

from sirst5k.method import synth
from sirst5k.method.noise_bank import select_windows, window_stats
from sirst5k.method.rng import generator


def test_sample_is_deterministic():
    image, mask = synth.make_labelled_sample(7, 3)
    again_image, again_mask = synth.make_labelled_sample(7, 3)
    assert image.tobytes() == again_image.tobytes() and mask.tobytes() == again_mask.tobytes()
    assert image.dtype == mask.dtype == np.uint8 and image.shape == mask.shape == (256, 256)
    assert synth.make_labelled_sample(7, 4)[0].tobytes() != image.tobytes()
    assert synth.make_labelled_sample(8, 3)[0].tobytes() != image.tobytes()
    # Replaying from the drawn parameters gives the same bytes.
    replay_image, replay_mask = synth.render_sample(synth.sample_params(7, 3))
    assert replay_image.tobytes() == image.tobytes() and replay_mask.tobytes() == mask.tobytes()


def test_sample_size_tuple():
    image, mask = synth.make_labelled_sample(0, 0, size=(120, 200))
    assert image.shape == mask.shape == (120, 200)
    with pytest.raises(ValueError):
        synth.make_labelled_sample(0, 0, size=8)


def test_targets_and_masks():
    counts = []
    extents = []
    for index in range(200):
        params = synth.sample_params(11, index)
        image, mask = synth.render_sample(params)
        assert set(np.unique(mask).tolist()) <= {0, 255}
        # Not within 1 px of the border.
        assert not mask[0].any() and not mask[-1].any() and not mask[:, 0].any() and not mask[:, -1].any()
        components = regionprops(label(mask > 0, connectivity=2))
        # Targets never touch, even diagonally: one component per drawn target.
        assert len(components) == len(params.targets) >= 1
        boxes = sorted(c.bbox for c in components)
        assert boxes == sorted((t.y0, t.x0, t.y0 + t.height, t.x0 + t.width) for t in params.targets)
        counts.append(len(components))
        for c in components:
            y0, x0, y1, x1 = c.bbox
            extents.append((y1 - y0, x1 - x0))
    extents = np.array(extents)
    assert extents.min() >= 1 and extents.max() <= 9
    assert len(np.unique(extents.max(axis=1))) == 9  # every size from 1 to 9 px occurs
    assert 1.2 <= np.mean(counts) <= 1.8
    assert max(counts) <= 4


def test_targets_stand_out_of_their_surroundings():
    contrasts = []
    for index in range(60):
        params = synth.sample_params(5, index)
        image, mask = synth.render_sample(params)
        for t in params.targets:
            ys = slice(max(t.y0 - 3, 0), t.y0 + t.height + 3)
            xs = slice(max(t.x0 - 3, 0), t.x0 + t.width + 3)
            inside = mask[ys, xs] > 0
            window = image[ys, xs].astype(float)
            contrasts.append(window[inside].max() - np.median(window[~inside]))
    contrasts = np.array(contrasts)
    assert np.mean(contrasts > 0) > 0.9
    assert np.mean(contrasts < 15) > 0.1  # some targets are dim
    assert np.mean(contrasts > 40) > 0.3  # and some bright


def test_sequence_is_deterministic_and_prefix_stable():
    frames = synth.make_sequence(3, 1, 6, size=(96, 128))
    assert frames.dtype == np.uint8 and frames.shape == (6, 96, 128)
    assert synth.make_sequence(3, 1, 6, size=(96, 128)).tobytes() == frames.tobytes()
    assert synth.make_sequence(3, 2, 6, size=(96, 128)).tobytes() != frames.tobytes()
    # Frame t does not depend on how many frames follow it.
    np.testing.assert_array_equal(synth.make_sequence(3, 1, 4, size=(96, 128)), frames[:4])
    with pytest.raises(ValueError):
        synth.make_sequence(3, 1, 0)


def test_sequence_noise_model():
    """Fixed pattern identical in every frame; temporal noise fresh, with constant statistics."""
    params = synth.sequence_params(2, 0, 6, size=128)
    # Pin the view so that every frame sees the same radiance.
    params = dataclasses.replace(params, drift_y=0.0, drift_x=0.0, level_drift=0.0)
    frames = synth.render_sequence(params).astype(float)
    canvas = synth.render_scene(params.scene, params.seed, params.key)
    p = synth.DRIFT_PAD
    view = canvas[p : p + 128, p : p + 128]
    gain, offset = synth.fixed_pattern(params.scene, generator(2, synth.STAGE, f"{params.key}/pattern"), 128, 128)
    clean = view * gain + offset
    ok = (clean > 20) & (clean < 235)  # away from clipping
    residuals = [(f - clean)[ok] for f in frames]
    expected = np.sqrt(params.scene.noise_sigma**2 + 1 / 12)  # Gaussian plus rounding
    for r in residuals:
        assert abs(r.mean()) < 0.1
        assert r.std() == pytest.approx(expected, rel=0.05)
    # Fresh per frame: consecutive residuals are uncorrelated.
    assert abs(np.corrcoef(residuals[0], residuals[1])[0, 1]) < 0.05
    # The stripes are there: column means of the time-averaged frame follow the fixed offset.
    column_offset = offset.mean(axis=0)
    drift_free = (frames.mean(axis=0) - view * gain).mean(axis=0)
    assert np.corrcoef(column_offset, drift_free)[0, 1] > 0.95


def test_a_labelled_image_has_the_noise_of_pattern_plus_temporal_noise():
    """`expose_once` (one draw per pixel) gives a labelled image the noise that the sensor's
    fixed pattern plus its temporal noise (`fixed_pattern` + `_expose`, three draws) give: the
    same per-pixel variance, rising with the radiance as the gain's does, and the same stripes."""
    scene = dataclasses.replace(synth.sample_params(4, 0).scene, gain_sigma=0.02, offset_sigma=0.8,
                                noise_sigma=1.5, column_sigma=1.2, row_sigma=0.5)
    h, w = 512, 512
    radiance = np.where(np.arange(w)[None, :] < w // 2, 40.0, 200.0) * np.ones((h, 1))

    def measured(image):
        image = image.astype(float)
        left, right = image[:, : w // 2], image[:, w // 2:]
        # pixel noise: each half minus its column and row means; stripes: the column means' spread
        pixel = [np.std(x - x.mean(axis=0) - x.mean(axis=1, keepdims=True) + x.mean()) for x in (left, right)]
        return pixel, np.std(left.mean(axis=0)), np.std(image.mean(axis=1) - image.mean())

    once = measured(synth.expose_once(radiance, scene, generator(0, "t", "once")))
    gain, offset = synth.fixed_pattern(scene, generator(0, "t", "pattern"), h, w)
    apart = measured(synth._expose(radiance, gain, offset, scene.noise_sigma, generator(0, "t", "noise")))
    for level, got, before in zip((40.0, 200.0), once[0], apart[0]):
        want = np.sqrt((scene.gain_sigma * level) ** 2 + scene.offset_sigma**2 + scene.noise_sigma**2 + 1 / 12)
        assert got == pytest.approx(want, rel=0.03) and before == pytest.approx(want, rel=0.03)
    assert once[1] == pytest.approx(scene.column_sigma, rel=0.15) and apart[1] == pytest.approx(scene.column_sigma, rel=0.15)
    assert once[2] == pytest.approx(scene.row_sigma, rel=0.15) and apart[2] == pytest.approx(scene.row_sigma, rel=0.15)


def test_noise_bank_finds_sky_not_clutter():
    window = 32
    kept_total = sky_total = sky_kept = 0
    cluttered_seen = 0
    for seq_index in range(6):
        params = synth.sequence_params(0, seq_index, 10, size=(256, 320))
        frames = synth.render_sequence(params)
        var, mean = window_stats(frames, window, window)
        kept = select_windows(var, mean)  # the paper's defaults, whole sequence
        kept_set = {(int(y), int(x)) for _, y, x in kept}
        kept_total += len(kept)
        horizon, clutter_top = synth.frame_skyline(params)
        for y in range(var.shape[1]):
            for x in range(var.shape[2]):
                cols = slice(x * window, (x + 1) * window)
                top, bottom = y * window, (y + 1) * window
                if clutter_top[:, cols].min() >= bottom:  # sky in every frame
                    sky_total += 1
                    sky_kept += (y, x) in kept_set
                elif clutter_top[:, cols].max() <= top:  # clutter or ground in every frame
                    cluttered_seen += 1
                    assert (y, x) not in kept_set, f"sequence {seq_index}: cluttered window {(y, x)} kept"
    assert kept_total > 100
    assert cluttered_seen > 50
    assert sky_kept / sky_total > 0.6


def test_split_ids():
    train, test = synth.split_ids(1327, seed=0)
    assert len(train) == 663 and len(test) == 664
    assert not set(train) & set(test)
    assert sorted(train + test) == [f"{i:06d}" for i in range(1, 1328)]
    assert train == sorted(train) and test == sorted(test)
    assert synth.split_ids(1327, seed=0) == (train, test)
    assert synth.split_ids(1327, seed=1)[0] != train
    assert synth.image_id(0) == "000001"
    assert synth.split_ids(0) == ([], [])
