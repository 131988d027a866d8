"""Noise transfer: fields, blend, additive, rounding; parity with the original add_noise.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sirst5k.method.transfer import (
    additive,
    blend,
    draw_mosaic_params,
    mosaic_field,
    mosaic_grid,
    resize_field,
    to_uint8,
)

MIXES = ["0.1", "0.2", "0.3", "0.4", "0.5"]


def _grey(path: Path) -> np.ndarray:
    return np.array(Image.open(path).convert("L"))


@pytest.mark.parametrize("mix", MIXES)
def test_blend_parity_with_reference(reference_dir, device, mix):
    ids = sorted(p.stem for p in (reference_dir / "inputs" / "images").glob("*.png"))
    assert len(ids) == 10
    images = torch.from_numpy(np.stack([_grey(reference_dir / "inputs" / "images" / f"{i}.png") for i in ids]))
    noise = torch.from_numpy(_grey(reference_dir / "inputs" / "noise" / "noise.png"))[None]
    images = images.to(device, torch.float64)
    field = resize_field(noise.to(device, torch.float64), (256, 256)).expand(len(ids), -1, -1)
    exact = blend(images, field, float(mix)).cpu().numpy()
    ours = to_uint8(torch.from_numpy(exact)).numpy().astype(int)
    ref = np.stack([_grey(reference_dir / "outputs" / "mix" / mix / f"{i}.png") for i in ids]).astype(int)
    diff = ours != ref
    assert np.abs(ours - ref).max() <= 1
    # Every disagreement is an exact .5 tie, which the scripts' float32 path rounds either way.
    assert np.all(np.abs(exact[diff] - np.floor(exact[diff]) - 0.5) < 1e-9)
    assert diff.mean() < 0.01


def test_resize_field_bilinear_half_pixel(device):
    noise = torch.tensor([[[0.0, 4.0]]], device=device)
    field = resize_field(noise, (1, 4))
    # align_corners=False samples at (j + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 (clamped)
    torch.testing.assert_close(field, torch.tensor([[[0.0, 1.0, 3.0, 4.0]]], device=device))
    const = resize_field(torch.full((2, 5, 7), 3.5, device=device), (33, 17))
    assert const.shape == (2, 33, 17)
    torch.testing.assert_close(const, torch.full_like(const, 3.5))
    assert resize_field(torch.zeros(1, 4, 4, dtype=torch.uint8, device=device), (8, 8)).is_floating_point()
    with pytest.raises(ValueError):
        resize_field(torch.zeros(4, 4), (8, 8))


def test_mosaic_is_native_scale(device):
    rng = np.random.default_rng(1)
    size, window = (70, 100), 32
    rows, cols = mosaic_grid(size, window)
    assert (rows, cols) == (3, 4)
    bank = torch.from_numpy(rng.integers(0, 256, (9, window, window)).astype(np.float32)).to(device)
    idx = np.stack([draw_mosaic_params(rng, len(bank), size, window) for _ in range(2)])
    assert idx.shape == (2, 3, 4) and idx.min() >= 0 and idx.max() < 9
    patches = bank[torch.from_numpy(idx).to(device).reshape(2, -1)]
    field = mosaic_field(patches, size, match_means=False)
    assert field.shape == (2, 70, 100) and field.device == bank.device
    for b in range(2):
        for r in range(rows):
            for c in range(cols):
                tile = field[b, r * window : (r + 1) * window, c * window : (c + 1) * window]
                expected = bank[idx[b, r, c]][: tile.shape[0], : tile.shape[1]]
                assert torch.equal(tile, expected)  # copied, not resampled


def test_mosaic_match_means(device):
    rng = np.random.default_rng(2)
    window = 8
    patches = torch.from_numpy(rng.normal(0, 3, (1, 4, window, window))).to(device)
    patches = patches + torch.tensor([0.0, 40.0, 80.0, 120.0], device=device, dtype=patches.dtype).view(1, 4, 1, 1)
    field = mosaic_field(patches, (16, 16))
    tiles = field.reshape(2, window, 2, window).permute(0, 2, 1, 3).reshape(4, window, window)
    means = tiles.mean(dim=(1, 2))
    torch.testing.assert_close(means, torch.full_like(means, float(patches.mean())))
    # the noise (each tile minus its mean) is untouched
    torch.testing.assert_close(tiles - means.view(4, 1, 1), patches[0] - patches[0].mean(dim=(1, 2), keepdim=True))


def test_mosaic_errors_and_replay():
    with pytest.raises(ValueError):
        mosaic_field(torch.zeros(1, 5, 8, 8), (16, 16))  # needs 4
    with pytest.raises(ValueError):
        draw_mosaic_params(np.random.default_rng(0), 0, (16, 16), 8)
    a = draw_mosaic_params(np.random.default_rng(5), 100, (256, 256), 32)
    b = draw_mosaic_params(np.random.default_rng(5), 100, (256, 256), 32)
    assert a.shape == (8, 8) and np.array_equal(a, b)


def test_blend_formula_per_sample_mix(device):
    images = torch.full((3, 4, 5), 100.0, device=device)
    field = torch.full((3, 4, 5), 200.0, device=device)
    out = blend(images, field, torch.tensor([0.0, 0.1, 0.5]))
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([100.0, 110.0, 150.0], device=device))
    torch.testing.assert_close(blend(images, field, 0.25), torch.full_like(images, 125.0))
    with pytest.raises(ValueError):
        blend(images, field, [0.1, 0.2])
    with pytest.raises(ValueError):
        blend(images, field[:2], 0.1)
    with pytest.raises(ValueError):
        blend(images.to(torch.uint8), field, 0.1)


def test_additive_keeps_brightness(device):
    rng = np.random.default_rng(3)
    images = torch.from_numpy(rng.uniform(20, 200, (4, 32, 48))).to(device)
    field = torch.from_numpy(rng.normal(150, 6, (4, 32, 48))).to(device)
    mix = torch.tensor([0.1, 0.3, 0.5, 1.0])
    out = additive(images, field, mix)
    torch.testing.assert_close(out.mean(dim=(1, 2)), images.mean(dim=(1, 2)))
    # its noise term is the blend's noise term at the same mix
    residual = field - field.mean(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(out - images, mix.to(device, out.dtype).view(-1, 1, 1) * residual)
    torch.testing.assert_close(additive(images, field, 0.0), images)
    # unlike the blend, which pulls the mean towards the field's
    blended = blend(images, field, mix)
    assert not torch.allclose(blended.mean(dim=(1, 2)), images.mean(dim=(1, 2)))


def test_to_uint8(device):
    x = torch.tensor([-3.0, 0.4, 0.5, 1.5, 2.5, 254.6, 300.0], device=device)
    out = to_uint8(x)
    assert out.dtype == torch.uint8 and out.device == x.device
    assert out.cpu().tolist() == [0, 0, 0, 2, 2, 255, 255]  # ties to even, as numpy's round
    assert to_uint8(torch.tensor([3, 300])).tolist() == [3, 255]


# ---------------------------------------------------------------- same bits on every device


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("patch", [32, 16])
def test_resize_field_equals_interpolate_for_the_recipe(device, dtype, patch):
    # integer pixels upsampled by a power of two: every product is exact, so the explicit
    # multiply-adds give F.interpolate's numbers bit for bit (and so torchvision's Resize)
    import torch.nn.functional as F

    noise = torch.from_numpy(np.random.default_rng(patch).integers(0, 256, (6, patch, patch))).to(dtype)
    expected = F.interpolate(noise[:, None], size=(256, 256), mode="bilinear", align_corners=False)[:, 0]
    assert torch.equal(resize_field(noise.to(device), (256, 256)).cpu(), expected)


@pytest.mark.parametrize("shape", [(32, 32, 300, 211), (5, 7, 33, 17), (13, 29, 256, 256), (40, 50, 20, 25)])
def test_resize_field_any_size_is_device_independent(device, shape):
    import torch.nn.functional as F

    h, w, big_h, big_w = shape
    noise = torch.from_numpy(np.random.default_rng(h * w).uniform(0, 255, (3, h, w)).astype(np.float32))
    on_cpu = resize_field(noise, (big_h, big_w))
    # bit-identical wherever it runs
    assert torch.equal(resize_field(noise.to(device), (big_h, big_w)).cpu(), on_cpu)
    # and F.interpolate's resize, up to where that kernel's fused multiply-adds round
    expected = F.interpolate(noise[:, None], size=(big_h, big_w), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(on_cpu, expected, rtol=0, atol=1e-3)


def test_fusion_is_device_independent(device):
    """The whole transfer on `device` rounds to the bytes a CPU gives, for every mode and field."""
    rng = np.random.default_rng(7)
    size = (61, 83)  # odd sizes: resize weights are inexact, a 17-px mosaic is 4 x 5 tiles
    images = torch.from_numpy(rng.integers(0, 256, (5, *size)).astype(np.float32))
    patches = torch.from_numpy(rng.integers(0, 256, (5, 20, 17, 17)).astype(np.float32))
    mix = torch.tensor([0.1, 0.2, 0.3, 0.5, 1.0])

    def run(dev: torch.device) -> list[torch.Tensor]:
        img, p = images.to(dev), patches.to(dev)
        fields = (resize_field(p[:, 0], size), mosaic_field(p, size))
        return [to_uint8(fuse(img, f, mix)).cpu() for f in fields for fuse in (blend, additive)]

    for ours, cpu in zip(run(device), run(torch.device("cpu")), strict=True):
        assert torch.equal(ours, cpu)
