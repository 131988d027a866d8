"""Pictures of a dataset: mask outlines, tiles, contact sheets, and the report's sheet per kind.

A tile is one sample in RGB with its mask outline in red (`OUTLINE`) and, on a negative, the
rotated box in yellow (`BOX`); `sirst5k modes` draws its sheet with the same pieces.
Samples of mixed sizes (shards of different sizes) are fitted to one cell (`fit_tiles`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sirst5k.formats.shards import read_meta, read_shard
from sirst5k.sources import Source

SHEET_SAMPLES = 16
SHEET_COLUMNS = 4
SHEET_NAMES = {"original": "originals.png", "transfer": "transfers.png", "negative": "negatives.png"}
OUTLINE = (255, 40, 40)
BOX = (255, 210, 0)


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


def fit_tiles(tiles: Sequence[Image.Image], side: int | None = None, background=(24, 24, 24)) -> list[Image.Image]:
    """Tiles of mixed sizes brought to one `side` x `side` cell (default: the largest tile side):
    each scaled so its long side is `side`, aspect kept (nearest when enlarging, so outlines stay
    crisp; box filter when shrinking), centred on the background. Tiles all of one size are
    returned as they are."""
    tiles = list(tiles)
    if not tiles or len({t.size for t in tiles}) == 1:
        return tiles
    side = side or max(max(t.size) for t in tiles)
    out = []
    for t in tiles:
        w, h = t.size
        f = side / max(w, h)
        nw, nh = max(1, round(w * f)), max(1, round(h * f))
        scaled = t if (nw, nh) == (w, h) else t.resize((nw, nh), Image.NEAREST if f > 1 else Image.BOX)
        cell = Image.new("RGB", (side, side), background)
        cell.paste(scaled, ((side - nw) // 2, (side - nh) // 2))
        out.append(cell)
    return out


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
    """(y0, x0, patch) of a negative's box, placed by the rule negatives used; None without one."""
    patch, cy, cx = int(meta["patch"]), int(meta["center_y"]), int(meta["center_x"])
    if patch < 1 or cy < 0 or cx < 0 or patch > min(shape):
        return None
    from sirst5k.method.negatives import negative_boxes

    try:
        (y0, x0), = negative_boxes([[cy, cx]], shape, patch, clamp)
    except ValueError:
        (y0, x0), = negative_boxes([[cy, cx]], shape, patch, "clip")
    return int(y0), int(x0), patch


def _box_region(meta: Mapping[str, Any], shape: tuple[int, int]) -> tuple[int, int]:
    """Where negatives placed a box: a padded image's valid region (`valid_h`, `valid_w`) when it
    records one and the box fits it (`method.negatives.clamp_to_valid`), else the whole image."""
    vh, vw = int(meta.get("valid_h", -1)), int(meta.get("valid_w", -1))
    if vh > 0 and vw > 0 and int(meta["patch"]) <= min(vh, vw, *shape):
        return min(vh, shape[0]), min(vw, shape[1])
    return tuple(shape)


def _caption(kind: str, m: Mapping[str, Any]) -> str:
    """Sample id, and for a negative its k and mirror, for a transfer its mix."""
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
                box = _negative_box(m, _box_region(m, images.shape[1:]), clamp) if kind == "negative" else None
                tiles.append(render_tile(images[j], masks[j], box))
                captions.append(_caption(kind, m))
        tiles = fit_tiles(tiles)  # mixed sizes: one cell each, aspect kept
        title = f"{filename[:-4]}: {len(tiles)} of {len(where)} (mask outline red" + (", box yellow)" if kind == "negative" else ")")
        contact_sheet(tiles, captions, title).save(out / filename, format="PNG", compress_level=3)
        written[kind] = filename
    return written
