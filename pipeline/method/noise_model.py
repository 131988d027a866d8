"""A fitted sensor-noise model: what one sequence's flat windows say about its sensor's noise, and
seeded noise fields of any size drawn from it.

**Fitting** (`fit_sequence`, one sequence at a time) reads the noise bank's kept windows,
`patches` `[K, L, w, w]` (K flat, temporally stable boxes, L consecutive frames each), and
optionally the sequence's whole frames (for hot and dead pixels). Each box in each frame is taken
minus its least-squares plane (`detrend`): `r`, the noise as the box shows it. `r` splits exactly
into row offsets `a[y]` (its row means), column offsets `b[x]` (its column means) and a rest
`e[y, x]` whose row and column means are zero. Then, averaged over boxes and frames:

- `psd2d` `[w, w]`: the periodogram of `e`, `|FFT2(e)|^2 / w^2` (its mean over the bins is `e`'s
  variance). `e` has no power on the axes `kx = 0` and `ky = 0` (that belongs to `a` and `b`);
  they are filled with their neighbours' mean, the residual spectrum being smooth there.
- `row_psd`, `col_psd` `[w]`: the stripe spectra. The 1-D periodogram `|FFT(b)|^2 / w` of the
  column offsets holds what the 2-D noise puts into a w-pixel column mean (`psd2d[0, kx] / w`)
  plus banding that a longer column would not average away; the first is subtracted (clipped
  at 0), so a field drawn at 640 px does not carry 32-px-mean stripes. Rows alike.
- `sigma`: std of `r` (the noise a box holds); `sigma_row`, `sigma_col`: std of the stripes
  (the root of the mean of `row_psd`, `col_psd`).
- `sigma_temporal`: `sqrt(mean (r[t+1] - r[t])^2 / 2)`, the part that changes from frame to frame;
  `sigma_fixed`: `sqrt(mean r[t] r[t+1])` (clipped at 0), the part repeated at the same pixels
  (fixed-pattern noise); `sigma^2 ~ sigma_temporal^2 + sigma_fixed^2`. NaN for one-frame windows.
  (Consecutive SIRST-V2 frames are often different views: a bank "pair" is then two flat regions
  at the same pixels. The fixed part is still the sensor's; the temporal part holds some scene.)
- `defects`: hot (+) and dead (-) pixels: single pixels that stand out from their 3x3 median by
  more than `max(defect_level, 6 sigma)`, at the same place in at least `defect_fraction` of the
  frames, with no other outlier in their 3x3 neighbourhood (a small target is more than one
  pixel). A point source the camera keeps still in view looks the same and is recorded too.

**Synthesis** (`synthesize`): white Gaussian noise, FFT, times the square root of `psd2d`
interpolated linearly (periodic) to the field's frequency grid, inverse FFT -- random phase with
Rayleigh amplitudes around the fitted magnitude, i.e. a Gaussian field with that spectrum -- plus a
row-offset profile and a column-offset profile drawn the same way from `row_psd`, `col_psd` and
broadcast along their rows and columns. The spectra are per native pixel, so a field drawn at the
sensor's pixel size holds its noise at native scale (`sirst5k transfer --field model --noise-scale
source` draws it at the sample's original size and resizes it as ingest resized the image).
Defects are fitted and stored, never planted: a planted hot pixel is an unlabelled point target.

**The temporal fit** (`fit_temporal`, what `noise-bank --model` fits by default since model format
2): noise by construction, not by flatness. For a pair of consecutive frames of one scene, the
difference `d = (f_t - f_{t+1}) / sqrt(2)` holds no static scene, whatever its texture, only the
noise that changes from frame to frame, at its full variance. It is cut in `tile`-px tiles (256 by
default, 8x the bank's window: a 32-px window of a 1080p frame shrunk 7.5x to 256 px spans 240
native pixels, so the low native frequencies a shrink brings into the image's band are measured) lying wholly in the pair's stable windows (every bank window of
the tile kept for both frames); where a sequence has fewer than `min_tiles` such tiles the tile is
halved, down to the bank's window (`fit_window` records the size used; the spectra are stored on
the `tile` grid, interpolated). `fit_spectra(d)` gives the temporal 2-D spectrum and the temporal
row/column stripes (banding that changes per frame), each bin the mean over the tiles. (Option
`average="median"`: each bin the median over the tiles / ln 2, which for Gaussian noise is the
mean and ignores a minority of tiles whose "pair" is two views; measured on SIRST-V2 it does not
pay: their quantised, sparse noise is no Gaussian, and the median of few tiles is rough; see
docs/noise.md.) Fixed-pattern noise is what a static scene
cannot explain: exact row/column offsets. The pair's mean `(f_t + f_{t+1}) / 2` holds the scene,
the fixed pattern and half the temporal variance; its stripe spectra (`fit_spectra` already takes
a tile's column offsets hold the fixed column stripes plus the texture's and the noise's share;
the fixed stripe is common to the whole sensor column, the rest is not, so the fixed column
spectrum is the cross-spectrum of the column offsets of tiles one above the other (same columns,
other rows), averaged over all such pairs (`shared_spectrum`; rows alike, tiles side by side): a
scene rarely makes the same offsets along whole sensor columns at two heights, except slower than
one bank window (a sky's vertical gradient makes every row alike): those bins are left out. A per-pixel fixed pattern (DSNU/PRNU) is not
separable from a static scene's texture and is left out (said so: `sigma_fixed` is the fixed
stripes alone). The model: `psd2d` the temporal spectrum, `row_psd`/`col_psd` the temporal plus
the fixed stripes; `sigma` the std of a field drawn from it.

**The noise-level function** (`fit_nlf`, `fit_temporal(..., nlf=True)`, model format 3): the
temporal noise std against grey level, from the same pairs and tiles. Each pixel of a pair's tile
gets its local level, the 5x5 mean of the pair's mean frame `(f_t + f_{t+1}) / 2` (the scene's
brightness there, its noise averaged down 7x), and its noise, the tile-detrended `d` minus its own
3x3 mean (a high-pass: what a two-view pair's leftover scene puts into `d` is smooth and mostly
removed, the pixel noise is not). Pixels are binned by level in bins of `NLF_BIN` grey levels
(only pixels 2 or more from the tile's edge, where both means are whole); a bin with fewer than
`NLF_MIN_COUNT` pixels is dropped (four 32-px windows' worth: a bin's sigma is then within ~2 %
for Gaussian noise, and one small bright blob cannot make a bin of its own). A bin's sigma is the
root of its mean squared high-pass times `mean(detrended d^2) / mean(high-pass^2)` over all the
tiles' pixels: the high-pass gives the shape against level, the calibration the temporal noise's
own level, so for white noise of std `s(level)` each bin gets `s` at its level and the
count-weighted mean of the bins' variances is `sigma_temporal^2`. Stored: `nlf_level` (the bin's
mean level, increasing), `nlf_sigma`, `nlf_count`; no table (format 1 or 2 models, `None`) is
the flat level of before. `nlf_gain` turns it into a per-pixel factor for the synthesised 2-D
noise: `NLF(level) / NLF_rms` (linear between bins, the end bins' value beyond them: an image
brighter or darker than anything the sequence showed gets the nearest fitted level), NLF_rms the
count-weighted rms over the bins, so a field at the bank's own mix of levels keeps the spectrum's
level and the gain only redistributes it by brightness (`sirst5k transfer --noise-level image`).

Draws are apart from the synthesis (`draw_model_params`: model index and a 63-bit seed from the
sample's generator), so a sample replays from (seed, sample id). numpy only (scipy for the 3x3
median), float64, on the CPU: the same bits for any worker count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

DEFECT_LEVEL = 10.0  # grey levels a defect stands out by at least (and 6 sigma)
DEFECT_SIGMAS = 6.0
DEFECT_FRACTION = 0.9  # of the frames it must stand out in

# Scalars and spectra of one model as the bank stores them (per model, along a first axis).
SCALARS: tuple[str, ...] = ("mean_level", "sigma", "sigma_temporal", "sigma_fixed", "sigma_row", "sigma_col")
COUNTS: tuple[str, ...] = ("n_windows", "n_frames", "frame_h", "frame_w")
SPECTRA: tuple[str, ...] = ("psd2d", "row_psd", "col_psd")
DEFECT_FIELDS: tuple[str, ...] = ("defect_model", "defect_y", "defect_x", "defect_level", "defect_fraction")
# Stored only by the temporal fit (model format 2), so a flat-fit bank keeps format 1's bytes.
TEMPORAL_FIELDS: tuple[str, ...] = ("fit_window",)
FITS: tuple[str, ...] = ("temporal", "flat")
MODEL_TILE = 256  # the temporal fit's tile side (native pixels): 32 px of a 1080p frame shrunk to 256
MODEL_AVERAGE = "mean"  # how the temporal fit averages the tiles' periodograms (or "median")
MIN_TILES = 4  # fewest tiles a tile size needs before the fit halves it
# The noise-level function (model format 3; see the module text).
NLF_FIELDS: tuple[str, ...] = ("nlf_model", "nlf_level", "nlf_sigma", "nlf_count")
NLF_BIN = 8.0  # grey levels per bin
NLF_MIN_COUNT = 4096  # fewest pixels a bin keeps (four 32-px windows)
NLF_LEVEL_BOX = 5  # the local level: this box's mean of the pair's mean frame
NLF_HP_BOX = 3  # the noise: the detrended difference minus this box's mean


@dataclass(frozen=True)
class NoiseModel:
    """One sequence's fitted noise (grey levels; spectra per bin, their mean is a variance).

    psd2d `[w, w]`, row_psd `[w]`, col_psd `[w]` float64 (unshifted FFT order); defects
    `[D, 2]` int64 (y, x) in the frame's pixels with `defect_level` `[D]` (signed mean
    deviation from the 3x3 median: + hot, - dead) and `defect_fraction` `[D]` (of the frames).
    """

    mean_level: float
    sigma: float
    sigma_temporal: float
    sigma_fixed: float
    sigma_row: float
    sigma_col: float
    psd2d: np.ndarray
    row_psd: np.ndarray
    col_psd: np.ndarray
    n_windows: int
    n_frames: int
    frame_h: int = -1
    frame_w: int = -1
    defects: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    defect_level: np.ndarray = field(default_factory=lambda: np.zeros(0))
    defect_fraction: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fit_window: int = -1  # the temporal fit's tile side (-1: the flat fit of model format 1)
    # the noise-level function `[B]` each (format 3): bin mean level (increasing), sigma, pixels;
    # None: no function fitted (formats 1, 2: one level for the whole frame)
    nlf_level: np.ndarray | None = None
    nlf_sigma: np.ndarray | None = None
    nlf_count: np.ndarray | None = None

    @property
    def window(self) -> int:
        return int(self.psd2d.shape[-1])

    @property
    def has_nlf(self) -> bool:
        """A noise-level function was fitted (it may have no bin: then the level is flat)."""
        return self.nlf_level is not None


# ---------------------------------------------------------------- fitting


def detrend(boxes: np.ndarray) -> np.ndarray:
    """Each `[..., h, w]` box minus its least-squares plane `c + gy * y + gx * x`, float64.

    On a full grid the centred coordinates are orthogonal to the constant and to each other, so
    the three fits are separate projections.
    """
    x = np.asarray(boxes, dtype=np.float64)
    h, w = x.shape[-2:]
    yy = np.arange(h, dtype=np.float64) - (h - 1) / 2
    xx = np.arange(w, dtype=np.float64) - (w - 1) / 2
    out = x - x.mean(axis=(-2, -1), keepdims=True)
    if h > 1:
        gy = np.einsum("...yx,y->...", out, yy) / (w * np.dot(yy, yy))
        out = out - gy[..., None, None] * yy[:, None]
    if w > 1:
        gx = np.einsum("...yx,x->...", out, xx) / (h * np.dot(xx, xx))
        out = out - gx[..., None, None] * xx[None, :]
    return out


def split_offsets(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`r` `[..., h, w]` (zero mean) = a[..., :, None] + b[..., None, :] + e: row means a `[..., h]`,
    column means b `[..., w]`, and e `[..., h, w]` with zero row and column means."""
    a = r.mean(axis=-1)
    b = r.mean(axis=-2)
    e = r - a[..., :, None] - b[..., None, :] + r.mean(axis=(-2, -1))[..., None, None]
    return a, b, e


