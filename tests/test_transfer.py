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


# ---------------------------------------------------------------- noise at the sample's own scale

from sirst5k.formats.imageio import resize_image  # noqa: E402
from sirst5k.method.noise_model import detrend, fit_sequence, model_field  # noqa: E402
from sirst5k.method.transfer import (  # noqa: E402
    TransferDraws,
    draw_transfer_params,
    model_fields,
    resample_like_ingest,
    source_mosaic_fields,
    transfer_images,
)


@pytest.mark.parametrize("shape, size", [((256, 640), (256, 256)), ((512, 256), (256, 256)), ((220, 135), (220, 256))])
def test_resample_like_ingest_is_ingests_filter_in_float(shape, size):
    img = np.random.default_rng(sum(shape)).integers(0, 256, shape).astype(np.uint8)
    ours = resample_like_ingest(img.astype(np.float32), size)
    assert ours.dtype == np.float32 and ours.shape == size
    # one pass of PIL's filter: the 8-bit result is ours rounded (fixed-point ties aside)
    assert np.abs(ours - resize_image(img, size)).max() <= 0.5 + 1e-3


def test_resample_like_ingest_both_axes_and_same_size():
    img = np.random.default_rng(0).integers(0, 256, (512, 640)).astype(np.uint8)
    ours = resample_like_ingest(img.astype(np.float32), (256, 256))
    # PIL's 8-bit path rounds between its two passes too: within one grey level
    assert np.abs(ours - resize_image(img, 256)).max() <= 1.0
    same = np.random.default_rng(1).normal(0, 3, (40, 50)).astype(np.float32)
    assert np.array_equal(resample_like_ingest(same, (40, 50)), same)
    with pytest.raises(ValueError):
        resample_like_ingest(np.zeros((2, 4, 4)), (8, 8))


def _white_bank(sigma: float = 6.0, n: int = 200, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.clip(np.rint(128 + np.random.default_rng(seed).normal(0, sigma, (n, w, w))), 0, 255).astype(np.uint8)


def test_source_scale_builds_the_field_at_the_original_size_then_resizes_it():
    bank = _white_bank()
    ids = ["a", "b", "c"]
    orig = np.array([[512, 640], [300, 200], [-1, -1]])  # the last: size unknown, taken as the image's
    draws = draw_transfer_params(5, ids, len(bank), (256, 256), 32, "mosaic", source_sizes=orig)
    assert isinstance(draws.rows, tuple) and draws.build_size.tolist() == [[512, 640], [300, 200], [256, 256]]
    assert [r.shape for r in draws.rows] == [(16, 20), (10, 7), (8, 8)]
    np.testing.assert_array_equal(draws.noise_id, [r[0, 0] for r in draws.rows])
    fields = source_mosaic_fields(bank, draws.rows, draws.build_size, (256, 256))
    # by hand: each tile minus its plane (mean kept), tiled at native pitch, resized as ingest resizes
    tiles = bank[draws.rows[1].reshape(-1)].astype(np.float64)
    tiles = detrend(tiles) + tiles.mean(axis=(1, 2), keepdims=True)
    native = mosaic_field(torch.from_numpy(tiles.astype(np.float32))[None], (300, 200))[0].numpy()
    np.testing.assert_array_equal(fields[1], resample_like_ingest(native, (256, 256)))
    images = np.full((3, 256, 256), 100, np.uint8)
    out = transfer_images(images, bank, draws, [1.0], "additive")
    expected = to_uint8(additive(torch.from_numpy(images).float(), torch.from_numpy(fields), 1.0)).numpy()
    np.testing.assert_array_equal(out, expected)


def test_source_scale_noise_has_the_level_a_shrunk_frame_has():
    # white sensor noise: a 640x512 frame shrunk to 256 px keeps ~0.3x of it; so must its field
    sigma = 6.0
    bank = _white_bank(sigma)
    frame = 128 + np.random.default_rng(9).normal(0, sigma, (512, 640))
    shrunk = resample_like_ingest(frame.astype(np.float32), (256, 256)).std()
    ids = [f"s{i}" for i in range(4)]
    images = np.full((4, 256, 256), 100, np.uint8)
    source = draw_transfer_params(1, ids, len(bank), (256, 256), 32, "mosaic",
                                  source_sizes=np.tile([512, 640], (4, 1)))
    bank_scale = draw_transfer_params(1, ids, len(bank), (256, 256), 32, "mosaic")
    for draws, level in ((source, shrunk), (bank_scale, sigma)):
        out = transfer_images(images, bank, draws, [1.0], "additive").astype(np.float64)
        assert out.std(axis=(1, 2)).mean() == pytest.approx(np.hypot(level, 0.29), rel=0.1)
    assert shrunk < 0.4 * sigma


def test_source_scale_at_the_image_size_draws_as_the_bank_scale():
    """Same size, same tiles: a sample ingest did not resize gets the bank scale's draw (the tiles,
    detrended, are its own), and any worker count gives the same bytes (keyed draws)."""
    bank = _white_bank(3.0, 50, 16)
    ids = ["x", "y"]
    a = draw_transfer_params(2, ids, len(bank), (64, 64), 16, "mosaic", source_sizes=np.tile([64, 64], (2, 1)))
    b = draw_transfer_params(2, ids, len(bank), (64, 64), 16, "mosaic")
    np.testing.assert_array_equal(np.stack(a.rows), b.rows)
    one = draw_transfer_params(2, ids[1:], len(bank), (64, 64), 16, "mosaic", source_sizes=np.array([[64, 64]]))
    np.testing.assert_array_equal(one.rows[0], a.rows[1])  # the order of the samples does not matter


def test_resize_ignores_the_source_sizes():
    a = draw_transfer_params(0, ["p", "q"], 10, (64, 64), 16, "resize", source_sizes=np.array([[128, 99], [64, 64]]))
    b = draw_transfer_params(0, ["p", "q"], 10, (64, 64), 16, "resize")
    np.testing.assert_array_equal(a.rows, b.rows)
    assert a.build_size is None


def test_model_field_draws_replay_and_fuse():
    frames = 100 + np.random.default_rng(3).normal(0, 4, (2, 128, 128))
    models = [fit_sequence(frames.reshape(2, 4, 32, 4, 32).transpose(1, 3, 0, 2, 4).reshape(16, 2, 32, 32))] * 2
    ids = ["m0", "m1", "m2"]
    orig = np.array([[200, 300], [64, 64], [64, 64]])
    d = draw_transfer_params(4, ids, 0, (64, 64), 32, "model", source_sizes=orig, n_models=2)
    assert d.rows.shape == (3,) and d.seeds.shape == (3,)
    np.testing.assert_array_equal(d.noise_id, [-1, -1, -1])
    again = draw_transfer_params(4, ids, 0, (64, 64), 32, "model", source_sizes=orig, n_models=2)
    np.testing.assert_array_equal(d.seeds, again.seeds)
    fields = model_fields(models, d.rows, d.seeds, d.build_size, (64, 64))
    np.testing.assert_array_equal(fields[0], resample_like_ingest(model_field(models[d.rows[0]], (200, 300),
                                                                               int(d.seeds[0])), (64, 64)))
    np.testing.assert_array_equal(fields[1], model_field(models[d.rows[1]], (64, 64), int(d.seeds[1])))
    assert 3.0 < fields[1].std() < 5.0 and fields[0].std() < 0.6 * fields[1].std()  # shrunk 3-4.7x
    images = np.full((3, 64, 64), 90, np.uint8)
    out = transfer_images(images, np.zeros((1, 32, 32), np.uint8), d, [1.0], "additive", models=models)
    expected = to_uint8(additive(torch.from_numpy(images).float(), torch.from_numpy(fields), 1.0)).numpy()
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="noise model"):
        draw_transfer_params(4, ids, 10, (64, 64), 32, "model")
    with pytest.raises(ValueError, match="noise models"):
        transfer_images(images, np.zeros((1, 32, 32), np.uint8), d, [1.0], "additive")


