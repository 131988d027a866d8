"""Train/test leakage: exact and near-duplicate images across the splits, and shared sequences.

Pure arrays in, plain Python out; `sirst5k verify` and the report call the same functions.

- **Exact duplicates**: images with the same content hash, sha256 over the image's shape (two
  int64) and its uint8 pixel bytes.
- **Near duplicates**: a 64-bit dHash (the image's 9x8 area-mean thumbnail; bit = the right
  neighbour is brighter) within `NEAR_HAMMING` bits, confirmed on a 16x16 area-mean thumbnail
  (float32): correlation at least `NEAR_CORRELATION` and contrasts (standard deviations) within a
  factor `NEAR_CONTRAST`. The dHash alone is not enough on infrared frames: a flat sky and a
  vignetted frame share their brightness ramp and with it their dHash (on SIRST v1 at 256 px the
  dHash alone paired 24 of the 86 test images with train images, mostly unrelated flat frames;
  with the confirmation one pair is left, Misc_235 ~ Misc_236, two frames of one flat sky). On
  SIRST v1 images altered as a sequence alters them (sensor noise sigma 3, a 2-pixel shift, AGC
  gain 1.15 and offset +12, a blend with m = 0.1, a rescale) the rule finds 95.6-100 % of
  the pairs (`benchmarks/leakage_rule.py`); among the 245 SIRST-V2 background frames it finds
  the 8 that sequences S1 and S3 share and 6 pairs of neighbouring frames within a sequence.
- **Shared groups**: where the source layout names a sequence per image (`sequence_group`),
  groups with samples in both splits. The group is derived from the source id: no field is
  stored for it.

Only train samples of kind `original` (or every train sample when the split holds none: `near_kind`) are
candidates for near duplicates: transfers and negatives are made from them, so a test image
near one of those is near its original too. Exact matches are looked up among all train samples.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Mapping, Sequence

import numpy as np

DHASH_SIZE = 8  # a 9x8 thumbnail: 64 bits
THUMB_SIZE = 16
NEAR_HAMMING = 10
NEAR_CORRELATION = 0.97
NEAR_CONTRAST = 2.0
LIST_LIMIT = 1000  # pairs listed in stats.json (all are counted)
BLOCK = 2048  # test rows compared at a time: bounded memory
RULE = (f"exact: same sha256 of the image (shape + pixels); near: dHash {DHASH_SIZE * DHASH_SIZE} bits within "
        f"{NEAR_HAMMING}, and {THUMB_SIZE}x{THUMB_SIZE} thumbnails correlated >= {NEAR_CORRELATION} with contrast "
        f"within {NEAR_CONTRAST}x")

GROUP_LAYOUTS = ("sirst-v2",)  # source layouts whose ids name a sequence (`sequence_group`)
_FRAME = re.compile(r"^(.*?)[-_. ]*(\d+)$")


# ---------------------------------------------------------------- per image


def area_means(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """[B, H, W] -> [B, rows, cols] float64: the mean of each of rows x cols near-equal blocks
    (block edges at floor(i * H / rows)); the image must be at least rows x cols."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must be [B, H, W], got shape {images.shape}")
    _, h, w = images.shape
    if h < rows or w < cols:
        raise ValueError(f"images {h}x{w} are smaller than the {rows}x{cols} thumbnail")
    re_ = (np.arange(rows + 1) * h) // rows
    ce = (np.arange(cols + 1) * w) // cols
    # Integer pixels are summed as integers (8-bit in uint32, which a block of up to 2**24 pixels
    # cannot overflow; wider ones in int64): the sums are exact, as float64 sums of them are, so
    # the means are the same bits, without a float64 copy of the images (2.8x faster, most of the
    # report's fingerprint pass). Columns first: the second pass then runs over 1/cols of the data.
    if np.issubdtype(images.dtype, np.integer) or images.dtype == np.bool_:
        acc = np.uint32 if images.dtype == np.uint8 and h * w < 2**24 else np.int64
        sums = np.add.reduceat(np.add.reduceat(images, ce[:-1], axis=2, dtype=acc), re_[:-1], axis=1)
    else:
        sums = np.add.reduceat(np.add.reduceat(images.astype(np.float64), re_[:-1], axis=1), ce[:-1], axis=2)
    return sums / (np.diff(re_)[:, None] * np.diff(ce)[None, :])


