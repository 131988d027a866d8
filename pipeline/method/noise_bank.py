"""Noise-bank window selection (SIRST-5K step 1): find flat, temporally stable patches.

A `window`x`window` box slides over every frame with step `stride`. A grid location is kept
for a temporal window of `L` consecutive frames when, in each of those frames, the box's
variance is below `max_var` and its mean above `min_mean`, and across them the variance of
those variances is at most `max_seq_var` and the variance of those means at most
`max_seq_mean`. `temporal=0` makes `L` the whole sequence (the paper's rule).

Unlike the original script, the grid includes the last full window of each axis
(`y0 in range(0, H - window + 1, stride)`), and every kept location is its own entry.

An optional rule the paper does not have, `max_peak`: in each frame the brightest pixel must
rise less than `max_peak` grey levels above the box's mean. Real "background" sequences hold
small targets and hot pixels, and a 3x3 spot of +40 grey in a flat 32-px box adds only ~14 to
its variance, so the variance test lets it into the bank, from where the transfer would paste
an unlabelled target into a labelled image. `max_dip` is its mirror for dark spots (dead pixels,
cold targets): the darkest pixel must fall less than `max_dip` below the box's mean.

Pure functions over arrays; `window_stats` also takes torch tensors (CPU or CUDA) and returns
tensors then, so a GPU worker keeps the per-pixel work on the device.
"""

from __future__ import annotations

import numpy as np
import torch

from sirst5k.params import NoiseBankParams  # the defaults, written once

# Column order of `kept_stats`: means over the temporal window of the per-frame variance and
# mean, then the (population) variance over the temporal window of each.
STAT_FIELDS: tuple[str, ...] = ("mean_of_var", "mean_of_mean", "var_of_var", "var_of_mean")

# float64 elements per chunk in `window_stats` (128 MiB), so a long 1080p sequence does not
# need a float64 copy of itself at once.
_CHUNK_ELEMENTS = 1 << 24


def grid_shape(height: int, width: int, window: int, stride: int) -> tuple[int, int]:
    """Number of window positions (gy, gx) on the grid `range(0, size - window + 1, stride)`."""
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be positive, got window={window}, stride={stride}")
    gy = 0 if height < window else (height - window) // stride + 1
    gx = 0 if width < window else (width - window) // stride + 1
    return gy, gx


def temporal_length(n_frames: int, temporal: int) -> int:
    """Frames per temporal window: the whole sequence for `temporal == 0`, else `temporal`."""
    if temporal < 0:
        raise ValueError(f"temporal must be >= 0, got {temporal}")
    return n_frames if temporal == 0 else temporal


