"""Noise transfer: fuse a noise-bank field into labelled images (values on the 0..255 scale).

A field is the noise image laid over a whole image, built one of three ways:
  - `resize_field`: the paper's, one bank patch resized bilinearly (align_corners=False) to the
    image size, as torchvision's `Resize` does in the original `add_noise.py`. Upsampling a
    32-px patch 8x smooths its pixel noise into broad blobs: the field adds brightness
    undulations a few pixels wide and no pixel-level noise, whatever the image's scale (a
    stretched patch has no scale, so `noise_scale` does not apply to it).
  - `mosaic_field`: bank patches tiled at their native scale, so the field keeps the sensor's
    pixel-level noise. Which patches go where is drawn by `draw_mosaic_params`.
  - `model_fields`: a Gaussian field drawn from a sequence's fitted noise model (its 2-D noise
    spectrum and row/column stripes, `sirst5k.method.noise_model`), so the noise is not limited
    to the bank's few patches.

and built at one of two scales (`noise_scale`, mosaic and model fields):
  - `source`: at the sample's original size (`orig_h` x `orig_w`, as ingest read it) at the
    bank's native pixel pitch, then resized to the shard size exactly as ingest resized the image
    (`resample_like_ingest`: PIL's bilinear filter, in float), so the field holds what the
    sensor shows at this image's scale: a 640x512 frame shrunk to 256 px keeps ~0.3x of its white
    pixel noise, and so does its noise field.
  - `bank`: at native pitch straight onto the shard image (the only scale before), which over-
    states the noise of a shrunk image and understates that of an enlarged one.

and, for the model field, at one of two noise levels (`noise_level`):
  - `flat`: the model's one level everywhere (the fitted spectrum as it is; before: the only way);
  - `image`: the 2-D noise scaled per pixel by the model's noise-level function at the image's
    own local grey level (`noise_model.nlf_gain`; a bank fitted with `noise-bank --model
    --model-nlf`), so a dark region gets the sensor's dark-level noise and a bright one its
    bright-level noise; the row/column stripes (readout banding) stay as they are.

and fused one of two ways:
  - `blend`: the paper's `m * field + (1 - m) * image`. Besides adding noise it lowers contrast
    by (1 - m) and pulls the brightness towards the field's mean.
  - `additive`: `image + m * (field - mean(field))`, the blend's noise term alone: at equal `m`
    both add the same noise amplitude, but the image keeps its contrast and mean brightness.
    `m = 1` adds the sensor noise at its native amplitude.

The math is elementwise (gathers, products, sums in a fixed order, rounding), each step one
IEEE-rounded float32 operation, so numpy on the CPU and torch on a GPU give the same bits: the
functions below take numpy arrays or torch tensors and return the same kind, and
`transfer_images` on the CPU runs in numpy without importing torch (1.3-2.5 CPU-s a process).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image

from sirst5k.method.devices import device_type
from sirst5k.method.noise_model import (NoiseModel, box_mean, detrend, draw_model_params, model_field, nlf_gain,
                                        synthesize_parts)
from sirst5k.method.reductions import pairwise_mean
from sirst5k.method.rng import generator
from sirst5k.params import NoiseField, NoiseLevel, choices

if TYPE_CHECKING:
    import torch


def _is_np(x) -> bool:
    return isinstance(x, np.ndarray)


def _is_float64(dtype) -> bool:
    """`dtype` (torch, numpy or None = float32) is float64."""
    if dtype is None:
        return False
    text = str(dtype)
    if text.startswith("torch."):
        return text in ("torch.float64", "torch.double")
    return np.dtype(dtype) == np.float64


def _size(size) -> tuple[int, int]:
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size}")
    return height, width


def linear_taps(n_in: int, n_out: int, dtype: "torch.dtype | np.dtype | None" = None) -> tuple[np.ndarray, ...]:
    """Source indices and weights `(i0, i1, w0, w1)`, each `[n_out]`, of a 1-D bilinear resize.

    The half-pixel rule (align_corners=False): source `scale * (j + 0.5) - 0.5` clamped at 0,
    with `scale = n_in / n_out` in `dtype` (float32 or float64, torch or numpy; None = float32). The source is rounded once, as the fused multiply-add
    of PyTorch's CPU kernel (x86-64 wheels) rounds it, but computed exactly here (float32
    products fit a float64; float64 ones are done in rationals), so the taps do not depend on
    the machine.
    """
    if _is_float64(dtype):
        scale = float(n_in) / float(n_out)
        exact = Fraction(scale)
        src = np.array([float(exact * (2 * j + 1) / 2 - Fraction(1, 2)) for j in range(n_out)], np.float64)
        np_dtype = np.float64
    else:
        scale32 = np.float32(n_in) / np.float32(n_out)
        src = (np.float64(scale32) * (np.arange(n_out, dtype=np.float64) + 0.5) - 0.5).astype(np.float32)
        np_dtype = np.float32
    src = np.maximum(src, np_dtype(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = np.clip(src - i0.astype(np_dtype), np_dtype(0), np_dtype(1))
    w0 = np_dtype(1) - w1
    return i0, i1, w0, w1


@functools.lru_cache(maxsize=32)
def _device_taps(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    import torch

    return tuple(torch.from_numpy(t).to(device) for t in linear_taps(n_in, n_out, dtype))


@functools.lru_cache(maxsize=32)
def _numpy_taps(n_in: int, n_out: int, float64: bool) -> tuple[np.ndarray, ...]:
    taps = linear_taps(n_in, n_out, np.float64 if float64 else np.float32)
    for t in taps:
        t.setflags(write=False)
    return taps


def resize_field(noise: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False, no antialias) of noise [B, h, w] to [B, H, W].

    Computed as separate gathers, multiplies and adds, each one IEEE-rounded step on any device,
    so a CUDA worker returns the same bits as a CPU worker. (`F.interpolate` fuses multiply-adds,
    differently on a CPU and a GPU, and so rounds differently in the last bit.) Where those
    products are exact, as for integer pixels upsampled by a power of two (the paper's 32 -> 256),
    this equals `F.interpolate` and torchvision's `Resize`; otherwise it is within a float ulp.
    """
    if noise.ndim != 3:
        raise ValueError(f"noise must be [B, h, w], got shape {tuple(noise.shape)}")
    height, width = _size(size)
    if _is_np(noise):
        return _resize_np(noise, (height, width))
    if not noise.is_floating_point():
        noise = noise.float()
    _, h, w = noise.shape
    taps_y = _device_taps(h, height, noise.dtype, noise.device)
    taps_x = _device_taps(w, width, noise.dtype, noise.device)
    # Along the rows of the small patch first, then down the columns:
    # out = (x00*wx0 + x01*wx1)*wy0 + (x10*wx0 + x11*wx1)*wy1, the order PyTorch's CPU kernel uses.
    x0, x1, wx0, wx1 = taps_x
    rows = noise.index_select(2, x0).mul_(wx0).add_(noise.index_select(2, x1).mul_(wx1))
    y0, y1, wy0, wy1 = taps_y
    return rows.index_select(1, y0).mul_(wy0[:, None]).add_(rows.index_select(1, y1).mul_(wy1[:, None]))


