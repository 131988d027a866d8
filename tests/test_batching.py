"""Training crops and mixed-size batches (`sirst5k.batching`) on the real SIRST v1 images at
their own sizes (135x96 to 456x388), read straight from the folder."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from sirst5k.batching import RandomCrops, crop_tensor, pad_collate
from sirst5k.formats.imageio import read_grey
from sirst5k.method.crop import CropBox


class NativeSirst(Dataset):
    """SIRST v1 test images at native size: image uint8 [1, H, W], mask uint8 [1, H, W] in {0, 1}."""

    def __init__(self, root: Path, n: int = 40):
        names = (root / "idx_427" / "test.txt").read_text().split()[:n]
        self.items = []
        for name in names:
            image = read_grey(root / "images" / f"{name}.png")
            mask = read_grey(root / "masks" / f"{name}_pixels0.png")
            if mask.shape != image.shape:
                continue
            self.items.append((torch.from_numpy(image[None].copy()), torch.from_numpy((mask[None] > 127).astype(np.uint8))))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.fixture(scope="module")
def native(request):
    from conftest import require_data

    return NativeSirst(require_data("sirst"))


def test_real_images_come_in_many_sizes(native):
    sizes = {tuple(img.shape[-2:]) for img, _ in native.items}
    assert len(sizes) > 5


def test_crops_are_fixed_size_and_hold_targets_at_the_drawn_rate(native):
    crops = RandomCrops(native, size=256, pos_prob=1.0, seed=3)
    for i in range(len(crops)):
        image, mask = crops[i]
        assert image.shape == (1, 256, 256) and mask.shape == (1, 256, 256)
        assert mask.sum() > 0, i  # every SIRST image has a target, and pos_prob=1 keeps one
        # the crop is the image's own pixels (plus zero padding), not resampled
        box = crops.box(i, native[i][1])
        h, w = native[i][0].shape[-2:]
        top = image[0, : max(0, min(256, h - box.y0)), : max(0, min(256, w - box.x0))]
        assert torch.equal(top, native[i][0][0, box.y0 : box.y0 + top.shape[0], box.x0 : box.x0 + top.shape[1]])


def test_crops_replay_per_seed_and_epoch_in_any_worker_order(native):
    a = RandomCrops(native, size=64, pos_prob=0.5, seed=7)
    b = RandomCrops(native, size=64, pos_prob=0.5, seed=7)
    order = list(range(len(a)))[::-1]
    first = {i: a[i][0] for i in range(len(a))}
    assert all(torch.equal(first[i], b[i][0]) for i in order)
    a.set_epoch(1)
    assert not all(torch.equal(first[i], a[i][0]) for i in range(len(a)))
    c = RandomCrops(native, size=64, pos_prob=0.5, seed=8)
    assert not all(torch.equal(first[i], c[i][0]) for i in range(len(c)))
    batches = [x for x, _ in DataLoader(RandomCrops(native, 64, 0.5, seed=7), batch_size=8, num_workers=2)]
    assert torch.equal(torch.cat(batches), torch.stack([first[i] for i in range(len(a))]))


def test_pad_collate_batches_mixed_sizes_with_a_validity_mask(native):
    batch = [native[i] for i in range(6)]
    images, masks, valid = pad_collate(batch)
    hs = [img.shape[-2] for img, _ in batch]
    ws = [img.shape[-1] for img, _ in batch]
    assert images.shape[-2] % 32 == 0 and images.shape[-1] % 32 == 0
    assert images.shape[-2] >= max(hs) and images.shape[-2] < max(hs) + 32
    for b, (img, mask) in enumerate(batch):
        h, w = img.shape[-2:]
        assert torch.equal(images[b, :, :h, :w], img) and torch.equal(masks[b, :, :h, :w], mask)
        assert valid[b].sum() == h * w and images[b].sum() == img.sum()
    loader = DataLoader(native, batch_size=4, collate_fn=pad_collate)
    assert sum(v.sum().item() for _, _, v in loader) == sum(img.numel() for img, _ in native.items)


def test_meta_passes_through_with_the_crop_box():
    class WithMeta(Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            mask = torch.zeros(1, 40, 50)
            mask[0, 20, 30] = 1
            return torch.ones(3, 40, 50), mask, {"sample_id": "a"}

    image, mask, meta = RandomCrops(WithMeta(), size=32, pos_prob=1.0)[0]
    assert image.shape == (3, 32, 32) and mask.sum() == 1
    assert meta["sample_id"] == "a" and meta["crop"][2] is True
    with pytest.raises(ValueError, match="another image size"):
        crop_tensor(torch.zeros(1, 300, 300), CropBox(0, 0, 256, pad_h=1))


def test_loader_crop_and_pad_to_on_real_sirst_shards(tmp_path, native):
    """`ShardDataset(crop=..., pad_to=...)` on shards ingested from the real SIRST v1 at native
    size: the same windows as `RandomCrops` over the plain dataset, per seed and epoch."""
    from conftest import require_data
    from typer.testing import CliRunner

    from sirst5k.loader import ShardDataset
    from sirst5k.stages.cli import app

    src = require_data("sirst")
    result = CliRunner().invoke(app, ["ingest", str(src), "--out", str(tmp_path / "ing"), "--size", "native"])
    assert result.exit_code == 0, result.output
    plain = ShardDataset(tmp_path / "ing", split="test", dtype="uint8")
    cropped = ShardDataset(tmp_path / "ing", split="test", dtype="uint8", crop=128, crop_pos_prob=1.0, seed=4)
    wrapped = RandomCrops(plain, size=128, pos_prob=1.0, seed=4)
    for i in range(0, len(plain), 9):
        a, b = cropped[i], wrapped[i]
        assert a[0].shape == (1, 128, 128) and a[1].sum() > 0
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    cropped.set_epoch(1)
    wrapped.set_epoch(1)
    assert torch.equal(cropped[0][0], wrapped[0][0])
    padded = ShardDataset(tmp_path / "ing", split="test", dtype="uint8", pad_to=32)
    for i in range(0, len(plain), 9):
        image, mask = padded[i]
        h, w = plain.image_size(i)
        assert image.shape[-2] % 32 == 0 and image.shape[-1] % 32 == 0
        assert torch.equal(image[:, :h, :w], plain[i][0]) and image.sum() == plain[i][0].sum()
    with pytest.raises(ValueError):
        ShardDataset(tmp_path / "ing", split="test", crop=0)
