"""Statistics of a dataset: a per-shard summary pass, its merge, stats.json and the plot CSVs.

The heavy pass reads each shard once and returns a small summary (`summarize_shard`); summaries
add up (`merge_summaries`), so shards can be summarised anywhere (a dask task each) and merged.
Targets are 8-connected components (`skimage.measure.label(connectivity=2)`, as BasicIRSTD
counts them). Noise is the RMS of a high-pass residual (image minus its 3x3 box mean) over
background pixels at least 3 pixels from any target, so noise transfer shows up as a rise from
originals to transfers.

Difficulty (`stats.json` "difficulty"): per split and kind, samples and targets counted per
size bin and SCR bin (`sirst5k.method.difficulty`: a sample's bins are its hardest target's;
"none" = a sample without targets, or a target with an empty ring), from each shard's stored
`/targets` table, or computed from its masks and images for a shard written before the tags.

Sizes (`stats.json` "sizes", issue 18): samples per image size "HxW", per split and kind and in
total, and `image_sizes.csv`. Every shard holds one size (`[N, H, W]`), but the shards of one
dataset may differ (native-size ingest), so a block's size is its shard's.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import h5py
import numpy as np

from sirst5k.formats.shards import KINDS, read_meta, read_targets
from sirst5k.method import difficulty, duplicates
from sirst5k.method.norm import image_mean_std, norm_cfg
from sirst5k.method.targets import batch_target_table

BLOCK = 128  # rows summarised at once: bounded memory, vectorised work
AREA_EDGES = tuple(2**i for i in range(11))  # log2 bins: 1, 2-3, 4-7, ..., 1024+
GUARD = 3  # background pixels within this distance of a target are left out of the noise

Merged = Mapping[str, Mapping[str, Mapping[str, Any]]]  # split -> kind -> summed summary


# ---------------------------------------------------------------- per-shard pass (pure arrays)


def count_targets(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-connected targets of a batch of masks.

    masks: [B, H, W] (nonzero = target). Returns (n_targets [B] int64, areas [T] int64 pixel
    counts of all targets, image [T] int64 the image each target is in).
    """
    table = batch_target_table(masks)
    return table["count"].astype(np.int64), table["area"].astype(np.int64), table["image"].astype(np.int64)


def highpass_energy(images: np.ndarray, masks: np.ndarray, guard: int = GUARD) -> tuple[np.ndarray, np.ndarray]:
    """Residual energy of each image away from its targets.

    images, masks: [B, H, W] uint8. residual = image - mean of its 3x3 neighbourhood, over
    interior pixels farther than `guard` (chessboard distance) from any target pixel. Returns
    (sum of squared residuals [B] float64, pixel counts [B] int64).
    """
    b, h, w = images.shape
    if h < 3 or w < 3:
        return np.zeros(b), np.zeros(b, np.int64)
    x = images.astype(np.int16)
    col = x[:, :-2] + x[:, 1:-1] + x[:, 2:]
    box = col[:, :, :-2] + col[:, :, 1:-1]
    box += col[:, :, 2:]
    residual9 = (9 * x[:, 1:-1, 1:-1] - box).astype(np.float32)  # 9 x residual, exact in int16
    energy = np.einsum("bij,bij->b", residual9, residual9, dtype=np.float64)
    count = np.full(b, (h - 2) * (w - 2), np.int64)
    # Take the guarded neighbourhoods of the targets back out. Targets are a few pixels, so work
    # only on rows within `guard` of a target row, stacked with `guard` empty rows between runs
    # so that dilation cannot reach from one run (or image) into the next.
    fg = masks != 0
    rows = fg.any(axis=2)
    near_rows = rows.copy()
    for _ in range(guard):
        grown = near_rows.copy()
        grown[:, 1:] |= near_rows[:, :-1]
        grown[:, :-1] |= near_rows[:, 1:]
        near_rows = grown
    g = np.flatnonzero(near_rows.reshape(-1))
    if g.size:
        image, y = g // h, g % h
        gap = (np.diff(g) != 1) | (np.diff(image) != 0)
        pos = np.arange(g.size) + np.concatenate([[0], np.cumsum(gap)]) * guard
        compact = np.zeros((pos[-1] + 1, w), bool)
        compact[pos] = fg.reshape(-1, w)[g]
        near = _dilate(compact, guard)[pos]
        inner = (y >= 1) & (y <= h - 2)
        near, image, y = near[inner][:, 1:-1], image[inner], y[inner]
        r = residual9.reshape(-1, w - 2)[image * (h - 2) + y - 1] * near
        energy -= np.bincount(image, weights=np.einsum("ij,ij->i", r, r, dtype=np.float64), minlength=b)
        count -= np.bincount(image, weights=near.sum(axis=1), minlength=b).astype(np.int64)
    return np.maximum(energy, 0.0) / 81.0, count


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """Dilate a bool mask [H, W] by `steps` pixels in chessboard distance (3x3 square each step)."""
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        out = grown.copy()
        out[:, 1:] |= grown[:, :-1]
        out[:, :-1] |= grown[:, 1:]
    return out


