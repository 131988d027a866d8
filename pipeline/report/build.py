"""What a published dataset holds: statistics, plots, contact sheets and a dataset card.

`build_report(dataset)` writes into `<dataset>/report/` (or `out`):
- `stats.json`: counts per split and kind, targets per image, target areas, intensity and
  noise per kind, label checks (a DVC metric);
- `target_sizes.csv`, `targets_per_image.csv`: histograms for `dvc plots`;
- `originals.png`, `transfers.png`, `negatives.png`: contact sheets, mask outlines in red
  and, on negatives, the rotated box in yellow;
- `README.md`: the dataset card.

The heavy pass reads each shard once and returns a small summary (`summarize_shard`); summaries
add up (`merge_summaries`), so shards can be summarised anywhere (a dask task each) and merged.
Targets are 8-connected components (`skimage.measure.label(connectivity=2)`, as BasicIRSTD
counts them). Noise is the RMS of a high-pass residual (image minus its 3x3 box mean) over
background pixels at least 3 pixels from any target, so noise transfer shows up as a rise from
originals to transfers.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import h5py
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sirst5k import PRODUCER
from sirst5k.errors import InputError
from sirst5k.sources import Source, open_source
from sirst5k.formats.shards import KINDS, read_meta, read_shard
from sirst5k.method.targets import batch_target_table

BLOCK = 128  # rows summarised at once: bounded memory, vectorised work
AREA_EDGES = tuple(2**i for i in range(11))  # log2 bins: 1, 2-3, 4-7, ..., 1024+
GUARD = 3  # background pixels within this distance of a target are left out of the noise
SHEET_SAMPLES = 16
SHEET_COLUMNS = 4
SHEET_NAMES = {"original": "originals.png", "transfer": "transfers.png", "negative": "negatives.png"}
OUTLINE = (255, 40, 40)
BOX = (255, 210, 0)

CITATION = (
    'Y. Lu, Y. Lin, H. Wu, X. Xian, Y. Shi and L. Lin, "SIRST-5K: Exploring Massive Negatives Synthesis '
    'with Self-supervised Learning for Robust Infrared Small Target Detection", IEEE Transactions on '
    "Geoscience and Remote Sensing, 2024. arXiv:2403.05416."
)
BIBTEX = """@article{lu2024sirst5k,
  title   = {{SIRST-5K}: Exploring Massive Negatives Synthesis with Self-supervised Learning
             for Robust Infrared Small Target Detection},
  author  = {Lu, Yahao and Lin, Yupei and Wu, Han and Xian, Xiaoyu and Shi, Yukai and Lin, Liang},
  journal = {IEEE Transactions on Geoscience and Remote Sensing},
  year    = {2024},
  eprint  = {2403.05416},
  archivePrefix = {arXiv}
}"""
# Recognised from an input's path or layout; anything else gets a placeholder to fill in.
KNOWN_SOURCES = (
    ("nudt", 'B. Li et al., "Dense Nested Attention Network for Infrared Small Target Detection", IEEE TIP 2023 (NUDT-SIRST).'),
    ("irstd-1k", 'M. Zhang et al., "ISNet: Shape Matters for Infrared Small Target Detection", CVPR 2022 (IRSTD-1k).'),
    ("sirst-v2", 'Y. Dai et al., "One-Stage Cascade Refinement Networks for Infrared Small Target Detection", IEEE TGRS 2023 (SIRST-V2).'),
    ("sirst", 'Y. Dai et al., "Asymmetric Contextual Modulation for Infrared Small Target Detection", WACV 2021 (SIRST / NUAA-SIRST).'),
)


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
    index = np.searchsorted(np.asarray(AREA_EDGES), areas, side="right") - 1
    return np.bincount(np.clip(index, 0, len(AREA_EDGES) - 1), minlength=len(AREA_EDGES))


def _empty_kind() -> dict[str, Any]:
    return {
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


def summarize_arrays(images: np.ndarray, masks: np.ndarray, meta: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """Per-kind summary of a batch. images, masks: [B, H, W] uint8; meta: fields of length B."""
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
        out[kind] = acc
    return out


def summarize_shard(path: str, split: str) -> dict[str, Any]:
    """{"split", "kinds": {kind: summary}} of one shard, read in blocks of BLOCK rows."""
    meta = read_meta(path)
    total: dict[str, dict] = {}
    with h5py.File(path, "r") as f:
        images, masks = f["images"], f["masks"]
        for start in range(0, images.shape[0], BLOCK):
            stop = min(start + BLOCK, images.shape[0])
            part = {k: v[start:stop] for k, v in meta.items()}
            total = _add(total, summarize_arrays(images[start:stop], masks[start:stop], part))
    return {"split": split, "kinds": total}


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
    labels = []
    for lo, hi in zip(AREA_EDGES, AREA_EDGES[1:] + (None,)):
        labels.append(f"{lo}+" if hi is None else (str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}"))
    return labels


def _ordered_hist(hist: Mapping[str, int]) -> dict[str, int]:
    return {k: hist[k] for k in sorted(hist, key=int)}


def _kind_stats(acc: Mapping[str, Any]) -> dict[str, Any]:
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
    return round(float(x), 4)


def compute_stats(merged: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
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
    }


def _by_kind(merged) -> dict[str, dict]:
    by_kind: dict[str, dict] = {}
    for kinds in merged.values():
        for kind, acc in kinds.items():
            by_kind[kind] = _add(by_kind.get(kind, _empty_kind()), acc)
    return by_kind


def write_plots(merged, out: Path) -> None:
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


# ---------------------------------------------------------------- contact sheets


def outline(mask: np.ndarray) -> np.ndarray:
    """Boundary of a mask [H, W]: foreground pixels with a background 4-neighbour (mask XOR eroded)."""
    fg = np.asarray(mask) != 0
    inner = fg.copy()
    inner[1:] &= fg[:-1]
    inner[:-1] &= fg[1:]
    inner[:, 1:] &= fg[:, :-1]
    inner[:, :-1] &= fg[:, 1:]
    # Pixels on the image border count as boundary.
    inner[0], inner[-1], inner[:, 0], inner[:, -1] = False, False, False, False
    return fg & ~inner


def render_tile(image: np.ndarray, mask: np.ndarray, box: tuple[int, int, int] | None = None, size: int = 128) -> Image.Image:
    """RGB tile of image [H, W] uint8 with the mask outline in red and, if given, box (y0, x0, patch).

    Small images are enlarged by an integer factor (nearest) to about `size` pixels, large ones
    reduced to fit `2 * size`, so outlines stay one source pixel wide.
    """
    h, w = image.shape
    rgb = np.repeat(image[:, :, None], 3, axis=2)
    rgb[outline(mask)] = OUTLINE
    scale = max(1, size // max(h, w))
    tile = Image.fromarray(rgb)
    if scale > 1:
        tile = tile.resize((w * scale, h * scale), Image.NEAREST)
    if box is not None:
        y0, x0, patch = box
        draw = ImageDraw.Draw(tile)
        draw.rectangle([x0 * scale - 1, y0 * scale - 1, (x0 + patch) * scale, (y0 + patch) * scale], outline=BOX)
    if max(tile.size) > 2 * size:
        tile.thumbnail((2 * size, 2 * size), Image.BOX)
    return tile


def contact_sheet(tiles: Sequence[Image.Image], captions: Sequence[str], title: str, columns: int = SHEET_COLUMNS) -> Image.Image:
    """Tiles in a grid, a caption under each and a title on top."""
    font = ImageFont.load_default()
    tw = max(t.size[0] for t in tiles)
    th = max(t.size[1] for t in tiles)
    pad, caption_h, title_h = 4, 14, 18
    columns = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    width = max(columns * (tw + pad) + pad, 240)
    sheet = Image.new("RGB", (width, title_h + rows * (th + caption_h + pad) + pad), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 3), title, fill=(255, 255, 255), font=font)
    for i, (tile, caption) in enumerate(zip(tiles, captions)):
        x = pad + (i % columns) * (tw + pad)
        y = title_h + (i // columns) * (th + caption_h + pad)
        sheet.paste(tile, (x, y))
        while caption and draw.textlength(caption, font=font) > tw:
            caption = caption[:-2] + "…" if len(caption) > 2 else ""
        draw.text((x, y + th + 1), caption, fill=(220, 220, 220), font=font)
    return sheet


def pick_evenly(n: int, k: int) -> np.ndarray:
    """k indices spread evenly over range(n), first and last included (all of them when n <= k)."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def _negative_box(meta: Mapping[str, Any], shape: tuple[int, int], clamp: str) -> tuple[int, int, int] | None:
    patch, cy, cx = int(meta["patch"]), int(meta["center_y"]), int(meta["center_x"])
    if patch < 1 or cy < 0 or cx < 0 or patch > min(shape):
        return None
    from sirst5k.method.negatives import negative_boxes

    try:
        (y0, x0), = negative_boxes([[cy, cx]], shape, patch, clamp)
    except ValueError:
        (y0, x0), = negative_boxes([[cy, cx]], shape, patch, "clip")
    return int(y0), int(x0), patch


