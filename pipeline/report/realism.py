"""Noise realism: how close a set's noise is to the sensor's, in numbers a reader can check.

For groups of grey images `[N, H, W]` (the originals, each transfer mode, the noise bank's frames
resampled to the same scale, or bare noise fields):

- **flat windows** (`flat_boxes`): the `window`-px boxes of a grid (stride = window) whose
  variance is below `max_var`, the noise bank's own test: where a box shows noise, not scene.
- **high-pass std**: per flat window, the std of the image minus its 5x5 median (computed on the
  whole image, reflected at its borders, then cut), the median over windows. A median filter
  keeps edges, so what is left is pixel noise and fine texture.
- **estimate_sigma**: the estimator of `skimage.restoration.estimate_sigma` (Donoho's: the median
  absolute finest diagonal db2 wavelet coefficient / 0.6745, robust to edges) of each image, the
  median over images. skimage needs PyWavelets for it, which is no dependency here, so
  `estimate_sigma` computes the same transform with numpy (`tests/test_realism.py` compares the
  two where PyWavelets is installed).
- **row/column profile spectra**: per flat window (minus its least-squares plane), the 1-D
  periodogram of its row means and of its column means, averaged: stripes and banding.
- **radially averaged PSD**: per flat window (minus its plane), the 2-D periodogram
  `|FFT2|^2 / w^2`, averaged over windows, then over rings of radius `k / w`, k = 1 .. w/2.
- **mean |log10 PSD ratio|** of a group against a reference (the originals, or the sensor's
  frames): the mean over the rings of `|log10(psd / psd_ref)|`; 0.1 is a 26 % level difference.
  Correlation of two PSD curves is weak evidence (all fall with frequency); this is not.

`realism_stats` gives all of it as a JSON-ready dict, `psd_plot` draws the curves (PNG, PIL only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from sirst5k.method.noise_model import detrend, periodogram1d, periodogram2d

WINDOW = 32
MAX_VAR = 50.0
MEDIAN = 5


def _batch(images) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"images must be [N, H, W], got shape {x.shape}")
    return x


# db2 decomposition high-pass filter (PyWavelets' `Wavelet("db2").dec_hi`)
_DB2_HI = np.array([-0.48296291314469025, 0.836516303737469, -0.22414386804185735, -0.12940952255092145])


def _dwt_hi(x: np.ndarray, axis: int) -> np.ndarray:
    """One level of db2 high-pass analysis along `axis` (symmetric extension, as pywt's default)."""
    x = np.moveaxis(x, axis, -1)
    ext = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(3, 3)], mode="symmetric")
    n = ext.shape[-1] - 3
    y = sum(_DB2_HI[j] * ext[..., 3 - j: 3 - j + n] for j in range(4))
    return np.moveaxis(y[..., 1::2], -1, axis)


def estimate_sigma(image: np.ndarray) -> float:
    """Noise sigma of a grey image `[H, W]`: median |HH| / 0.6745 of its finest db2 diagonal detail."""
    x = np.asarray(image, np.float64)
    hh = _dwt_hi(_dwt_hi(x, 0), 1)
    return float(np.median(np.abs(hh)) / 0.6744897501960817)


def flat_boxes(images, window: int = WINDOW, max_var: float = MAX_VAR) -> np.ndarray:
    """`[K, 3]` int64 (image, y0, x0) of the grid boxes whose variance is below `max_var`."""
    x = _batch(images).astype(np.float64)
    n, h, w = x.shape
    gy, gx = h // window, w // window
    if not (gy and gx):
        return np.zeros((0, 3), np.int64)
    boxes = x[:, : gy * window, : gx * window].reshape(n, gy, window, gx, window)
    var = boxes.var(axis=(2, 4))
    idx = np.argwhere(var < max_var)
    return np.stack([idx[:, 0], idx[:, 1] * window, idx[:, 2] * window], axis=1).astype(np.int64)