def test_source_and_model_fields_are_device_independent(device):
    rng = np.random.default_rng(11)
    bank = rng.integers(0, 256, (30, 16, 16)).astype(np.uint8)
    images = rng.integers(0, 256, (5, 61, 83)).astype(np.uint8)
    orig = np.array([[122, 166], [61, 83], [200, 90], [40, 50], [61, 83]])
    ids = [f"d{i}" for i in range(5)]
    frames = rng.normal(100, 3, (2, 64, 64))
    models = [fit_sequence(frames.reshape(2, 4, 16, 4, 16).transpose(1, 3, 0, 2, 4).reshape(16, 2, 16, 16))]
    for field in ("mosaic", "model"):
        d = draw_transfer_params(0, ids, len(bank), (61, 83), 16, field, source_sizes=orig, n_models=1)
        for mode in ("blend", "additive"):
            ours = transfer_images(images, bank, d, [0.1, 1.0], mode, device, models=models)
            assert np.array_equal(ours, transfer_images(images, bank, d, [0.1, 1.0], mode, "cpu", models=models))


def test_old_draws_still_replay():
    """`TransferDraws(field, rows)` as `sirst5k modes` builds it keeps meaning the bank scale."""
    bank = _white_bank(3.0, 20, 16)
    d = draw_transfer_params(0, ["k"], len(bank), (64, 64), 16, "mosaic")
    replay = TransferDraws("mosaic", d.rows.copy())
    images = np.full((1, 64, 64), 50, np.uint8)
    assert np.array_equal(transfer_images(images, bank, replay, [0.5], "blend"),
                          transfer_images(images, bank, d, [0.5], "blend"))


def test_noise_scale_enters_the_version_only_where_it_changes_the_bytes():
    from sirst5k.params import ParamError, TransferParams

    default = TransferParams().version_dict()
    assert "noise_scale" not in default  # the default make repro (resize) keeps its version
    assert TransferParams(noise_scale="bank").version_dict() == default  # resize has no scale
    assert TransferParams(field="mosaic").version_dict()["noise_scale"] == "source"  # new bytes, new version
    assert "noise_scale" not in TransferParams(field="mosaic", noise_scale="bank").version_dict()  # as before
    assert TransferParams(field="model").version_dict()["noise_scale"] == "source"
    assert TransferParams(field="resize").effective_noise_scale == "bank"
    with pytest.raises(ParamError, match="--noise-scale native: use source or bank"):
        TransferParams(noise_scale="native")