def _area_bins(areas: np.ndarray) -> np.ndarray:
    """Targets per `AREA_EDGES` bin; areas past the last edge count in the last bin."""
    index = np.searchsorted(np.asarray(AREA_EDGES), areas, side="right") - 1
    return np.bincount(np.clip(index, 0, len(AREA_EDGES) - 1), minlength=len(AREA_EDGES))


NONE_BIN = "none"  # stats.json's name of the "" bin


def _empty_difficulty() -> dict[str, dict[str, dict[str, int]]]:
    bins = {"size_bin": difficulty.SIZE_BINS, "scr_bin": difficulty.SCR_BINS}
    return {what: {field: {b: 0 for b in (*names, NONE_BIN)} for field, names in bins.items()}
            for what in ("samples", "targets")}


def _bin_counts(values: np.ndarray, names: tuple[str, ...]) -> dict[str, int]:
    values = np.asarray(values).astype(str)
    return {**{b: int((values == b).sum()) for b in names}, NONE_BIN: int((values == difficulty.NONE_BIN).sum())}


def _empty_kind() -> dict[str, Any]:
    """The zero of `_add`: a summary of no samples."""
    return {
        "difficulty": _empty_difficulty(),
        "samples": 0,
        "no_target": 0,
        "targets": 0,
        "targets_hist": {},
        "area_hist": [0] * len(AREA_EDGES),
        "area_sum": 0,
        "area_max": 0,
        "pixel_sum": 0,
        "pixel_sumsq": 0,
        "pixels": 0,
        "noise_energy": 0.0,
        "noise_pixels": 0,
        "cut": 0,
        "area_mismatch": 0,
        "n_targets_mismatch": 0,
    }


def summarize_arrays(images: np.ndarray, masks: np.ndarray, meta: Mapping[str, np.ndarray],
                     targets: Mapping[str, np.ndarray] | None = None) -> dict[str, dict]:
    """Per-kind summary of a batch. images, masks: [B, H, W] uint8; meta: fields of length B;
    targets: the batch's per-target difficulty table (rows 0..B-1), None = computed here."""
    if targets is None:
        targets = difficulty.target_difficulty(images, masks)
    per_sample = difficulty.sample_difficulty(targets, len(images))
    target_row = np.asarray(targets["row"], np.int64)
    n_targets, areas, target_image = count_targets(masks)
    energy, noise_pixels = highpass_energy(images, masks)
    flat = images.reshape(len(images), -1)
    pixel_sum = flat.sum(axis=1, dtype=np.int64)
    pixel_sumsq = np.einsum("bi,bi->b", flat, flat, dtype=np.int64)
    mask_area = (masks != 0).reshape(len(masks), -1).sum(axis=1)
    kinds = np.asarray(meta["kind"]).astype(str)
    out: dict[str, dict] = {}
    for kind in sorted(set(kinds.tolist())):
        sel = kinds == kind
        acc = _empty_kind()
        acc["samples"] = int(sel.sum())
        acc["no_target"] = int((n_targets[sel] == 0).sum())
        acc["targets"] = int(n_targets[sel].sum())
        values, counts = np.unique(n_targets[sel], return_counts=True)
        acc["targets_hist"] = {str(int(v)): int(c) for v, c in zip(values, counts)}
        kind_areas = areas[sel[target_image]]
        acc["area_hist"] = _area_bins(kind_areas).tolist()
        acc["area_sum"] = int(kind_areas.sum())
        acc["area_max"] = int(kind_areas.max()) if kind_areas.size else 0
        acc["pixel_sum"] = int(pixel_sum[sel].sum())
        acc["pixel_sumsq"] = int(pixel_sumsq[sel].sum())
        acc["pixels"] = int(sel.sum()) * flat.shape[1]
        acc["noise_energy"] = float(energy[sel].sum())
        acc["noise_pixels"] = int(noise_pixels[sel].sum())
        acc["cut"] = int((np.asarray(meta["cut"])[sel] == 1).sum())
        meta_area = np.asarray(meta["area"])[sel]
        acc["area_mismatch"] = int(((meta_area >= 0) & (meta_area != mask_area[sel])).sum())
        meta_n = np.asarray(meta["n_targets"])[sel]
        acc["n_targets_mismatch"] = int(((meta_n >= 0) & (meta_n != n_targets[sel])).sum())
        acc["sizes"] = {size_key(images.shape[1:]): int(sel.sum())}
        of_kind = sel[target_row]
        for field, names in (("size_bin", difficulty.SIZE_BINS), ("scr_bin", difficulty.SCR_BINS)):
            acc["difficulty"]["samples"][field] = _bin_counts(per_sample[field][sel], names)
            acc["difficulty"]["targets"][field] = _bin_counts(np.asarray(targets[field])[of_kind], names)
        out[kind] = acc
    return out


