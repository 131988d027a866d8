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

    @property
    def window(self) -> int:
        return int(self.psd2d.shape[-1])


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


def periodogram2d(boxes: np.ndarray) -> np.ndarray:
    """Mean `|FFT2|^2 / (h w)` of boxes `[..., h, w]` over the leading axes: `[h, w]`."""
    x = np.asarray(boxes, dtype=np.float64)
    h, w = x.shape[-2:]
    spec = np.abs(np.fft.fft2(x.reshape(-1, h, w))) ** 2 / (h * w)
    return spec.mean(axis=0)


def periodogram1d(profiles: np.ndarray) -> np.ndarray:
    """Mean `|FFT|^2 / n` of profiles `[..., n]` over the leading axes: `[n]`."""
    x = np.asarray(profiles, dtype=np.float64)
    n = x.shape[-1]
    return (np.abs(np.fft.fft(x.reshape(-1, n))) ** 2 / n).mean(axis=0)


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


def fit_spectra(patches: np.ndarray) -> dict[str, np.ndarray | float]:
    """The spatial part of the fit from boxes `[..., w, w]` (any leading axes): psd2d, row_psd,
    col_psd, sigma, sigma_row, sigma_col (see the module text)."""
    x = np.asarray(patches)
    if x.ndim < 2 or x.shape[-1] != x.shape[-2] or x.shape[-1] < 4:
        raise ValueError(f"patches must be [..., w, w] with w >= 4, got shape {x.shape}")
    h, w = x.shape[-2:]
    r = detrend(x)
    a, b, e = split_offsets(r)
    psd2d = fill_axes(periodogram2d(e))
    row_psd = np.maximum(periodogram1d(a) - psd2d[:, 0] / w, 0.0)
    col_psd = np.maximum(periodogram1d(b) - psd2d[0, :] / h, 0.0)
    row_psd[0] = col_psd[0] = 0.0
    return {"psd2d": psd2d, "row_psd": row_psd, "col_psd": col_psd, "sigma": float(np.sqrt(np.mean(r * r))),
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
    return out


def models_from_arrays(arrays: Mapping[str, np.ndarray]) -> list[NoiseModel]:
    """The inverse of `models_to_arrays`."""
    n = len(arrays["sigma"])
    which = np.asarray(arrays["defect_model"], np.int64)
    models = []
    for i in range(n):
        d = which == i
        models.append(NoiseModel(
            **{k: float(arrays[k][i]) for k in SCALARS},
            **{k: int(arrays[k][i]) for k in COUNTS},
            **{k: np.asarray(arrays[k][i], np.float64) for k in SPECTRA},
            defects=np.stack([arrays["defect_y"][d], arrays["defect_x"][d]], axis=1).astype(np.int64),
            defect_level=np.asarray(arrays["defect_level"][d], np.float64),
            defect_fraction=np.asarray(arrays["defect_fraction"][d], np.float64)))
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


def synthesize(model: NoiseModel, size: tuple[int, int], seed: int) -> np.ndarray:
    """A zero-mean noise field float64 `[H, W]` with the model's spectrum and stripes, at native pitch.

    The same (model, size, seed) gives the same bits. Its variance is about `mean(psd2d)` plus
    `sigma_row^2 + sigma_col^2`.
    """
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    rng = np.random.default_rng(int(seed))
    amp = np.sqrt(interp_psd2d(model.psd2d, (h, w))[:, : w // 2 + 1])
    e = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((h, w))) * amp, s=(h, w))
    rows = _gaussian_1d(rng, model.row_psd, h)
    cols = _gaussian_1d(rng, model.col_psd, w)
    return e + rows[:, None] + cols[None, :]


def model_field(model: NoiseModel, size: tuple[int, int], seed: int) -> np.ndarray:
    """`synthesize` around the model's mean grey level, float32 `[H, W]`: the field a transfer fuses."""
    return (model.mean_level + synthesize(model, size, seed)).astype(np.float32)