def _average(spec: np.ndarray, average: str) -> np.ndarray:
    """Mean over the first axis, or the median / ln 2: a Gaussian field's periodogram bin is an
    exponential variable, whose median is ln 2 times its mean, so the median estimates the same
    spectrum while ignoring a minority of outlying boxes (a pair of two views among pairs of one)."""
    if average == "mean":
        return spec.mean(axis=0)
    if average == "median":
        return np.median(spec, axis=0) / np.log(2)
    raise ValueError(f"average must be mean or median, got {average!r}")


def periodogram2d(boxes: np.ndarray, average: str = "mean") -> np.ndarray:
    """Mean `|FFT2|^2 / (h w)` of boxes `[..., h, w]` over the leading axes (or `average`): `[h, w]`."""
    x = np.asarray(boxes, dtype=np.float64)
    h, w = x.shape[-2:]
    spec = np.abs(np.fft.fft2(x.reshape(-1, h, w))) ** 2 / (h * w)
    return _average(spec, average)


def periodogram1d(profiles: np.ndarray, average: str = "mean") -> np.ndarray:
    """Mean `|FFT|^2 / n` of profiles `[..., n]` over the leading axes (or `average`): `[n]`."""
    x = np.asarray(profiles, dtype=np.float64)
    n = x.shape[-1]
    return _average(np.abs(np.fft.fft(x.reshape(-1, n))) ** 2 / n, average)