def summarize_shard(path: str, split: str, near_kind: str | None = None) -> dict[str, Any]:
    """{"split", "kinds": {kind: summary}, "fingerprint", "norm"} of one shard, read in blocks of
    BLOCK rows. "fingerprint": `duplicates.fingerprints` of its images with their ids, source ids
    and kinds (train rows of kind `near_kind` are the near-duplicate candidates; None: all);
    "norm": each image's float32 mean and standard deviation (`method.norm`), train only."""
    meta = read_meta(path)
    table = read_targets(path, compute_missing=False)  # None: computed block by block below
    total: dict[str, dict] = {}
    kinds = [str(k) for k in meta["kind"]]
    candidates = (np.asarray(kinds, dtype=object) == near_kind) if split == "train" and near_kind is not None \
        else np.ones(len(kinds), bool)
    prints, means, stds = [], [], []
    with h5py.File(path, "r") as f:
        images, masks = f["images"], f["masks"]
        for start in range(0, images.shape[0], BLOCK):
            stop = min(start + BLOCK, images.shape[0])
            part = {k: v[start:stop] for k, v in meta.items()}
            block = images[start:stop]
            part_table = None if table is None else difficulty.take_table(table, np.arange(start, stop))
            total = _add(total, summarize_arrays(block, masks[start:stop], part, part_table))
            prints.append({"ids": [str(i) for i in part["sample_id"]], "source_ids": [str(i) for i in part["source_id"]],
                           "kinds": kinds[start:stop], **duplicates.fingerprints(block, candidates[start:stop])})
            if split == "train":
                for image in block:
                    mean, std = image_mean_std(image)
                    means.append(mean)
                    stds.append(std)
    norm = {"means": np.asarray(means, np.float32), "stds": np.asarray(stds, np.float32)} if split == "train" else None
    return {"split": split, "kinds": total, "fingerprint": duplicates.concat_fingerprints(prints), "norm": norm}


def basicirstd_norm(summaries: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """BasicIRSTD's img_norm_cfg of the train split from its shards' summaries (in shard order):
    the float32 mean of the per-image means and of the per-image standard deviations. None without
    a train split."""
    norms = [s["norm"] for s in summaries if s.get("norm") is not None]
    if not norms:
        return None
    means = np.concatenate([n["means"] for n in norms])
    if not means.size:
        return None
    return {**norm_cfg(means, np.concatenate([n["stds"] for n in norms])), "split": "train",
            "n_images": int(means.size)}


def _add(a: Any, b: Any, key: str = "") -> Any:
    """Sum two summaries: numbers add (`*_max` take the larger), lists add by position, dicts by key."""
    if isinstance(a, dict):
        return {k: _add(a[k], b[k], k) if k in a and k in b else (a[k] if k in a else b[k]) for k in {**a, **b}}
    if isinstance(a, list):
        return [x + y for x, y in zip(a, b)]
    if isinstance(a, (int, float)):
        return max(a, b) if key.endswith("_max") else a + b
    raise TypeError(f"cannot add {type(a).__name__}")


def merge_summaries(summaries: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict]]:
    """split -> kind -> summed summary."""
    merged: dict[str, dict[str, dict]] = {}
    for s in summaries:
        merged[s["split"]] = _add(merged.get(s["split"], {}), s["kinds"])
    return merged


