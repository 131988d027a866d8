"""Difficulty tags of targets: size, local contrast, signal-to-clutter ratio (SCR), and their bins.

Pure numpy, batch-first (no scipy: every command that writes a shard computes these, and
importing scipy.ndimage alone cost 0.5-0.75 s of each such command). Targets are the 8-connected
components of a mask, numbered as everywhere in the pipeline (`sirst5k.method.targets`: label
order = raster order of each component's first pixel, labels 1..n per image).

Per target t of image I (uint8 grey levels):

- `area`: its pixel count.
- `target_mean`: the mean of I over its pixels.
- ring: the pixels whose chessboard (8-neighbour) distance to t is in [GUARD + 1, GUARD + RING]
  (the target dilated by GUARD + RING minus the target dilated by GUARD), leaving out every
  pixel within GUARD of any target of the image (t or another), clipped to the image. With the
  defaults (2, 5) a 3x3 target's ring is the 17x17 square minus the 7x7 one: 240 pixels. The
  guard keeps the blurred rim of the target (and masks a pixel too tight) out of the background.
- `ring_mean`, `ring_std`: mean and standard deviation (population, ddof=0) of I over the ring.
- `contrast` = target_mean - ring_mean (grey levels; negative for a target darker than its ring).
- `scr` = contrast / max(ring_std, STD_FLOOR). STD_FLOOR = 1 grey level: a uint8 background
  flatter than one quantisation step (synthetic, saturated or clipped) would otherwise give an
  unbounded SCR; below it the std says nothing about the sensor.
  A target with an empty ring (its mask covers the image) has NaN ring stats, contrast and SCR.

Bins (upper edges inclusive for size, lower edges inclusive for SCR):

- size: `tiny` area <= 9 (fits a 3x3 box: a point target), `small` <= 36 (6x6), `medium` <= 81
  (9x9: the SPIE convention's upper size of a "small" target, about 0.12 % of a 256x256 image,
  that SIRST, NUDT-SIRST and IRSTD-1k follow), `large` above: an extended target.
- SCR: `low` SCR < 3 (dim: at or below the usual detection thresholds of local-contrast
  detectors, k ~ 3 sigma), `mid` 3 <= SCR < 10, `high` SCR >= 10; "" for NaN.

Per sample (`sample_difficulty`) the tags of its hardest target: `min_target_area` (its bin is
the sample's `size_bin`), `min_contrast`, `min_scr` (its bin is the sample's `scr_bin`), so a
sample is "tiny" when at least one of its targets is tiny, "low" when at least one has a low
SCR. A sample without targets has -1 / NaN / "".
"""

from __future__ import annotations

import json

import numpy as np

# `sirst5k.method.targets` (the labelling) is imported where the tags are computed: the shard
# reader and the loader import this module for its constants alone.

GUARD = 2  # pixels around a target (any target) left out of its ring
RING = 5  # ring width in pixels, beyond the guard
STD_FLOOR = 1.0  # grey levels: the least ring std an SCR divides by
SIZE_BINS = ("tiny", "small", "medium", "large")
SIZE_EDGES = (9, 36, 81)  # inclusive upper areas (pixels) of tiny, small, medium
SCR_BINS = ("low", "mid", "high")
SCR_EDGES = (3.0, 10.0)  # low < 3 <= mid < 10 <= high
NONE_BIN = ""
DEFINITION_VERSION = 1

# Per-target table columns: name -> (dtype, fill). `row` is the sample's row in its batch/shard,
# `label` its 1-based component number in label order; `y`, `x` its centroid.
TARGET_COLUMNS: dict[str, tuple[object, object]] = {
    "row": (np.int64, -1),
    "label": (np.int32, -1),
    "area": (np.int64, -1),
    "y": (np.float64, np.nan),
    "x": (np.float64, np.nan),
    "target_mean": (np.float64, np.nan),
    "ring_mean": (np.float64, np.nan),
    "ring_std": (np.float64, np.nan),
    "ring_pixels": (np.int64, 0),
    "contrast": (np.float64, np.nan),
    "scr": (np.float64, np.nan),
    "size_bin": (str, NONE_BIN),
    "scr_bin": (str, NONE_BIN),
}
# Per-sample fields (shard meta): name -> (dtype, fill)
SAMPLE_FIELDS: dict[str, tuple[object, object]] = {
    "min_target_area": (np.int64, -1),
    "min_contrast": (np.float64, np.nan),
    "min_scr": (np.float64, np.nan),
    "size_bin": (str, NONE_BIN),
    "scr_bin": (str, NONE_BIN),
}


