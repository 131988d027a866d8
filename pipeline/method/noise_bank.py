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

The clean-bank default (`spot_sigmas`, `spot_floor`; `window_spots`): a box is rejected in a frame
where one of its pixels stands out from its 5x5 median by at least `max(spot_sigmas * s,
spot_floor)` grey levels, above or below, `s` being the box's own robust noise level (1.4826 x the
median absolute deviation of those differences). Relative to the box's noise, so a noisy sensor's
own tails (8 sigma: once in ~1e15 Gaussian pixels) and a smooth gradient or cloud (the 5x5 median
follows it) are kept, while a hot or dead pixel or a target up to 3x3 px (it fills at most 9 of
the 25 median samples) is not; the floor keeps the rule from firing on one grey level in boxes
whose noise quantises to 0.

Pure functions over arrays; `window_stats` also takes torch tensors (CPU or CUDA) and returns
tensors then, so a GPU worker keeps the per-pixel work on the device. torch is imported only for
a tensor, or for numpy frames whose statistics cannot be exact in float64 (see `window_stats`).
"""

from __future__ import annotations

import sys

import numpy as np

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


def _is_tensor(x) -> bool:
    """A torch tensor? (No import: a tensor exists only once torch is imported.)"""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def window_stats(frames, window: int, stride: int):
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

    Integer numpy frames whose two-pass float64 statistics are exact whatever the order of the
    additions (`_exact_in_float64`: a power-of-two box; for a 32-px box, pixels of up to 11 bits)
    are computed from float64 box sums in numpy (`_window_stats_exact`), without torch: the same
    exact values, so the same bits as the float64 torch reduction below (which other inputs take).
    """
    if not _is_tensor(frames):
        x = np.asarray(frames)
        if x.ndim != 3:
            raise ValueError(f"frames must be [T, H, W], got shape {tuple(x.shape)}")
        grid_shape(x.shape[1], x.shape[2], window, stride)
        if _exact_in_float64(x, window):
            return _window_stats_exact(x, window, stride)
    import torch

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


def _exact_in_float64(x: np.ndarray, window: int) -> bool:
    """Whether every step of the float64 two-pass mean and variance of a `window`-px box of `x`
    is exact, in any order of the additions: integer pixels below 2^b in magnitude and their
    range below 2^b, n = window^2 a power of two (2^k): the sum (< 2^(b+k)) and the mean
    (sum / 2^k) are exact; each deviation is a multiple of 2^-k below 2^b, its square a multiple
    of 2^-2k below 2^2b, and their partial sums stay below 2^(2b+k): all exact while
    2b + 3k <= 53 (uint8 and a 32-px box: 46). `_window_stats_exact` needs no more."""
    if x.size == 0:
        return True
    if not np.issubdtype(x.dtype, np.integer):
        return False
    n = window * window
    if n & (n - 1):
        return False
    k = n.bit_length() - 1
    lo, hi = int(x.min()), int(x.max())
    b = max(abs(lo), abs(hi), hi - lo).bit_length()
    return 2 * b + 3 * k <= 53


