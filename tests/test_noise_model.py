"""The fitted sensor-noise model on constructed frames whose answer is known, and its synthesis."""

from __future__ import annotations

import numpy as np
import pytest

from sirst5k.method.noise_model import (
    detrend,
    draw_model_params,
    find_defects,
    fit_sequence,
    fit_temporal,
    interp_psd1d,
    interp_psd2d,
    model_field,
    models_from_arrays,
    models_to_arrays,
    pair_tiles,
    synthesize,
)

T, H, W, WIN = 4, 256, 256, 32


def windows(frames: np.ndarray) -> np.ndarray:
    """Every 32-px box of every frame as the bank keeps them: [K, T, 32, 32]."""
    t, h, w = frames.shape
    return frames.reshape(t, h // WIN, WIN, w // WIN, WIN).transpose(1, 3, 0, 2, 4).reshape(-1, t, WIN, WIN)


def white(sigma: float, seed: int = 0, level: float = 100.0) -> np.ndarray:
    return level + np.random.default_rng(seed).normal(0, sigma, (T, H, W))


def test_detrend_removes_a_plane_and_nothing_else():
    yy, xx = np.mgrid[:WIN, :WIN]
    noise = np.random.default_rng(1).normal(0, 1, (WIN, WIN))
    plane = 50 + 0.7 * yy - 1.3 * xx
    np.testing.assert_allclose(detrend(plane), 0, atol=1e-9)
    r = detrend(plane + noise)
    np.testing.assert_allclose(r, detrend(noise), atol=1e-9)
    assert abs(r.mean()) < 1e-9


def test_white_noise_of_known_sigma():
    sigma = 5.0
    frames = np.clip(np.rint(white(sigma)), 0, 255).astype(np.uint8)  # as a bank holds it: uint8
    m = fit_sequence(windows(frames), frames)
    expected = np.sqrt(sigma**2 + 1 / 12)  # plus the rounding to grey levels
    assert m.sigma == pytest.approx(expected, rel=0.03)
    assert m.sigma_temporal == pytest.approx(expected, rel=0.03)  # fresh noise every frame ...
    assert m.sigma_fixed < 0.1 * sigma  # ... none repeated
    assert m.sigma_row < 0.1 * sigma and m.sigma_col < 0.1 * sigma  # no stripes
    assert m.psd2d.mean() == pytest.approx(sigma**2, rel=0.05)  # flat spectrum at sigma^2 per bin
    assert m.psd2d[1:, 1:].std() / m.psd2d[1:, 1:].mean() < 0.2
    assert m.mean_level == pytest.approx(100, abs=0.1)
    assert len(m.defects) == 0
    assert (m.n_windows, m.n_frames, m.frame_h, m.frame_w) == (64, T, H, W)


def test_column_stripes_of_known_amplitude_are_fixed_pattern():
    rng = np.random.default_rng(2)
    amplitude, sigma = 3.0, 2.0
    stripes = rng.normal(0, amplitude, W)  # one offset per column, the same in every frame
    m = fit_sequence(windows(white(sigma, 3) + stripes))
    # a 32-px box's plane takes 2 of each box's 32 column offsets' degrees of freedom
    assert m.sigma_col == pytest.approx(amplitude * np.sqrt(30 / 32), rel=0.08)
    assert m.sigma_row < 0.15
    assert m.sigma_temporal == pytest.approx(sigma, rel=0.05)
    assert m.sigma_fixed == pytest.approx(amplitude * np.sqrt(30 / 32), rel=0.1)


def test_alternating_column_stripe_sits_at_the_nyquist_frequency():
    stripe = np.where(np.arange(W) % 2 == 0, 3.0, -3.0)
    m = fit_sequence(windows(white(2.0, 4) + stripe))
    assert m.sigma_col == pytest.approx(3.0, rel=0.03)
    assert int(np.argmax(m.col_psd)) == WIN // 2
    # a field drawn from it has the stripe along its columns, not its rows
    f = synthesize(m, (200, 300), seed=1)
    assert f.mean(axis=0).std() == pytest.approx(3.0, rel=0.25)
    assert f.mean(axis=1).std() < 0.5


def test_planted_hot_and_dead_pixels_and_a_small_target_that_is_not_one():
    frames = white(2.0, 5)
    frames[:, 50, 70] += 60  # hot
    frames[:, 120, 33] -= 60  # dead
    frames[1, 200:203, 200:203] += 60  # a 3x3 target in one frame
    frames[:, 10:12, 10:12] += 60  # a 2x2 spot in every frame: more than one pixel
    yx, level, share = find_defects(frames, sigma=2.0)
    assert yx.tolist() == [[50, 70], [120, 33]]
    np.testing.assert_allclose(level, [60, -60], atol=3)
    np.testing.assert_array_equal(share, [1.0, 1.0])
    m = fit_sequence(windows(frames), frames)
    assert m.defects.tolist() == [[50, 70], [120, 33]]
    assert find_defects(frames[:1])[0].shape == (0, 2)  # one frame proves nothing


def test_one_frame_windows_have_no_temporal_figures():
    m = fit_sequence(windows(white(2.0))[:, :1])
    assert np.isnan(m.sigma_temporal) and np.isnan(m.sigma_fixed)
    assert fit_sequence(np.zeros((0, 2, WIN, WIN))) is None
    with pytest.raises(ValueError):
        fit_sequence(np.zeros((3, WIN, WIN)))


def test_synthesis_has_the_fitted_level_at_any_size_and_replays():
    m = fit_sequence(windows(white(4.0, 6)))
    for size in ((256, 256), (97, 413), (31, 40)):
        f = synthesize(m, size, seed=11)
        assert f.shape == size and f.dtype == np.float64
        assert f.std() == pytest.approx(4.0, rel=0.15 if min(size) > 64 else 0.35)
        assert abs(f.mean()) < 0.5
    a, b = synthesize(m, (64, 80), 3), synthesize(m, (64, 80), 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, synthesize(m, (64, 80), 4))
    field = model_field(m, (64, 80), 3)
    assert field.dtype == np.float32 and field.mean() == pytest.approx(m.mean_level, abs=1)
    # refitting a drawn field gives back the model's level and spectrum
    refit = fit_sequence(windows(np.stack([synthesize(m, (H, W), s) for s in range(T)])))
    assert refit.sigma == pytest.approx(m.sigma, rel=0.05)
    assert np.abs(np.log10(refit.psd2d[1:, 1:] / m.psd2d[1:, 1:])).mean() < 0.15


def test_spectrum_interpolation_keeps_the_grid_values_and_the_mean():
    psd = np.abs(np.random.default_rng(7).normal(1, 0.3, 32))
    psd = (psd + psd[-np.arange(32)]) / 2  # symmetric, as a real field's
    np.testing.assert_allclose(interp_psd1d(psd, 32), psd)
    np.testing.assert_allclose(interp_psd1d(psd, 64)[::2], psd)
    assert interp_psd1d(psd, 640).mean() == pytest.approx(psd.mean(), rel=1e-6)
    p2 = np.outer(psd, psd)
    np.testing.assert_allclose(interp_psd2d(p2, (64, 96))[::2, ::3], p2)


def test_draws_and_storage_round_trip():
    rng = np.random.default_rng(0)
    idx, seed = draw_model_params(rng, 3)
    assert 0 <= idx < 3 and 0 <= seed < 2**63
    assert draw_model_params(np.random.default_rng(0), 3) == (idx, seed)
    with pytest.raises(ValueError):
        draw_model_params(rng, 0)
    frames = white(2.0, 8)
    frames[:, 5, 6] += 80
    models = [fit_sequence(windows(frames), frames), fit_sequence(windows(white(3.0, 9)))]
    back = models_from_arrays(models_to_arrays(models))
    for a, b in zip(models, back):
        for k in ("sigma", "sigma_temporal", "sigma_fixed", "sigma_row", "sigma_col", "mean_level"):
            assert getattr(a, k) == getattr(b, k)
        for k in ("psd2d", "row_psd", "col_psd", "defects", "defect_level", "defect_fraction"):
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert back[0].defects.tolist() == [[5, 6]] and len(back[1].defects) == 0


# ---------------------------------------------------------------- the temporal fit (model format 2)

TT, TH, TW = 6, 512, 512


def all_kept(t: int = TT, h: int = TH, w: int = TW) -> np.ndarray:
    """Every 32-px box kept for the whole sequence: [K, 3] (t0 = 0, gy, gx)."""
    gy, gx = np.meshgrid(np.arange(h // WIN), np.arange(w // WIN), indexing="ij")
    return np.stack([np.zeros(gy.size, np.int64), gy.ravel(), gx.ravel()], axis=1)


def textured_scene(seed: int = 20, std: float = 6.0) -> np.ndarray:
    """A static scene with texture at every scale (white noise blurred at 1, 3 and 10 px), std `std`."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    scene = sum(ndimage.gaussian_filter(rng.normal(0, 1, (TH, TW)), s, mode="wrap") * s for s in (1.0, 3.0, 10.0))
    return 120 + std * scene / scene.std()


def test_temporal_fit_measures_the_noise_not_the_static_scenes_texture():
    sigma = 2.0
    frames = textured_scene() + np.random.default_rng(21).normal(0, sigma, (TT, TH, TW))
    flat = fit_sequence(windows_of(frames), frames)
    m = fit_temporal(frames, all_kept(), TT, WIN, tile=128)
    assert flat.sigma > 2 * sigma  # the flat fit takes the texture for noise ...
    assert m.sigma_temporal == pytest.approx(sigma, rel=0.03)  # ... the difference of frames does not
    assert m.sigma == pytest.approx(sigma, rel=0.05)
    assert m.psd2d.shape == (128, 128) and m.fit_window == 128 and m.window == 128
    assert m.psd2d.mean() == pytest.approx(sigma**2, rel=0.05)
    assert m.psd2d[1:, 1:].std() / m.psd2d[1:, 1:].mean() < 0.2  # white: flat, texture's slope gone
    # the texture (std 6) leaves < 15 % of sigma as fixed stripes (16 independent tiles of it)
    assert m.sigma_fixed < 0.15 * sigma and m.sigma_row < 0.15 * sigma and m.sigma_col < 0.15 * sigma
    assert m.mean_level == pytest.approx(frames.mean(), abs=1)
    assert (m.n_windows, m.n_frames, m.frame_h, m.frame_w) == ((TT - 1) * 16, TT, TH, TW)


def test_temporal_fit_column_stripe_of_known_amplitude_is_fixed_and_kept():
    rng = np.random.default_rng(22)
    amplitude, sigma = 1.5, 2.0
    stripes = rng.normal(0, amplitude, TW)  # one offset per column, the same in every frame
    frames = textured_scene(23) + stripes + rng.normal(0, sigma, (TT, TH, TW))
    m = fit_temporal(frames, all_kept(), TT, WIN, tile=128)
    # a 128-px tile's plane takes 2 of its 128 column offsets' degrees of freedom
    assert m.sigma_col == pytest.approx(amplitude * np.sqrt(126 / 128), rel=0.1)
    assert m.sigma_fixed == pytest.approx(amplitude * np.sqrt(126 / 128), rel=0.1)
    assert m.sigma_row < 0.2
    assert m.sigma_temporal == pytest.approx(sigma, rel=0.05)  # the stripe cancels in the difference
    f = synthesize(m, (400, 600), seed=2)
    assert f.mean(axis=0).std() == pytest.approx(amplitude, rel=0.25)


def test_temporal_fit_planted_hot_pixel_tile_halving_and_scene_pairs():
    rng = np.random.default_rng(24)
    frames = textured_scene(25) + rng.normal(0, 2.0, (TT, TH, TW))
    frames[:, 100, 300] += 60  # hot
    m = fit_temporal(frames, all_kept(), TT, WIN, tile=128)
    assert m.defects.tolist() == [[100, 300]] and m.defect_level[0] == pytest.approx(60, abs=4)
    # only one 64-px region is stable: fewer than MIN_TILES 128-px tiles, so the tile halves
    kept = np.array([[0, gy, gx] for gy in (2, 3) for gx in (4, 5)], np.int64)
    small = fit_temporal(frames, kept, TT, WIN, tile=128, min_tiles=4)
    assert small.fit_window == 64 and small.n_windows == TT - 1
    assert small.psd2d.shape == (128, 128)  # stored on the tile grid
    assert small.sigma_temporal == pytest.approx(2.0, rel=0.1)
    # pairs across a scene cut are not used; none left: no model
    pairs = np.zeros(TT - 1, bool)
    assert fit_temporal(frames, all_kept(), TT, WIN, pairs=pairs, tile=128) is None
    pairs[2] = True
    assert fit_temporal(frames, all_kept(), TT, WIN, pairs=pairs, tile=128).n_windows == 16
    # storage keeps the format-2 field; a format-1 model has none
    back = models_from_arrays(models_to_arrays([m]))[0]
    assert back.fit_window == 128 and np.array_equal(back.psd2d, m.psd2d)
    assert "fit_window" not in models_to_arrays([fit_sequence(windows_of(frames[:, :256, :256]))])


def windows_of(frames: np.ndarray) -> np.ndarray:
    t, h, w = frames.shape
    return frames.reshape(t, h // WIN, WIN, w // WIN, WIN).transpose(1, 3, 0, 2, 4).reshape(-1, t, WIN, WIN)


def test_pair_tiles_are_frames_t_and_t_plus_1_inside_the_stable_windows():
    frames = np.random.default_rng(26).integers(0, 255, (TT, TH, TW)).astype(np.uint8)
    # one 64-px region stable in frames 1..3 only (a window of 3 frames from t0 = 1)
    kept = np.array([[1, gy, gx] for gy in (2, 3) for gx in (4, 5)], np.int64)
    a, b, tiles = pair_tiles(frames, kept, 3, WIN, tile=128, min_tiles=2)
    assert a.shape == b.shape == (2, 64, 64) and a.dtype == np.float64  # 128 holds none: halved to 64
    assert tiles.tolist() == [[1, 1, 2], [2, 1, 2]]  # pairs (1, 2) and (2, 3), tile (1, 2) of the 64 grid
    for (t, ty, tx), ta, tb in zip(tiles, a, b):
        assert np.array_equal(ta, frames[t, ty * 64:(ty + 1) * 64, tx * 64:(tx + 1) * 64])
        assert np.array_equal(tb, frames[t + 1, ty * 64:(ty + 1) * 64, tx * 64:(tx + 1) * 64])
    assert pair_tiles(frames[:1], kept, 1, WIN) is None  # one frame: no pair
    assert pair_tiles(frames, kept, 3, WIN, pairs=np.zeros(TT - 1, bool)) is None


def test_temporal_fit_median_option_ignores_a_minority_of_two_view_pairs():
    rng = np.random.default_rng(26)
    sigma = 2.0
    frames = textured_scene(27) + rng.normal(0, sigma, (TT, TH, TW))
    frames[3:] += textured_scene(28) - textured_scene(27)  # a cut: pair (2, 3) is two views
    mean = fit_temporal(frames, all_kept(), TT, WIN, tile=128)  # the default: the mean
    med = fit_temporal(frames, all_kept(), TT, WIN, tile=128, average="median")
    assert mean.sigma_temporal > 1.5 * sigma  # the mean takes the two scenes' difference for noise
    # one pair in five is two views: the median moves by under 10 % (the mean by over 50 %)
    assert med.sigma_temporal == pytest.approx(sigma, rel=0.1)
    assert med.sigma == pytest.approx(sigma, rel=0.1)
