"""Noise-bank selection: window statistics, the keep rule, patch extraction, and real frames."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sirst5k.method.noise_bank import (
    STAT_FIELDS,
    extract_patches,
    grid_shape,
    kept_stats,
    select_windows,
    temporal_length,
    window_max,
    window_min,
    window_stats,
)


def _reference_stats(frames: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    t, h, w = frames.shape
    ys = range(0, h - window + 1, stride)
    xs = range(0, w - window + 1, stride)
    boxes = [[[frames[i, y : y + window, x : x + window] for x in xs] for y in ys] for i in range(t)]
    var = np.array([[[np.var(b) for b in row] for row in fr] for fr in boxes]).reshape(t, len(ys), len(xs))
    mean = np.array([[[np.mean(b) for b in row] for row in fr] for fr in boxes]).reshape(t, len(ys), len(xs))
    return var, mean


# ---------------------------------------------------------------------------------------------
# window_stats


@pytest.mark.parametrize(
    ("h", "w", "window", "stride", "grid"),
    [(96, 80, 32, 32, (3, 2)), (96, 80, 32, 16, (5, 4)), (40, 37, 8, 5, (7, 6))],
)
def test_window_stats_matches_numpy(h, w, window, stride, grid):
    frames = np.random.default_rng(0).integers(0, 256, (3, h, w), dtype=np.uint8)
    var, mean = window_stats(frames, window, stride)
    assert var.shape == mean.shape == (3, *grid)
    assert var.dtype == np.float64
    ref_var, ref_mean = _reference_stats(frames, window, stride)
    np.testing.assert_allclose(var, ref_var, rtol=0, atol=1e-6)
    np.testing.assert_allclose(mean, ref_mean, rtol=0, atol=1e-6)


def test_window_stats_includes_last_full_window():
    # H = 96 with window 32 has three full rows; the original script's range(0, 96 - 32, 32) has two.
    frames = np.zeros((1, 96, 64), np.uint8)
    frames[0, 64:96, 32:64] = np.indices((32, 32)).sum(axis=0) % 2 * 14 + 100  # checkerboard
    var, mean = window_stats(frames, 32, 32)
    assert var.shape == (1, 3, 2)
    assert var[0, 2, 1] == pytest.approx(49.0)
    assert mean[0, 2, 1] == pytest.approx(107.0)
    assert var[0, :2].max() == 0


def test_window_stats_float_input_and_small_frames():
    frames = np.random.default_rng(1).normal(100, 5, (2, 33, 70)).astype(np.float32)
    var, mean = window_stats(frames, 32, 32)
    ref_var, ref_mean = _reference_stats(frames.astype(np.float64), 32, 32)
    np.testing.assert_allclose(var, ref_var, atol=1e-6)
    np.testing.assert_allclose(mean, ref_mean, atol=1e-6)
    var, mean = window_stats(frames[:, :20], 32, 32)  # shorter than one window
    assert var.shape == mean.shape == (2, 0, 2)


def test_window_stats_tensor_on_device(device):
    frames = np.random.default_rng(2).integers(0, 256, (4, 64, 96), dtype=np.uint8)
    var, mean = window_stats(torch.from_numpy(frames).to(device), 32, 32)
    assert isinstance(var, torch.Tensor) and var.device.type == device.type
    ref_var, ref_mean = window_stats(frames, 32, 32)
    np.testing.assert_allclose(var.cpu().numpy(), ref_var, atol=1e-9)
    np.testing.assert_allclose(mean.cpu().numpy(), ref_mean, atol=1e-9)


def test_grid_and_length_validation():
    assert grid_shape(96, 95, 32, 32) == (3, 2)
    assert temporal_length(7, 0) == 7 and temporal_length(7, 3) == 3
    with pytest.raises(ValueError):
        grid_shape(64, 64, 32, 0)
    with pytest.raises(ValueError):
        temporal_length(5, -1)
    with pytest.raises(ValueError):
        window_stats(np.zeros((64, 64), np.uint8), 32, 32)


# ---------------------------------------------------------------------------------------------
# select_windows on constructed frames


def _checker(a: float, b: float) -> np.ndarray:
    return np.where(np.indices((32, 32)).sum(axis=0) % 2 == 0, a, b)


def _three_level(base: float, a: float) -> np.ndarray:
    """A quarter at base + a, a quarter at base - a, the rest at base: variance exactly a*a/2."""
    box = np.full((32, 32), base)
    box[:8] += a
    box[8:16] -= a
    return box


@pytest.fixture
def constructed() -> np.ndarray:
    """Four frames, a 2 x 5 grid of 32-px windows, each window built to pass or fail one test."""
    rng = np.random.default_rng(3)
    frames = np.empty((4, 64, 160))
    noisy = lambda: rng.integers(0, 256, (32, 32))  # noqa: E731
    for t in range(4):
        frames[t, :32, 0:32] = _checker(93, 107)  # var 49, mean 100: kept
        frames[t, :32, 32:64] = noisy()  # var ~5,000: rejected by max_var
        frames[t, :32, 64:96] = 0  # flat but mean 0: rejected by min_mean (strict)
        frames[t, :32, 96:128] = 80 + 10 * t  # means 80..110, var of means 125: rejected
        frames[t, :32, 128:160] = _checker(100, 100 if t < 2 else 114)  # vars 0,0,49,49: var 600.25
        # Row 1: stable in frames 1 and 2 only; elsewhere noise.
        frames[t, 32:, 0:32] = _checker(95, 105) if t in (1, 2) else noisy()
        for x in range(32, 160, 32):
            frames[t, 32:, x : x + 32] = noisy()
    return frames.astype(np.uint8)


def _as_set(kept: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(int(v) for v in row) for row in kept}


def test_select_whole_sequence(constructed):
    var, mean = window_stats(constructed, 32, 32)
    kept = select_windows(var, mean)
    assert kept.dtype == np.int64 and kept.shape == (1, 3)
    assert _as_set(kept) == {(0, 0, 0)}
    # Each rejection is the one intended: relaxing its own threshold keeps the window.
    assert (0, 0, 2) in _as_set(select_windows(var, mean, min_mean=-1))
    assert (0, 0, 3) in _as_set(select_windows(var, mean, max_seq_mean=125))
    assert (0, 0, 3) not in _as_set(select_windows(var, mean, max_seq_mean=124.99))
    assert (0, 0, 4) in _as_set(select_windows(var, mean, max_seq_var=600.25))
    assert (0, 0, 4) not in _as_set(select_windows(var, mean, max_seq_var=600.2))


def test_select_temporal_two(constructed):
    var, mean = window_stats(constructed, 32, 32)
    kept = select_windows(var, mean, temporal=2)
    expected = {
        (0, 0, 0), (1, 0, 0), (2, 0, 0),  # flat everywhere
        (0, 0, 3), (1, 0, 3), (2, 0, 3),  # consecutive means 10 apart: var 25 <= 50
        (0, 0, 4), (2, 0, 4),  # frames 0-1 both flat, frames 2-3 both var 49
        (1, 1, 0),  # stable only in frames 1 and 2
    }
    assert _as_set(kept) == expected
    assert [tuple(r) for r in kept.tolist()] == sorted(expected)  # lexicographic (t0, gy, gx)
    stats = kept_stats(var, mean, kept, 2)
    assert stats.shape == (len(kept), len(STAT_FIELDS))
    for (t0, gy, gx), row in zip(kept, stats):
        v, m = var[t0 : t0 + 2, gy, gx], mean[t0 : t0 + 2, gy, gx]
        np.testing.assert_allclose(row, [v.mean(), m.mean(), np.var(v), np.var(m)])


def test_select_temporal_longer_than_sequence(constructed):
    var, mean = window_stats(constructed, 32, 32)
    assert select_windows(var, mean, temporal=5).shape == (0, 3)
    assert select_windows(var, mean, temporal=4).tolist() == [[0, 0, 0]]
    with pytest.raises(ValueError):
        select_windows(var, mean, temporal=-1)


def test_strict_and_non_strict_boundaries():
    row = np.concatenate([_three_level(100, 10), _checker(93, 107), np.full((32, 32), 100.0)], axis=1)
    frames = np.stack([row, row])
    var, mean = window_stats(frames, 32, 32)
    np.testing.assert_array_equal(var[0, 0], [50, 49, 0])  # exact: integer pixels, 32 x 32
    kept = _as_set(select_windows(var, mean))
    assert kept == {(0, 0, 1), (0, 0, 2)}  # var == max_var is rejected
    assert _as_set(select_windows(var, mean, min_mean=100)) == set()  # mean == min_mean is rejected
    assert len(select_windows(var, mean, min_mean=99.5)) == 2

    # Sequence tests are non-strict: exactly at the threshold passes.
    v = np.array([10.0, 20.0]).reshape(2, 1, 1)
    m = np.array([100.0, 110.0]).reshape(2, 1, 1)
    assert len(select_windows(v, m, max_seq_var=25, max_seq_mean=25)) == 1
    assert len(select_windows(v, m, max_seq_var=24.999, max_seq_mean=25)) == 0
    assert len(select_windows(v, m, max_seq_var=25, max_seq_mean=24.999)) == 0
    # NaN statistics fail.
    assert len(select_windows(np.full((2, 1, 1), np.nan), m)) == 0


def test_select_accepts_tensors(constructed):
    var, mean = window_stats(torch.from_numpy(constructed), 32, 32)
    assert _as_set(select_windows(var, mean)) == {(0, 0, 0)}


def test_window_max_matches_numpy():
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (3, 37, 50), dtype=np.uint8)
    for window, stride in ((8, 8), (8, 5), (16, 7)):
        got = window_max(frames, window, stride)
        gy, gx = grid_shape(37, 50, window, stride)
        assert got.shape == (3, gy, gx)
        for t in range(3):
            for i in range(gy):
                for j in range(gx):
                    box = frames[t, i * stride : i * stride + window, j * stride : j * stride + window]
                    assert got[t, i, j] == box.max()


def test_max_peak_rejects_a_small_bright_spot_the_variance_test_lets_through():
    # flat sky with faint noise; one frame holds a 3x3 spot 40 grey levels above it
    rng = np.random.default_rng(5)
    frames = (100 + rng.integers(-1, 2, (4, 64, 64))).astype(np.uint8)
    frames[2, 40:43, 8:11] += 40
    var, mean = window_stats(frames, 32, 32)
    assert var[2, 1, 0] < 50  # 9 of 1,024 pixels at +40 add only ~14 to the variance
    paper = select_windows(var, mean)
    assert len(paper) == 4  # the paper's rule keeps all four boxes, the spot's too
    peak = window_max(frames, 32, 32) - mean
    kept = select_windows(var, mean, peak=peak, max_peak=20)
    assert [tuple(r) for r in kept] == [(0, 0, 0), (0, 0, 1), (0, 1, 1)]
    with pytest.raises(ValueError, match="peak"):
        select_windows(var, mean, max_peak=20)


def test_max_dip_rejects_dead_pixels_and_dark_spots_the_peak_test_misses():
    rng = np.random.default_rng(6)
    frames = (100 + rng.integers(-1, 2, (3, 64, 64))).astype(np.uint8)
    frames[:, 5, 40] = 60  # a dead pixel in every frame (top right box)
    frames[1, 40:43, 40:43] -= 40  # a dark 3x3 spot in one frame (bottom right box)
    frames[2, 50, 10] += 40  # a bright one (bottom left box)
    var, mean = window_stats(frames, 32, 32)
    assert var.max() < 50
    dip = mean - window_min(frames, 32, 32)
    peak = window_max(frames, 32, 32) - mean
    assert len(select_windows(var, mean)) == 4  # the paper keeps every box
    only_peak = select_windows(var, mean, peak=peak, max_peak=20)
    assert [tuple(r) for r in only_peak] == [(0, 0, 0), (0, 0, 1), (0, 1, 1)]  # dark spots pass it
    only_dip = select_windows(var, mean, dip=dip, max_dip=20)
    assert [tuple(r) for r in only_dip] == [(0, 0, 0), (0, 1, 0)]
    both = select_windows(var, mean, peak=peak, max_peak=20, dip=dip, max_dip=20)
    assert [tuple(r) for r in both] == [(0, 0, 0)]
    with pytest.raises(ValueError, match="dip"):
        select_windows(var, mean, max_dip=20)
    with pytest.raises(ValueError, match="dip"):
        select_windows(var, mean, dip=dip[:1], max_dip=20)


def test_window_min_matches_numpy():
    frames = np.random.default_rng(8).integers(0, 256, (2, 37, 50), dtype=np.uint8)
    got = window_min(frames, 8, 5)
    gy, gx = grid_shape(37, 50, 8, 5)
    assert got.shape == (2, gy, gx)
    for t in range(2):
        for i in range(gy):
            for j in range(gx):
                assert got[t, i, j] == frames[t, i * 5:i * 5 + 8, j * 5:j * 5 + 8].min()


def test_extract_patches(constructed):
    var, mean = window_stats(constructed, 32, 16)
    kept = select_windows(var, mean, temporal=2)
    assert len(kept) > 0
    patches = extract_patches(constructed, kept, 32, 16, 2)
    assert patches.dtype == np.uint8 and patches.shape == (len(kept), 2, 32, 32)
    for (t0, gy, gx), patch in zip(kept, patches):
        np.testing.assert_array_equal(patch, constructed[t0 : t0 + 2, gy * 16 : gy * 16 + 32, gx * 16 : gx * 16 + 32])
    # The bottom-right window (the last full one on both axes) is cut correctly.
    last = np.array([[0, var.shape[1] - 1, var.shape[2] - 1]])
    np.testing.assert_array_equal(extract_patches(constructed, last, 32, 16, 4)[0], constructed[:, 32:64, 128:160])
    assert extract_patches(constructed, np.empty((0, 3), np.int64), 32, 16, 2).shape == (0, 2, 32, 32)


# ---------------------------------------------------------------------------------------------
# real SIRST-V2 background frames


def _frame_number(path: Path) -> list:
    # Frames are numbered by the suffix of their name; sort numerically so neighbours are neighbours.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.stem)]


@lru_cache(maxsize=1)
def _stats_per_sequence(root: str) -> dict[str, tuple[int, np.ndarray, np.ndarray]]:
    out = {}
    for seq in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        frames = [np.asarray(Image.open(f).convert("L")) for f in sorted(seq.glob("*.png"), key=_frame_number)]
        frames = np.stack([f for f in frames if f.shape == frames[0].shape])
        var, mean = window_stats(frames, 32, 32)
        out[seq.name] = (len(frames), var, mean)
    return out


def test_sirst_v2_whole_sequence_vs_temporal(sirst_v2_frames, capsys):
    stats = _stats_per_sequence(str(sirst_v2_frames))
    table = {}
    for name, (n, var, mean) in stats.items():
        table[name] = (n, len(select_windows(var, mean)), len(select_windows(var, mean, temporal=2)))
    with capsys.disabled():
        print("\nsequence        frames  kept(temporal=0)  kept(temporal=2)")
        for name, (n, k0, k2) in table.items():
            print(f"{name:<15} {n:>6}  {k0:>16}  {k2:>16}")

    assert len(table) == 15
    # The paper's rule over whole sequences finds nothing in every sequence of 10+ frames; the
    # only yields are S5 (one frame, trivially stable), 211_HD (two same-size frames) and S6 (4).
    whole = {name: k0 for name, (_, k0, _) in table.items() if k0}
    assert whole == {"211_HD": 1, "S5": 108, "S6": 1}
    assert all(n >= 10 for name, (n, _, _) in table.items() if name not in whole)
    # Pairs of consecutive frames: dozens to thousands in every sequence with 4+ frames.
    pairs = {name: k2 for name, (n, _, k2) in table.items() if n >= 4}
    assert len(pairs) == 13 and min(pairs.values()) >= 30 and max(pairs.values()) > 10_000
    assert table["S5"][2] == 0  # one frame cannot form a pair
    assert table["211_HD"][2] == 1
    assert sum(k2 for _, _, k2 in table.values()) == 26_776
