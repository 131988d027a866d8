"""Reading and writing single images as they come from real datasets.

Images are returned as grey uint8 `[H, W]`, whatever the file's flavour: RGB-encoded grey
(channels that differ a little, as in most of SIRST), grey, grey+alpha, RGBA, palette,
interlaced, 1-bit, 8- or 16-bit PNG, and JPEG/BMP/TIFF through PIL. Masks come back as
uint8 `[H, W]` holding only 0 and 255.

Every failure to read is an `InputError(path, "cannot read image: <reason>")` whose text is
one line, so the command line can show it without a traceback.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from sirst5k.errors import InputError, OutputError

#: File name endings read as images (compared lower-case).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")

#: A mask pixel is foreground when its grey value is above this (BasicIRSTD reads
#: `mask > 127` too); masks drawn with anti-aliased edges or saved lossy keep their cores.
MASK_THRESHOLD = 127

_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def is_image_file(path: str | Path) -> bool:
    """True when the name ends in one of `IMAGE_EXTENSIONS` (and is not hidden)."""
    name = Path(path).name
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "unknown error"


def _open(path: Path) -> Image.Image:
    """Open and fully decode, turning every decoder failure into one-line InputError."""
    try:
        if path.is_file() and path.stat().st_size == 0:
            raise InputError(path, "cannot read image: file is empty (0 bytes)")
        with Image.open(path) as im:
            im.load()
            # Detach from the file handle; `load()` already decoded the pixels.
            return im.copy()
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(path, "cannot read image: no such file") from None
    except IsADirectoryError:
        raise InputError(path, "cannot read image: is a directory") from None
    except PermissionError:
        raise InputError(path, "cannot read image: permission denied") from None
    except UnidentifiedImageError:
        raise InputError(path, "cannot read image: not a recognised image format (corrupt?)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError) as err:
        raise InputError(path, f"cannot read image: {_one_line(err)}") from None


def wide_to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit grey `[H, W]` -> uint8 `[H, W]` by the fixed full-range rule `round(v / 257)`.

    Fixed, not per-image min-max: a per-image stretch would give every frame of a sequence
    its own gain, and the noise bank's test on how a window's mean and variance vary across
    frames would then measure the stretch instead of the sensor. 257 maps 65535 to 255 exactly.
    """
    v = values.astype(np.int64)
    # Integer form of round-half-up(v / 257), exact for the whole 16-bit range.
    return ((2 * v + 257) // 514).astype(np.uint8)


def _to_grey(im: Image.Image, path: Path) -> np.ndarray:
    if im.mode in _WIDE_MODES:
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise InputError(path, f"cannot read image: {im.mode} values outside 0..65535 are not supported")
        return wide_to_uint8(arr)
    if im.mode == "F":
        raise InputError(path, "cannot read image: floating-point images are not supported")
    if im.mode == "L":
        return np.array(im, dtype=np.uint8)
    # RGB-encoded grey with slightly differing channels, RGBA, LA, P, 1, CMYK, YCbCr:
    # PIL's ITU-R 601 luma, alpha ignored.
    return np.array(im.convert("L"), dtype=np.uint8)


def read_grey(path: str | Path) -> np.ndarray:
    """Read any supported image as grey.

    Returns:
        uint8 `[H, W]`: luma for colour files (ITU-R 601, alpha ignored), 16-bit files
        scaled by `wide_to_uint8`.
    """
    path = Path(path)
    return _to_grey(_open(path), path)


def image_size(path: str | Path) -> tuple[int, int]:
    """`(height, width)` from the file header, without decoding the pixels."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
        return h, w
    except FileNotFoundError:
        raise InputError(path, "cannot read image: no such file") from None
    except UnidentifiedImageError:
        raise InputError(path, "cannot read image: not a recognised image format (corrupt?)") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise InputError(path, f"cannot read image: {_one_line(err)}") from None


def _mask_values(im: Image.Image, path: Path) -> np.ndarray:
    """Mask file -> uint8 `[H, W]` before binarising.

    Colour masks take the brightest channel rather than luma: a label drawn in pure red
    (luma 76) or blue (luma 29) would otherwise fall below the threshold and vanish.
    Palette masks go through their palette colours the same way (a VOC-style index 1 is
    dark red, 128). 16-bit masks whose values fit in 0..255 are taken as they are.
    """
    if im.mode in _WIDE_MODES:
        arr = np.asarray(im)
        # A 16-bit mask holding small label values (0/1, 0/255) is labels, not radiometry:
        # the /257 scaling of images would turn 1 into 0 and 255 into 1.
        if arr.size and 0 <= arr.min() and arr.max() <= 255:
            return arr.astype(np.uint8)
        return _to_grey(im, path)
    if im.mode in ("L", "1", "F"):
        return _to_grey(im, path)
    if im.mode == "LA":
        return np.array(im.getchannel("L"), dtype=np.uint8)
    rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return rgb.max(axis=2)


def binarise_mask(values: np.ndarray, name: str = "mask") -> tuple[np.ndarray, list[str]]:
    """uint8 `[H, W]` -> (uint8 `[H, W]` in {0, 255}, warnings).

    Values already in {0, 255} pass unchanged. A mask holding only {0, 1} is read as label
    indices (1 = target) rather than thresholded, since `> 127` would erase every target.
    Anything else is foreground where `value > MASK_THRESHOLD`; each fix-up adds a warning
    naming `name`, which says how many non-zero pixels the threshold dropped from the targets.
    """
    values = np.asarray(values, dtype=np.uint8)
    odd = (values != 0) & (values != 255)
    if not odd.any():
        return values.copy(), []
    if values.max() == 1:
        return np.where(values == 1, 255, 0).astype(np.uint8), [
            f"{name}: mask holds 0/1 labels; read 1 as target (255)"
        ]
    out = np.where(values > MASK_THRESHOLD, 255, 0).astype(np.uint8)
    lost = int(np.count_nonzero((values > 0) & (values <= MASK_THRESHOLD)))
    kept = int(np.count_nonzero(out))
    loss = (f"{lost} non-zero pixel(s) at or below {MASK_THRESHOLD} dropped from the target(s), "
            f"{kept} target pixel(s) kept" if lost else f"no target pixel lost, {kept} kept")
    return out, [
        f"{name}: mask has {int(odd.sum())} pixels not 0 or 255; binarised at value > {MASK_THRESHOLD}: {loss}"
    ]


def read_mask(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read a target mask.

    Returns:
        (uint8 `[H, W]` with values 0 / 255, warnings): a warning names the file whenever
        its values had to be binarised (see `binarise_mask`).
    """
    path = Path(path)
    return binarise_mask(_mask_values(_open(path), path), str(path))


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return h, w


def resize_image(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear resize (PIL) of uint8 `[H, W]` to `size` (int = square, or `(height, width)`)."""
    h, w = _hw(size)
    if img.shape[:2] == (h, w):
        return np.asarray(img, dtype=np.uint8).copy()
    out = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


def resize_mask(mask: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of uint8 `[H, W]` 0/255 to `size`; stays 0/255."""
    h, w = _hw(size)
    if mask.shape[:2] == (h, w):
        return np.asarray(mask, dtype=np.uint8).copy()
    out = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8)).resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(out, dtype=np.uint8)


def write_png(path: str | Path, array: np.ndarray, compress_level: int = 6, strategy: int = -1) -> None:
    """Write uint8 `[H, W]` / `[H, W, 3]` / `[H, W, 4]` or uint16 `[H, W]` as PNG, atomically.

    compress_level: zlib's 0-9 (PIL's default 6); strategy: zlib's (`zlib.Z_RLE`, ...; -1 =
    PIL's default). The pixels are the same at every level and strategy.

    The file appears complete or not at all: it is written under a temporary name in the same
    folder and renamed, so an interrupted run never leaves a truncated PNG that a later run
    would take as done.
    """
    path = Path(path)
    arr = np.asarray(array)
    if arr.dtype == np.uint16 and arr.ndim == 2:
        im = Image.fromarray(np.ascontiguousarray(arr))
    elif arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        im = Image.fromarray(np.ascontiguousarray(arr))
    else:
        raise ValueError(f"write_png takes uint8 [H,W], [H,W,3], [H,W,4] or uint16 [H,W]; got {arr.dtype} {arr.shape}")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            im.save(fh, format="PNG", compress_level=compress_level, compress_type=strategy)
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise OutputError(path, f"cannot write PNG: {_one_line(err.strerror or err)}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
