"""Training crops and mixed-size batches for the loader, BasicIRSTD's way, seeded.

    from torch.utils.data import DataLoader
    from sirst5k.batching import RandomCrops, pad_collate
    from sirst5k.loader import ShardDataset

    train = RandomCrops(ShardDataset("output/sirst5k", split="train"), size=256, pos_prob=0.5, seed=0)
    for epoch in range(epochs):
        train.set_epoch(epoch)                    # new crops each epoch, the same for a rerun
        for image, mask in DataLoader(train, batch_size=16, shuffle=True, num_workers=4): ...

    test = DataLoader(ShardDataset("output/sirst5k", split="test"), batch_size=8,
                      collate_fn=pad_collate)     # mixed sizes: zero-padded to a multiple of 32
    for image, mask, valid in test: ...           # valid [B, 1, H, W]: 1 inside each image

`RandomCrops` wraps any dataset whose items start with (image [C, H, W], mask [1, H, W]) tensors
and crops both alike (`method.crop`: an image smaller than the crop is zero-padded at the bottom
and right; with probability `pos_prob` the crop holds a target pixel). Each item's crop is drawn
from `rng.generator(seed, "crop", f"{epoch}/{index}")`: it depends on the seed, the epoch and the
sample alone, so it is the same in any DataLoader worker and any shuffle order, and a run can be
replayed. Memory stays that of one item: nothing is cached.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from sirst5k.method.crop import CropBox, batch_shape, draw_crop
from sirst5k.method.rng import generator


class RandomCrops(Dataset):
    """Items of `dataset` cropped to `size` x `size` (image and mask alike); extra item fields
    (e.g. meta) pass through, with the crop box added to a meta dict as `crop` (y0, x0, target)."""

    def __init__(self, dataset: Dataset, size: int, pos_prob: float = 0.5, seed: int = 0):
        if int(size) < 1:
            raise ValueError(f"crop size must be >= 1, got {size}")
        if not 0.0 <= float(pos_prob) <= 1.0:
            raise ValueError(f"pos_prob must be in [0, 1], got {pos_prob}")
        self.dataset = dataset
        self.size = int(size)
        self.pos_prob = float(pos_prob)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's crops (call before each epoch's DataLoader pass)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def box(self, index: int, mask: torch.Tensor) -> CropBox:
        """The crop of item `index` this epoch, for its mask [1, H, W]."""
        return item_crop(mask, self.size, self.pos_prob, self.seed, self.epoch, index)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        image, mask, rest = item[0], item[1], item[2:]
        box = self.box(index, mask)
        image, mask = crop_tensor(image, box), crop_tensor(mask, box)
        rest = tuple({**r, "crop": (box.y0, box.x0, box.target)} if isinstance(r, dict) else r for r in rest)
        return (image, mask, *rest)


def item_crop(mask, size: int, pos_prob: float, seed: int, epoch: int, index: int) -> CropBox:
    """The crop of item `index` in `epoch`, for its mask [1, H, W] (tensor or array): drawn from
    `generator(seed, "crop", "<epoch>/<index>")` alone (`RandomCrops` and `ShardDataset(crop=)`)."""
    rng = generator(seed, "crop", f"{int(epoch)}/{int(index)}")
    return draw_crop(mask[0].numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)[0], size, pos_prob, rng)


def crop_tensor(x: torch.Tensor, box: CropBox) -> torch.Tensor:
    """`method.crop.apply_crop` for a tensor [..., H, W] (zero padding, then the slice; a copy)."""
    h, w = x.shape[-2:]
    if box.pad_h != max(box.size - h, 0) or box.pad_w != max(box.size - w, 0):
        raise ValueError(f"crop box drawn for another image size (tensor is {h}x{w}, box {box})")
    if box.pad_h or box.pad_w:
        x = torch.nn.functional.pad(x, (0, box.pad_w, 0, box.pad_h))
    return x[..., box.y0:box.y0 + box.size, box.x0:box.x0 + box.size].clone()


def pad_collate(batch: Sequence[tuple], times: int = 32) -> tuple[Any, ...]:
    """Batch items of mixed sizes: each (image [C, H, W], mask [1, H, W], ...) zero-padded at the
    bottom and right to the batch's largest side rounded up to a multiple of `times`.

    Returns (images [B, C, H, W], masks [B, 1, H, W], valid [B, 1, H, W], *rest): `valid` is 1
    inside each image and 0 in its padding, so a metric or loss can skip the padding (BasicIRSTD
    crops predictions back to the image); further item fields come back as lists.
    """
    if not batch:
        raise ValueError("empty batch")
    sizes = [tuple(item[0].shape[-2:]) for item in batch]
    h, w = batch_shape(sizes, times)
    first_image, first_mask = batch[0][0], batch[0][1]
    images = first_image.new_zeros((len(batch), first_image.shape[0], h, w))
    masks = first_mask.new_zeros((len(batch), first_mask.shape[0], h, w))
    valid = torch.zeros((len(batch), 1, h, w), dtype=first_mask.dtype)
    for b, item in enumerate(batch):
        ih, iw = sizes[b]
        images[b, :, :ih, :iw] = item[0]
        masks[b, :, :ih, :iw] = item[1]
        valid[b, :, :ih, :iw] = 1
    rest = tuple(list(field) for field in zip(*(item[2:] for item in batch)))
    return (images, masks, valid, *rest)
