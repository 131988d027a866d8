"""Seeded training and scoring of the yardstick U-Net: what the `evaluate` stage runs twice.

The point is a fair comparison of two training sets, so everything but the data is fixed: the
same network, initial weights (seeded), optimiser, learning-rate schedule and budget in
optimiser steps. The data order and the crop positions come from `pipeline.rng` keyed by the
seed, so a run on the CPU repeats exactly; no augmentation is added, because flips and
rotations are what the SIRST-5K negatives contribute and adding them to the baseline would blur
the comparison.

Samples come from a `Samples` source (`take(indices)` -> uint8 images and masks [B, H, W]), so
a training set need not fit in memory and this module reads no files: `ArraySamples` serves
arrays, the stage serves shards.

Sizes: images are resampled so their longer side is `size` (area averaging when shrinking;
masks become soft targets, the fraction of each pixel that is target), then training takes
`crop` x `crop` windows at random. Scoring predicts on the whole resampled image, resamples the
probability back to the stored size and scores against the stored masks, so a smaller `size`
buys speed without changing what is measured.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import numpy as np
import torch
from torch.nn import functional as F

from sirst5k.method import rng
from sirst5k.method.metrics import IRSTDMetrics
from sirst5k.evaluate.unet import UNet

STAGE = "evaluate"
# Budget in optimiser steps. At size 256 with 128-px crops and batch 8, a step of the default
# U-Net takes ~0.17 s on two idle CPU cores and scoring a 664-image test split ~20-30 s, so
# both runs take ~12-13 minutes; on synthetic data the loss is still falling at 600 steps.
DEFAULT_STEPS = 2000


class Samples(Protocol):
    """A source of training or test samples, all of one stored size."""

    shape: tuple[int, int]

    def __len__(self) -> int: ...

    def take(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images and masks, uint8 [B, H, W] each, in the order of `indices`."""
        ...