def content_hashes(images: np.ndarray) -> list[str]:
    """sha256 hex of each image of [B, H, W] uint8: its shape (two little-endian int64), then its pixels."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    head = np.asarray(images.shape[1:], dtype="<i8").tobytes()
    return [hashlib.sha256(head + im.tobytes()).hexdigest() for im in images]


def dhash(images: np.ndarray, size: int = DHASH_SIZE) -> np.ndarray:
    """Difference hash [B] uint64 of [B, H, W]: bit (r, c) is set when block (r, c+1) of the
    size x (size+1) area-mean thumbnail is brighter than block (r, c); row-major, first bit highest."""
    if size * size > 64:
        raise ValueError("dhash size must give at most 64 bits")
    means = area_means(images, size, size + 1)
    bits = (means[:, :, 1:] > means[:, :, :-1]).reshape(len(means), -1)
    weights = np.left_shift(np.uint64(1), np.arange(bits.shape[1] - 1, -1, -1, dtype=np.uint64))
    return (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def thumbnails(images: np.ndarray, size: int = THUMB_SIZE) -> np.ndarray:
    """[B, size*size] float32: the size x size area-mean thumbnail (float32, not rounded to grey
    levels: a flat infrared frame's thumbnail varies by a few levels, and rounding would blur it)."""
    return area_means(images, size, size).astype(np.float32).reshape(len(images), -1)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, M] differing bits between the uint64 hashes a [N] and b [M]."""
    x = np.asarray(a, dtype=np.uint64)[:, None] ^ np.asarray(b, dtype=np.uint64)[None, :]
    return np.bitwise_count(x).astype(np.int64)


def thumb_similarity(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correlation [N, M] of the thumbnails a [N, P] and b [M, P], and the ratio [N, M] of the
    larger to the smaller standard deviation (inf when exactly one is flat). Two flat thumbnails
    correlate 1 when equal, 0 otherwise."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    za, zb = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    sa, sb = np.sqrt((za * za).mean(axis=1)), np.sqrt((zb * zb).mean(axis=1))
    na, nb = za / np.where(sa > 0, sa, 1)[:, None], zb / np.where(sb > 0, sb, 1)[:, None]
    corr = na @ nb.T / a.shape[1]  # 0 when one of the two is flat
    both_flat = (sa == 0)[:, None] & (sb == 0)[None, :]
    if both_flat.any():
        corr = np.where(both_flat, (a[:, None, :] == b[None, :, :]).all(axis=2).astype(np.float64), corr)
    hi, lo = np.maximum(sa[:, None], sb[None, :]), np.minimum(sa[:, None], sb[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(hi == 0, 1.0, hi / lo)
    return corr, ratio


def fingerprints(images: np.ndarray, candidates: np.ndarray | None = None) -> dict[str, Any]:
    """What the leakage check needs of a batch [B, H, W] uint8: {"sha256": [B] hex of every
    image, and for the near-duplicate candidates (`candidates` [B] bool; None = all): "rows" [K]
    int64, "dhash" [K] uint64, "thumbs" [K, 256] float32}."""
    images = np.asarray(images)
    rows = np.arange(len(images)) if candidates is None else np.flatnonzero(candidates)
    picked = images[rows]
    return {"sha256": content_hashes(images), "rows": rows.astype(np.int64),
            "dhash": dhash(picked) if rows.size else np.zeros(0, np.uint64),
            "thumbs": thumbnails(picked) if rows.size else np.zeros((0, THUMB_SIZE * THUMB_SIZE), np.float32)}


def concat_fingerprints(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Fingerprints of several batches (each with its "ids", "source_ids", "kinds") as one."""
    out: dict[str, Any] = {"ids": [], "source_ids": [], "kinds": [], "sha256": []}
    rows, hashes, thumbs = [np.zeros(0, np.int64)], [np.zeros(0, np.uint64)], \
        [np.zeros((0, THUMB_SIZE * THUMB_SIZE), np.float32)]
    for p in parts:
        rows.append(np.asarray(p["rows"], dtype=np.int64) + len(out["ids"]))
        hashes.append(np.asarray(p["dhash"], dtype=np.uint64))
        thumbs.append(np.asarray(p["thumbs"], dtype=np.float32).reshape(-1, THUMB_SIZE * THUMB_SIZE))
        for key in ("ids", "source_ids", "kinds", "sha256"):
            out[key].extend(p[key])
    return {**out, "rows": np.concatenate(rows), "dhash": np.concatenate(hashes), "thumbs": np.concatenate(thumbs)}


def near_kind(kind_counts: Mapping[str, int]) -> str | None:
    """The kind of the train samples compared for near duplicates, from the train split's counts
    per kind: "original" when it has originals, else None (every sample)."""
    return "original" if kind_counts.get("original") else None


# ---------------------------------------------------------------- sequences


def sequence_group(layout: str | None, sample_id: str) -> str | None:
    """The sequence an image of `layout` belongs to, read from its id; None when the layout
    names none. sirst-v2: `<sequence><sep><frame number>` (`20210725-S1-161` -> `20210725-S1`,
    `S7_30` -> `S7`), except NUAA-SIRST's single frames `Misc_<n>`."""
    if layout not in GROUP_LAYOUTS:
        return None
    m = _FRAME.match(str(sample_id))
    if not m or not m.group(1) or m.group(1) == "Misc":
        return None
    return m.group(1)


