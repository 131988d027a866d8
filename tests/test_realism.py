"""The realism figures (sirst5k.report.realism) on images whose noise is known."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from sirst5k.report import realism as R


def images(sigma: float, n: int = 3, size: int = 128, seed: int = 0, slope: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = slope * np.arange(size)[None, :]
    return 100 + ramp + rng.normal(0, sigma, (n, size, size))


def test_flat_boxes_leave_the_scene_out():
    x = images(2.0)
    x[0, :64, :64] += np.random.default_rng(1).uniform(0, 100, (64, 64))  # texture
    boxes = R.flat_boxes(x)
    assert len(boxes) == 3 * 16 - 4
    assert not ((boxes[:, 0] == 0) & (boxes[:, 1] < 64) & (boxes[:, 2] < 64)).any()
    assert len(R.all_boxes(x.shape)) == 48
    mask = np.zeros((1, 128, 128))
    mask[0, :64] = 1
    assert R.inside_boxes(mask).tolist() == [[0, y, x] for y in (0, 32) for x in (0, 32, 64, 96)]


def test_levels_of_white_noise():
    s = R.summarize(images(3.0))
    # the 5x5 median follows the noise a little: its residual keeps ~0.9 of a white sigma
    assert 0.8 * 3.0 < s.highpass_median < 1.0 * 3.0
    assert s.sigma_median == pytest.approx(3.0, rel=0.05)
    assert s.psd.mean() == pytest.approx(9.0, rel=0.1) and s.psd.std() / s.psd.mean() < 0.15  # flat at sigma^2
    doubled = R.summarize(images(6.0, seed=1))
    assert doubled.highpass_median / s.highpass_median == pytest.approx(2.0, rel=0.05)
    assert R.log_psd_distance(doubled.psd, s.psd) == pytest.approx(np.log10(4), abs=0.03)
    assert R.log_psd_distance(s.psd, s.psd) == 0


def test_median_psd_is_the_typical_windows_spectrum():
    x = images(2.0, n=8)
    boxes = R.all_boxes(x.shape)
    mean = R.summarize(x, boxes=boxes, sigma=False).psd
    med = R.median_psd(x, boxes)
    assert med.shape == mean.shape == (16,)
    # white Gaussian noise: both are sigma^2 in every ring (the median of an exponential bin / ln 2),
    # but the first: the windows' plane takes part of its bins, which are then not exponential
    assert np.abs(med[1:] / 4.0 - 1).max() < 0.15 and np.abs(mean[1:] / 4.0 - 1).max() < 0.1
    assert 0.7 < med[0] / 4.0 < 0.95 and 0.7 < mean[0] / 4.0 < 0.95
    # one window in ten with 5x the noise: the mean spectrum follows it, the median does not
    loud = x.copy()
    for i, y, xx in boxes[::10]:
        loud[i, y:y + 32, xx:xx + 32] = 100 + 5 * (x[i, y:y + 32, xx:xx + 32] - 100)
    assert R.summarize(loud, boxes=boxes, sigma=False).psd.mean() > 3.0 * 4.0
    assert np.abs(R.median_psd(loud, boxes) / med - 1).max() < 0.2
    assert np.isnan(R.median_psd(x, np.zeros((0, 3), np.int64))).all()


def test_a_slope_is_not_noise_but_stripes_are():
    base = R.summarize(images(2.0))
    sloped = R.summarize(images(2.0, slope=0.2))  # 25 grey levels across a window, within the flat test
    assert R.log_psd_distance(sloped.psd, base.psd) < 0.03
    striped = images(2.0) + np.where(np.arange(128) % 2 == 0, 2.0, -2.0)[None, None, :]
    s = R.summarize(striped)
    assert s.col_spectrum[-1] > 20 * base.col_spectrum[-1]  # the column means' spectrum shows it at Nyquist
    assert s.row_spectrum[-1] < 3 * base.row_spectrum[-1]


@pytest.mark.skipif(importlib.util.find_spec("pywt") is None, reason="PyWavelets not installed")
def test_estimate_sigma_is_skimages():
    from skimage.restoration import estimate_sigma

    x = images(2.5, n=1, size=97)[0] + np.linspace(0, 40, 97)[None, :]
    assert R.estimate_sigma(x) == pytest.approx(estimate_sigma(x, channel_axis=None), rel=1e-9)


def test_resample_frames_and_stats(tmp_path):
    frames = [images(4.0, n=1, size=256, seed=3)[0]]
    small = R.resample_frames(frames, (0.5, 0.25))
    assert small[0].shape == (128, 64)
    assert small[0].std() < 0.5 * frames[0].std()  # shrinking averages the noise away
    groups = {"original": R.summarize(images(2.0)), "transfer": R.summarize(images(3.0, seed=2)),
              "frames": R.summarize_many(small + [images(2.0, n=1, size=96, seed=4)[0]])}
    stats = R.realism_stats(groups, reference="original", sensor="frames")
    json.dumps(stats)  # JSON-ready
    t = stats["groups"]["transfer"]
    assert t["vs_reference"]["highpass_ratio"] == pytest.approx(1.5, rel=0.05)
    assert t["vs_reference"]["log_psd_ratio"] == pytest.approx(np.log10(2.25), abs=0.05)
    assert "vs_reference" not in stats["groups"]["original"]
    assert len(stats["frequencies"]) == 16 and stats["window"] == 32
    rows = R.realism_table(stats)
    assert [r[0] for r in rows] == ["original", "transfer", "frames"] and len(rows[0]) == len(R.TABLE_HEADERS)
    png = R.psd_plot(stats, tmp_path / "psd.png")
    from PIL import Image

    assert Image.open(png).size == (860, 460)


def test_no_flat_window():
    s = R.summarize(np.random.default_rng(0).uniform(0, 255, (1, 64, 64)))
    assert s.n_windows == 0 and np.isnan(s.highpass_median) and np.isnan(s.psd).all()
    assert R.realism_stats({"x": s}, reference=None)["groups"]["x"]["highpass_std"] is None


def test_merge_of_shards_is_the_whole():
    x = images(3.0, n=4, seed=5)
    whole = R.summarize(x)
    parts = R.merge([R.summarize(x[:1]), R.summarize(x[1:])])
    assert parts.n_images == 4 and parts.n_windows == whole.n_windows
    np.testing.assert_allclose(parts.psd, whole.psd, rtol=1e-9)
    np.testing.assert_allclose(np.sort(parts.highpass_std), np.sort(whole.highpass_std))
    assert R.merge([R.summarize(np.random.default_rng(0).uniform(0, 255, (1, 64, 64)))]).n_windows == 0


def test_highpass_in_the_boxes_is_the_whole_images():
    """`highpass_boxes` (what `summarize` uses) filters only around the windows: the same numbers,
    bit for bit, as the whole images' high-pass cut there, for uint8 and float, at the borders too."""
    x = images(3.0, n=2, size=100, seed=9) + np.random.default_rng(2).uniform(0, 30, (2, 100, 100))
    boxes = np.array([[0, 0, 0], [1, 68, 68], [1, 0, 40], [0, 50, 3]])
    for batch in (x, np.clip(x, 0, 255).astype(np.uint8)):
        assert np.array_equal(R.highpass_boxes(batch, boxes), R.cut(R.highpass(batch), boxes))
    assert R.highpass_boxes(x, np.zeros((0, 3), np.int64)).shape == (0, 32, 32)

