"""Seeded training and scoring of one detector: what each (arm, seed) run of `evaluate` does.

The point is a fair comparison of training sets, so everything but the data is fixed: the same
network, initial weights (seeded), optimiser, learning-rate schedule, augmentation and budget in
optimiser steps. Every random draw (data order, which pool a batch slot comes from, crop
corners, flips and rotations, dropout) comes from `sirst5k.method.rng` or a torch generator
keyed by the seed alone, never by the arm's name, so a run on the CPU repeats exactly and two
arms of one seed start from the same weights.

Augmentation, as the IRSTD toolboxes train their baselines (BasicIRSTD, DNANet): a random
`crop` x `crop` window, a random left-right flip and a random k x 90 degree rotation of every
training sample (the flip and the rotations together give all eight symmetries of the square).
The generated samples get the same augmentation, so what an arm adds is data, not symmetry.

Samples come from a `Samples` source (`take(indices)` -> uint8 images and masks [B, H, W]);
this module reads no files. Sizes: images are resampled so their longer side is `size` (area
averaging when shrinking; masks become soft targets, the fraction of each pixel that is target);
scoring predicts on the whole resampled image, resamples the probability back to the stored size
and scores against the stored masks.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sirst5k.method import rng
from sirst5k.method.metrics import FA_RULES, IRSTDMetrics
from sirst5k.evaluate.acm import ACMUNet
from sirst5k.evaluate.unet import UNet

STAGE = "evaluate"
MODELS = ("unet", "acm")
# Budget in optimiser steps when neither --steps nor --epochs is given.
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
    model: str = "unet"
    base: int = 8  # U-Net width
    depth: int = 4  # U-Net levels
    blocks: int = 3  # ACM: basic blocks per stage (3 = the paper's ResNet-20)
    augment: bool = True  # random flip and rot90 (crops whenever crop < size)
    seed: int = 0
    threshold: float = 0.5
    eval_batch: int = 16
    fa_rule: str = "basicirstd"  # which unmatched components are false alarms: basicirstd | dnanet (metrics.py)

    def __post_init__(self):
        for name in ("steps", "batch_size", "size", "crop", "base", "depth", "blocks", "eval_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.fa_rule not in FA_RULES:
            raise ValueError(f"fa_rule must be one of {', '.join(FA_RULES)}, got {self.fa_rule!r}")


@dataclass
class RunResult:
    metrics: dict[str, float]
    losses: list[float]
    n_train: int
    n_test: int
    train_seconds: float
    eval_seconds: float
    history: list[dict] = field(default_factory=list)


def resized_shape(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """(H, W) scaled so that the longer side is `size`, aspect ratio kept."""
    h, w = shape
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _epochs(gen: np.random.Generator, n: int, need: int) -> np.ndarray:
    return np.concatenate([gen.permutation(n) for _ in range(-(-need // n))])[:need]


def draw_schedule(seed: int, n: int, steps: int, batch_size: int) -> np.ndarray:
    """Sample indices [steps, batch_size]: successive seeded permutations of range(n) (epochs)."""
    if n < 1:
        raise ValueError("no training samples")
    gen = rng.generator(seed, STAGE, "order")
    return _epochs(gen, n, steps * batch_size).reshape(steps, batch_size)


def draw_mixed_schedule(seed: int, n_first: int, n_rest: int, steps: int, batch_size: int,
                        share: float | None) -> np.ndarray:
    """Indices [steps, batch_size] into the concatenation [first pool, rest pool].

    share None: every sample equally often (one pool of n_first + n_rest). Otherwise each batch
    slot comes from the first pool (the originals) with probability `share`, else from the rest,
    and each pool is walked in its own successive seeded permutations.
    """
    if share is None or n_rest == 0:
        return draw_schedule(seed, n_first + n_rest, steps, batch_size)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    if n_first < 1 and share > 0:
        raise ValueError("no samples in the first pool")
    need = steps * batch_size
    pick_first = rng.generator(seed, STAGE, "pool").random(need) < share
    out = np.empty(need, np.int64)
    k = int(pick_first.sum())
    if k:
        out[pick_first] = _epochs(rng.generator(seed, STAGE, "order"), n_first, k)
    if need - k:
        out[~pick_first] = n_first + _epochs(rng.generator(seed, STAGE, "order-rest"), n_rest, need - k)
    return out.reshape(steps, batch_size)


def draw_crops(seed: int, shape: tuple[int, int], crop: int, steps: int, batch_size: int) -> np.ndarray:
    """Crop corners (y0, x0) [steps, batch_size, 2] for `crop`-sided windows in an image of `shape`."""
    gen = rng.generator(seed, STAGE, "crop")
    h, w = shape
    ys = gen.integers(0, max(h - crop, 0) + 1, size=(steps, batch_size))
    xs = gen.integers(0, max(w - crop, 0) + 1, size=(steps, batch_size))
    return np.stack([ys, xs], axis=-1)


def draw_symmetries(seed: int, steps: int, batch_size: int, square: bool) -> np.ndarray:
    """(flip 0/1, k 0..3) [steps, batch_size, 2]: a left-right flip, then k x 90 degrees.

    For windows that are not square only k in {0, 2} keeps the shape."""
    gen = rng.generator(seed, STAGE, "symmetry")
    flips = gen.integers(0, 2, size=(steps, batch_size))
    ks = gen.integers(0, 4, size=(steps, batch_size))
    if not square:
        ks = (ks % 2) * 2
    return np.stack([flips, ks], axis=-1)


def apply_symmetries(x: torch.Tensor, sym: np.ndarray) -> torch.Tensor:
    """x [B, C, h, w], sym [B, 2] (flip, k) -> each sample flipped left-right (if flip) then rotated."""
    out = []
    for xi, (flip, k) in zip(x, sym.tolist()):
        if flip:
            xi = torch.flip(xi, dims=(-1,))
        if k:
            xi = torch.rot90(xi, k, dims=(-2, -1))
        out.append(xi)
    return torch.stack(out)


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


def soft_iou_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft IoU over the whole batch (the SoftIoU loss of ACM and DNANet); logits, target [B, 1, H, W]."""
    p = torch.sigmoid(logits)
    inter = (p * target).sum()
    union = p.sum() + target.sum() - inter
    return 1.0 - (inter + smooth) / (union + smooth)