class _Workspace:
    """Float buffers reused from batch to batch: a fresh 2 MiB array a step faults its pages in
    again (glibc hands big blocks back to the kernel), which cost the numpy path ~1.5x."""

    def __init__(self):
        self._bufs: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        size = int(np.prod(shape))
        buf = self._bufs.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = self._bufs[name] = np.empty(size, dtype)
        return buf[:size].reshape(shape)


def _resize_np(noise: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`resize_field` in numpy: the same gathers, products and sums in the same order."""
    if noise.dtype not in (np.float32, np.float64):
        noise = noise.astype(np.float32)
    height, width = size
    batch, h, w = noise.shape
    x0, x1, wx0, wx1 = _numpy_taps(w, width, noise.dtype == np.float64)
    y0, y1, wy0, wy1 = _numpy_taps(h, height, noise.dtype == np.float64)
    rows = noise[:, :, x0] * wx0
    rows += noise[:, :, x1] * wx1
    plan = _row_plan(h, height, width, noise.dtype == np.float64)
    out = _take_rows(rows, y0, plan[0])
    out *= plan[2]
    low = _take_rows(rows, y1, plan[1])
    low *= plan[3]
    out += low
    return out


@functools.lru_cache(maxsize=32)
def _row_plan(h: int, height: int, width: int, float64: bool) -> tuple:
    """How `_resize_np` gathers and weighs rows: the repeat counts of `y0` and `y1` (None where an
    index is not sorted), and the row weights spread over `[height, width]` (a full-size operand
    multiplies ~1.6x faster than a `[height, 1]` broadcast)."""
    y0, y1, wy0, wy1 = _numpy_taps(h, height, float64)

    def counts(idx: np.ndarray):
        return np.bincount(idx, minlength=h) if np.all(np.diff(idx) >= 0) else None

    def spread(wt: np.ndarray) -> np.ndarray:
        full = np.ascontiguousarray(np.broadcast_to(wt[:, None], (height, width)))
        full.setflags(write=False)
        return full

    return counts(y0), counts(y1), spread(wy0), spread(wy1)


def _take_rows(rows: np.ndarray, idx: np.ndarray, counts) -> np.ndarray:
    """`rows[:, idx]` (a new array); a sorted index is a repeat, ~2.5x faster than the gather."""
    return rows[:, idx] if counts is None else np.repeat(rows, counts, axis=1)


def _fuse_np(images: np.ndarray, field: np.ndarray, m: float, mode: str, ws: _Workspace) -> np.ndarray:
    """`to_uint8(blend(...))` / `to_uint8(additive(...))` in numpy, as float32 holding 0..255
    integers, into a reused buffer (valid until the next call); the same
    IEEE steps as the public functions (a sum's operands in either order give the same bits)."""
    mix = np.full((len(images), 1, 1), m, np.float32)
    out = ws.get("fused", images.shape, np.float32)
    if mode == "blend":
        np.multiply(mix, field, out=out)
        other = ws.get("fused-other", images.shape, np.float32)
        np.multiply(1 - mix, images, out=other)
        out += other
    else:
        np.subtract(field, pairwise_mean(field, (1, 2), keepdim=True), out=out)
        out *= mix
        out += images
    np.rint(out, out=out)
    np.clip(out, 0, 255, out=out)
    return out  # integers in 0..255: the caller's uint8 assignment casts them exactly


def mosaic_grid(size: tuple[int, int], window: int) -> tuple[int, int]:
    """(rows, cols) of `window`-px tiles that cover an image of `size` (H, W)."""
    height, width = _size(size)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return math.ceil(height / window), math.ceil(width / window)


def draw_mosaic_params(rng: np.random.Generator, n_bank: int, size: tuple[int, int], window: int) -> np.ndarray:
    """Bank patch indices [rows, cols] int64 for one mosaic, drawn uniformly with replacement."""
    if n_bank < 1:
        raise ValueError("the noise bank is empty")
    return rng.integers(0, n_bank, size=mosaic_grid(size, window), dtype=np.int64)


def mosaic_field(patches: torch.Tensor, size: tuple[int, int], match_means: bool = True) -> torch.Tensor:
    """Tile patches [B, n, w, w] row-major into fields [B, H, W] at native scale.

    n must equal rows * cols of `mosaic_grid(size, w)`; the tiling is cropped to (H, W) at the
    bottom and right. With `match_means`, each patch is shifted to the mean of its sample's
    patches, so seams between patches of different brightness do not draw edges a detector
    could learn; the noise itself is untouched (no resampling).
    """
    if patches.ndim != 4 or patches.shape[2] != patches.shape[3]:
        raise ValueError(f"patches must be [B, n, w, w], got shape {tuple(patches.shape)}")
    batch, n, window, _ = patches.shape
    height, width = _size(size)
    rows, cols = mosaic_grid((height, width), window)
    if n != rows * cols:
        raise ValueError(f"a {height}x{width} mosaic of {window}-px tiles needs {rows * cols} patches, got {n}")
    if _is_np(patches):
        if patches.dtype not in (np.float32, np.float64):
            patches = patches.astype(np.float32)
    elif not patches.is_floating_point():
        patches = patches.float()
    if match_means:
        tile_means = pairwise_mean(patches, (2, 3), keepdim=True)
        patches = patches - tile_means + pairwise_mean(tile_means, (1,), keepdim=True)
    grid = patches.reshape(batch, rows, cols, window, window)
    grid = grid.transpose(0, 1, 3, 2, 4) if _is_np(grid) else grid.permute(0, 1, 3, 2, 4)
    return grid.reshape(batch, rows * window, cols * window)[:, :height, :width]


# -- fields at the sample's own scale (built on the CPU: the same bits whatever device fuses them) --

# ingest's image filter (sirst5k.formats.imageio.resize_image): PIL bilinear, whose support
# widens with the shrink factor, so shrinking averages neighbouring pixels as binning would.
INGEST_FILTER = Image.Resampling.BILINEAR


def resample_like_ingest(field: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float field `[h, w]` resized to `size` (H, W) as ingest resizes an image, float32 `[H, W]`.

    The same PIL filter on the float image (mode "F": its coefficients are the ones PIL's 8-bit
    path rounds to fixed point), without rounding to grey levels. The same size is a copy.
    Deterministic: PIL on the CPU, one thread.
    """
    height, width = _size(size)
    f = np.ascontiguousarray(field, dtype=np.float32)
    if f.ndim != 2:
        raise ValueError(f"field must be [h, w], got shape {f.shape}")
    if f.shape == (height, width):
        return f.copy()
    return np.asarray(Image.fromarray(f).resize((width, height), INGEST_FILTER), dtype=np.float32)


def source_mosaic_fields(patches: np.ndarray, rows: Sequence[np.ndarray], build_sizes: np.ndarray,
                         size: tuple[int, int]) -> np.ndarray:
    """Mosaics built at each sample's own size, resized to `size`: float32 `[N, H, W]`.

    patches: the bank's `[R, w, w]`; rows: per sample, the bank rows `[r_i, c_i]` of a mosaic
    covering `build_sizes[i]` (h_i, w_i) (`draw_mosaic_params`). Each tile is taken minus its
    least-squares plane (its mean kept): a flat bank window still holds the scene's gentle slope,
    and slopes tiled make a staircase of seams that shrinking turns into edges, more high-pass
    energy than the noise itself where the noise is faint. Then `mosaic_field` (means matched) at
    native pitch, then `resample_like_ingest`.
    """
    height, width = _size(size)
    out = np.empty((len(rows), height, width), np.float32)
    for i, (r, build) in enumerate(zip(rows, build_sizes)):
        raw = patches[np.asarray(r).reshape(-1)].astype(np.float64)
        tiles = detrend(raw) + raw.mean(axis=(-2, -1), keepdims=True)
        native = mosaic_field(tiles.astype(np.float32)[None], (int(build[0]), int(build[1])))
        out[i] = resample_like_ingest(native[0], (height, width))
    return out


LEVEL_BOX = 3  # the image's local grey level: its 3x3 mean (edges replicated), at the image's scale


def local_level(image: np.ndarray) -> np.ndarray:
    """The local grey level float64 `[H, W]` of an image `[H, W]`: its `LEVEL_BOX` box mean (edges
    replicated), the scene's brightness with the image's own noise averaged down 3x."""
    return box_mean(image, LEVEL_BOX)


def model_fields(models: Sequence[NoiseModel], index: np.ndarray, seeds: np.ndarray, build_sizes: np.ndarray,
                 size: tuple[int, int], levels: np.ndarray | None = None) -> np.ndarray:
    """Noise-model fields (`noise_model.model_field`: the model's mean grey plus its noise) drawn at
    each sample's build size, resized to `size` as ingest resized the image: float32 `[N, H, W]`.

    levels: the images `[N, H, W]` (at `size`) whose local grey level sets the noise level
    (`noise_level="image"`); None: the model's flat level (the bytes of before). With levels, the
    2-D noise and the stripes are resized apart (the resize is linear: their sum is the flat
    field) and the 2-D noise is multiplied by `nlf_gain(local_level(image))` at the image's scale,
    after the resize. Why there and not at native pitch: the gain is a function of a local level
    that is smooth over the resize filter's support (a few native pixels), so scaling before or
    after the resize gives the same variance (a linear filter of `g e` with `g` constant over its
    support is `g` times the filter of `e`), and the only level we have is the image's, at its
    scale: each of its pixels already is the ingest filter's average of the native pixels under
    the same support that averages the noise; upsampling it to the native grid adds nothing
    sharper. A model without a function (format 1, 2) keeps its flat level.
    """
    height, width = _size(size)
    out = np.empty((len(index), height, width), np.float32)
    if levels is not None and np.shape(levels) != (len(index), height, width):
        raise ValueError(f"levels must be [{len(index)}, {height}, {width}], got {np.shape(levels)}")
    for i, (k, s, build) in enumerate(zip(index, seeds, build_sizes)):
        model, hw = models[int(k)], (int(build[0]), int(build[1]))
        gain = None if levels is None else nlf_gain(model, local_level(levels[i]))
        if gain is None:  # flat: the field of before, bit for bit
            out[i] = resample_like_ingest(model_field(model, hw, int(s)), (height, width))
            continue
        e, rows, cols = synthesize_parts(model, hw, int(s))
        noise = resample_like_ingest(e.astype(np.float32), (height, width)) * gain.astype(np.float32)
        stripes = resample_like_ingest((rows[:, None] + cols[None, :]).astype(np.float32), (height, width))
        out[i] = np.float32(model.mean_level) + noise + stripes
    return out


def _mix(mix, like: torch.Tensor) -> torch.Tensor:
    if _is_np(like):
        m = np.asarray(mix.cpu().numpy() if hasattr(mix, "cpu") else mix).astype(like.dtype).reshape(-1)
    else:
        import torch

        m = torch.as_tensor(mix, dtype=like.dtype, device=like.device).reshape(-1)
    count = m.size if _is_np(m) else m.numel()
    if count not in (1, like.shape[0]):
        raise ValueError(f"mix must be a scalar or one value per sample ({like.shape[0]}), got {count}")
    return m.reshape(-1, 1, 1)


def _is_float(x) -> bool:
    return x.dtype in (np.float16, np.float32, np.float64) if _is_np(x) else x.is_floating_point()


def _check_pair(images: torch.Tensor, field: torch.Tensor) -> None:
    if images.ndim != 3 or tuple(field.shape) != tuple(images.shape):
        raise ValueError(f"images and field must both be [B, H, W], got {tuple(images.shape)} and {tuple(field.shape)}")
    if _is_np(images) != _is_np(field):
        raise ValueError("images and field must both be numpy arrays or both torch tensors")
    if not (_is_float(images) and _is_float(field)):
        raise ValueError("images and field must be float tensors (0..255 scale)")


def blend(images: torch.Tensor, field: torch.Tensor, mix) -> torch.Tensor:
    """The paper's transfer: mix * field + (1 - mix) * images. All [B, H, W] (numpy or torch); mix scalar or [B]."""
    _check_pair(images, field)
    m = _mix(mix, images)
    return m * field + (1 - m) * images


def additive(images: torch.Tensor, field: torch.Tensor, mix) -> torch.Tensor:
    """images + mix * (field - per-sample mean of field): noise without contrast or brightness change.

    All [B, H, W]; mix scalar or [B]. The added term is exactly the noise term of `blend` at the
    same mix, so the per-sample mean of the output equals that of `images` (before rounding).
    """
    _check_pair(images, field)
    m = _mix(mix, images)
    return images + m * (field - pairwise_mean(field, (1, 2), keepdim=True))


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest (ties to even, as numpy) and clamp to 0..255, as uint8 (numpy or torch, as `x`)."""
    if _is_np(x):
        if not _is_float(x):
            return np.clip(x, 0, 255).astype(np.uint8)
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)
    import torch

    if not x.is_floating_point():
        return x.clamp(0, 255).to(torch.uint8)
    return torch.round(x).clamp_(0, 255).to(torch.uint8)


# -- the step as the stage, `sirst5k modes` and the tests run it ----------------------------------

# Images per device batch. On a CPU, small batches keep each float tensor (2 MiB at 8 x 256 x
# 256) in cache and reuse freed memory instead of faulting in fresh pages: 8 is ~20% faster
# per image than 64 (benchmarks/stage_throughput.py). A GPU wants big batches.
BATCH = {"cpu": 8, "cuda": 64}
# Those counts are of 256 x 256 images: a batch of larger images (native-size shards) holds as
# many pixels, at least one image, so a worker's float buffers do not grow with the image size.
# The math is per image, so the batch size never changes a bit of the output.
BATCH_PIXELS = 256 * 256


def batch_size(kind: str, size: tuple[int, int]) -> int:
    """Images per batch on a `kind` device ("cpu", "cuda") for images of `size` (H, W)."""
    n = BATCH.get(kind, BATCH["cpu"])
    pixels = int(size[0]) * int(size[1])
    return n if pixels <= BATCH_PIXELS else max(1, n * BATCH_PIXELS // pixels)
STEP = "transfer"


FIELDS = choices(NoiseField)  # resize, mosaic, model: written once, in sirst5k.params
LEVELS = choices(NoiseLevel)  # flat, image


@dataclass(frozen=True)
class TransferDraws:
    """The random part of a transfer, drawn apart from the math so a sample can be replayed.

    field: "resize", "mosaic" or "model". rows: bank rows, `[N]` (one patch per sample, resized),
    `[N, rows, cols]` (the tiles of each sample's mosaic, all built at the image size) or a tuple
    of N `[rows_i, cols_i]` (mosaics built at each sample's own size); for "model", the model
    index `[N]`. build_size: `[N, 2]` (h, w) each field is built at before it is resized to the
    image (`noise_scale="source"`), None = at the image size. seeds: `[N]` synthesis seeds of
    the model field. `noise_id` `[N]` is each sample's first bank row (the one recorded in the
    shard's meta), -1 for the model field (no bank row).
    """

    field: str
    rows: np.ndarray | tuple
    build_size: np.ndarray | None = None
    seeds: np.ndarray | None = None

    @property
    def noise_id(self) -> np.ndarray:
        if self.field == "model":
            return np.full(len(self.rows), -1, np.int64)
        if isinstance(self.rows, tuple):
            return np.array([np.asarray(r).flat[0] for r in self.rows], np.int64)
        return self.rows.reshape(len(self.rows), -1)[:, 0].astype(np.int64)


def build_sizes(size: tuple[int, int], source_sizes: np.ndarray | None, n: int) -> np.ndarray | None:
    """`[n, 2]` sizes the fields are built at: each sample's `source_sizes` row (orig_h, orig_w),
    the image `size` where that is unknown (-1 or 0); None without source sizes (bank scale)."""
    if source_sizes is None:
        return None
    src = np.asarray(source_sizes, np.int64).reshape(-1, 2)
    if len(src) != n:
        raise ValueError(f"source_sizes must be [{n}, 2], got {src.shape}")
    ok = (src > 0).all(axis=1)
    return np.where(ok[:, None], src, np.asarray(_size(size), np.int64)[None, :])


def draw_transfer_params(seed: int, sample_ids: Sequence[str], n_bank: int, size: tuple[int, int], window: int,
                         field: str, *, source_sizes: np.ndarray | None = None, n_models: int = 0) -> TransferDraws:
    """Each sample's bank rows (or model and seed), from a generator keyed by (seed, "transfer",
    sample_id) alone.

    So every mix value of a sample uses the same noise, and a draw depends neither on worker
    count nor on the order of the samples. source_sizes `[N, 2]` (orig_h, orig_w): build the
    mosaic and model fields at each sample's original size (`noise_scale="source"`); None: at
    `size` (`"bank"`). A mosaic built at the image size draws exactly what the bank scale draws.
    """
    if field not in FIELDS:
        raise ValueError(f"field must be resize, mosaic or model, got {field!r}")
    if field == "model":
        if n_models < 1:
            raise ValueError("the noise bank holds no noise model")
    elif n_bank < 1:
        raise ValueError("the noise bank is empty")
    builds = build_sizes(size, source_sizes, len(sample_ids)) if field != "resize" else None
    rows, seeds = [], []
    for i, sid in enumerate(sample_ids):
        g = generator(seed, STEP, str(sid))
        if field == "resize":
            rows.append(np.array([g.integers(n_bank)]))
        elif field == "mosaic":
            rows.append(draw_mosaic_params(g, n_bank, size if builds is None else tuple(builds[i]), window))
        else:
            index, s = draw_model_params(g, n_models)
            rows.append(np.array([index]))
            seeds.append(s)
    if field == "model":
        return TransferDraws(field, np.array([r[0] for r in rows], np.int64).reshape(-1), builds,
                             np.array(seeds, np.int64).reshape(-1))
    if field == "mosaic" and builds is not None:
        return TransferDraws(field, tuple(np.asarray(r, np.int64) for r in rows), builds)
    if not rows:
        shape = (0,) if field == "resize" else (0, *mosaic_grid(size, window))
        return TransferDraws(field, np.zeros(shape, np.int64))
    stacked = np.stack(rows).astype(np.int64)
    return TransferDraws(field, stacked[:, 0] if field == "resize" else stacked)


def transfer_images(images: np.ndarray, patches: np.ndarray, draws: TransferDraws, mixes: Sequence[float],
                    mode: str, device: "torch.device | str" = "cpu",
                    models: Sequence[NoiseModel] | None = None, noise_level: str = "flat") -> np.ndarray:
    """The transferred images uint8 [N * M, H, W], sample-major (sample i's M mixes sit together).

    images: uint8 [N, H, W]; patches: the bank's uint8 [R, w, w]; draws: from
    `draw_transfer_params` for these N samples; mode: "blend" or "additive"; models: the bank's
    noise models (field "model"); noise_level: "flat" or "image" (the model field's 2-D noise at
    each image's local grey level, `model_fields`). The math runs on `device` in batches of `batch_size` images
    (BATCH[device type] of 256 x 256, as many pixels of larger ones), with the same bits on a CPU
    and a GPU (fields built at the samples' own size, and
    model fields, are built on the CPU and moved).
    """
    if mode not in ("blend", "additive"):
        raise ValueError(f"mode must be blend or additive, got {mode!r}")
    if draws.field == "model" and not models:
        raise ValueError("the model field needs the bank's noise models")
    if noise_level not in LEVELS:
        raise ValueError(f"noise_level must be flat or image, got {noise_level!r}")
    if noise_level != "flat" and draws.field != "model":
        raise ValueError(f"noise_level {noise_level!r} applies to the model field only, not {draws.field!r}")
    images = np.asarray(images)
    if images.ndim != 3 or len(draws.rows) != len(images):
        raise ValueError(f"images must be [N, H, W] with one draw each, got {images.shape} and {len(draws.rows)} draws")
    if device_type(device) == "cpu":  # numpy: the same bits as torch on the CPU, without importing torch
        return _transfer_np(images, patches, draws, mixes, mode, models, noise_level)
    return _transfer_torch(images, patches, draws, mixes, mode, models, noise_level, device)


def _transfer_torch(images, patches, draws, mixes, mode, models, noise_level, device) -> np.ndarray:
    """`transfer_images` in torch on `device` (what a CUDA device runs; tests run it on torch's
    CPU against `_transfer_np`, bit for bit)."""
    import torch

    kind = device_type(device)
    dev = torch.device(device)

    def put(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(dev, torch.float32)

    def full(n_rows: int, m: float) -> torch.Tensor:
        return torch.full((n_rows,), m, device=dev)

    def back(x: torch.Tensor) -> np.ndarray:
        return x.cpu().numpy()

    n, h, w = images.shape
    fuse = blend if mode == "blend" else additive
    out = np.empty((n * len(mixes), h, w), np.uint8)
    batch = batch_size(kind, (h, w))
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        img = put(images[start:stop])
        field = _batch_field(images, patches, draws, models, start, stop, put, None, noise_level)
        for j, m in enumerate(mixes):
            fused = fuse(img, field, full(stop - start, float(m)))
            out[np.arange(start, stop) * len(mixes) + j] = back(to_uint8(fused))
    return out


def _batch_field(images, patches, draws, models, start, stop, put, ws, noise_level="flat"):
    """The fields of samples start..stop: on the device of `put` (torch), or numpy (`ws` given)."""
    _, h, w = images.shape
    rows = draws.rows[start:stop]
    builds = None if draws.build_size is None else draws.build_size[start:stop]
    if draws.field == "resize":
        if ws is not None:
            return _resize_np(patches[rows].astype(np.float32), (h, w))
        return resize_field(put(patches[rows]), (h, w))
    if draws.field == "model":
        if builds is None:
            builds = np.tile(np.array([h, w], np.int64), (stop - start, 1))
        levels = images[start:stop] if noise_level == "image" else None
        return put(model_fields(models, rows, draws.seeds[start:stop], builds, (h, w), levels))
    if builds is not None:  # mosaics at each sample's own size, resized as ingest resized the image
        return put(source_mosaic_fields(patches, rows, builds, (h, w)))
    # [n, rows, cols] -> the [n, rows * cols] tiles of each mosaic, row-major
    return mosaic_field(put(patches[rows.reshape(len(rows), -1)]), (h, w))


def _transfer_np(images, patches, draws, mixes, mode, models, noise_level="flat") -> np.ndarray:
    """`transfer_images` on the CPU, in numpy (buffers reused from batch to batch)."""
    n, h, w = images.shape
    out = np.empty((n * len(mixes), h, w), np.uint8)
    ws = _Workspace()
    batch = batch_size("cpu", (h, w))
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        img = ws.get("images", (stop - start, h, w), np.float32)
        np.copyto(img, images[start:stop])
        field = _batch_field(images, patches, draws, models, start, stop, lambda x: x.astype(np.float32), ws,
                             noise_level)
        for j, m in enumerate(mixes):
            fused = _fuse_np(img, field, float(m), mode, ws)
            if len(mixes) == 1:
                out[start:stop] = fused
            else:
                out[np.arange(start, stop) * len(mixes) + j] = fused
    return out

