"""`sirst5k transfer` with the new field options, as a user types them: noise scale, the model field
and its noise level."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sirst5k.formats import bank as bankfile
from sirst5k.formats import shards
from sirst5k.method.noise_model import fit_sequence
from sirst5k.stages.cli import app

runner = CliRunner()
W = 16



def cli(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def data(tmp_path_factory, scheduler) -> dict:
    """Images of 96x128 ingested to 64 px, and two banks of the same white-noise frames (one with a model)."""
    root = tmp_path_factory.mktemp("transfer-cli")
    rng = np.random.default_rng(0)
    for d in ("images", "masks"):
        (root / "src" / d).mkdir(parents=True)
    for i in range(6):
        Image.fromarray(rng.integers(60, 120, (96, 128)).astype(np.uint8)).save(root / "src" / "images" / f"{i}.png")
        mask = np.zeros((96, 128), np.uint8)
        mask[40:44, 60:64] = 255
        Image.fromarray(mask).save(root / "src" / "masks" / f"{i}.png")
    cli("ingest", root / "src", "--out", root / "ing", "--layout", "folder", "--size", 64, "--split-ratio", 1.0,
        "--scheduler", scheduler)
    frames = np.clip(np.rint(120 + rng.normal(0, 6, (2, 64, 64))), 0, 255).astype(np.uint8)
    boxes = frames.reshape(2, 4, W, 4, W).transpose(1, 3, 0, 2, 4).reshape(16, 2, W, W)
    kept = np.array([[0, i, j] for i in range(4) for j in range(4)], np.int64)
    var = np.full((2, 4, 4), 36.0)
    mean = np.full((2, 4, 4), 120.0)
    attrs = {"schema_version": 1, "producer": "test", "stage": "noise-bank", "version": "", "frames_hash": "f",
             "window": W, "n_sequences": 1, "n_frames": 2}
    banks = {}
    fitted = fit_sequence(boxes, frames)
    # a model with a noise-level function (format 3): 3x the noise at grey 120 that it has at 60
    lit = dataclasses.replace(fitted, nlf_level=np.array([60.0, 120.0]), nlf_sigma=np.array([2.0, 6.0]),
                              nlf_count=np.array([5000, 5000]))
    for name, model in (("plain", None), ("model", fitted), ("nlf", lit)):
        part = root / f"{name}.part.h5"
        rows = bankfile.write_part(part, boxes, kept, var, mean, ["a.png", "b.png"], W, model=model)
        banks[name] = root / f"{name}.h5"
        bankfile.merge_parts([bankfile.Part("seq", str(part), 16, rows)], banks[name], {**attrs, "version": name})
    return {"root": root, "ingest": root / "ing", "banks": banks, "scheduler": scheduler}


def transfer(data, out: str, *args) -> tuple[np.ndarray, dict, dict]:
    dst = data["root"] / f"out-{out}"
    cli("transfer", data["ingest"], "--noise-bank", data["banks"]["model" if "model" in args else "plain"],
        "--out", dst, "--scheduler", data["scheduler"], "--seed", 3, *args)
    images, _, meta = shards.read_shard(shards.list_shards(dst, "train")[0])
    record = json.loads((dst / "stage.json").read_text())
    return images, meta, record


def test_ingest_kept_the_original_size(data):
    meta = shards.read_meta(shards.list_shards(data["ingest"], "train")[0])
    assert set(meta["orig_h"]) == {96} and set(meta["orig_w"]) == {128}


def test_mosaic_source_is_the_default_and_bank_keeps_the_old_version_and_bytes(data):
    source, meta, rec_source = transfer(data, "src", "--mode", "additive", "--field", "mosaic", "--mix", 1)
    bank, _, rec_bank = transfer(data, "bank", "--mode", "additive", "--field", "mosaic", "--mix", 1,
                                 "--noise-scale", "bank")
    explicit, _, rec_explicit = transfer(data, "src2", "--mode", "additive", "--field", "mosaic", "--mix", 1,
                                         "--noise-scale", "source")
    assert np.array_equal(source, explicit) and rec_source["params"]["transfer"] == rec_explicit["params"]["transfer"]
    assert rec_source["params"]["transfer"]["noise_scale"] == "source"
    assert "noise_scale" not in rec_bank["params"]["transfer"]  # the version every mosaic had before
    # a 96x128 image shrunk to 64 px holds ~0.4x its pixel noise, and so does its noise at source scale
    base, _, _ = shards.read_shard(shards.list_shards(data["ingest"], "train")[0])
    added = lambda out: (out.astype(float) - base).std(axis=(1, 2)).mean()  # noqa: E731
    assert added(bank) == pytest.approx(6.0, rel=0.15)
    assert added(source) < 0.6 * added(bank)
    assert meta["noise_id"].min() >= 0


def test_resize_ignores_the_noise_scale(data):
    a, _, rec_a = transfer(data, "rs-default")
    b, _, rec_b = transfer(data, "rs-bank", "--noise-scale", "bank")
    assert np.array_equal(a, b) and rec_a["params"]["transfer"] == rec_b["params"]["transfer"]
    assert "noise_scale" not in rec_a["params"]["transfer"]


def test_model_field(data):
    images, meta, record = transfer(data, "model", "--mode", "additive", "--field", "model", "--mix", 1)
    assert record["params"]["transfer"]["field"] == "model"
    assert (meta["noise_id"] == -1).all()
    again, _, _ = transfer(data, "model-again", "--mode", "additive", "--field", "model", "--mix", 1)
    assert np.array_equal(images, again)


def test_model_field_needs_a_model(data):
    result = runner.invoke(app, ["transfer", str(data["ingest"]), "--noise-bank", str(data["banks"]["plain"]),
                                 "--out", str(data["root"] / "nomodel"), "--field", "model",
                                 "--scheduler", data["scheduler"]])
    assert result.exit_code != 0
    line = [ln for ln in result.output.splitlines() if ln.strip()][-1]
    assert "holds no noise model" in line and str(data["banks"]["plain"]) in line
    assert not (data["root"] / "nomodel").exists()


def test_bad_noise_scale_is_refused(data):
    result = runner.invoke(app, ["transfer", str(data["ingest"]), "--noise-bank", str(data["banks"]["plain"]),
                                 "--out", str(data["root"] / "bad"), "--noise-scale", "native"])
    assert result.exit_code != 0 and "native" in result.output


def test_noise_level_image_follows_the_images_grey_level(data):
    base, _, _ = shards.read_shard(shards.list_shards(data["ingest"], "train")[0])
    dst = data["root"] / "out-nlf"
    args = ["transfer", data["ingest"], "--noise-bank", data["banks"]["nlf"], "--scheduler", data["scheduler"],
            "--seed", 3, "--mode", "additive", "--field", "model", "--mix", 1]
    cli(*args, "--out", dst, "--noise-level", "image")
    lit, _, meta = shards.read_shard(shards.list_shards(dst, "train")[0])
    record = json.loads((dst / "stage.json").read_text())
    assert record["params"]["transfer"]["noise_level"] == "image"
    # flat (the default) on the same bank: the flat model's bytes and version, as before
    cli(*args, "--out", data["root"] / "out-nlf-flat")
    flat, _, _ = shards.read_shard(shards.list_shards(data["root"] / "out-nlf-flat", "train")[0])
    rec_flat = json.loads((data["root"] / "out-nlf-flat" / "stage.json").read_text())
    model, _, rec_model = transfer(data, "model-flat", "--mode", "additive", "--field", "model", "--mix", 1)
    assert np.array_equal(flat, model) and "noise_level" not in rec_flat["params"]["transfer"]
    assert not np.array_equal(lit, flat)
    # the images are 60..120 noise: brighter pixels get more of the added noise under "image" only
    from sirst5k.method.transfer import local_level

    from sirst5k.method.noise_model import nlf_gain

    level = np.stack([local_level(b) for b in base])
    bright, dark = level > 95, level < 85
    gain = nlf_gain(bankfile.read_models(data["banks"]["nlf"]).models[0], level)
    expected = np.sqrt((gain[bright] ** 2).mean() / (gain[dark] ** 2).mean())
    assert expected > 1.2
    added = lit.astype(float) - base
    assert added[bright].std() / added[dark].std() == pytest.approx(expected, rel=0.1)
    added_flat = flat.astype(float) - base
    assert added_flat[bright].std() == pytest.approx(added_flat[dark].std(), rel=0.1)


def test_noise_level_image_needs_a_function(data):
    result = runner.invoke(app, ["transfer", str(data["ingest"]), "--noise-bank", str(data["banks"]["model"]),
                                 "--out", str(data["root"] / "nonlf"), "--field", "model", "--noise-level", "image",
                                 "--scheduler", data["scheduler"]])
    assert result.exit_code != 0
    line = [ln for ln in result.output.splitlines() if ln.strip()][-1]
    assert "no noise-level function" in line and "--model-nlf" in line and str(data["banks"]["model"]) in line
    assert not (data["root"] / "nonlf").exists()
    other = runner.invoke(app, ["transfer", str(data["ingest"]), "--noise-bank", str(data["banks"]["nlf"]),
                                "--out", str(data["root"] / "nonlf2"), "--field", "mosaic", "--noise-level", "image"])
    assert other.exit_code != 0 and "--noise-level image: applies to --field model only" in other.output
