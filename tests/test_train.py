"""The yardstick U-Net, seeded training, and the `evaluate` stage on a few constructed samples."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sirst5k.formats import shards
from sirst5k.evaluate.train import (
    ArraySamples,
    TrainConfig,
    draw_crops,
    draw_schedule,
    lr_factor,
    predict,
    soft_iou_bce_loss,
    to_tensors,
    train_and_score,
)
from sirst5k.evaluate.unet import UNet, count_parameters

SIZE = 64


def blob_samples(seed: int, n: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Noisy backgrounds with one or two bright 3x3 targets each; masks mark the targets."""
    gen = np.random.default_rng(seed)
    images = gen.normal(80, 6, size=(n, size, size)).clip(0, 255)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        for _ in range(gen.integers(1, 3)):
            y, x = gen.integers(2, size - 5, size=2)
            images[i, y : y + 3, x : x + 3] += 90
            masks[i, y : y + 3, x : x + 3] = 255
    return images.clip(0, 255).astype(np.uint8), masks


TINY = TrainConfig(steps=20, batch_size=4, size=SIZE, crop=48, lr=5e-3, warmup=2, seed=3, eval_batch=8)


def test_unet_shapes_and_size():
    model = UNet()
    assert 100_000 <= count_parameters(model) <= 300_000
    for h, w in ((64, 64), (37, 50)):  # odd sizes are padded and cropped back
        assert model(torch.zeros(2, 1, h, w)).shape == (2, 1, h, w)
    # the output bias starts at the 1 % prior
    assert torch.sigmoid(model.head.bias).item() == pytest.approx(0.01)


def test_schedule_is_seeded_and_covers_every_sample_each_epoch():
    order = draw_schedule(7, 10, 5, 4)
    assert order.shape == (5, 4)
    np.testing.assert_array_equal(order, draw_schedule(7, 10, 5, 4))
    assert not np.array_equal(order, draw_schedule(8, 10, 5, 4))
    assert sorted(order.ravel()[:10]) == list(range(10))
    crops = draw_crops(7, (64, 64), 48, 5, 4)
    assert crops.shape == (5, 4, 2) and crops.min() >= 0 and crops.max() <= 16
    assert (draw_crops(7, (64, 64), 100, 5, 4) == 0).all()


def test_lr_schedule_warms_up_then_decays():
    f = [lr_factor(s, 100, 10) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[9:], f[10:]))
    assert f[-1] == pytest.approx(0.01, abs=0.01)


def test_downsampling_keeps_a_one_pixel_target_as_a_partial_target():
    masks = np.zeros((1, 8, 8), np.uint8)
    masks[0, 2, 3] = 255
    x, y = to_tensors(np.zeros((1, 8, 8), np.uint8), masks, 4, "cpu")
    assert x.shape == y.shape == (1, 1, 4, 4)
    assert y.sum().item() == pytest.approx(0.25)
    assert y[0, 0, 1, 1].item() == pytest.approx(0.25)


def test_loss_is_low_for_a_confident_correct_prediction():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:4, 2:4] = 1
    good = soft_iou_bce_loss((target * 2 - 1) * 20, target)
    bad = soft_iou_bce_loss(-(target * 2 - 1) * 20, target)
    assert good.item() < 0.05 < 1.0 < bad.item()


def test_tiny_training_is_finite_learns_and_repeats():
    train = ArraySamples(*blob_samples(0, 12))
    test = ArraySamples(*blob_samples(1, 6))
    a = train_and_score(train, test, TINY, "cpu", threads=1)
    assert len(a.losses) == TINY.steps and all(math.isfinite(v) for v in a.losses)
    assert np.mean(a.losses[-5:]) < np.mean(a.losses[:5])
    assert set(a.metrics) == {"mIoU", "nIoU", "Pd", "Fa"}
    b = train_and_score(train, test, TINY, "cpu", threads=1)
    assert a.metrics == b.metrics
    assert a.losses == b.losses
    c = train_and_score(train, test, replace(TINY, seed=4), "cpu", threads=1)
    assert c.losses != a.losses


def test_predict_returns_probabilities_at_stored_size(device):
    model = UNet().to(device)
    images, _ = blob_samples(2, 3)
    prob = predict(model, images, size=32, device=device)
    assert prob.shape == (3, SIZE, SIZE)
    assert float(prob.min()) >= 0.0 and float(prob.max()) <= 1.0