def shared_groups(layout: str | None, train_ids: Sequence[str], test_ids: Sequence[str]) -> dict[str, Any] | None:
    """Sequences with samples in both splits: {"layout", "groups_train", "groups_test", "in_both",
    "list": [{"group", "train", "test"}]} (counts of samples), or None when the layout names none."""
    if layout not in GROUP_LAYOUTS:
        return None
    count: dict[str, dict[str, int]] = {}
    for split, ids in (("train", train_ids), ("test", test_ids)):
        for sid in ids:
            g = sequence_group(layout, sid)
            if g is not None:
                count.setdefault(g, {"train": 0, "test": 0})[split] += 1
    both = sorted(g for g, c in count.items() if c["train"] and c["test"])
    return {"layout": layout, "groups_train": sum(1 for c in count.values() if c["train"]),
            "groups_test": sum(1 for c in count.values() if c["test"]), "in_both": len(both),
            "list": [{"group": g, **count[g]} for g in both]}


def source_layout(manifest: Mapping[str, Any] | None) -> str | None:
    """The layout the dataset's source was read in, as its manifest records it (None if not)."""
    inputs = (manifest or {}).get("inputs")
    source = inputs.get("source") if isinstance(inputs, Mapping) else None
    layout = source.get("layout") if isinstance(source, Mapping) else None
    return layout if isinstance(layout, str) else None


# ---------------------------------------------------------------- across the splits


def find_leakage(train: Mapping[str, Any], test: Mapping[str, Any], layout: str | None = None,
                 limit: int = LIST_LIMIT) -> dict[str, Any]:
    """Exact and near duplicates of test images among train images, and shared sequences.

    train, test: `concat_fingerprints` of each split (with "ids", "source_ids", "kinds"); the
    train "rows" are the near-duplicate candidates (the rule: `RULE`). Returns {"checked": {"train",
    "test", "near_candidates"}, "exact": {"pairs", "test_images", "list": [[test_id, train_id]]},
    "near": {"pairs", "test_images", "list": [[test_id, train_id, hamming, correlation]]},
    "groups": `shared_groups` of the source ids or None}; at most `limit` pairs are listed each,
    in test order, then train order.
    """
    by_hash: dict[str, list[int]] = {}
    for j, h in enumerate(train["sha256"]):
        by_hash.setdefault(h, []).append(j)
    exact: list[list[str]] = []
    exact_test: set[int] = set()
    exact_pairs: set[tuple[int, int]] = set()
    for i, h in enumerate(test["sha256"]):
        for j in by_hash.get(h, ()):
            exact_pairs.add((i, j))
            exact_test.add(i)
            exact.append([str(test["ids"][i]), str(train["ids"][j])])
    near: list[list[Any]] = []
    near_test: set[int] = set()
    n_near = 0
    t_rows = np.asarray(train["rows"], dtype=np.int64)
    s_rows = np.asarray(test["rows"], dtype=np.int64)
    if t_rows.size and s_rows.size:
        t_hash = np.asarray(train["dhash"], dtype=np.uint64)
        s_hash = np.asarray(test["dhash"], dtype=np.uint64)
        for start in range(0, len(s_rows), BLOCK):
            stop = min(start + BLOCK, len(s_rows))
            dist = hamming(s_hash[start:stop], t_hash)
            for a, b in zip(*np.nonzero(dist <= NEAR_HAMMING)):
                i, j = int(s_rows[start + a]), int(t_rows[b])
                if (i, j) in exact_pairs:
                    continue
                corr, ratio = thumb_similarity(test["thumbs"][start + a][None], train["thumbs"][b][None])
                if corr[0, 0] >= NEAR_CORRELATION and ratio[0, 0] <= NEAR_CONTRAST:
                    n_near += 1
                    near_test.add(i)
                    if len(near) < limit:
                        near.append([str(test["ids"][i]), str(train["ids"][j]), int(dist[a, b]),
                                     round(float(corr[0, 0]), 4)])
    return {
        "checked": {"train": len(train["ids"]), "test": len(test["ids"]), "near_candidates": int(t_rows.size)},
        "exact": {"pairs": len(exact), "test_images": len(exact_test), "list": exact[:limit]},
        "near": {"pairs": n_near, "test_images": len(near_test), "list": near},
        "groups": shared_groups(layout, list(train["source_ids"]), list(test["source_ids"])),
    }


def leakage_warnings(leak: Mapping[str, Any], shown: int = 3) -> list[str]:
    """One line per kind of leakage found (none when the splits are clean)."""
    lines = []
    for key, what in (("exact", "an exact duplicate"), ("near", "a near duplicate")):
        found = leak[key]
        if found["pairs"]:
            pairs = ", ".join(f"{p[0]} ~ {p[1]}" for p in found["list"][:shown])
            lines.append(f"{found['test_images']} test image(s) have {what} in train ({found['pairs']} pair(s)), "
                         f"e.g. {pairs}")
    groups = leak.get("groups")
    if groups and groups["in_both"]:
        names = ", ".join(g["group"] for g in groups["list"][:shown])
        lines.append(f"{groups['in_both']} sequence(s) have frames in both train and test, e.g. {names}")
    return lines