def fill_axes(psd: np.ndarray) -> np.ndarray:
    """`psd` `[h, w]` with its axes (ky = 0, kx = 0) set to the mean of their two neighbours, DC 0."""
    out = np.array(psd, dtype=np.float64)
    h, w = out.shape
    if h > 1:
        out[0, :] = (out[1, :] + out[-1, :]) / 2
    if w > 1:
        out[:, 0] = (out[:, 1] + out[:, -1]) / 2
    out[0, 0] = 0.0
    return out


def fit_spectra(patches: np.ndarray, average: str = "mean") -> dict[str, np.ndarray | float]:
    """The spatial part of the fit from boxes `[..., w, w]` (any leading axes): psd2d, row_psd,
    col_psd, sigma, sigma_row, sigma_col (see the module text); `average` "median": the spectra
    are per-bin medians / ln 2 over the boxes, and sigma the root of their sum."""
    x = np.asarray(patches)
    if x.ndim < 2 or x.shape[-1] != x.shape[-2] or x.shape[-1] < 4:
        raise ValueError(f"patches must be [..., w, w] with w >= 4, got shape {x.shape}")
    h, w = x.shape[-2:]
    r = detrend(x)
    a, b, e = split_offsets(r)
    psd2d = fill_axes(periodogram2d(e, average))
    row_psd = np.maximum(periodogram1d(a, average) - psd2d[:, 0] / w, 0.0)
    col_psd = np.maximum(periodogram1d(b, average) - psd2d[0, :] / h, 0.0)
    row_psd[0] = col_psd[0] = 0.0
    sigma = (float(np.sqrt(np.mean(r * r))) if average == "mean" else
             float(np.sqrt(psd2d.mean() + row_psd.mean() + col_psd.mean())))
    return {"psd2d": psd2d, "row_psd": row_psd, "col_psd": col_psd, "sigma": sigma,
            "sigma_row": float(np.sqrt(row_psd.mean())), "sigma_col": float(np.sqrt(col_psd.mean()))}


