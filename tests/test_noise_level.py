"""The noise-level function (model format 3): the temporal noise std against grey level, fitted on
constructed frames whose answer is known, stored in the bank, and drawn by `transfer --noise-level
image`; `flat` (the default) keeps the bytes of before."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from sirst5k.errors import InputError
from sirst5k.formats import bank
from sirst5k.method.noise_model import (
    NLF_MIN_COUNT,
    fit_nlf,
    fit_sequence,
    fit_temporal,
    models_from_arrays,
    models_to_arrays,
    nlf_gain,
)
from sirst5k.method.transfer import (
    draw_transfer_params,
    local_level,
    model_fields,
    resample_like_ingest,
    transfer_images,
)
from sirst5k.params import NoiseBankParams, ParamError, TransferParams

T, H, W, WIN = 6, 512, 512, 32


def all_kept(t: int = T, h: int = H, w: int = W) -> np.ndarray:
    gy, gx = np.meshgrid(np.arange(h // WIN), np.arange(w // WIN), indexing="ij")
    return np.stack([np.zeros(gy.size, np.int64), gy.ravel(), gx.ravel()], axis=1)


def ramp_frames(seed: int = 0, quantise: bool = False) -> np.ndarray:
    """A static ramp scene 20 .. 230 grey levels across, with white noise of std 0.5 + 0.02 level."""
    ramp = np.tile(np.linspace(20, 230, W), (H, 1))
    frames = ramp + (0.5 + 0.02 * ramp) * np.random.default_rng(seed).normal(0, 1, (T, H, W))
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8) if quantise else frames


# ---------------------------------------------------------------- the fit


def test_the_fitted_function_recovers_a_known_noise_level_function():
    m = fit_temporal(ramp_frames(), all_kept(), T, WIN, tile=128, nlf=True)
    assert m.has_nlf and len(m.nlf_level) >= 20
    assert np.all(np.diff(m.nlf_level) > 0) and m.nlf_level[0] < 30 and m.nlf_level[-1] > 220
    want = 0.5 + 0.02 * m.nlf_level
    np.testing.assert_allclose(m.nlf_sigma, want, rtol=0.10)
    assert np.abs(m.nlf_sigma / want - 1).mean() < 0.03
    assert (m.nlf_count >= NLF_MIN_COUNT).all()
    # calibrated to the temporal noise: the bins' count-weighted rms is sigma_temporal
    rms = np.sqrt(np.average(m.nlf_sigma**2, weights=m.nlf_count))
    assert rms == pytest.approx(m.sigma_temporal, rel=0.01)
    # the rest of the model is the format-2 model, field for field
    plain = fit_temporal(ramp_frames(), all_kept(), T, WIN, tile=128)
    assert not plain.has_nlf
    assert dataclasses.replace(m, nlf_level=None, nlf_sigma=None, nlf_count=None).sigma == plain.sigma
    np.testing.assert_array_equal(m.psd2d, plain.psd2d)


def test_the_fit_on_grey_levels_and_under_a_textured_scene():
    # uint8 frames (the noise quantised: + 1/12 per frame, 1/12 in the difference) still follow the line
    m = fit_temporal(ramp_frames(1, quantise=True), all_kept(), T, WIN, tile=128, nlf=True)
    want = np.sqrt((0.5 + 0.02 * m.nlf_level) ** 2 + 1 / 12)
    np.testing.assert_allclose(m.nlf_sigma, want, rtol=0.10)
    # a static texture cancels in the pair's difference: the function is the noise's, not the scene's
    from scipy import ndimage

    rng = np.random.default_rng(2)
    scene = 120 + 20 * ndimage.gaussian_filter(rng.normal(0, 1, (H, W)), 4, mode="wrap") * 8
    frames = scene + 2.0 * rng.normal(0, 1, (T, H, W))
    flat = fit_temporal(frames, all_kept(), T, WIN, tile=128, nlf=True)
    assert len(flat.nlf_level) >= 5  # the texture spreads the levels over many bins ...
    np.testing.assert_allclose(flat.nlf_sigma, 2.0, rtol=0.10)  # ... at one noise level


def test_bins_with_too_few_pixels_are_dropped_and_tiny_tiles_give_none():
    a = np.full((4, 64, 64), 50.0)
    a[:, :, 32:] = 200.0
    rng = np.random.default_rng(3)
    b = a + rng.normal(0, 1, a.shape)
    got = fit_nlf(a, b, min_count=1)
    assert len(got["nlf_level"]) >= 2
    sparse = fit_nlf(a, b, min_count=4 * 60 * 30)  # each plateau's interior: 4 x 60 x ~28 pixels
    assert len(sparse["nlf_level"]) == 0 and sparse["nlf_count"].dtype == np.int64
    assert len(fit_nlf(a[:, :4, :4], b[:, :4, :4])["nlf_level"]) == 0


def test_gain_interpolates_clamps_and_is_none_without_a_function():
    base = fit_sequence(np.random.default_rng(4).normal(100, 2, (4, 2, WIN, WIN)))
    m = dataclasses.replace(base, nlf_level=np.array([40.0, 200.0]), nlf_sigma=np.array([1.0, 3.0]),
                            nlf_count=np.array([10, 10]))
    rms = np.sqrt(5.0)
    np.testing.assert_allclose(nlf_gain(m, np.array([0.0, 40, 120, 200, 255])),
                               np.array([1, 1, 2, 3, 3]) / rms)
    assert nlf_gain(base, np.array([1.0])) is None
    empty = dataclasses.replace(base, nlf_level=np.zeros(0), nlf_sigma=np.zeros(0), nlf_count=np.zeros(0, np.int64))
    assert empty.has_nlf and nlf_gain(empty, np.array([1.0])) is None


# ---------------------------------------------------------------- storage


def test_storage_round_trip_with_and_without_a_function():
    with_nlf = fit_temporal(ramp_frames(), all_kept(), T, WIN, tile=128, nlf=True)
    without = fit_temporal(ramp_frames(5), all_kept(), T, WIN, tile=128)
    arrays = models_to_arrays([with_nlf, without])
    back = models_from_arrays(arrays)
    np.testing.assert_array_equal(back[0].nlf_level, with_nlf.nlf_level)
    np.testing.assert_array_equal(back[0].nlf_sigma, with_nlf.nlf_sigma)
    np.testing.assert_array_equal(back[0].nlf_count, with_nlf.nlf_count)
    assert back[1].has_nlf and len(back[1].nlf_level) == 0  # stored as no bin: a flat level
    # a format-2 list stores no table, and reads back without a function
    plain = models_to_arrays([without])
    assert not any(k.startswith("nlf") for k in plain)
    assert not models_from_arrays(plain)[0].has_nlf


def _part(tmp_path: Path, name: str, model) -> bank.Part:
    rng = np.random.default_rng(len(name))
    patches = rng.integers(0, 255, (2, 2, WIN, WIN)).astype(np.uint8)
    kept = np.array([[0, 0, 0], [0, 0, 1]], np.int64)
    path = tmp_path / f"{name}.part.h5"
    rows = bank.write_part(path, patches, kept, np.ones((2, 1, 2)), np.ones((2, 1, 2)), ["a.png", "b.png"], WIN,
                           model=model)
    return bank.Part(name, str(path), 2, rows)


def test_the_bank_stores_format_3_and_old_banks_still_load(tmp_path: Path):
    m1 = fit_temporal(ramp_frames(), all_kept(), T, WIN, tile=128, nlf=True)
    m2 = fit_temporal(ramp_frames(6)[:, ::-1], all_kept(), T, WIN, tile=128, nlf=True)
    out = tmp_path / "nlf.h5"
    bank.merge_parts([_part(tmp_path, "A", m1), _part(tmp_path, "B", m2)], out, {"window": WIN, "version": "x"})
    got = bank.read_models(out)
    assert got.attrs["model_format"] == bank.NLF_FORMAT == 3 and got.attrs["nlf_bin"] == 8.0
    for want, have in zip((m1, m2), got.models):
        np.testing.assert_array_equal(have.nlf_level, want.nlf_level)
        np.testing.assert_array_equal(have.nlf_sigma, want.nlf_sigma)
    assert bank.bank_info(out)["nlf"] is True
    # a format-2 bank (no function) loads as before: no function, no `nlf` key in its info
    old = tmp_path / "old.h5"
    p1, p2 = (fit_temporal(ramp_frames(s), all_kept(), T, WIN, tile=128) for s in (0, 6))
    bank.merge_parts([_part(tmp_path, "A", p1), _part(tmp_path, "B", p2)], old, {"window": WIN, "version": "x"})
    back = bank.read_models(old)
    assert back.attrs["model_format"] == 2 and "nlf_bin" not in back.attrs
    assert not any(m.has_nlf for m in back.models) and "nlf" not in bank.bank_info(old)
    with h5py.File(old) as f:
        assert not any(k.startswith("nlf") for k in f["model"])
    # parts of both kinds do not merge into one bank
    with pytest.raises(ValueError, match="two formats"):
        bank.merge_parts([_part(tmp_path, "A", m1), _part(tmp_path, "B", p2)], tmp_path / "mixed.h5",
                         {"window": WIN, "version": "x"})
    # a damaged table is one line naming the bank
    with h5py.File(out, "a") as f:
        del f["model/nlf_sigma"]
    with pytest.raises(InputError) as err:
        bank.read_models(out)
    assert "noise-level function is incomplete" in str(err.value) and str(out) in str(err.value)


# ---------------------------------------------------------------- transfer --noise-level


def _golden_setup():
    """The transfer fixture whose model-field outputs were fingerprinted with the code before
    `--noise-level` existed (the flat level): the digests below."""
    rng = np.random.default_rng(5)
    frames = np.clip(np.rint(100 + rng.normal(0, 3, (4, 128, 128))), 0, 255).astype(np.uint8)
    kept = np.array([[0, gy, gx] for gy in range(4) for gx in range(4)], np.int64)
    flat = fit_sequence(frames.reshape(4, 4, 32, 4, 32).transpose(1, 3, 0, 2, 4).reshape(16, 4, 32, 32), frames)
    temp = fit_temporal(frames, kept, 4, 32, tile=64)
    xx = np.mgrid[:64, :80][1]
    images = np.stack([np.clip(20 + 2.5 * xx + 10 * s, 0, 255) for s in range(5)]).astype(np.uint8)
    orig = np.array([[200, 300], [64, 80], [-1, -1], [130, 90], [64, 80]], np.int64)
    return flat, temp, images, orig, [f"s{i}" for i in range(5)]


GOLDEN = {  # sha256[:16] of transfer_images' bytes before the option (numpy path)
    "flat-source-additive": "659d15c992024336", "flat-source-blend": "b3210ea876238a94",
    "flat-bank-additive": "8b979f2536e54b70", "flat-bank-blend": "fb73488836b94860",
    "temporal-source-additive": "acceb81c6f745b7f", "temporal-source-blend": "e98b6483d7497a7b",
    "temporal-bank-additive": "a4840a00a1ad5964", "temporal-bank-blend": "57023ecb0f8d1c24",
    "both-source-additive": "b788d8ad0df67c26", "both-source-blend": "b43d45cb4f5cf677",
    "both-bank-additive": "be98ccb05804b1f4", "both-bank-blend": "67e22698307386a3",
}


def test_flat_is_byte_identical_to_the_code_before():
    flat, temp, images, orig, ids = _golden_setup()
    zero = np.zeros((1, 32, 32), np.uint8)
    for name, models in (("flat", [flat]), ("temporal", [temp]), ("both", [flat, temp])):
        for src in (orig, None):
            d = draw_transfer_params(7, ids, 1, images.shape[1:], 32, "model", source_sizes=src, n_models=len(models))
            for mode in ("additive", "blend"):
                key = f"{name}-{'source' if src is not None else 'bank'}-{mode}"
                default = transfer_images(images, zero, d, [0.5, 1.0], mode, models=models)
                explicit = transfer_images(images, zero, d, [0.5, 1.0], mode, models=models, noise_level="flat")
                assert np.array_equal(default, explicit)
                assert hashlib.sha256(default.tobytes()).hexdigest()[:16] == GOLDEN[key], key
                # a model without a function keeps its flat level under "image" too
                if name != "both":
                    same = transfer_images(images, zero, d, [0.5, 1.0], mode, models=models, noise_level="image")
                    assert np.array_equal(default, same)


def _nlf_model(sigma_dark: float = 1.0, sigma_bright: float = 3.0, noise: float = 2.0):
    """A white-noise model of std `noise` (no stripes) with a two-bin function: `sigma_dark` at 40,
    `sigma_bright` at 200."""
    base = fit_sequence(np.random.default_rng(8).normal(100, noise, (16, 2, WIN, WIN)))
    return dataclasses.replace(base, row_psd=np.zeros_like(base.row_psd), col_psd=np.zeros_like(base.col_psd),
                               nlf_level=np.array([40.0, 200.0]), nlf_sigma=np.array([sigma_dark, sigma_bright]),
                               nlf_count=np.array([100, 100]))


@pytest.mark.parametrize("source", [None, (300, 400)])
def test_image_level_puts_more_noise_on_a_bright_region_in_the_functions_ratio(source):
    m = _nlf_model()
    images = np.full((3, 120, 160), 40, np.uint8)
    images[:, :, 80:] = 200  # left dark, right bright
    ids = ["a", "b", "c"]
    src = None if source is None else np.tile(np.array(source, np.int64), (3, 1))
    d = draw_transfer_params(1, ids, 1, (120, 160), WIN, "model", source_sizes=src, n_models=1)
    flat = model_fields([m], d.rows, d.seeds, d.build_size if src is not None else np.tile([120, 160], (3, 1)),
                        (120, 160))
    lit = model_fields([m], d.rows, d.seeds, d.build_size if src is not None else np.tile([120, 160], (3, 1)),
                       (120, 160), levels=images)
    dark, bright = (slice(None), slice(None), slice(4, 76)), (slice(None), slice(None), slice(84, 156))
    ratio = (lit[bright] - m.mean_level).std() / (lit[dark] - m.mean_level).std()
    assert ratio == pytest.approx(3.0, rel=0.10)  # sigma 3 at 200 against 1 at 40
    # and each side is the flat field times its gain (NLF / rms = 1/sqrt5, 3/sqrt5): same draws
    np.testing.assert_allclose(lit[dark] - m.mean_level, (flat[dark] - m.mean_level) / np.sqrt(5), atol=1e-3)
    np.testing.assert_allclose(lit[bright] - m.mean_level, (flat[bright] - m.mean_level) * 3 / np.sqrt(5), atol=1e-3)
    # the fused images: the bright side gets 3x the added noise (a model loud enough that rounding
    # to grey levels does not flatten the dark side's)
    loud = _nlf_model(noise=10.0)
    out = transfer_images(images, np.zeros((1, WIN, WIN), np.uint8), d, [1.0], "additive", models=[loud],
                          noise_level="image").astype(float) - images
    assert out[bright].std() / out[dark].std() == pytest.approx(3.0, rel=0.10)


def test_image_level_clamps_to_the_fitted_range_and_replays():
    m = _nlf_model()
    images = np.stack([np.full((64, 64), 0, np.uint8), np.full((64, 64), 255, np.uint8)])
    d = draw_transfer_params(2, ["x", "y"], 1, (64, 64), WIN, "model", n_models=1)
    builds = np.tile([64, 64], (2, 1))
    flat = model_fields([m], d.rows, d.seeds, builds, (64, 64)) - m.mean_level
    lit = model_fields([m], d.rows, d.seeds, builds, (64, 64), levels=images) - m.mean_level
    assert lit[0].std() == pytest.approx(flat[0].std() / np.sqrt(5), rel=1e-4)  # darker than 40: 40's level
    assert lit[1].std() == pytest.approx(flat[1].std() * 3 / np.sqrt(5), rel=1e-4)  # brighter than 200: 200's
    again = model_fields([m], d.rows, d.seeds, builds, (64, 64), levels=images) - m.mean_level
    assert np.array_equal(lit, again)


def test_local_level_is_the_images_3x3_mean():
    img = np.zeros((5, 5), np.uint8)
    img[2, 2] = 90
    lv = local_level(img)
    assert lv[2, 2] == pytest.approx(10) and lv[1, 1] == pytest.approx(10) and lv[0, 0] == 0
    np.testing.assert_allclose(local_level(np.full((4, 6), 7, np.uint8)), 7)
    # resample_like_ingest is linear: the flat source field is the sum of its resized parts
    assert resample_like_ingest(np.ones((10, 10), np.float32), (5, 5)).shape == (5, 5)


def test_the_option_is_checked_and_versioned():
    assert "noise_level" not in TransferParams(field="model").version_dict()
    assert TransferParams(field="model", noise_level="image").version_dict()["noise_level"] == "image"
    with pytest.raises(ParamError, match="--noise-level image: applies to --field model only"):
        TransferParams(field="mosaic", noise_level="image")
    with pytest.raises(ParamError, match="--noise-level bright"):
        TransferParams(field="model", noise_level="bright")
    flat, temp, images, orig, ids = _golden_setup()
    d = draw_transfer_params(7, ids, 1, images.shape[1:], 32, "mosaic")
    with pytest.raises(ValueError, match="model field only"):
        transfer_images(images, np.zeros((1, 32, 32), np.uint8), d, [1.0], "additive", noise_level="image")
    # the bank side: off by default (format 2, its version), on only with the temporal model fit
    assert "model_nlf" not in NoiseBankParams(model=True).version_dict()
    assert NoiseBankParams(model=True, model_nlf=True).version_dict()["model_nlf"] is True
    with pytest.raises(ParamError, match="--model-nlf: needs --model"):
        NoiseBankParams(model_nlf=True)
    with pytest.raises(ParamError, match="needs --model"):
        NoiseBankParams(model=True, model_fit="flat", model_nlf=True)


# ---------------------------------------------------------------- the noise-bank stage


def test_noise_bank_model_nlf_writes_format_3_and_off_keeps_format_2(tmp_path: Path, scheduler: str):
    from PIL import Image
    from typer.testing import CliRunner

    from sirst5k.stages.cli import app

    rng = np.random.default_rng(9)
    ramp = np.tile(np.linspace(40, 200, 256), (256, 1))  # 128-px tiles (too few of 256): ~9,000 px a bin
    for i in range(4):
        (tmp_path / "f" / "a").mkdir(parents=True, exist_ok=True)
        frame = np.clip(np.rint(ramp + (0.5 + 0.02 * ramp) * rng.normal(0, 1, ramp.shape)), 0, 255)
        Image.fromarray(frame.astype(np.uint8)).save(tmp_path / "f" / "a" / f"a-{i}.png")
    runner = CliRunner()

    def run(out, *extra):
        result = runner.invoke(app, ["noise-bank", str(tmp_path / "f"), "--out", str(tmp_path / out), "--window", "16",
                                     "--max-var", "1000", "--max-seq-var", "1000", "--max-seq-mean", "1000",
                                     "--scheduler", scheduler, *extra])
        return result

    on = run("on.h5", "--model", "--model-nlf")
    off = run("off.h5", "--model")
    assert on.exit_code == 0 and off.exit_code == 0, on.output + off.output
    m_on, m_off = bank.read_models(tmp_path / "on.h5"), bank.read_models(tmp_path / "off.h5")
    assert m_on.attrs["model_format"] == 3 and m_off.attrs["model_format"] == 2
    assert m_on.models[0].has_nlf and not m_off.models[0].has_nlf
    assert bank.read_attrs(tmp_path / "on.h5")["model_nlf"]
    assert "model_nlf" not in bank.read_attrs(tmp_path / "off.h5")
    assert bank.read_attrs(tmp_path / "on.h5")["version"] != bank.read_attrs(tmp_path / "off.h5")["version"]
    # the function rises with the grey level as the frames' noise does
    m = m_on.models[0]
    assert len(m.nlf_level) >= 10
    np.testing.assert_allclose(m.nlf_sigma, np.sqrt((0.5 + 0.02 * m.nlf_level) ** 2 + 1 / 12), rtol=0.15)
    off_again = run("off2.h5", "--model", "--no-model-nlf")
    assert off_again.exit_code == 0
    assert (tmp_path / "off2.h5").read_bytes() == (tmp_path / "off.h5").read_bytes()
    bad = run("bad.h5", "--model-nlf")
    assert bad.exit_code != 0 and "--model-nlf: needs --model" in bad.output


def test_box_mean_is_scipys_uniform_filter_with_replicated_edges():
    """The one local-level filter of the fit and of transfer equals scipy's (which transfer must not import)."""
    from scipy import ndimage

    from sirst5k.method.noise_model import box_mean

    x = np.random.default_rng(0).normal(size=(3, 40, 37))
    for size in (1, 3, 5):
        np.testing.assert_allclose(box_mean(x, size), ndimage.uniform_filter(x, size=(1, size, size), mode="nearest"),
                                   rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="odd"):
        box_mean(x, 4)