def definition() -> dict[str, object]:
    """The parameters the tags depend on (stored beside them, so a reader can tell how they were made)."""
    return {"version": DEFINITION_VERSION, "connectivity": 8, "guard": GUARD, "ring": RING, "std_floor": STD_FLOOR,
            "size_bins": list(SIZE_BINS), "size_edges": list(SIZE_EDGES), "scr_bins": list(SCR_BINS),
            "scr_edges": list(SCR_EDGES)}


def definition_json() -> str:
    return json.dumps(definition(), sort_keys=True, separators=(",", ":"))


def size_bin(area) -> np.ndarray:
    """Size bin names (object [T]) of areas [T]; NONE_BIN for area < 1."""
    area = np.asarray(area, dtype=np.int64).reshape(-1)
    index = np.searchsorted(np.asarray(SIZE_EDGES), area, side="left")
    out = np.asarray(SIZE_BINS, dtype=object)[index]
    out[area < 1] = NONE_BIN
    return out


def scr_bin(scr) -> np.ndarray:
    """SCR bin names (object [T]) of SCRs [T]; NONE_BIN for NaN."""
    scr = np.asarray(scr, dtype=np.float64).reshape(-1)
    index = np.searchsorted(np.asarray(SCR_EDGES), np.nan_to_num(scr, nan=0.0), side="right")
    out = np.asarray(SCR_BINS, dtype=object)[index]
    out[np.isnan(scr)] = NONE_BIN
    return out


def empty_table(t: int = 0) -> dict[str, np.ndarray]:
    return {name: (np.full(t, fill, dtype=object) if dtype is str else np.full(t, fill, dtype=dtype))
            for name, (dtype, fill) in TARGET_COLUMNS.items()}