def _window_stats_exact(x: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """`window_stats` for frames `_exact_in_float64` allows: box sums S and sums of squares Q in
    float64, all integers below 2^53 and so exact in any order (boxes side by side: sums over a
    reshaped view; overlapping ones: products with 0/1 box matrices, `rows @ frame @ cols`);
    mean = S / n and var = (n Q - S^2) / n^2, both exact (n Q and S^2 are below 2^(2b+2k), their
    difference is n^2 times the exact variance, n a power of two)."""
    t, h, w = x.shape
    gy, gx = grid_shape(h, w, window, stride)
    var = np.empty((t, gy, gx), np.float64)
    mean = np.empty_like(var)
    if not (t and gy and gx):
        return var, mean
    n = np.float64(window * window)
    ys, xs = np.arange(gy) * stride, np.arange(gx) * stride
    hh, ww = ys[-1] + window, xs[-1] + window  # the part of the frame the grid covers
    offsets = np.arange(window)  # the 0/1 box matrices, for boxes that overlap
    rows = np.zeros((gy, hh), np.float64)
    rows[np.arange(gy)[:, None], ys[:, None] + offsets] = 1.0
    cols = np.zeros((ww, gx), np.float64)
    cols[xs[:, None] + offsets, np.arange(gx)[:, None]] = 1.0
    step = max(1, _CHUNK_ELEMENTS // max(1, h * w))

    def box_sums(values: np.ndarray) -> np.ndarray:
        if stride == window:  # [m, gy, window, gx * window] -> [m, gy, gx * window] -> [m, gy, gx]
            rows_summed = values.reshape(len(values), gy, window, ww).sum(axis=2)
            return rows_summed.reshape(len(values), gy, gx, window).sum(axis=-1)
        return rows @ values @ cols

    for start in range(0, t, step):
        chunk = x[start : start + step, :hh, :ww].astype(np.float64)
        s = box_sums(chunk)
        np.square(chunk, out=chunk)
        q = box_sums(chunk)
        mean[start : start + step] = s / n
        var[start : start + step] = (n * q - s * s) / (n * n)
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


SPOT_MEDIAN = 5  # side of the median a spot stands out from


def window_spots(frames: np.ndarray, window: int, stride: int, sigmas: float, floor: float,
                 where: np.ndarray | None = None) -> np.ndarray:
    """Which boxes of the grid hold a spot in each frame (see the module text): `[T, gy, gx]` bool.

    where: `[T, gy, gx]` bool, the boxes to test (e.g. those that pass every other test of
    `select_windows`: no other box changes what it keeps); the others are False. Default: all.
    Each tested box's pixels are compared with their 5x5 median (the frame's edge pixels repeated
    beyond it, as `scipy.ndimage.median_filter(mode="nearest")`), computed for the box and a
    2-px border only: the exact 13th of the 25 values, so the same values as a whole-frame filter.
    """
    x = np.asarray(frames)
    if x.ndim != 3:
        raise ValueError(f"frames must be [T, H, W], got shape {x.shape}")
    t, h, w = x.shape
    gy, gx = grid_shape(h, w, window, stride)
    out = np.zeros((t, gy, gx), bool)
    if not (t and gy and gx):
        return out
    if where is None:
        where = np.ones((t, gy, gx), bool)
    else:
        where = np.asarray(where, bool)
        if where.shape != out.shape:
            raise ValueError(f"where must be {out.shape} like the grid, got {where.shape}")
    r = SPOT_MEDIAN // 2
    side = window + 2 * r
    # small integers are exact in float32: their median is taken before the conversion (4x less to move)
    native = x.dtype in (np.uint8, np.int8, np.uint16, np.int16)
    # boxes per batch: ~16 MiB of median samples
    batch = max(1, (1 << 24) // (window * window * SPOT_MEDIAN * SPOT_MEDIAN * (x.dtype.itemsize if native else 4)))
    for i in np.flatnonzero(where.any(axis=(1, 2))):  # one frame at a time: a 1080p sequence's boxes stay small
        padded = np.pad(x[i] if native else x[i].astype(np.float32), r, mode="edge")
        regions = np.lib.stride_tricks.sliding_window_view(padded, (side, side))[::stride, ::stride][:gy, :gx]
        at = np.argwhere(where[i])
        for b in range(0, len(at), batch):
            yx = at[b : b + batch]
            region = regions[yx[:, 0], yx[:, 1]]  # [n, side, side]: the boxes and their border
            median = median_5x5(region).astype(np.float32, copy=False)
            dev = (region[:, r : r + window, r : r + window].astype(np.float32) - median).reshape(len(yx), -1)
            centre = np.median(dev, axis=-1, keepdims=True)
            s = 1.4826 * np.median(np.abs(dev - centre), axis=-1)
            out[i, yx[:, 0], yx[:, 1]] = np.abs(dev).max(axis=-1) >= np.maximum(sigmas * s, floor)
    return out


def _median_network(n: int) -> list[tuple[int, int, bool, bool]]:
    """A selection network for the median (element n // 2 in sorted order) of n values: Batcher's
    odd-even merge sort of the next power of two, the comparators on the missing (+inf) inputs
    dropped, then every comparator that cannot reach the median's wire. `(a, b, need_min,
    need_max)`: wire a gets min(a, b), wire b max(a, b), where needed. Exact for any input (a
    sorting network sorts, and what is dropped does not feed the output)."""
    size = 1 << max(0, (n - 1).bit_length())
    comparators = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        comparators.append((i + j, i + j + k))
            k //= 2
        p *= 2
    live, keep = {n // 2}, []
    for a, b in reversed([c for c in comparators if c[1] < n]):
        if a in live or b in live:
            keep.append((a, b, a in live, b in live))
            live |= {a, b}
    return keep[::-1]


_MEDIAN_25 = _median_network(SPOT_MEDIAN * SPOT_MEDIAN)  # 113 comparators, 202 min/max operations


def median_5x5(region: np.ndarray) -> np.ndarray:
    """The 5x5 median of every pixel of `[..., H, W]` regions that has its whole 5x5 neighbourhood:
    `[..., H - 4, W - 4]`, the exact 13th of the 25 values (`scipy.ndimage.median_filter(size=5)`'s
    value there), from a selection network of elementwise min/max (no NaN: NaN is not ordered)."""
    x = np.asarray(region)
    h, w = x.shape[-2] - SPOT_MEDIAN + 1, x.shape[-1] - SPOT_MEDIAN + 1
    wires = [x[..., dy : dy + h, dx : dx + w] for dy in range(SPOT_MEDIAN) for dx in range(SPOT_MEDIAN)]
    for a, b, need_min, need_max in _MEDIAN_25:
        lo = np.minimum(wires[a], wires[b]) if need_min else None
        if need_max:
            wires[b] = np.maximum(wires[a], wires[b])
        if need_min:
            wires[a] = lo
    return np.ascontiguousarray(wires[SPOT_MEDIAN * SPOT_MEDIAN // 2])


def spot_test_boxes(kept: np.ndarray, shape: tuple[int, int, int], length: int) -> np.ndarray:
    """The boxes (`[T, gy, gx]` bool) of the frames of the windows `kept` (`[K, 3]` rows `(t0, gy, gx)`
    from `select_windows`, `length` frames each): the only boxes whose spots can take a window out."""
    need = np.zeros(shape, bool)
    kept = np.asarray(kept, np.int64).reshape(-1, 3)
    for j in range(length):
        need[kept[:, 0] + j, kept[:, 1], kept[:, 2]] = True
    return need


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
    if _is_tensor(var):
        var = var.detach().cpu().numpy()
    if _is_tensor(mean):
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
    spots=None,
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
        spots: `[T, gy, gx]` bool from `window_spots`, or None: a box with a spot in a frame fails.

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
    if spots is not None:
        spots = np.asarray(spots, bool)
        if spots.shape != var.shape:
            raise ValueError(f"spots must be {var.shape} like var, got {spots.shape}")
        frame_ok &= ~spots
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
