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
- **median PSD** (`median_psd`, for one group at a time): each bin's median over the windows / ln 2
  instead of the mean; the same spectrum for Gaussian noise, the typical window's where a few
  windows hold texture.
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
from sirst5k.method.transfer import resample_like_ingest

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


def highpass_boxes(images, boxes: np.ndarray, window: int = WINDOW, size: int = MEDIAN) -> np.ndarray:
    """`cut(highpass(images), boxes)`, computed in the boxes alone: each box and the `size // 2`
    pixels around it (the image reflected at its borders, as `highpass` does) gives the `size` x
    `size` neighbourhoods of the box's pixels, whose middle value (numpy's partition, in the
    images' own dtype: a median of an odd count is one of the values) is the median. The same
    numbers as `highpass`, bit for bit, at the windows' cost, not the images'."""
    x = _batch(images)
    boxes = np.asarray(boxes, np.int64).reshape(-1, 3)
    m = size // 2
    out = np.empty((len(boxes), window, window))
    # scipy's "reflect" repeats the edge pixel (d c b a | a b c d), numpy calls it "symmetric"
    padded = np.pad(x, ((0, 0), (m, m), (m, m)), mode="symmetric")
    for start in range(0, len(boxes), 256):
        region = cut(padded, boxes[start: start + 256], window + 2 * m)
        hood = np.lib.stride_tricks.sliding_window_view(region, (size, size), axis=(1, 2))
        hood = hood.reshape(len(region), window, window, size * size)
        med = np.partition(hood, size * size // 2, axis=-1)[..., size * size // 2]
        out[start: start + len(region)] = region[:, m: m + window, m: m + window].astype(np.float64) - med
    return out


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
    raw = _batch(images)
    x = raw.astype(np.float64)
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
    hp = highpass_boxes(raw if raw.dtype == np.uint8 else x, boxes, window)
    hp_std = hp.reshape(len(boxes), -1).std(axis=1)
    r = detrend(cut(x, boxes, window))
    psd = radial_average(periodogram2d(r))
    rows = periodogram1d(r.mean(axis=-1))[: half + 1]
    cols = periodogram1d(r.mean(axis=-2))[: half + 1]
    return NoiseSummary(len(x), len(boxes), hp_std, sig, psd, rows, cols)


def median_psd(images, boxes: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """The radially averaged PSD of the windows `boxes` of `images` `[N, H, W]` with each bin the
    median over the windows / ln 2 (`noise_model`'s "median" average) instead of their mean: `[w/2]`.

    For Gaussian noise it is the same spectrum (a periodogram bin is exponential: its median is ln 2
    times its mean). Where a minority of windows hold texture (real frames' stable regions), the
    mean follows them and this follows the typical window, as the median high-pass std does, so
    a level and a spectrum compared this way describe the same windows. One group measured at
    once (there is no `merge` of medians); NaN without windows."""
    boxes = np.asarray(boxes, np.int64).reshape(-1, 3)
    if not len(boxes):
        return np.full(window // 2, np.nan)
    x = _batch(images).astype(np.float64)
    return radial_average(periodogram2d(detrend(cut(x, boxes, window)), "median"))


def log_psd_distance(psd: np.ndarray, reference: np.ndarray) -> float:
    """Mean over the rings of `|log10(psd / reference)|` (rings where either is 0 or NaN left out)."""
    a, b = np.asarray(psd, np.float64), np.asarray(reference, np.float64)
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    return float(np.mean(np.abs(np.log10(a[ok] / b[ok])))) if ok.any() else float("nan")


def resample_frames(frames: Iterable[np.ndarray], scale: tuple[float, float]) -> list[np.ndarray]:
    """Frames resized by `scale` (sy, sx) with ingest's filter, in float (no rounding): "the bank's
    frames at the images' scale". A frame of `h x w` becomes `round(h sy) x round(w sx)`."""
    out = []
    for f in frames:
        f = np.asarray(f)
        out.append(resample_like_ingest(f, scaled_size(f.shape, scale)))
    return out


def scaled_size(shape: tuple[int, ...], scale: tuple[float, float]) -> tuple[int, int]:
    """`round(h sy) x round(w sx)`, at least 1 x 1."""
    return max(1, int(round(shape[0] * scale[0]))), max(1, int(round(shape[1] * scale[1])))


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


def _ratio(a: float, b: float) -> float:
    return a / b if np.isfinite(a) and np.isfinite(b) and b > 0 else float("nan")


def realism_stats(groups: Mapping[str, NoiseSummary], reference: str | None = "original",
                  sensor: str | None = None, samples: Mapping[str, int] | None = None) -> dict:
    """Per group: windows, medians, curves, and its distance to `reference` and to `sensor`
    (names of groups, when present): `highpass_ratio` (median high-pass std over the other's)
    and `log_psd_ratio` (mean |log10 PSD ratio|). JSON-ready (NaN as null). `samples`: the
    group's size when fewer of its images were measured (written first, as "samples")."""
    out: dict = {"window": None, "frequencies": None, "groups": {}}
    for name, s in groups.items():
        w = 2 * len(s.psd)
        out["window"], out["frequencies"] = w, [_r(f, 5) for f in frequencies(w)]
        g = {"samples": int(samples[name])} if samples is not None and name in samples else {}
        g.update({"images": s.n_images, "windows": s.n_windows, "highpass_std": _r(s.highpass_median),
                  "estimate_sigma": _r(s.sigma_median), "psd": [_r(v, 6) for v in s.psd],
                  "row_spectrum": [_r(v, 6) for v in s.row_spectrum],
                  "col_spectrum": [_r(v, 6) for v in s.col_spectrum]})
        for role, other in (("vs_reference", reference), ("vs_sensor", sensor)):
            if other and other in groups and other != name:
                o = groups[other]
                g[role] = {"group": other, "highpass_ratio": _r(_ratio(s.highpass_median, o.highpass_median)),
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


# ---------------------------------------------------------------- the report's pass (report.build)
#
# A dataset's groups: "original", one per transfer setting and m ("transfer blend/resize m=0.1"),
# "negative" (and any other kind by its name), each measured per shard (a task each) on at most
# SHARD_IMAGES of its images and SHARD_WINDOWS of their flat windows, both spread evenly over the
# shard in its order (so the figures do not depend on the workers), then merged in shard order;
# and "bank": the noise bank's patches put back where they were cut in their frames, resampled to
# the images' scale (BANK_FRAMES frames, BANK_WINDOWS windows, evenly).

SHARD_IMAGES = 32  # images measured per group and shard
SHARD_WINDOWS = 160  # flat windows measured per group and shard
BANK_FRAMES = 32  # bank frames measured
BANK_WINDOWS = 512  # bank windows measured
BANK = "bank"
KIND_ORDER = ("original", "transfer", "negative")


def _evenly(n: int, k: int) -> np.ndarray:
    """k indices spread evenly over range(n), first and last included (all when n <= k)."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def transfer_label(params: Mapping | None) -> str:
    """"transfer <mode>/<field>[ <noise scale>]" from the transfer stage's recorded params, or
    "transfer" without them. A mosaic or model field recorded without `noise_scale` was made at
    the bank's pitch (the only scale before the option; its version omits "bank")."""
    if not isinstance(params, Mapping) or not params.get("mode") or not params.get("field"):
        return "transfer"
    label = f"transfer {params['mode']}/{params['field']}"
    if params["field"] != "resize":
        label += f" {params.get('noise_scale', 'bank')}"
    return label


def group_names(kinds, mixes, label: str = "transfer") -> np.ndarray:
    """Each sample's group: its kind, and for a transfer `label` and its m ("... m=0.1")."""
    kinds = np.asarray(kinds).astype(str)
    mixes = np.asarray(mixes, np.float64)
    out = kinds.astype(object)
    for i in np.flatnonzero(kinds == "transfer"):
        out[i] = f"{label} m={mixes[i]:g}" if np.isfinite(mixes[i]) else label
    return out


def group_order(name: str, mix: float = float("nan")) -> tuple:
    """Sort key: originals, transfers by m, negatives, other kinds by name, the bank last."""
    if name == BANK:
        return (len(KIND_ORDER) + 1, 0.0, name)
    kind = name.split(" ", 1)[0]
    rank = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
    return (rank, mix if np.isfinite(mix) else -1.0, name)


def shard_realism(path: str, label: str = "transfer", images: int = SHARD_IMAGES,
                  windows: int = SHARD_WINDOWS) -> dict:
    """One shard's part of the report's realism pass (a task): {"groups": {name: NoiseSummary},
    "samples": {name: count}, "mix": {name: m}, "scales": [N, 2] the originals' scale (image
    size over `orig_h`, `orig_w`; none where not recorded)}."""
    import h5py

    from sirst5k.formats.shards import read_meta

    meta = read_meta(path)
    names = group_names(meta["kind"], meta["mix"], label)
    out: dict = {"groups": {}, "samples": {}, "mix": {}, "scales": np.zeros((0, 2))}
    with h5py.File(path, "r") as f:
        data = f["images"]
        height, width = data.shape[1:]
        for name in sorted(set(names.tolist())):
            rows = np.flatnonzero(names == name)
            chosen = rows[_evenly(len(rows), images)]
            x = np.stack([data[int(i)] for i in chosen])  # one read per image: h5py's fancy index is slow
            boxes = inside_valid(flat_boxes(x), meta, chosen)
            out["groups"][name] = summarize(x, boxes[_evenly(len(boxes), windows)])
            out["samples"][name] = int(len(rows))
            out["mix"][name] = float(np.asarray(meta["mix"], np.float64)[rows[0]])
    orig = np.asarray(meta["kind"]).astype(str) == "original"
    oh, ow = np.asarray(meta["orig_h"], np.float64), np.asarray(meta["orig_w"], np.float64)
    known = orig & (oh > 0) & (ow > 0)
    # a padded image's scale is that of its valid region (the image ingest resized)
    vh = np.asarray(meta.get("valid_h", np.full(len(oh), -1)), np.float64)
    vw = np.asarray(meta.get("valid_w", np.full(len(ow), -1)), np.float64)
    hh, ww = np.where(vh > 0, vh, height), np.where(vw > 0, vw, width)
    out["scales"] = np.stack([hh[known] / oh[known], ww[known] / ow[known]], axis=1)
    return out


def inside_valid(boxes: np.ndarray, meta, rows: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """The boxes `[K, 3]` (index into `rows`, y0, x0) lying wholly inside their image's valid
    region: a padded `--keep-aspect` image's padding is flat but no noise (meta `valid_h`,
    `valid_w`; -1 or absent = the whole image)."""
    if "valid_h" not in meta or "valid_w" not in meta or not len(boxes):
        return boxes
    vh = np.asarray(meta["valid_h"], np.int64)[rows][boxes[:, 0]]
    vw = np.asarray(meta["valid_w"], np.int64)[rows][boxes[:, 0]]
    keep = ((vh <= 0) | (boxes[:, 1] + window <= vh)) & ((vw <= 0) | (boxes[:, 2] + window <= vw))
    return boxes[keep]


def images_scale(scales: np.ndarray) -> tuple[float, float]:
    """The images' scale: the median over the originals of image size / size as read (1, 1
    when none is recorded)."""
    s = np.asarray(scales, np.float64).reshape(-1, 2)
    return (1.0, 1.0) if not len(s) else (float(np.median(s[:, 0])), float(np.median(s[:, 1])))


def bank_frames(path: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """The bank's frames as far as it holds them: per (sequence, frame) in bank order, a float
    canvas with each of its rows' patches where it was cut (`/y`, `/x`), the rest at the mean of
    those patches, and the mask of where they are (canvas: the sequence's patches' extent)."""
    from sirst5k.formats.bank import read_patches, read_rows

    rows, patches = read_rows(path), read_patches(path)
    if not len(patches):
        return []
    w = patches.shape[1]
    seq = rows["sequence"].astype(str)
    keys = list(zip(seq.tolist(), rows["frame_index"].tolist()))
    extent = {}
    for s, y, x in zip(seq.tolist(), rows["y"].tolist(), rows["x"].tolist()):
        h0, w0 = extent.get(s, (0, 0))
        extent[s] = (max(h0, y + w), max(w0, x + w))
    order: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        order.setdefault(k, []).append(i)
    out = []
    for (s, _), idx in order.items():
        h, wd = extent[s]
        canvas = np.full((h, wd), float(patches[idx].mean()), np.float32)
        mask = np.zeros((h, wd), np.float32)
        for i in idx:
            y, x = int(rows["y"][i]), int(rows["x"][i])
            canvas[y: y + w, x: x + w] = patches[i]
            mask[y: y + w, x: x + w] = 1
        out.append((canvas, mask))
    return out


def bank_realism(path: str, scale: tuple[float, float], frames: int = BANK_FRAMES,
                 windows: int = BANK_WINDOWS) -> NoiseSummary:
    """The bank's frames (`bank_frames`, `frames` of them evenly) resampled to `scale` as ingest
    resizes, measured in the grid windows wholly inside where the patches are (`inside_boxes`;
    `windows` of them evenly); estimate_sigma per measured window (a canvas's fill is no noise)."""
    held = bank_frames(path)
    held = [held[i] for i in _evenly(len(held), frames)]
    scaled, boxes = [], []
    for i, (canvas, mask) in enumerate(held):
        size = scaled_size(canvas.shape, scale)
        c, m = resample_like_ingest(canvas, size), resample_like_ingest(mask, size)
        scaled.append(c)
        b = inside_boxes(m[None])
        b[:, 0] = i
        boxes.append(b)
    allb = np.concatenate(boxes) if boxes else np.zeros((0, 3), np.int64)
    allb = allb[_evenly(len(allb), windows)]
    parts = []
    for i, c in enumerate(scaled):
        b = allb[allb[:, 0] == i].copy()
        if not len(b):
            continue
        b[:, 0] = 0
        s = summarize(c[None], b, sigma=False)
        sig = np.array([estimate_sigma(win) for win in cut(c[None].astype(np.float64), b)])
        parts.append(NoiseSummary(s.n_images, s.n_windows, s.highpass_std, sig, s.psd, s.row_spectrum, s.col_spectrum))
    merged = merge(parts) if parts else merge([summarize(np.zeros((1, 1, 1)), np.zeros((0, 3), np.int64), sigma=False)])
    return NoiseSummary(len(held), merged.n_windows, merged.highpass_std, merged.sigma, merged.psd,
                        merged.row_spectrum, merged.col_spectrum)


def column_name(group: str) -> str:
    """A group's column in realism.csv: letters, digits and "_" (dvc plots' field names take no dots)."""
    import re

    return re.sub(r"_+", "_", re.sub(r"[^0-9A-Za-z]", "_", group)).strip("_")


def write_csv(stats: Mapping, out: str | Path) -> Path:
    """realism.csv: `frequency`, then per group its log10 PSD (empty where not measured)."""
    import csv

    out = Path(out)
    names = list(stats["groups"])
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["frequency", *[column_name(n) for n in names]])
        for i, f in enumerate(stats["frequencies"] or []):
            row = []
            for n in names:
                v = stats["groups"][n]["psd"][i]
                row.append("" if v is None or v <= 0 else f"{np.log10(v):.4f}")
            writer.writerow([f, *row])
    return out