def _caption(kind: str, m: Mapping[str, Any]) -> str:
    if kind == "negative":
        return f"{m['sample_id']} k{m['k']}{' f' if m['flip'] == 1 else ''}"
    if kind == "transfer" and not math.isnan(m["mix"]):
        return f"{m['sample_id']} m{m['mix']:g}"
    return str(m["sample_id"])


def write_contact_sheets(source: Source, out: Path, n: int = SHEET_SAMPLES) -> dict[str, str]:
    """One sheet per kind present: `n` samples spread evenly over the kind, in dataset order."""
    shards = [(split, path) for split, entries in source.splits.items() for path, _ in entries]
    metas = [read_meta(path) for _, path in shards]
    # publish records each stage's params under the stage's name
    clamp = ((source.manifest or {}).get("params", {}).get("negatives") or {}).get("clamp", "script")
    written = {}
    for kind, filename in SHEET_NAMES.items():
        where = [(s, int(r)) for s, m in enumerate(metas) for r in np.flatnonzero(m["kind"].astype(str) == kind)]
        if not where:
            continue
        chosen = [where[i] for i in pick_evenly(len(where), n)]
        tiles, captions = [], []
        for s in sorted({s for s, _ in chosen}):
            rows = [r for t, r in chosen if t == s]
            images, masks, meta = read_shard(shards[s][1], rows)
            for j in range(len(rows)):
                m = {k: v[j] for k, v in meta.items()}
                box = _negative_box(m, images.shape[1:], clamp) if kind == "negative" else None
                tiles.append(render_tile(images[j], masks[j], box))
                captions.append(_caption(kind, m))
        title = f"{filename[:-4]}: {len(tiles)} of {len(where)} (mask outline red" + (", box yellow)" if kind == "negative" else ")")
        contact_sheet(tiles, captions, title).save(out / filename, format="PNG", compress_level=3)
        written[kind] = filename
    return written