class ArraySamples:
    """Samples held in memory: images, masks uint8 [N, H, W]."""

    def __init__(self, images: np.ndarray, masks: np.ndarray):
        if images.ndim != 3 or images.shape != masks.shape:
            raise ValueError(f"images {images.shape} and masks {masks.shape} must both be [N, H, W]")
        self.images, self.masks = images, masks
        self.shape = (int(images.shape[1]), int(images.shape[2]))

    def __len__(self) -> int:
        return len(self.images)

    def take(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.images[indices], self.masks[indices]


@dataclass(frozen=True)
class TrainConfig:
    steps: int = DEFAULT_STEPS
    batch_size: int = 8
    size: int = 256  # longer image side after resampling
    crop: int = 128  # training window side; >= size trains on whole images
    lr: float = 2e-3
    warmup: int = 50  # steps of linear warm-up before the cosine decay
    base: int = 8
    depth: int = 4
    seed: int = 0
    threshold: float = 0.5
    eval_batch: int = 16

    def __post_init__(self):
        for name in ("steps", "batch_size", "size", "crop", "base", "depth", "eval_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class RunResult:
    metrics: dict[str, float]
    losses: list[float]
    n_train: int
    n_test: int
    train_seconds: float
    eval_seconds: float


def resized_shape(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """(H, W) scaled so that the longer side is `size`, aspect ratio kept."""
    h, w = shape
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def draw_schedule(seed: int, n: int, steps: int, batch_size: int) -> np.ndarray:
    """Sample indices [steps, batch_size]: successive seeded permutations of range(n) (epochs)."""
    if n < 1:
        raise ValueError("no training samples")
    gen = rng.generator(seed, STAGE, "order")
    need = steps * batch_size
    epochs = [gen.permutation(n) for _ in range(-(-need // n))]
    return np.concatenate(epochs)[:need].reshape(steps, batch_size)


def draw_crops(seed: int, shape: tuple[int, int], crop: int, steps: int, batch_size: int) -> np.ndarray:
    """Crop corners (y0, x0) [steps, batch_size, 2] for `crop`-sided windows in an image of `shape`."""
    gen = rng.generator(seed, STAGE, "crop")
    h, w = shape
    ys = gen.integers(0, max(h - crop, 0) + 1, size=(steps, batch_size))
    xs = gen.integers(0, max(w - crop, 0) + 1, size=(steps, batch_size))
    return np.stack([ys, xs], axis=-1)


def to_tensors(images: np.ndarray, masks: np.ndarray, size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [B, H, W] pairs -> float images [B, 1, h, w] in [0, 1] and soft masks [B, 1, h, w].

    (h, w) = resized_shape((H, W), size). Shrinking averages over each output pixel's area, so a
    1-pixel target becomes a partial target rather than vanishing or growing.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device, torch.float32).unsqueeze(1) / 255.0
    y = torch.from_numpy(np.ascontiguousarray(masks)).to(device).unsqueeze(1).ne(0).float()
    hw = resized_shape(tuple(images.shape[1:]), size)
    if hw != tuple(images.shape[1:]):
        mode = "area" if hw[0] <= images.shape[1] else "bilinear"
        x = F.interpolate(x, size=hw, mode=mode)
        y = F.interpolate(y, size=hw, mode=mode)
    return x, y


def crop_batch(x: torch.Tensor, corners: np.ndarray, crop: int) -> torch.Tensor:
    """Windows [B, C, c, c] of x [B, C, H, W] at corners [B, 2] (c = min(crop, H, W))."""
    ch, cw = min(crop, x.shape[-2]), min(crop, x.shape[-1])
    return torch.stack([x[i, :, y0 : y0 + ch, x0 : x0 + cw] for i, (y0, x0) in enumerate(corners.tolist())])


def soft_iou_bce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft IoU (over the whole batch, as DNANet's SoftIoULoss) + mean BCE; logits, target [B, 1, H, W]."""
    p = torch.sigmoid(logits)
    inter = (p * target).sum()
    union = p.sum() + target.sum() - inter
    soft_iou = (inter + smooth) / (union + smooth)
    return (1.0 - soft_iou) + F.binary_cross_entropy_with_logits(logits, target)


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 1 % of the peak at the last step."""
    warmup = min(warmup, max(steps // 10, 1))
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(steps - warmup, 1)
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t))


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextlib.contextmanager
def compute_settings(device: torch.device, threads: int | None) -> Iterator[None]:
    """CPU thread count and cuDNN determinism for one run, restored afterwards."""
    old_threads = torch.get_num_threads()
    old_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        if device.type == "cpu":
            torch.set_num_threads(threads or default_threads())
        else:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old_cudnn


def build_model(config: TrainConfig, device: torch.device) -> UNet:
    # a private RNG stream: the initial weights depend on the seed alone, and the caller's
    # global torch RNG is left as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = UNet(in_channels=1, base=config.base, depth=config.depth)
    return model.to(device)


def train_model(
    samples: Samples,
    config: TrainConfig,
    device: torch.device | str = "cpu",
    progress: Callable[[], None] | None = None,
) -> tuple[UNet, list[float]]:
    """Train a fresh U-Net on `samples` for `config.steps` optimiser steps; returns it and the loss per step."""
    device = torch.device(device)
    model = build_model(config, device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, config.steps, config.warmup))
    order = draw_schedule(config.seed, len(samples), config.steps, config.batch_size)
    corners = draw_crops(config.seed, resized_shape(samples.shape, config.size), config.crop, config.steps,
                         config.batch_size)
    losses: list[float] = []
    model.train()
    for step in range(config.steps):
        images, masks = samples.take(order[step])
        x, y = to_tensors(images, masks, config.size, device)
        x, y = crop_batch(x, corners[step], config.crop), crop_batch(y, corners[step], config.crop)
        loss = soft_iou_bce_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {step}")
        losses.append(value)
        if progress is not None:
            progress()
    return model, losses


@torch.no_grad()
def predict(model: UNet, images: np.ndarray, size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Target probability [B, H, W] at the images' stored size for uint8 images [B, H, W]."""
    device = torch.device(device)
    model.eval()
    x, _ = to_tensors(images, np.zeros_like(images), size, device)
    logits = model(x)
    if logits.shape[-2:] != images.shape[1:]:
        logits = F.interpolate(logits, size=tuple(images.shape[1:]), mode="bilinear", align_corners=False)
    return torch.sigmoid(logits)[:, 0]


def score(model: UNet, samples: Samples, config: TrainConfig, device: torch.device | str = "cpu") -> dict[str, float]:
    """mIoU, nIoU, Pd, Fa of the model on every sample of `samples`, in index order."""
    acc = IRSTDMetrics(threshold=config.threshold)
    for start in range(0, len(samples), config.eval_batch):
        idx = np.arange(start, min(start + config.eval_batch, len(samples)))
        images, masks = samples.take(idx)
        acc.update(predict(model, images, config.size, device), masks)
    return acc.compute()


def train_and_score(
    train: Samples,
    test: Samples,
    config: TrainConfig,
    device: torch.device | str = "cpu",
    threads: int | None = None,
    progress: Callable[[], None] | None = None,
) -> RunResult:
    """One run: seeded training on `train`, then the IRSTD metrics on `test`."""
    device = torch.device(device)
    with compute_settings(device, threads):
        t0 = time.perf_counter()
        model, losses = train_model(train, config, device, progress)
        t1 = time.perf_counter()
        metrics = score(model, test, config, device)
        t2 = time.perf_counter()
    return RunResult(metrics, losses, len(train), len(test), t1 - t0, t2 - t1)