def inside_boxes(mask, window: int = WINDOW) -> np.ndarray:
    """`[K, 3]` (image, y0, x0) of the grid boxes lying wholly where `mask` `[N, H, W]` is at least
    0.999 (a float mask resized with its image: "where the frame was flat at native scale")."""
    m = _batch(mask).astype(np.float64)
    n, h, w = m.shape
    gy, gx = h // window, w // window
    if not (gy and gx):
        return np.zeros((0, 3), np.int64)
    low = m[:, : gy * window, : gx * window].reshape(n, gy, window, gx, window).min(axis=(2, 4))
    idx = np.argwhere(low >= 0.999)
    return np.stack([idx[:, 0], idx[:, 1] * window, idx[:, 2] * window], axis=1).astype(np.int64)


def all_boxes(shape: tuple[int, int, int], window: int = WINDOW) -> np.ndarray:
    """Every grid box of a `[N, H, W]` batch, as `flat_boxes` lists them (for bare noise fields)."""
    n, h, w = shape
    ii, yy, xx = np.meshgrid(np.arange(n), np.arange(h // window) * window, np.arange(w // window) * window,
                             indexing="ij")
    return np.stack([ii.ravel(), yy.ravel(), xx.ravel()], axis=1).astype(np.int64)


def highpass(images, size: int = MEDIAN) -> np.ndarray:
    """Each image minus its `size` x `size` median (reflected borders), float64 `[N, H, W]`."""
    from scipy import ndimage

    x = _batch(images).astype(np.float64)
    return x - ndimage.median_filter(x, size=(1, size, size), mode="reflect")


def cut(x: np.ndarray, boxes: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """The boxes `(image, y0, x0)` of `x` `[N, H, W]`: `[K, window, window]`."""
    boxes = np.asarray(boxes, np.int64).reshape(-1, 3)
    off = np.arange(window)
    return x[boxes[:, 0, None, None], boxes[:, 1, None, None] + off[None, :, None], boxes[:, 2, None, None] + off]


def radial_average(psd2d: np.ndarray) -> np.ndarray:
    """A `[w, w]` spectrum (FFT order) averaged over rings `k - 1/2 <= w |f| < k + 1/2`, k = 1 .. w/2."""
    w = psd2d.shape[-1]
    f = np.fft.fftfreq(w) * w
    r = np.rint(np.hypot(f[:, None], f[None, :])).astype(np.int64)
    out = np.empty(w // 2)
    for k in range(1, w // 2 + 1):
        out[k - 1] = psd2d[r == k].mean()
    return out


def frequencies(window: int = WINDOW) -> np.ndarray:
    """The rings' radii in cycles per pixel, `k / window`."""
    return np.arange(1, window // 2 + 1) / window


@dataclass(frozen=True)
class NoiseSummary:
    """What `summarize` measures of one group (see the module text)."""

    n_images: int
    n_windows: int
    highpass_std: np.ndarray  # [K] per flat window
    sigma: np.ndarray  # [N] estimate_sigma per image
    psd: np.ndarray  # [w/2] radially averaged
    row_spectrum: np.ndarray  # [w/2 + 1] of the row means (rows' offsets along y)
    col_spectrum: np.ndarray  # [w/2 + 1] of the column means

    @property
    def highpass_median(self) -> float:
        return float(np.median(self.highpass_std)) if self.n_windows else float("nan")

    @property
    def sigma_median(self) -> float:
        return float(np.median(self.sigma)) if len(self.sigma) else float("nan")


def summarize(images, boxes: np.ndarray | None = None, window: int = WINDOW, max_var: float = MAX_VAR,
              sigma: bool = True) -> NoiseSummary:
    """The noise figures of a group of images `[N, H, W]` (uint8 or float).

    boxes: the windows to measure (default: `flat_boxes` of the images themselves; for bare noise
    fields, pass the flat boxes of the images they go into, or `all_boxes`).
    """
    x = _batch(images).astype(np.float64)
    if boxes is None:
        boxes = flat_boxes(x, window, max_var)
    boxes = np.asarray(boxes, np.int64).reshape(-1, 3)
    sig = np.zeros(0)
    if sigma and len(x):
        sig = np.array([estimate_sigma(img) for img in x])
    half = window // 2
    if not len(boxes):
        nan = np.full(half, np.nan)
        return NoiseSummary(len(x), 0, np.zeros(0), sig, nan, np.full(half + 1, np.nan), np.full(half + 1, np.nan))
    hp = cut(highpass(x), boxes, window)
    hp_std = hp.reshape(len(boxes), -1).std(axis=1)
    r = detrend(cut(x, boxes, window))
    psd = radial_average(periodogram2d(r))
    rows = periodogram1d(r.mean(axis=-1))[: half + 1]
    cols = periodogram1d(r.mean(axis=-2))[: half + 1]
    return NoiseSummary(len(x), len(boxes), hp_std, sig, psd, rows, cols)


def log_psd_distance(psd: np.ndarray, reference: np.ndarray) -> float:
    """Mean over the rings of `|log10(psd / reference)|` (rings where either is 0 or NaN left out)."""
    a, b = np.asarray(psd, np.float64), np.asarray(reference, np.float64)
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    return float(np.mean(np.abs(np.log10(a[ok] / b[ok])))) if ok.any() else float("nan")


def resample_frames(frames: Iterable[np.ndarray], scale: tuple[float, float]) -> list[np.ndarray]:
    """Frames resized by `scale` (sy, sx) with ingest's filter, in float (no rounding): "the bank's
    frames at the images' scale". A frame of `h x w` becomes `round(h sy) x round(w sx)`."""
    from sirst5k.method.transfer import resample_like_ingest

    out = []
    for f in frames:
        f = np.asarray(f)
        size = (max(1, int(round(f.shape[0] * scale[0]))), max(1, int(round(f.shape[1] * scale[1]))))
        out.append(resample_like_ingest(f.astype(np.float32), size))
    return out


def merge(parts: Sequence[NoiseSummary]) -> NoiseSummary:
    """Summaries of parts of one group (shards, images of other sizes) as one: windows pooled, the
    curves averaged with each part's window count as weight."""
    n_images = sum(p.n_images for p in parts)
    sig = np.concatenate([p.sigma for p in parts]) if parts else np.zeros(0)
    with_windows = [p for p in parts if p.n_windows]
    if not with_windows:
        half = len(parts[0].psd) if parts else WINDOW // 2
        return NoiseSummary(n_images, 0, np.zeros(0), sig, np.full(half, np.nan), np.full(half + 1, np.nan),
                            np.full(half + 1, np.nan))
    k = np.array([p.n_windows for p in with_windows], np.float64)
    weights = k / k.sum()
    pooled = lambda name: np.sum([w * getattr(p, name) for w, p in zip(weights, with_windows)], axis=0)  # noqa: E731
    return NoiseSummary(n_images, int(k.sum()), np.concatenate([p.highpass_std for p in with_windows]), sig,
                        pooled("psd"), pooled("row_spectrum"), pooled("col_spectrum"))


def summarize_many(images: Sequence[np.ndarray], window: int = WINDOW, max_var: float = MAX_VAR) -> NoiseSummary:
    """`summarize` over images of different sizes (each measured alone, then `merge`d)."""
    return merge([summarize(np.asarray(img)[None], window=window, max_var=max_var) for img in images])


def _r(x: float, digits: int = 4) -> float | None:
    return None if not np.isfinite(x) else round(float(x), digits)


def realism_stats(groups: Mapping[str, NoiseSummary], reference: str | None = "original",
                  sensor: str | None = None) -> dict:
    """Per group: windows, medians, curves, and its distance to `reference` and to `sensor`
    (names of groups, when present): `highpass_ratio` (median high-pass std over the other's)
    and `log_psd_ratio` (mean |log10 PSD ratio|). JSON-ready (NaN as null)."""
    out: dict = {"window": None, "frequencies": None, "groups": {}}
    for name, s in groups.items():
        w = 2 * len(s.psd)
        out["window"], out["frequencies"] = w, [_r(f, 5) for f in frequencies(w)]
        g = {"images": s.n_images, "windows": s.n_windows, "highpass_std": _r(s.highpass_median),
             "estimate_sigma": _r(s.sigma_median), "psd": [_r(v, 6) for v in s.psd],
             "row_spectrum": [_r(v, 6) for v in s.row_spectrum], "col_spectrum": [_r(v, 6) for v in s.col_spectrum]}
        for role, other in (("vs_reference", reference), ("vs_sensor", sensor)):
            if other and other in groups and other != name:
                o = groups[other]
                g[role] = {"group": other, "highpass_ratio": _r(s.highpass_median / o.highpass_median),
                           "log_psd_ratio": _r(log_psd_distance(s.psd, o.psd))}
        out["groups"][name] = g
    return out


def realism_table(stats: Mapping) -> list[list]:
    """Rows (group, windows, high-pass std, estimate_sigma, vs reference ratio and log-PSD, vs sensor ...)."""
    rows = []
    for name, g in stats["groups"].items():
        ref, sen = g.get("vs_reference", {}), g.get("vs_sensor", {})
        rows.append([name, g["windows"], g["highpass_std"], g["estimate_sigma"], ref.get("highpass_ratio"),
                     ref.get("log_psd_ratio"), sen.get("highpass_ratio"), sen.get("log_psd_ratio")])
    return rows


TABLE_HEADERS = ("group", "flat windows", "high-pass std", "estimate_sigma", "hp / reference",
                 "|log10 PSD ratio| vs reference", "hp / sensor", "|log10 PSD ratio| vs sensor")

_COLOURS = ((230, 230, 230), (240, 80, 60), (80, 170, 250), (250, 200, 50), (120, 220, 120), (220, 120, 230),
            (250, 150, 60), (160, 160, 160), (60, 220, 210))


def psd_plot(stats: Mapping, out: str | Path, title: str = "radially averaged noise PSD of flat windows") -> Path:
    """Draw every group's PSD (log10) against frequency as one PNG; returns its path."""
    from PIL import Image, ImageDraw

    from sirst5k.formats.imageio import write_png

    width, height, left, right, top, bottom = 860, 460, 70, 290, 34, 50
    img = Image.new("RGB", (width, height), (24, 24, 24))
    d = ImageDraw.Draw(img)
    freqs = np.asarray(stats["frequencies"], np.float64)
    curves = {n: np.asarray([np.nan if v is None else v for v in g["psd"]], np.float64)
              for n, g in stats["groups"].items()}
    logs = {n: np.log10(np.where(c > 0, c, np.nan)) for n, c in curves.items()}
    finite = np.concatenate([v[np.isfinite(v)] for v in logs.values()] or [np.zeros(1)])
    lo, hi = (np.floor(finite.min() * 2) / 2, np.ceil(finite.max() * 2) / 2) if finite.size else (-1.0, 1.0)
    hi = hi if hi > lo else lo + 1
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    px = lambda f: x0 + (f - freqs[0]) / (freqs[-1] - freqs[0]) * (x1 - x0)  # noqa: E731
    py = lambda v: y1 - (v - lo) / (hi - lo) * (y1 - y0)  # noqa: E731
    d.rectangle([x0, y0, x1, y1], outline=(120, 120, 120))
    for v in np.arange(lo, hi + 1e-9, 0.5):
        d.line([x0, py(v), x1, py(v)], fill=(50, 50, 50))
        d.text((8, py(v) - 6), f"1e{v:g}", fill=(200, 200, 200))
    for f in (0.1, 0.2, 0.3, 0.4, 0.5):
        if freqs[0] <= f <= freqs[-1]:
            d.line([px(f), y1, px(f), y1 + 4], fill=(200, 200, 200))
            d.text((px(f) - 10, y1 + 8), f"{f:g}", fill=(200, 200, 200))
    d.text((x0 + (x1 - x0) // 2 - 70, height - 22), "frequency (cycles / pixel)", fill=(200, 200, 200))
    d.text((x0, 10), title, fill=(255, 255, 255))
    for i, (name, v) in enumerate(logs.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        pts = [(px(f), py(y)) for f, y in zip(freqs, v) if np.isfinite(y)]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        d.line([x1 + 12, y0 + 10 + 18 * i, x1 + 32, y0 + 10 + 18 * i], fill=colour, width=3)
        d.text((x1 + 38, y0 + 4 + 18 * i), name[:40], fill=colour)
    out = Path(out)
    write_png(out, np.asarray(img))
    return out