# ---------------------------------------------------------------- dataset card


def _source_citation(inputs: Mapping[str, Any]) -> list[str]:
    lines = []
    for key, value in inputs.items():
        if not isinstance(value, Mapping):
            continue
        if value.get("citation"):
            lines.append(f"- {key}: {value['citation']}")
            continue
        text = f"{value.get('path', '')} {value.get('layout', '')}".lower()
        known = next((cite for tag, cite in KNOWN_SOURCES if tag in text), None)
        if known:
            lines.append(f"- {key} (recognised from `{value.get('path', '')}`; check): {known}")
        else:
            lines.append(f"- {key} (`{value.get('path', '?')}`): _add the citation of this dataset here_")
    return lines or ["- _add the citation of the source dataset here_"]


def dataset_card(source: Source, stats: Mapping[str, Any], sheets: Mapping[str, str]) -> str:
    manifest = source.manifest or {}
    name = manifest.get("name", source.root.name)
    version = manifest.get("version", "unknown (no manifest)")
    producer = manifest.get("producer", "unknown")
    inputs = manifest.get("inputs", {})
    params = manifest.get("params", {})
    out = [f"# {name}", ""]
    out += [
        "Infrared small-target detection data made with the SIRST-5K method (Lu et al., IEEE TGRS 2024):",
        "noise transfer from real sensor sequences and rotated negatives around each target.",
        "",
        f"- version: `{version}`",
        f"- producer: `{producer}`",
        f"- report made by: `{PRODUCER}`",
        "",
        "## Contents",
        "",
        "| split | samples | " + " | ".join(KINDS) + " | targets | no target |",
        "| --- | ---: | " + " | ".join("---:" for _ in KINDS) + " | ---: | ---: |",
    ]
    for split, s in stats["splits"].items():
        out.append(
            f"| {split} | {s['samples']} | " + " | ".join(str(s[k]) for k in KINDS) + f" | {s['targets']} | {s['no_target']} |"
        )
    out += ["", "| kind | intensity mean | intensity std | noise rms | targets / image | mean target area |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for kind, k in stats["kinds"].items():
        out.append(
            f"| {kind} | {k['intensity_mean']:.2f} | {k['intensity_std']:.2f} | {k['noise_rms']:.3f} | "
            f"{k['targets_per_image_mean']:.3f} | {k['target_area_mean']:.1f} |"
        )
    checks = stats["label_checks"]
    out += [
        "",
        f"Label checks: {checks['cut']} samples whose negative box cuts a target (meta `cut`), "
        f"{checks['area_mismatch']} whose stored mask area disagrees with the mask, "
        f"{checks['n_targets_mismatch']} whose stored target count disagrees with the mask.",
        "",
        "Figures: " + ", ".join(f"[{f}]({f})" for f in sheets.values()) + ("; " if sheets else "")
        + "histograms in `target_sizes.csv` and `targets_per_image.csv`; numbers in `stats.json`.",
        "",
        "## Provenance",
        "",
    ]
    if inputs:
        for key, value in inputs.items():
            if isinstance(value, Mapping):
                fields = ", ".join(f"{k}: `{v}`" for k, v in value.items())
                out.append(f"- **{key}**: {fields}")
            else:
                out.append(f"- **{key}**: `{value}`")
    else:
        out.append("- not recorded (no manifest)")
    out += ["", "Parameters:", "", "```json", json.dumps(params, indent=2, sort_keys=True, default=str), "```", ""]
    out += [
        "## Format",
        "",
        "HDF5 shards `<split>-NNNNN.h5` (schema_version 1), listed with their sha256 in `manifest.json`:",
        "`/images` and `/masks` uint8 `[N, H, W]` (masks 0/255, one chunk per image), and one 1-D",
        "dataset per metadata field under `/meta` (`sample_id`, `source_id`, `kind` original | transfer |",
        "negative, `mix`, `noise_id`, `patch`, `k`, `flip`, `target_index`, `center_y`, `center_x`,",
        "`n_targets`, ...; -1 or NaN where a field does not apply). Root attributes name the dataset,",
        "version, split and producer.",
        "",
        "## Loading",
        "",
        "```python",
        "from torch.utils.data import DataLoader",
        "from pipeline.loader import ShardDataset",
        "",
        'train = ShardDataset("path/to/dataset", split="train", channels=3)  # or the manifest file',
        "image, mask = train[0]  # float32 [3, H, W] in [0, 1], float32 [1, H, W] in {0, 1}",
        "loader = DataLoader(train, batch_size=16, shuffle=True, num_workers=4)",
        "```",
        "",
        "PNG folders for DNANet or BasicIRSTD: `sirst5k export path/to/dataset OUT --layout dnanet|basicirstd`.",
        "",
        "## Citation",
        "",
        "The method:",
        "",
        CITATION,
        "",
        "```bibtex",
        BIBTEX,
        "```",
        "",
        "The source data:",
        "",
        *_source_citation(inputs),
        "",
    ]
    return "\n".join(out)


# ---------------------------------------------------------------- the report


MapFn = Callable[[Callable[..., Any], list[tuple]], list[Any]]


def _local_map(fn, tasks):
    return [fn(*args) for args in tasks]


def report_dir(source: str | Path) -> Path:
    """Default report folder: `report/` inside the dataset folder."""
    return open_source(source).root / "report"


def build_report(source: str | Path, out: str | Path | None = None, map_fn: MapFn | None = None) -> dict[str, Any]:
    """Write the report of a dataset (manifest, dataset folder or shard folder); returns the stats.

    map_fn(fn, tasks) runs fn(*args) for each task and returns the results in order (default:
    here, one after another; a stage passes one that runs them on a dask cluster).
    """
    from sirst5k.runner.outputs import staged_folder

    src = open_source(source)
    out = Path(out) if out is not None else src.root / "report"
    tasks = [(path, split) for split, entries in src.splits.items() for path, _ in entries]
    summaries = (map_fn or _local_map)(summarize_shard, tasks)
    merged = merge_summaries(summaries)
    expected = {split: sum(n for _, n in entries) for split, entries in src.splits.items()}
    got = {split: sum(a["samples"] for a in kinds.values()) for split, kinds in merged.items()}
    for split, n in expected.items():
        if got.get(split, 0) != n:
            raise InputError(src.manifest_path or src.root, f"split {split}: {got.get(split, 0)} samples in shards, {n} listed")
    stats = compute_stats(merged)
    with staged_folder(out) as tmp:
        for leftover in tmp.iterdir():  # a crashed run's files must not reappear in this report
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        # Keys in reading order (histogram bins ascending), not sorted as text.
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        write_plots(merged, tmp)
        sheets = write_contact_sheets(src, tmp)
        (tmp / "README.md").write_text(dataset_card(src, stats, sheets), encoding="utf-8")
    return stats