# --- the stage ------------------------------------------------------------------------------


def _write(folder, split: str, index: int, images, masks, kinds: list[str]) -> None:
    meta = shards.new_meta(len(images))
    meta["kind"][:] = kinds
    meta["sample_id"][:] = [f"{split}-{index}-{i}" for i in range(len(images))]
    meta["n_targets"][:] = [int(m.any()) for m in masks]  # close enough for the stage's checks
    attrs = {"dataset": "t", "version": "0", "split": split, "shard_index": index, "n_shards": 2}
    shards.write_shard(folder / shards.shard_name(split, index), images, masks, meta, attrs)


@pytest.fixture
def shard_dir(tmp_path):
    folder = tmp_path / "set"
    orig_i, orig_m = blob_samples(10, 6)
    neg_i, neg_m = np.rot90(orig_i, axes=(1, 2)).copy(), np.rot90(orig_m, axes=(1, 2)).copy()
    _write(folder, "train", 0, orig_i[:4], orig_m[:4], ["original"] * 4)
    _write(folder, "train", 1, np.concatenate([orig_i[4:], neg_i]), np.concatenate([orig_m[4:], neg_m]),
           ["original"] * 2 + ["negative"] * 6)
    test_i, test_m = blob_samples(11, 5)
    _write(folder, "test", 0, test_i, test_m, ["original"] * 5)
    return folder


def _evaluate(args):
    from sirst5k.stages.cli import app

    return CliRunner().invoke(app, ["evaluate", *map(str, args)])


def test_stage_writes_both_rows_and_curves(shard_dir, tmp_path):
    out = tmp_path / "eval"
    args = [shard_dir, "--out", out, "--steps", 6, "--batch-size", 4, "--size", 32, "--crop", 32,
            "--device", "cpu", "--threads", 1, "--seed", 1]
    result = _evaluate(args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.json").read_text())
    for run in ("original", "sirst5k"):
        assert set(record[run]) == {"mIoU", "nIoU", "Pd", "Fa"}
        assert all(0.0 <= v <= 1.0 for v in record[run].values())
    assert record["train_samples"] == {"original": 6, "sirst5k": 12}
    assert record["train_kinds"] == {"negative": 6, "original": 6}
    assert record["test_samples"] == 5
    assert (record["steps"], record["size"], record["device"]) == (6, 32, "cpu")
    with open(out / "curves.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["run"] for r in rows] == ["original"] * 6 + ["sirst5k"] * 6
    assert [int(r["step"]) for r in rows[:6]] == list(range(1, 7))
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left behind
    # same seed, same bytes
    first = (out / "metrics.json").read_bytes()
    assert _evaluate(args).exit_code == 0
    assert (out / "metrics.json").read_bytes() == first


def test_stage_reads_a_manifest(shard_dir, tmp_path):
    entries = lambda split: [{"path": p.name, "sha256": shards.sha256_file(p), "n_samples": shards.n_samples(p)}
                             for p in shards.list_shards(shard_dir, split)]
    manifest = {"schema_version": 1, "name": "tiny", "version": "abc", "producer": "test", "dataset_dir": ".",
                "params": {}, "inputs": {}, "splits": {s: {"shards": entries(s)} for s in ("train", "test")}}
    (shard_dir / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "eval"
    result = _evaluate([shard_dir / "manifest.json", "--out", out, "--steps", 2, "--batch-size", 2, "--size", 16,
                        "--crop", 16, "--device", "cpu", "--threads", 1])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["dataset"] == {"name": "tiny", "version": "abc"}


def test_stage_errors_are_one_line(tmp_path, shard_dir):
    result = _evaluate([tmp_path / "nowhere", "--out", tmp_path / "o", "--device", "cpu"])
    assert result.exit_code == 2
    assert "dataset not found" in result.output
    for p in shards.list_shards(shard_dir, "test"):
        p.unlink()
    result = _evaluate([shard_dir, "--out", tmp_path / "o", "--device", "cpu"])
    assert result.exit_code == 2 and "no test shards" in result.output
    assert not (tmp_path / "o" / "metrics.json").exists()