def soft_iou_bce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft IoU (over the whole batch, as DNANet's SoftIoULoss) + mean BCE; logits, target [B, 1, H, W]."""
    return soft_iou_loss(logits, target, smooth) + F.binary_cross_entropy_with_logits(logits, target)


# each network with the loss it is trained with: ACM's paper uses SoftIoU; the yardstick U-Net
# adds BCE, which keeps its first steps from collapsing on 0.1 %-foreground images
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "unet": soft_iou_bce_loss, "acm": soft_iou_loss}


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


def new_network(config: TrainConfig) -> nn.Module:
    if config.model == "acm":
        return ACMUNet(in_channels=1, blocks=config.blocks)
    return UNet(in_channels=1, base=config.base, depth=config.depth)


def build_model(config: TrainConfig, device: torch.device) -> nn.Module:
    # a private RNG stream: the initial weights depend on the seed alone, and the caller's
    # global torch RNG is left as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = new_network(config)
    return model.to(device)


Checkpoint = Callable[[int, nn.Module], None]


def train_model(
    samples: Samples,
    config: TrainConfig,
    device: torch.device | str = "cpu",
    progress: Callable[[], None] | None = None,
    order: np.ndarray | None = None,
    checkpoint: Checkpoint | None = None,
    every: int = 0,
    losses: list[float] | None = None,
) -> tuple[nn.Module, list[float]]:
    """Train a fresh network on `samples` for `config.steps` optimiser steps; returns it and the loss per step.

    order: sample indices [steps, batch_size] (default: seeded epochs over all samples).
    checkpoint(step, model): called after every `every` steps (0: never) and after the last;
    the model is in eval mode during the call and back in train mode afterwards.
    losses: a list to append each step's loss to (the checkpoint may read it); a new one by default.
    """
    device = torch.device(device)
    model = build_model(config, device)
    loss_fn = LOSSES[config.model]
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, config.steps, config.warmup))
    if order is None:
        order = draw_schedule(config.seed, len(samples), config.steps, config.batch_size)
    shape = resized_shape(samples.shape, config.size)
    corners = draw_crops(config.seed, shape, config.crop, config.steps, config.batch_size)
    window = (min(config.crop, shape[0]), min(config.crop, shape[1]))
    sym = draw_symmetries(config.seed, config.steps, config.batch_size, window[0] == window[1])
    losses = [] if losses is None else losses
    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(rng.seed_words(config.seed, STAGE, "dropout")[0])
        model.train()
        for step in range(config.steps):
            images, masks = samples.take(order[step])
            x, y = to_tensors(images, masks, config.size, device)
            x, y = crop_batch(x, corners[step], config.crop), crop_batch(y, corners[step], config.crop)
            if config.augment:
                x, y = apply_symmetries(x, sym[step]), apply_symmetries(y, sym[step])
            loss = loss_fn(model(x), y)
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
            done = step + 1
            if checkpoint is not None and (done == config.steps or (every and done % every == 0)):
                model.eval()
                checkpoint(done, model)
                model.train()
    model.eval()
    return model, losses


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Target probability [B, H, W] at the images' stored size for uint8 images [B, H, W]."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    x, _ = to_tensors(images, np.zeros_like(images), size, device)
    logits = model(x)
    if logits.shape[-2:] != images.shape[1:]:
        logits = F.interpolate(logits, size=tuple(images.shape[1:]), mode="bilinear", align_corners=False)
    model.train(was_training)
    return torch.sigmoid(logits)[:, 0]