def temporal_sigmas(patches: np.ndarray) -> tuple[float, float]:
    """(sigma_temporal, sigma_fixed) of boxes `[K, L, w, w]` from their consecutive frames."""
    x = np.asarray(patches)
    if x.ndim != 4 or x.shape[1] < 2 or x.shape[0] == 0:
        return float("nan"), float("nan")
    r = detrend(x)
    d = r[:, 1:] - r[:, :-1]
    temporal = float(np.sqrt(np.mean(d * d) / 2))
    fixed = float(np.sqrt(max(0.0, float(np.mean(r[:, 1:] * r[:, :-1])))))
    return temporal, fixed


def find_defects(frames: np.ndarray, sigma: float = 0.0, level: float = DEFECT_LEVEL,
                 fraction: float = DEFECT_FRACTION) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hot and dead pixels of a sequence `[T, H, W]` (see the module text).

    Returns (yx `[D, 2]` int64, mean signed deviation `[D]` float64, share of frames `[D]`),
    sorted by (y, x). Needs two frames (none found otherwise).
    """
    from scipy import ndimage

    x = np.asarray(frames)
    if x.ndim != 3:
        raise ValueError(f"frames must be [T, H, W], got shape {x.shape}")
    t = x.shape[0]
    empty = (np.zeros((0, 2), np.int64), np.zeros(0), np.zeros(0))
    if t < 2 or min(x.shape[1:]) < 3:
        return empty
    x = x.astype(np.float32 if x.dtype.kind == "f" else np.int16)
    dev = (x - ndimage.median_filter(x, size=(1, 3, 3), mode="nearest")).astype(np.float32)
    threshold = max(float(level), DEFECT_SIGMAS * float(sigma))
    out = np.abs(dev) > threshold
    # isolated: the only outlier of its 3x3 neighbourhood in that frame
    crowd = ndimage.uniform_filter(out.astype(np.float32), size=(1, 3, 3), mode="constant") * 9
    single = out & (np.rint(crowd) == 1)
    need = max(2, int(np.ceil(fraction * t - 1e-9)))
    found = []
    for sign in (1, -1):
        hits = (single & (np.sign(dev) == sign)).sum(axis=0)
        ys, xs = np.nonzero(hits >= need)
        found += [(y, xx, sign) for y, xx in zip(ys, xs)]
    if not found:
        return empty
    found.sort()
    yx = np.array([(y, xx) for y, xx, _ in found], np.int64)
    sel = dev[:, yx[:, 0], yx[:, 1]]
    signs = np.array([s for _, _, s in found])
    stand_out = single[:, yx[:, 0], yx[:, 1]] & (np.sign(sel) == signs)
    mean_dev = (sel * stand_out).sum(axis=0) / stand_out.sum(axis=0)
    return yx, mean_dev.astype(np.float64), stand_out.mean(axis=0).astype(np.float64)


def fit_sequence(patches: np.ndarray, frames: np.ndarray | None = None, *, defect_level: float = DEFECT_LEVEL,
                 defect_fraction: float = DEFECT_FRACTION) -> NoiseModel | None:
    """The noise model of one sequence from its kept windows `[K, L, w, w]` (None when K = 0).

    frames `[T, H, W]`: the sequence's frames, for its hot and dead pixels and the provenance
    (frame size); without them no defect is looked for.
    """
    p = np.asarray(patches)
    if p.ndim != 4 or p.shape[-1] != p.shape[-2]:
        raise ValueError(f"patches must be [K, L, w, w], got shape {p.shape}")
    if p.shape[0] == 0 or p.shape[1] == 0:
        return None
    spectra = fit_spectra(p)
    temporal, fixed = temporal_sigmas(p)
    defects, d_level, d_frac = (np.zeros((0, 2), np.int64), np.zeros(0), np.zeros(0))
    fh = fw = -1
    n_frames = int(p.shape[1])
    if frames is not None:
        f = np.asarray(frames)
        n_frames, fh, fw = (int(s) for s in f.shape)
        defects, d_level, d_frac = find_defects(f, spectra["sigma"], defect_level, defect_fraction)
    return NoiseModel(mean_level=float(np.asarray(p, np.float64).mean()), sigma=spectra["sigma"],
                      sigma_temporal=temporal, sigma_fixed=fixed, sigma_row=spectra["sigma_row"],
                      sigma_col=spectra["sigma_col"], psd2d=spectra["psd2d"], row_psd=spectra["row_psd"],
                      col_psd=spectra["col_psd"], n_windows=int(p.shape[0]), n_frames=n_frames, frame_h=fh,
                      frame_w=fw, defects=defects, defect_level=d_level, defect_fraction=d_frac)


def pair_mask(kept: np.ndarray, length: int, n_frames: int, grid: tuple[int, int],
              pairs: np.ndarray | None = None) -> np.ndarray:
    """`[T - 1, gy, gx]` bool: grid box (gy, gx) is in a kept window for both frames t and t + 1.

    kept: `[K, 3]` `(t0, gy, gx)` of windows of `length` frames; pairs: `[T - 1]` bool, the pairs
    that may be used (one scene; default all)."""
    ok = np.zeros((max(0, n_frames - 1), *grid), bool)
    kept = np.asarray(kept, np.int64).reshape(-1, 3)
    for s in range(max(0, length - 1)):
        ok[kept[:, 0] + s, kept[:, 1], kept[:, 2]] = True
    if pairs is not None:
        ok &= np.asarray(pairs, bool).reshape(-1, 1, 1)
    return ok


def stable_tiles(ok: np.ndarray, cells: int) -> np.ndarray:
    """`[N, 3]` int64 `(t, ty, tx)`: the non-overlapping tiles of `cells` x `cells` grid boxes lying
    wholly in `ok` `[T - 1, gy, gx]` (tile (ty, tx) covers boxes ty*cells ..)."""
    t, gy, gx = ok.shape
    ny, nx = gy // cells, gx // cells
    if not (t and ny and nx):
        return np.zeros((0, 3), np.int64)
    blk = ok[:, : ny * cells, : nx * cells].reshape(t, ny, cells, nx, cells).all(axis=(2, 4))
    return np.argwhere(blk).astype(np.int64)


def shared_spectrum(profiles: np.ndarray, band: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The spectrum `[n]` of what the offset profiles `[N, n]` of tiles in one band (same `band`
    index: the same sensor rows, or columns) share with the tiles of that band at least two tiles
    away (`other` index differing by 2 or more: neighbours share a smooth scene's slopes): the mean
    cross-periodogram `Re(P_i conj(P_j)) / n` over those pairs. Fixed stripes are common to the
    whole row or column; a scene's texture and the noise at two places are not, so they average
    out of it. Bins are clipped at 0 and rescaled to the unclipped sum (the unbiased variance;
    all 0 where that is not positive or no band has two such tiles), so clipping the noise of the
    estimate adds no stripe."""
    p = np.asarray(profiles, np.float64)
    n = p.shape[-1]
    spec = np.fft.fft(p, axis=-1)
    total, pairs = np.zeros(n), 0
    for g in np.unique(band):
        here = band == g
        places = other[here]
        where = np.unique(places)
        sums = {int(o): spec[here][places == o].sum(axis=0) for o in where}
        counts = {int(o): int((places == o).sum()) for o in where}
        all_sum = sum(sums.values())
        cross = np.abs(all_sum) ** 2 - sum(np.abs(v) ** 2 for v in sums.values())
        cross = cross - 2 * sum((sums[o] * np.conj(sums[o + 1])).real for o in sums if o + 1 in sums)
        total += cross / n
        c = sum(counts.values())
        pairs += c * c - sum(v * v for v in counts.values()) - 2 * sum(counts[o] * counts[o + 1]
                                                                         for o in counts if o + 1 in counts)
    if not pairs:
        return np.zeros(n)
    est = total / pairs
    est[0] = 0.0
    clipped = np.maximum(est, 0.0)
    if est.sum() <= 0 or clipped.sum() <= 0:
        return np.zeros(n)
    return clipped * (est.sum() / clipped.sum())


