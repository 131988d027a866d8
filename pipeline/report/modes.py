"""What each transfer and negative mode does to one image: the tiles of `sirst5k modes`.

`mode_tiles` runs the pipeline's own step functions (sirst5k.method.transfer, .negatives)
on one image and returns one `ModeTile` per mode, in a fixed order:

  original; transfer blend/resize at m = 0.1 and 0.5 (the paper's range), additive/resize
  m = 0.1, blend/mosaic m = 0.1, additive/mosaic m = 1 (native sensor amplitude: at 0.1 the
  added noise is below one grey level); negatives of one target (k = 1, mirrored) with patch
  3, 5, 7, 9 and 32, then patch 32 unmirrored; and, when some target sits where the two border
  rules disagree, that target's 32-px negative under `clamp="script"` and `clamp="clip"`.

`render_mode_tile` draws a tile as the full image (mask outline red, negative box yellow, the
zoomed region blue) above a x4 nearest zoom of the 48x48 neighbourhood of the tile's target, so
that a 3-pixel box is visible; `mode_sheet` lays the tiles out with the report's contact sheet.
The random noise choice is drawn apart from the transform (`draw_mode_params`), so a sheet can
be replayed from (seed, key): with key = a sample id, the transfer tiles are what `sirst5k transfer`
writes for that sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from sirst5k.method.negatives import CLAMPS, apply_negatives, negative_boxes
from sirst5k.report.drawing import BOX, OUTLINE, contact_sheet, outline, render_tile
from sirst5k.report.stats import highpass_energy
from sirst5k.method.targets import target_centers
from sirst5k.method.transfer import TransferDraws, draw_transfer_params, transfer_images


# (mode, field, mix), in sheet order.
TRANSFER_MODES: tuple[tuple[str, str, float], ...] = (
    ("blend", "resize", 0.1),
    ("blend", "resize", 0.5),
    ("additive", "resize", 0.1),
    ("blend", "mosaic", 0.1),
    ("additive", "mosaic", 1.0),
)
NEGATIVE_PATCHES: tuple[int, ...] = (3, 5, 7, 9, 32)
NEGATIVE_K = 1
BORDER_PATCH = 32
CROP = 48
ZOOM = 4
TILE = 256
COLUMNS = 4
CROP_FRAME = (70, 150, 255)
LABEL_BAND = 22
LABEL_FONT_SIZE = 15


@dataclass(frozen=True)
class ModeTile:
    """One mode applied to the image.

    image, mask: uint8 [H, W]. box: the negative's (y0, x0, patch), None for other kinds.
    focus: (y, x) of the target the zoom is centred on. params: what made the tile (kind,
    mode, field, mix, noise_id; or patch, k, flip, clamp, target).
    """

    label: str
    kind: str
    image: np.ndarray
    mask: np.ndarray
    box: tuple[int, int, int] | None
    focus: tuple[int, int]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModeDraws:
    """The sheet's random choices, the ones the transfer stage would draw for this image:
    `noise_id` the bank row resized for the `resize` field, `mosaic` [rows, cols] int64 the
    bank rows tiled for the `mosaic` field, built at `mosaic_build` (h, w), the image's original
    size (`--noise-scale source`, the transfer's default), or at the image's size when None."""

    noise_id: int
    mosaic: np.ndarray
    mosaic_build: tuple[int, int] | None = None


def draw_mode_params(seed: int, n_bank: int, size: tuple[int, int], window: int, key: str = "",
                     source_size: tuple[int, int] | None = None) -> ModeDraws:
    """Bank rows for one sheet: exactly what `sirst5k transfer --seed SEED` draws for a sample
    whose id is `key` (`draw_transfer_params`), for each field; source_size: the image's original
    (h, w), as the shard's orig_h, orig_w (None: the bank scale)."""
    resize = draw_transfer_params(seed, [key], n_bank, size, window, "resize")
    src = None if source_size is None else np.array([source_size], np.int64)
    mosaic = draw_transfer_params(seed, [key], n_bank, size, window, "mosaic", source_sizes=src)
    build = None if mosaic.build_size is None else tuple(int(v) for v in mosaic.build_size[0])
    return ModeDraws(int(resize.rows[0]), np.asarray(mosaic.rows[0]), build)


def border_target(centers: np.ndarray, size: tuple[int, int], patch: int = BORDER_PATCH) -> int | None:
    """Index of the first target whose box the "script" and "clip" rules place differently, or None.

    centers: [T, 2] int (y, x). None too when the patch does not fit the image.
    """
    centers = np.asarray(centers, np.int64).reshape(-1, 2)
    if len(centers) == 0 or patch > min(size):
        return None
    differ = (negative_boxes(centers, size, patch, "script") != negative_boxes(centers, size, patch, "clip")).any(axis=1)
    hits = np.flatnonzero(differ)
    return int(hits[0]) if hits.size else None


def transfer_tiles(image: np.ndarray, mask: np.ndarray, patches: np.ndarray, draws: ModeDraws,
                   focus: tuple[int, int]) -> list[ModeTile]:
    """One tile per entry of TRANSFER_MODES, made by the transfer stage's own function.

    image, mask: uint8 [H, W]; patches: uint8 [R, w, w].
    """
    mosaic = (TransferDraws("mosaic", draws.mosaic[None]) if draws.mosaic_build is None else
              TransferDraws("mosaic", (draws.mosaic,), np.array([draws.mosaic_build], np.int64)))
    fields = {"resize": TransferDraws("resize", np.array([draws.noise_id], np.int64)), "mosaic": mosaic}
    tiles = []
    for mode, fld, mix in TRANSFER_MODES:
        out = transfer_images(image[None], patches, fields[fld], [mix], mode)[0]
        note = " (paper)" if (mode, fld, mix) == ("blend", "resize", 0.1) else ""
        tiles.append(ModeTile(
            f"{mode} / {fld}, m={mix:g}{note}", "transfer", out, mask.copy(), None, focus,
            {"mode": mode, "field": fld, "mix": mix,
             "noise_id": draws.noise_id if fld == "resize" else draws.mosaic.copy()},
        ))
    return tiles


def negative_tile(image: np.ndarray, mask: np.ndarray, center: tuple[int, int], target: int, patch: int,
                  k: int = NEGATIVE_K, flip: bool = True, clamp: str = "script", label: str | None = None) -> ModeTile:
    """The negative of the target at `center` (y, x): its `patch` box mirrored (if `flip`) and rotated k x 90."""
    (y0, x0), = negative_boxes([center], image.shape, patch, clamp)
    imgs, msks = apply_negatives(torch.from_numpy(np.ascontiguousarray(image))[None],
                                 torch.from_numpy(np.ascontiguousarray(mask))[None],
                                 int(y0), int(x0), patch, k, flip)
    if label is None:
        label = f"negative p{patch} k{k}" + (" mirror" if flip else " no mirror")
    return ModeTile(label, "negative", imgs[0].numpy(), msks[0].numpy(), (int(y0), int(x0), int(patch)),
                    (int(center[0]), int(center[1])),
                    {"patch": int(patch), "k": int(k), "flip": bool(flip), "clamp": clamp, "target": int(target)})


def mode_tiles(image: np.ndarray, mask: np.ndarray, patches: np.ndarray, seed: int = 0, target: int = 0,
               key: str = "", source_size: tuple[int, int] | None = None) -> list[ModeTile]:
    """Every mode's tile for image uint8 [H, W] and mask uint8 [H, W] (nonzero = target).

    patches: the noise bank's uint8 [R, w, w]. target: which target (label order) the
    negatives and the zoom are about. Raises ValueError when the mask has no target, `target`
    is out of range, or the image is smaller than 32 px or than the bank's window.
    """
    image = np.array(image, np.uint8)  # copies: torch refuses read-only arrays (PIL-backed ones)
    mask = np.array(mask, np.uint8)
    patches = np.asarray(patches)
    if image.ndim != 2 or mask.shape != image.shape:
        raise ValueError(f"image and mask must both be [H, W], got {image.shape} and {mask.shape}")
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2] or len(patches) == 0:
        raise ValueError(f"patches must be a non-empty [R, w, w], got {patches.shape}")
    if min(image.shape) < max(NEGATIVE_PATCHES):
        raise ValueError(f"image {image.shape[0]}x{image.shape[1]} is smaller than the {max(NEGATIVE_PATCHES)}-px box")
    centers = target_centers(mask)
    if len(centers) == 0:
        raise ValueError("the mask has no target")
    if not 0 <= target < len(centers):
        raise ValueError(f"target {target} out of range: the mask has {len(centers)} target(s)")
    center = (int(centers[target][0]), int(centers[target][1]))
    draws = draw_mode_params(seed, len(patches), image.shape, patches.shape[-1], key, source_size)
    tiles = [ModeTile("original", "original", image.copy(), mask.copy(), None, center, {})]
    tiles += transfer_tiles(image, mask, patches, draws, center)
    tiles += [negative_tile(image, mask, center, target, p) for p in NEGATIVE_PATCHES]
    tiles.append(negative_tile(image, mask, center, target, BORDER_PATCH, flip=False))
    b = border_target(centers, image.shape)
    if b is not None:
        bc = (int(centers[b][0]), int(centers[b][1]))
        for clamp in CLAMPS:
            t = negative_tile(image, mask, bc, b, BORDER_PATCH, clamp=clamp, label="")
            y0, x0, _ = t.box
            tiles.append(ModeTile(f"border {clamp}: p32 at y{y0} x{x0}", t.kind, t.image, t.mask, t.box, t.focus,
                                  t.params))
    return tiles