def predict_all(model: nn.Module, samples: Samples, config: TrainConfig,
                device: torch.device | str = "cpu") -> np.ndarray:
    """Probabilities float32 [N, H, W] of every sample, in index order."""
    out = []
    for start in range(0, len(samples), config.eval_batch):
        idx = np.arange(start, min(start + config.eval_batch, len(samples)))
        images, _ = samples.take(idx)
        out.append(predict(model, images, config.size, device).cpu().numpy().astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, *samples.shape), np.float32)


def score(model: nn.Module, samples: Samples, config: TrainConfig, device: torch.device | str = "cpu") -> dict[str, float]:
    """mIoU, nIoU, Pd, Fa of the model on every sample of `samples`, in index order."""
    acc = IRSTDMetrics(threshold=config.threshold, fa_rule=config.fa_rule)
    for start in range(0, len(samples), config.eval_batch):
        idx = np.arange(start, min(start + config.eval_batch, len(samples)))
        images, masks = samples.take(idx)
        acc.update(predict(model, images, config.size, device), masks)
    return acc.compute()


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in copy.copy(model.state_dict()).items()}


def train_and_score(
    train: Samples,
    test: Samples,
    config: TrainConfig,
    device: torch.device | str = "cpu",
    threads: int | None = None,
    progress: Callable[[], None] | None = None,
) -> RunResult:
    """One plain run: seeded training on `train`, then the IRSTD metrics on `test`."""
    device = torch.device(device)
    with compute_settings(device, threads):
        t0 = time.perf_counter()
        model, losses = train_model(train, config, device, progress)
        t1 = time.perf_counter()
        metrics = score(model, test, config, device)
        t2 = time.perf_counter()
    return RunResult(metrics, losses, len(train), len(test), t1 - t0, t2 - t1)