def pair_tiles(frames: np.ndarray, kept: np.ndarray, length: int, window: int, *, pairs: np.ndarray | None = None,
               tile: int = MODEL_TILE, min_tiles: int = MIN_TILES) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The temporal fit's tiles: `(a, b, tiles)`, frames t and t + 1 at the same `s` x `s` pixels
    `[N, s, s]` float64 and `tiles` `[N, 3]` `(t, ty, tx)`, every tile lying wholly in the pair's
    stable windows (`pair_mask`); `s` is `tile`, halved while fewer than `min_tiles` tiles fit,
    down to the bank's `window`. None when fewer than two frames or no tile of even one window."""
    frames = np.asarray(frames)
    n, h, w = frames.shape
    if n < 2:
        return None
    ok = pair_mask(kept, length, n, (h // window, w // window), pairs)
    size, tiles = tile, np.zeros((0, 3), np.int64)
    while size >= window:
        tiles = stable_tiles(ok, size // window)
        if len(tiles) >= min_tiles or size == window:
            break
        size //= 2
    if not len(tiles):
        return None
    off = np.arange(size)
    t = tiles[:, 0, None, None]
    y = (tiles[:, 1, None, None] * size + off[None, :, None])
    x = (tiles[:, 2, None, None] * size + off[None, None, :])
    return frames[t, y, x].astype(np.float64), frames[t + 1, y, x].astype(np.float64), tiles


def fit_temporal(frames: np.ndarray, kept: np.ndarray, length: int, window: int, *, stride: int | None = None,
                 pairs: np.ndarray | None = None, tile: int = MODEL_TILE, min_tiles: int = MIN_TILES,
                 average: str = MODEL_AVERAGE, nlf: bool = False,
                 defect_level: float = DEFECT_LEVEL, defect_fraction: float = DEFECT_FRACTION) -> NoiseModel | None:
    """The noise model of one sequence from its consecutive-frame differences (see the module text).

    frames `[T, H, W]`; kept `[K, 3]` `(t0, gy, gx)` bank windows of `length` frames on the grid of
    `window`-px boxes with step `stride` (= window); pairs `[T - 1]` bool: the pairs of one scene
    (default all); nlf: also fit the noise-level function (`fit_nlf`, model format 3; off: the
    model of format 2, field for field). None when no pair has a stable tile of even one window.
    """
    f = np.asarray(frames)
    if f.ndim != 3:
        raise ValueError(f"frames must be [T, H, W], got shape {f.shape}")
    stride = window if stride is None else stride
    if stride != window:
        raise ValueError("the temporal fit needs stride == window (tiles of whole boxes)")
    if tile < window or tile % window:
        raise ValueError(f"tile must be a multiple of the window ({window}), got {tile}")
    n, h, w = f.shape
    found = pair_tiles(f, kept, length, window, pairs=pairs, tile=tile, min_tiles=min_tiles)
    if found is None:
        return None
    a, b, tiles = found
    size = a.shape[-1]
    temp = fit_spectra((a - b) / np.sqrt(2), average)
    still_a, still_b, _ = split_offsets(detrend((a + b) / 2))
    fixed_row = shared_spectrum(still_a, tiles[:, 1], tiles[:, 2])  # rows: tiles side by side
    fixed_col = shared_spectrum(still_b, tiles[:, 2], tiles[:, 1])  # columns: tiles one above the other
    # slower than one bank window a static scene does make rows alike (a sky's vertical gradient
    # is the same along every row): those bins are no fixed stripe
    slow = np.abs(np.fft.fftfreq(size)) < 1.0 / window
    fixed_row[slow] = fixed_col[slow] = 0.0
    psd2d, row_psd, col_psd = temp["psd2d"], temp["row_psd"] + fixed_row, temp["col_psd"] + fixed_col
    if size != tile:  # stored on the tile grid: a spectrum per bin keeps its scale when resampled
        psd2d = interp_psd2d(psd2d, (tile, tile))
        row_psd, col_psd = interp_psd1d(row_psd, tile), interp_psd1d(col_psd, tile)
        fixed_row, fixed_col = interp_psd1d(fixed_row, tile), interp_psd1d(fixed_col, tile)
    sigma = float(np.sqrt(psd2d.mean() + row_psd.mean() + col_psd.mean()))
    defects, d_level, d_frac = find_defects(f, temp["sigma"], defect_level, defect_fraction)
    levels = fit_nlf(a, b) if nlf else {}
    return NoiseModel(mean_level=float((a + b).mean() / 2), sigma=sigma, sigma_temporal=float(temp["sigma"]),
                      sigma_fixed=float(np.sqrt(fixed_row.mean() + fixed_col.mean())),
                      sigma_row=float(np.sqrt(row_psd.mean())), sigma_col=float(np.sqrt(col_psd.mean())),
                      psd2d=psd2d, row_psd=row_psd, col_psd=col_psd, n_windows=int(len(tiles)), n_frames=int(n),
                      frame_h=int(h), frame_w=int(w), defects=defects, defect_level=d_level,
                      defect_fraction=d_frac, fit_window=int(size), **levels)


def box_mean(x: np.ndarray, size: int) -> np.ndarray:
    """The mean of each pixel's `size` x `size` box (odd size, edges replicated) over the last two
    axes: float64 `[..., H, W]` of `[..., H, W]` (scipy's uniform_filter, mode "nearest", in numpy:
    the transfer stage imports no scipy). The local grey level of the noise-level function, in
    its fit and where transfer draws it."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"box_mean needs an odd size, got {size}")
    x = np.asarray(x, np.float64)
    r = size // 2
    h, w = x.shape[-2:]
    p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(r, r), (r, r)], mode="edge")
    rows = sum(p[..., i:i + h, :] for i in range(size))
    return sum(rows[..., j:j + w] for j in range(size)) / size ** 2


def fit_nlf(a: np.ndarray, b: np.ndarray, *, bin_width: float = NLF_BIN, min_count: int = NLF_MIN_COUNT,
            chunk: int = 16) -> dict[str, np.ndarray]:
    """The noise-level function of pairs' tiles `a`, `b` `[N, s, s]` (frames t and t + 1 at the same
    pixels; see the module text): `{nlf_level, nlf_sigma, nlf_count}`, each `[B]` (B may be 0:
    no bin had `min_count` pixels, or the tiles are under 5 px). Tiles go `chunk` at a time (the
    filters' float64 copies of 16 256-px tiles are 8 MiB each)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 3 or a.shape != b.shape:
        raise ValueError(f"a and b must both be [N, s, s], got {a.shape} and {b.shape}")
    empty = {"nlf_level": np.zeros(0), "nlf_sigma": np.zeros(0), "nlf_count": np.zeros(0, np.int64)}
    edge = NLF_LEVEL_BOX // 2
    if not len(a) or min(a.shape[1:]) <= 2 * edge:
        return empty
    lo = np.floor(float(np.minimum(a, b).min()) / bin_width)
    nbins = int(np.floor(float(np.maximum(a, b).max()) / bin_width) - lo) + 1
    count, level_sum, hp_sum = np.zeros(nbins, np.int64), np.zeros(nbins), np.zeros(nbins)
    d2_total = hp2_total = 0.0
    inner = (slice(None), slice(edge, -edge), slice(edge, -edge))
    for start in range(0, len(a), chunk):
        ca, cb = a[start:start + chunk], b[start:start + chunk]
        r = detrend((ca - cb) / np.sqrt(2))
        hp = r - box_mean(r, NLF_HP_BOX)
        level = box_mean((ca + cb) / 2, NLF_LEVEL_BOX)
        r, hp, level = r[inner].ravel(), hp[inner].ravel() ** 2, level[inner].ravel()
        idx = np.clip(np.floor(level / bin_width) - lo, 0, nbins - 1).astype(np.int64)
        count += np.bincount(idx, minlength=nbins)
        level_sum += np.bincount(idx, level, minlength=nbins)
        hp_sum += np.bincount(idx, hp, minlength=nbins)
        d2_total += float(np.dot(r, r))
        hp2_total += float(hp.sum())
    keep = count >= max(1, int(min_count))
    if not keep.any() or hp2_total <= 0:
        return empty
    calibration = d2_total / hp2_total
    return {"nlf_level": level_sum[keep] / count[keep],
            "nlf_sigma": np.sqrt(hp_sum[keep] / count[keep] * calibration),
            "nlf_count": count[keep].astype(np.int64)}


def nlf_gain(model: NoiseModel, level: np.ndarray) -> np.ndarray | None:
    """The factor `[...]` float64 on the model's 2-D noise at pixels of grey `level` `[...]`:
    `NLF(level) / NLF_rms` (module text), clamped to the fitted levels; None where the model has
    no function or no bin (its level is flat)."""
    if not model.has_nlf or not len(model.nlf_level):
        return None
    sig = np.asarray(model.nlf_sigma, np.float64)
    n = np.asarray(model.nlf_count, np.float64)
    rms = float(np.sqrt(np.dot(n, sig * sig) / n.sum()))
    if rms <= 0:
        return None
    return np.interp(np.asarray(level, np.float64), np.asarray(model.nlf_level, np.float64), sig) / rms


# ---------------------------------------------------------------- storage as arrays


def models_to_arrays(models: Sequence[NoiseModel]) -> dict[str, np.ndarray]:
    """Models stacked along a first axis (defects as one table with their model's index), for the bank."""
    if not models:
        raise ValueError("no model to store")
    windows = {m.window for m in models}
    if len(windows) != 1:
        raise ValueError(f"models of one bank share one window, got {sorted(windows)}")
    out: dict[str, np.ndarray] = {k: np.array([getattr(m, k) for m in models], np.float64) for k in SCALARS}
    out.update({k: np.array([getattr(m, k) for m in models], np.int64) for k in COUNTS})
    out.update({k: np.stack([getattr(m, k) for m in models]).astype(np.float64) for k in SPECTRA})
    out["defect_model"] = np.concatenate([np.full(len(m.defects), i, np.int64) for i, m in enumerate(models)])
    out["defect_y"] = np.concatenate([m.defects[:, 0] for m in models]).astype(np.int64)
    out["defect_x"] = np.concatenate([m.defects[:, 1] for m in models]).astype(np.int64)
    out["defect_level"] = np.concatenate([m.defect_level for m in models]).astype(np.float64)
    out["defect_fraction"] = np.concatenate([m.defect_fraction for m in models]).astype(np.float64)
    if any(m.fit_window > 0 for m in models):
        out["fit_window"] = np.array([m.fit_window for m in models], np.int64)
    if any(m.has_nlf for m in models):  # format 3; a model without one stores no bin (a flat level)
        tables = [(m.nlf_level, m.nlf_sigma, m.nlf_count) if m.has_nlf else (np.zeros(0),) * 3 for m in models]
        out["nlf_model"] = np.concatenate([np.full(len(t[0]), i, np.int64) for i, t in enumerate(tables)])
        out["nlf_level"] = np.concatenate([t[0] for t in tables]).astype(np.float64)
        out["nlf_sigma"] = np.concatenate([t[1] for t in tables]).astype(np.float64)
        out["nlf_count"] = np.concatenate([t[2] for t in tables]).astype(np.int64)
    return out


def models_from_arrays(arrays: Mapping[str, np.ndarray]) -> list[NoiseModel]:
    """The inverse of `models_to_arrays`."""
    n = len(arrays["sigma"])
    which = np.asarray(arrays["defect_model"], np.int64)
    nlf_which = np.asarray(arrays["nlf_model"], np.int64) if "nlf_model" in arrays else None
    models = []
    for i in range(n):
        d = which == i
        levels = {}
        if nlf_which is not None:
            b = nlf_which == i
            levels = {"nlf_level": np.asarray(arrays["nlf_level"][b], np.float64),
                      "nlf_sigma": np.asarray(arrays["nlf_sigma"][b], np.float64),
                      "nlf_count": np.asarray(arrays["nlf_count"][b], np.int64)}
        models.append(NoiseModel(
            **{k: float(arrays[k][i]) for k in SCALARS},
            **{k: int(arrays[k][i]) for k in COUNTS},
            **{k: np.asarray(arrays[k][i], np.float64) for k in SPECTRA},
            defects=np.stack([arrays["defect_y"][d], arrays["defect_x"][d]], axis=1).astype(np.int64),
            defect_level=np.asarray(arrays["defect_level"][d], np.float64),
            defect_fraction=np.asarray(arrays["defect_fraction"][d], np.float64),
            fit_window=int(arrays["fit_window"][i]) if "fit_window" in arrays else -1, **levels))
    return models


# ---------------------------------------------------------------- synthesis


def interp_psd1d(psd: np.ndarray, n: int) -> np.ndarray:
    """A periodic spectrum `[m]` (FFT order) at the frequencies of an n-point FFT, linearly."""
    psd = np.asarray(psd, np.float64)
    m = psd.shape[-1]
    pos = np.fft.fftfreq(n) * m
    i0 = np.floor(pos)
    t = pos - i0
    i0 = i0.astype(np.int64) % m
    i1 = (i0 + 1) % m
    return psd[..., i0] * (1 - t) + psd[..., i1] * t


def interp_psd2d(psd: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A periodic 2-D spectrum `[h, w]` at the frequencies of an `shape` FFT, bilinearly."""
    rows = interp_psd1d(np.asarray(psd, np.float64).T, shape[0]).T  # along y
    return interp_psd1d(rows, shape[1])


def draw_model_params(rng: np.random.Generator, n_models: int) -> tuple[int, int]:
    """(model index, synthesis seed) for one sample: the model drawn uniformly (one per sequence)."""
    if n_models < 1:
        raise ValueError("the noise model is empty")
    return int(rng.integers(n_models)), int(rng.integers(0, 2**63 - 1))


def _gaussian_1d(rng: np.random.Generator, psd: np.ndarray, n: int) -> np.ndarray:
    amp = np.sqrt(interp_psd1d(psd, n)[: n // 2 + 1])
    return np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * amp, n=n)


def synthesize_parts(model: NoiseModel, size: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The parts of `synthesize`: the 2-D noise `[H, W]`, the row offsets `[H]` and the column
    offsets `[W]`, float64 (the field is their sum)."""
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    rng = np.random.default_rng(int(seed))
    amp = np.sqrt(interp_psd2d(model.psd2d, (h, w))[:, : w // 2 + 1])
    e = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((h, w))) * amp, s=(h, w))
    rows = _gaussian_1d(rng, model.row_psd, h)
    cols = _gaussian_1d(rng, model.col_psd, w)
    return e, rows, cols


def synthesize(model: NoiseModel, size: tuple[int, int], seed: int) -> np.ndarray:
    """A zero-mean noise field float64 `[H, W]` with the model's spectrum and stripes, at native pitch.

    The same (model, size, seed) gives the same bits. Its variance is about `mean(psd2d)` plus
    `sigma_row^2 + sigma_col^2`.
    """
    e, rows, cols = synthesize_parts(model, size, seed)
    return e + rows[:, None] + cols[None, :]


def model_field(model: NoiseModel, size: tuple[int, int], seed: int) -> np.ndarray:
    """`synthesize` around the model's mean grey level, float32 `[H, W]`: the field a transfer fuses."""
    return (model.mean_level + synthesize(model, size, seed)).astype(np.float32)