# ---------------------------------------------------------------- statistics


def _hist_labels() -> list[str]:
    """Names of the `AREA_EDGES` bins: "1", "2-3", ..., "1024+"."""
    labels = []
    for lo, hi in zip(AREA_EDGES, AREA_EDGES[1:] + (None,)):
        labels.append(f"{lo}+" if hi is None else (str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}"))
    return labels


def _ordered_hist(hist: Mapping[str, int]) -> dict[str, int]:
    """Keys in number order ("2" before "10"), as stats.json shows them."""
    return {k: hist[k] for k in sorted(hist, key=int)}


def _kind_stats(acc: Mapping[str, Any]) -> dict[str, Any]:
    """stats.json's entry for one kind, from its summed summary."""
    n, pixels = acc["samples"], acc["pixels"]
    mean = acc["pixel_sum"] / pixels if pixels else 0.0
    var = max(acc["pixel_sumsq"] / pixels - mean * mean, 0.0) if pixels else 0.0
    return {
        "samples": n,
        "no_target": acc["no_target"],
        "targets": acc["targets"],
        "targets_per_image_mean": _r(acc["targets"] / n if n else 0.0),
        "target_area_mean": _r(acc["area_sum"] / acc["targets"] if acc["targets"] else 0.0),
        "target_area_max": acc["area_max"],
        "intensity_mean": _r(mean),
        "intensity_std": _r(math.sqrt(var)),
        "noise_rms": _r(math.sqrt(acc["noise_energy"] / acc["noise_pixels"]) if acc["noise_pixels"] else 0.0),
        "cut": acc["cut"],
    }


def _r(x: float) -> float:
    """Four decimals: stats.json stays readable and its bytes stable."""
    return round(float(x), 4)


def compute_stats(merged: Merged) -> dict[str, Any]:
    """stats.json content from merged summaries (split -> kind -> summary)."""
    by_kind = _by_kind(merged)
    kind_names = [k for k in KINDS if k in by_kind] + sorted(k for k in by_kind if k not in KINDS)
    total = _empty_kind()
    for kind in kind_names:
        total = _add(total, by_kind[kind])
    splits = {}
    for split, kinds in merged.items():
        both = _empty_kind()
        for acc in kinds.values():
            both = _add(both, acc)
        splits[split] = {
            "samples": both["samples"],
            **{k: kinds[k]["samples"] if k in kinds else 0 for k in KINDS},
            "targets": both["targets"],
            "no_target": both["no_target"],
        }
    n = total["samples"]
    labels = _hist_labels()
    return {
        "samples": n,
        "targets": total["targets"],
        "no_target": total["no_target"],
        "splits": splits,
        "kinds": {k: _kind_stats(by_kind[k]) for k in kind_names},
        "targets_per_image": {
            "mean": _r(total["targets"] / n if n else 0.0),
            "max": max((int(k) for k in total["targets_hist"]), default=0),
            "hist": _ordered_hist(total["targets_hist"]),
        },
        "target_area": {
            "mean": _r(total["area_sum"] / total["targets"] if total["targets"] else 0.0),
            "max": total["area_max"],
            "hist": dict(zip(labels, total["area_hist"])),
        },
        "label_checks": {
            "cut": total["cut"],
            "area_mismatch": total["area_mismatch"],
            "n_targets_mismatch": total["n_targets_mismatch"],
        },
        "difficulty": difficulty_stats(merged),
        "sizes": size_stats(merged),
    }


def difficulty_stats(merged: Merged) -> dict[str, Any]:
    """stats.json's "difficulty": the bin definition, and samples and targets per size bin and SCR
    bin, per split and kind (`splits`) and over everything (`total`)."""
    splits: dict[str, dict] = {}
    total = _empty_difficulty()
    for split in sorted(merged):
        kinds = merged[split]
        names = [k for k in KINDS if k in kinds] + sorted(k for k in kinds if k not in KINDS)
        splits[split] = {k: kinds[k].get("difficulty", _empty_difficulty()) for k in names}
        for k in names:
            total = _add(total, splits[split][k])
    d = difficulty.definition()
    return {
        "definition": {"size_bins": {b: (f"<= {e} px" if e is not None else f"> {d['size_edges'][-1]} px")
                                     for b, e in zip(difficulty.SIZE_BINS, [*difficulty.SIZE_EDGES, None])},
                       "scr_bins": _scr_labels(), "guard": difficulty.GUARD, "ring": difficulty.RING,
                       "std_floor": difficulty.STD_FLOOR, "none": "no target (samples), empty ring (targets)"},
        "splits": splits,
        "total": total,
    }


def _scr_labels() -> dict[str, str]:
    edges = difficulty.SCR_EDGES
    labels = {difficulty.SCR_BINS[0]: f"< {edges[0]:g}"}
    for b, lo, hi in zip(difficulty.SCR_BINS[1:-1], edges, edges[1:]):
        labels[b] = f"{lo:g} to < {hi:g}"
    labels[difficulty.SCR_BINS[-1]] = f">= {edges[-1]:g}"
    return labels


# ---------------------------------------------------------------- image sizes (issue 18)


def size_key(shape) -> str:
    """stats.json's name of an image size: "HxW" (rows x columns, as the shards store them)."""
    return f"{int(shape[0])}x{int(shape[1])}"


def _size_order(keys) -> list[str]:
    """Sizes by pixel count, then height: smallest first."""
    def key(k: str) -> tuple[int, int]:
        h, w = (int(v) for v in k.split("x"))
        return h * w, h
    return sorted(keys, key=key)


def size_stats(merged: Merged) -> dict[str, Any]:
    """stats.json's "sizes": samples per image size ("HxW"), per split and kind (`splits`) and over
    everything (`total`), smallest size first; `n_sizes` the number of distinct sizes."""
    splits: dict[str, dict] = {}
    total: dict[str, int] = {}
    for split in merged:
        kinds = merged[split]
        names = [k for k in KINDS if k in kinds] + sorted(k for k in kinds if k not in KINDS)
        splits[split] = {}
        for k in names:
            counts = kinds[k].get("sizes", {})
            splits[split][k] = {s: int(counts[s]) for s in _size_order(counts)}
            for s, c in counts.items():
                total[s] = total.get(s, 0) + int(c)
    return {"n_sizes": len(total), "total": {s: total[s] for s in _size_order(total)}, "splits": splits}


def write_size_plot(merged: Merged, out: Path) -> None:
    """image_sizes.csv: one row per image size (height, width, pixels), samples of all kinds and
    per kind, smallest first (for `dvc plots`)."""
    by_kind = _by_kind(merged)
    columns = list(KINDS) + sorted(k for k in by_kind if k not in KINDS)
    counts = {k: by_kind.get(k, {}).get("sizes", {}) for k in columns}
    sizes = _size_order({s for c in counts.values() for s in c})
    with open(out / "image_sizes.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["size", "height", "width", "pixels", "all", *columns])
        for s in sizes:
            h, w = (int(v) for v in s.split("x"))
            row = [int(counts[k].get(s, 0)) for k in columns]
            writer.writerow([s, h, w, h * w, sum(row), *row])


def _by_kind(merged: Merged) -> dict[str, dict]:
    """kind -> summary summed over the splits."""
    by_kind: dict[str, dict] = {}
    for kinds in merged.values():
        for kind, acc in kinds.items():
            by_kind[kind] = _add(by_kind.get(kind, _empty_kind()), acc)
    return by_kind


def write_plots(merged: Merged, out: Path) -> None:
    """target_sizes.csv (area bin -> targets) and targets_per_image.csv (count -> images), per kind."""
    by_kind = _by_kind(merged)
    columns = list(KINDS) + sorted(k for k in by_kind if k not in KINDS)
    with open(out / "target_sizes.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["area", "area_max", "all", *columns])
        his = [by_kind.get(k, _empty_kind())["area_hist"] for k in columns]
        for i, lo in enumerate(AREA_EDGES):
            hi = AREA_EDGES[i + 1] - 1 if i + 1 < len(AREA_EDGES) else ""
            row = [h[i] for h in his]
            writer.writerow([lo, hi, sum(row), *row])
    with open(out / "targets_per_image.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["targets", "all", *columns])
        hists = [by_kind.get(k, _empty_kind())["targets_hist"] for k in columns]
        top = max((int(t) for h in hists for t in h), default=0)
        for t in range(top + 1):
            row = [h.get(str(t), 0) for h in hists]
            writer.writerow([t, sum(row), *row])