def crop_window(focus: tuple[int, int], size: tuple[int, int], box: tuple[int, int, int] | None = None,
                crop: int = CROP) -> tuple[int, int, int]:
    """(y0, x0, side) of the square around `focus`, inside the image and holding the box if it fits."""
    side = min(crop, *size)
    corner = []
    for axis in range(2):
        c0 = int(np.clip(focus[axis] - side // 2, 0, size[axis] - side))
        if box is not None and box[2] <= side:
            lo = box[axis]
            c0 = int(np.clip(c0, lo + box[2] - side, lo))
        corner.append(c0)
    return corner[0], corner[1], side


def zoom_crop(image: np.ndarray, mask: np.ndarray, window: tuple[int, int, int], box: tuple[int, int, int] | None = None,
              zoom: int = ZOOM) -> Image.Image:
    """RGB nearest x`zoom` of the window (y0, x0, side) of image [H, W] uint8.

    The outline is taken after zooming, so it is one screen pixel inside each target pixel's
    block and the grey values stay visible; the box (y0, x0, patch) is drawn just outside its pixels.
    """
    cy, cx, side = window
    sub = image[cy:cy + side, cx:cx + side]
    big = np.repeat(np.repeat(sub, zoom, axis=0), zoom, axis=1)
    big_mask = np.repeat(np.repeat(mask[cy:cy + side, cx:cx + side], zoom, axis=0), zoom, axis=1)
    rgb = np.repeat(big[:, :, None], 3, axis=2)
    rgb[outline(big_mask)] = OUTLINE
    tile = Image.fromarray(rgb)
    if box is not None:
        y0, x0, patch = box
        ImageDraw.Draw(tile).rectangle([(x0 - cx) * zoom - 1, (y0 - cy) * zoom - 1,
                                        (x0 - cx + patch) * zoom, (y0 - cy + patch) * zoom], outline=BOX)
    return tile


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the small bitmap font
        return ImageFont.load_default()


def render_mode_tile(tile: ModeTile, size: int = TILE, crop: int = CROP, zoom: int = ZOOM) -> Image.Image:
    """The tile as one picture: label band, full image (report style), then the zoomed crop."""
    full = render_tile(tile.image, tile.mask, tile.box, size=size)
    fh, fw = tile.image.shape
    sx, sy = full.size[0] / fw, full.size[1] / fh
    window = crop_window(tile.focus, tile.image.shape, tile.box, crop)
    wy, wx, side = window
    ImageDraw.Draw(full).rectangle([wx * sx - 1, wy * sy - 1, (wx + side) * sx, (wy + side) * sy], outline=CROP_FRAME)
    detail = zoom_crop(tile.image, tile.mask, window, tile.box, zoom)
    width = max(full.size[0], detail.size[0])
    out = Image.new("RGB", (width, LABEL_BAND + full.size[1] + 4 + detail.size[1]), (24, 24, 24))
    ImageDraw.Draw(out).text((3, 3), tile.label, fill=(255, 255, 255), font=_font(LABEL_FONT_SIZE))
    out.paste(full, ((width - full.size[0]) // 2, LABEL_BAND))
    out.paste(detail, ((width - detail.size[0]) // 2, LABEL_BAND + full.size[1] + 4))
    return out


def tile_caption(tile: ModeTile, original: ModeTile) -> str:
    """A number to read next to the picture: noise and brightness for transfers, changed pixels for negatives."""
    if tile.kind == "negative":
        changed = int(np.count_nonzero(tile.image != original.image))
        return f"{changed} px changed, zoom x{ZOOM}"
    energy, count = highpass_energy(tile.image[None], tile.mask[None])
    rms = float(np.sqrt(energy[0] / count[0])) if count[0] else 0.0
    return f"mean {tile.image.mean():.1f}, noise rms {rms:.2f}"


def mode_sheet(tiles: Sequence[ModeTile], title: str, columns: int = COLUMNS, size: int = TILE) -> Image.Image:
    """All tiles on one contact sheet (the first tile is taken as the original for the captions)."""
    if not tiles:
        raise ValueError("no tiles")
    pictures = [render_mode_tile(t, size) for t in tiles]
    captions = [tile_caption(t, tiles[0]) for t in tiles]
    return contact_sheet(pictures, captions, title, columns)