def target_difficulty(images, masks) -> dict[str, np.ndarray]:
    """Per-target tags of a batch: images, masks [B, H, W] (uint8 grey; mask nonzero = target).

    Returns the TARGET_COLUMNS, each [T] (T = targets in the batch, image by image, label order
    within an image); string columns are object arrays.
    """
    from sirst5k.method.targets import label_points, mask_points

    images = np.asarray(images)
    masks = np.asarray(masks)
    if images.ndim != 3 or masks.shape != images.shape:
        raise ValueError(f"images {images.shape} and masks {masks.shape} must both be [B, H, W]")
    n, h, w = images.shape
    b, y, x = mask_points(masks)
    labels, counts = label_points(b, y, x, n)
    t_total = int(counts.sum())
    table = empty_table(t_total)
    if t_total == 0:
        return table
    start = (np.cumsum(counts) - counts).astype(np.int64)
    gid = start[b] + labels - 1
    area = np.bincount(gid, minlength=t_total).astype(np.int64)
    values = images[b, y, x].astype(np.float64)
    table["row"] = np.repeat(np.arange(n, dtype=np.int64), counts)
    table["label"] = (np.arange(t_total, dtype=np.int64) - np.repeat(start, counts) + 1).astype(np.int32)
    table["area"] = area
    table["y"] = np.bincount(gid, weights=y, minlength=t_total) / area
    table["x"] = np.bincount(gid, weights=x, minlength=t_total) / area
    table["target_mean"] = np.bincount(gid, weights=values, minlength=t_total) / area
    y0 = np.full(t_total, h, np.int64)
    x0 = np.full(t_total, w, np.int64)
    y1 = np.zeros(t_total, np.int64)
    x1 = np.zeros(t_total, np.int64)
    np.minimum.at(y0, gid, y)
    np.minimum.at(x0, gid, x)
    np.maximum.at(y1, gid, y + 1)
    np.maximum.at(x1, gid, x + 1)
    ring_mean = np.full(t_total, np.nan)
    ring_std = np.full(t_total, np.nan)
    ring_n = np.zeros(t_total, np.int64)
    # label images of a few images at a time, in one buffer reused (a whole shard's would be
    # hundreds of MB, and filling it cost more than the rings)
    per = max(1, LABEL_PIXELS // (h * w))
    buffer = np.zeros((min(per, n), h, w), np.uint16 if int(counts.max()) < 2 ** 16 else np.int32)
    bounds = np.searchsorted(b, np.arange(0, n + per, per).clip(max=n))  # mask_points: image by image
    tbounds = np.searchsorted(table["row"], np.arange(0, n + per, per).clip(max=n))
    for c in range(bounds.size - 1):
        p, t = slice(int(bounds[c]), int(bounds[c + 1])), slice(int(tbounds[c]), int(tbounds[c + 1]))
        if t.start == t.stop:
            continue
        first = c * per
        buffer[b[p] - first, y[p], x[p]] = labels[p]
        ring_mean[t], ring_std[t], ring_n[t] = _ring_stats(images[first:first + per], buffer, table["row"][t] - first,
                                                           y0[t], x0[t], y1[t], x1[t], table["label"][t])
        buffer[b[p] - first, y[p], x[p]] = 0
    table["ring_mean"] = ring_mean
    table["ring_std"] = ring_std
    table["ring_pixels"] = ring_n
    contrast = table["target_mean"] - ring_mean
    table["contrast"] = contrast
    table["scr"] = contrast / np.maximum(ring_std, STD_FLOOR)
    table["size_bin"] = size_bin(area)
    table["scr_bin"] = scr_bin(table["scr"])
    return table


# Targets are processed together in crops of one side (rounded up to CROP_STEP) and in chunks of
# at most CHUNK_PIXELS crop pixels: one set of array operations per chunk instead of a dozen per
# target (the per-target loop cost 134 us a target, most of a negatives run's tagging).
CROP_STEP = 8
CHUNK_PIXELS = 1 << 21
LABEL_PIXELS = 1 << 22  # pixels of the label-image buffer


def _ring_stats(images: np.ndarray, label_image: np.ndarray, row: np.ndarray,
                y0: np.ndarray, x0: np.ndarray, y1: np.ndarray, x1: np.ndarray,
                label: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ring mean, std and pixel count [T] of every target (module docstring).

    images [B, H, W]; label_image [>= B, H, W] their label images; row, label [T] each target's
    image and label;
    y0, x0, y1, x1 [T] its bounding box (end exclusive). A target's crop is its box grown by
    GUARD + RING + GUARD (so the guard test of a ring pixel sees every target pixel near it), cut
    at the image's border: pixels outside are no ring and hold no target.
    """
    t_total = row.size
    _, h, w = images.shape
    reach = GUARD + RING
    pad = reach + GUARD
    ring_mean = np.full(t_total, np.nan)
    ring_std = np.full(t_total, np.nan)
    ring_n = np.zeros(t_total, np.int64)
    span = np.maximum(y1 - y0, x1 - x0) + 2 * pad
    side = -(-span // CROP_STEP) * CROP_STEP
    for s in np.unique(side):
        s = int(s)
        chosen = np.flatnonzero(side == s)
        step = max(1, CHUNK_PIXELS // (s * s))
        for lo in range(0, chosen.size, step):
            g = chosen[lo:lo + step]
            offsets = np.arange(s)
            ys = (y0[g] - pad)[:, None] + offsets  # [t, s]
            xs = (x0[g] - pad)[:, None] + offsets
            inside = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]
            yi = np.clip(ys, 0, h - 1)[:, :, None]
            xi = np.clip(xs, 0, w - 1)[:, None, :]
            labels = label_image[row[g][:, None, None], yi, xi]  # [t, s, s]
            labels[~inside] = 0
            near_any = _dilate(labels > 0, GUARD)
            outer = _dilate(labels == label[g][:, None, None].astype(labels.dtype), reach)
            ring = outer & ~near_any & inside  # the dilation reaches past the image's border
            k = np.count_nonzero(ring, axis=(1, 2))
            values = images[row[g][:, None, None], yi, xi].astype(np.float64)
            has = k > 0
            total = np.where(ring, values, 0.0).sum(axis=(1, 2))
            mean = np.divide(total, k, out=np.full(g.size, np.nan), where=has)
            dev = np.where(ring, values - mean[:, None, None], 0.0)
            var = np.divide((dev * dev).sum(axis=(1, 2)), k, out=np.full(g.size, np.nan), where=has)
            ring_mean[g], ring_std[g], ring_n[g] = mean, np.sqrt(var), k
    return ring_mean, ring_std, ring_n


def _dilate(a: np.ndarray, r: int) -> np.ndarray:
    """Chessboard dilation of bool [..., h, w] by radius r, zero outside (a (2r+1)^2 box sum > 0,
    from the integral image: a few array operations whatever r)."""
    *lead, h, w = a.shape
    k = 2 * r + 1
    # zero border by hand and cumsums in place: np.pad was two thirds of the tags' time
    c = np.zeros((*lead, h + k, w + k), np.int32)
    c[..., r + 1:r + 1 + h, r + 1:r + 1 + w] = a
    np.cumsum(c, axis=-2, out=c)
    np.cumsum(c, axis=-1, out=c)
    return (c[..., k:, k:] - c[..., :-k, k:] - c[..., k:, :-k] + c[..., :-k, :-k]) > 0


def sample_difficulty(table, n: int) -> dict[str, np.ndarray]:
    """Per-sample SAMPLE_FIELDS [n] from a target table (`target_difficulty`) of n samples."""
    out = {name: (np.full(n, fill, dtype=object) if dtype is str else np.full(n, fill, dtype=dtype))
           for name, (dtype, fill) in SAMPLE_FIELDS.items()}
    row = np.asarray(table["row"], dtype=np.int64)
    if row.size == 0:
        return out
    if row.min() < 0 or row.max() >= n:
        raise ValueError(f"target table rows {int(row.min())}..{int(row.max())} are outside 0..{n - 1}")
    area = np.asarray(table["area"], dtype=np.int64)
    has = np.bincount(row, minlength=n) > 0
    min_area = np.full(n, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(min_area, row, area)
    out["min_target_area"][has] = min_area[has]
    for field, column in (("min_contrast", "contrast"), ("min_scr", "scr")):
        v = np.asarray(table[column], dtype=np.float64)
        acc = np.full(n, np.inf)
        ok = ~np.isnan(v)
        np.minimum.at(acc, row[ok], v[ok])
        acc[np.isposinf(acc)] = np.nan
        out[field] = acc
    out["size_bin"] = size_bin(out["min_target_area"])
    out["scr_bin"] = scr_bin(out["min_scr"])
    return out


def difficulty(images, masks) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(per-target table, per-sample fields) of images, masks [B, H, W]."""
    table = target_difficulty(images, masks)
    return table, sample_difficulty(table, int(np.shape(images)[0]))


def concat_tables(parts) -> dict[str, np.ndarray]:
    """One table of consecutive batches' tables: parts = [(table, row offset of its batch), ...]."""
    parts = list(parts)
    out = {}
    for name, (dtype, _) in TARGET_COLUMNS.items():
        want = object if dtype is str else dtype
        cols = [np.asarray(t[name], dtype=want) + off if name == "row" else np.asarray(t[name], dtype=want)
                for t, off in parts]
        out[name] = np.concatenate(cols).astype(want) if cols else empty_table()[name]
    return out


def take_table(table, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The targets of the samples `rows` (sorted int indices or a bool mask), renumbered 0.. in that order."""
    row = np.asarray(table["row"], dtype=np.int64)
    rows = np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    new = np.full(int(row.max()) + 1 if row.size else 0, -1, np.int64)
    keep_rows = rows[rows < new.size]
    new[keep_rows] = np.flatnonzero(rows < new.size)
    pick = np.flatnonzero(new[row] >= 0) if row.size else np.zeros(0, np.int64)
    pick = pick[np.argsort(new[row[pick]], kind="stable")]
    out = {name: np.asarray(v)[pick] for name, v in table.items()}
    out["row"] = new[row[pick]]
    return out