def window_stats(frames: np.ndarray | torch.Tensor, window: int, stride: int):
    """Population variance (ddof=0) and mean of every window on the grid, per frame.

    Args:
        frames: `[T, H, W]` grey frames, uint8 or float, numpy array or torch tensor.
        window: box side in pixels.
        stride: grid step in pixels; rows `y0 in range(0, H - window + 1, stride)`, columns alike.

    Returns:
        `(var, mean)`, each `[T, gy, gx]` float64; numpy arrays for a numpy input, tensors on the
        input's device for a tensor input. Computed in float64 with a two-pass variance, so it
        matches `np.var`/`np.mean` of the same box to rounding (exactly, for integer pixels and
        a power-of-two window).
    """
    as_numpy = not isinstance(frames, torch.Tensor)
    x = torch.from_numpy(np.ascontiguousarray(frames)) if as_numpy else frames
    if x.ndim != 3:
        raise ValueError(f"frames must be [T, H, W], got shape {tuple(x.shape)}")
    t, h, w = x.shape
    gy, gx = grid_shape(h, w, window, stride)
    var = torch.empty((t, gy, gx), dtype=torch.float64, device=x.device)
    mean = torch.empty_like(var)
    if t and gy and gx:
        step = max(1, _CHUNK_ELEMENTS // max(1, h * w))
        for start in range(0, t, step):
            chunk = x[start : start + step].to(torch.float64)
            # [n, gy, gx, window, window]: a view, no copy until the reduction needs one.
            boxes = chunk.unfold(1, window, stride).unfold(2, window, stride)
            # An explicit two-pass variance, not torch.var_mean (Welford): for integer pixels and
            # a power-of-two window every step is exact in float64, so a variance that is exactly
            # a threshold compares as np.var's does.
            m = boxes.mean(dim=(-2, -1), keepdim=True)
            var[start : start + step] = (boxes - m).square_().mean(dim=(-2, -1))
            mean[start : start + step] = m[..., 0, 0]
    if as_numpy:
        return var.numpy(), mean.numpy()
    return var, mean


def window_max(frames: np.ndarray, window: int, stride: int) -> np.ndarray:
    """The brightest pixel of every window on the grid, per frame: `[T, gy, gx]` float64.

    With `mean` from `window_stats`, `window_max(...) - mean` is each box's peak above its
    mean, the statistic of `select_windows(max_peak=...)`.
    """
    return _window_reduce(frames, window, stride, np.max)


def window_min(frames: np.ndarray, window: int, stride: int) -> np.ndarray:
    """The darkest pixel of every window on the grid, per frame: `[T, gy, gx]` float64.

    `mean - window_min(...)` is each box's dip below its mean, the statistic of
    `select_windows(max_dip=...)`.
    """
    return _window_reduce(frames, window, stride, np.min)


def _window_reduce(frames: np.ndarray, window: int, stride: int, reduce) -> np.ndarray:
    """`reduce` (np.max or np.min) over every window on the grid, per frame: `[T, gy, gx]` float64."""
    x = np.asarray(frames)
    if x.ndim != 3:
        raise ValueError(f"frames must be [T, H, W], got shape {x.shape}")
    t, h, w = x.shape
    gy, gx = grid_shape(h, w, window, stride)
    out = np.empty((t, gy, gx), np.float64)
    if t and gy and gx:
        boxes = np.lib.stride_tricks.sliding_window_view(x, (window, window), axis=(1, 2))[:, ::stride, ::stride]
        out[...] = reduce(boxes[:, :gy, :gx], axis=(-2, -1))
    return out


def _as_stats(var, mean) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(var, torch.Tensor):
        var = var.detach().cpu().numpy()
    if isinstance(mean, torch.Tensor):
        mean = mean.detach().cpu().numpy()
    var = np.asarray(var, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    if var.ndim != 3 or var.shape != mean.shape:
        raise ValueError(f"var and mean must both be [T, gy, gx], got {var.shape} and {mean.shape}")
    return var, mean


def select_windows(
    var,
    mean,
    *,
    max_var: float = NoiseBankParams.max_var,
    min_mean: float = NoiseBankParams.min_mean,
    max_seq_var: float = NoiseBankParams.max_seq_var,
    max_seq_mean: float = NoiseBankParams.max_seq_mean,
    temporal: int = NoiseBankParams.temporal,
    peak=None,
    max_peak: float = NoiseBankParams.max_peak,
    dip=None,
    max_dip: float = NoiseBankParams.max_dip,
) -> np.ndarray:
    """Grid locations and temporal windows that pass the noise-bank test.

    Args:
        var, mean: `[T, gy, gx]` per-frame window statistics from `window_stats`.
        max_var: every frame's window variance must be `< max_var` (strict).
        min_mean: every frame's window mean must be `> min_mean` (strict).
        max_seq_var: `np.var` of the window's variances over the frames must be `<= max_seq_var`.
        max_seq_mean: `np.var` of the window's means over the frames must be `<= max_seq_mean`.
        temporal: frames per temporal window `L`; 0 = all `T` frames (only `t0 = 0`), else
            `L = temporal` sliding over `t0 = 0 .. T - L`. `L > T` gives no windows.
        peak: `[T, gy, gx]` brightest pixel minus mean of each box (`window_max - mean`);
            needed when `max_peak > 0`.
        max_peak: every frame's peak must be `< max_peak` (strict); 0 = no limit (the paper).
        dip: `[T, gy, gx]` mean minus darkest pixel of each box (`mean - window_min`); needed
            when `max_dip > 0`.
        max_dip: every frame's dip must be `< max_dip` (strict); 0 = no limit (the paper).

    Returns:
        `[K, 3]` int64 rows `(t0, gy, gx)`, sorted lexicographically (t0, then row, then column).
        A NaN statistic fails its test.
    """
    var, mean = _as_stats(var, mean)
    n_frames = var.shape[0]
    length = temporal_length(n_frames, temporal)
    if n_frames == 0 or length == 0 or length > n_frames:
        return np.empty((0, 3), dtype=np.int64)

    frame_ok = (var < max_var) & (mean > min_mean)
    # bright spots (peak above the box's mean) and dark ones (dip below it), each when asked for
    for name, spot, limit, how in (("peak", peak, max_peak, "window_max - mean"),
                                   ("dip", dip, max_dip, "mean - window_min")):
        if limit > 0:
            if spot is None:
                raise ValueError(f"max_{name} needs the boxes' {name}s ({how})")
            spot = np.asarray(spot, dtype=np.float64)
            if spot.shape != var.shape:
                raise ValueError(f"{name} must be {var.shape} like var, got {spot.shape}")
            frame_ok &= spot < limit
    # Count failing frames in each temporal window with a cumulative sum over time.
    bad = np.concatenate([np.zeros((1,) + var.shape[1:], np.int64), np.cumsum(~frame_ok, axis=0)])
    all_ok = (bad[length:] - bad[:-length]) == 0

    seq_var, seq_mean = _sequence_vars(var, mean, length)
    keep = all_ok & (seq_var <= max_seq_var) & (seq_mean <= max_seq_mean)
    return np.argwhere(keep).astype(np.int64, copy=False)


def _sequence_vars(var: np.ndarray, mean: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """`np.var` over each run of `length` frames: `[T - length + 1, gy, gx]` for var and mean."""
    var_runs = np.lib.stride_tricks.sliding_window_view(var, length, axis=0)
    mean_runs = np.lib.stride_tricks.sliding_window_view(mean, length, axis=0)
    return var_runs.var(axis=-1), mean_runs.var(axis=-1)


def kept_stats(var, mean, kept: np.ndarray, length: int) -> np.ndarray:
    """Statistics of each kept window over its `length` frames, for the bank's metadata.

    Args:
        var, mean: `[T, gy, gx]` from `window_stats`.
        kept: `[K, 3]` rows `(t0, gy, gx)` from `select_windows`.
        length: frames per temporal window (`temporal_length(T, temporal)`).

    Returns:
        `[K, 4]` float64, columns `STAT_FIELDS`: mean of the variances, mean of the means,
        variance of the variances, variance of the means (population, as the test uses).
    """
    var, mean = _as_stats(var, mean)
    kept = np.asarray(kept, dtype=np.int64).reshape(-1, 3)
    steps = np.arange(length)
    t = kept[:, :1] + steps  # [K, L]
    v = var[t, kept[:, 1:2], kept[:, 2:3]]
    m = mean[t, kept[:, 1:2], kept[:, 2:3]]
    if not len(kept):
        return np.empty((0, len(STAT_FIELDS)))
    return np.stack([v.mean(axis=1), m.mean(axis=1), v.var(axis=1), m.var(axis=1)], axis=1)


def extract_patches(frames: np.ndarray, kept: np.ndarray, window: int, stride: int, length: int) -> np.ndarray:
    """Cut each kept window's frames out of the sequence.

    Args:
        frames: `[T, H, W]` uint8 (other dtypes are rounded and clipped to 0..255).
        kept: `[K, 3]` rows `(t0, gy, gx)`; the box starts at `(gy * stride, gx * stride)`.
        window, stride: as given to `window_stats`.
        length: frames per patch.

    Returns:
        `[K, length, window, window]` uint8.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    kept = np.asarray(kept, dtype=np.int64).reshape(-1, 3)
    offsets = np.arange(window)
    t = (kept[:, 0, None] + np.arange(length))[:, :, None, None]  # [K, L, 1, 1]
    y = (kept[:, 1, None] * stride + offsets)[:, None, :, None]  # [K, 1, w, 1]
    x = (kept[:, 2, None] * stride + offsets)[:, None, None, :]  # [K, 1, 1, w]
    return frames[t, y, x]
