"""The whole pipeline through the CLI on a small synthetic source: counts, schema, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from sirst5k.stages.cli import app

pytestmark = pytest.mark.slow

runner = CliRunner()


def sirst5k(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"sirst5k {' '.join(map(str, args))} failed:\n{result.output}"
    return result.output


def build(root: Path, workers: int, images: int = 24) -> Path:
    """synth -> ingest -> noise-bank -> transfer -> negatives -> publish; returns the manifest."""
    out = root / "output"
    w = ["--workers", str(workers)]
    sirst5k("synth", out, "--images", images, "--sequences", 2, "--frames", 4, "--size", 128, *w)
    sirst5k("ingest", out / "source", "--out", out / "ingest", "--size", 128, "--shard-size", 8, *w)
    sirst5k("noise-bank", out / "frames", "--out", out / "noise_bank.h5", *w)
    sirst5k("transfer", out / "ingest", "--noise-bank", out / "noise_bank.h5", "--out", out / "transfer",
            "--device", "cpu", *w)
    sirst5k("negatives", out / "transfer", "--out", out / "negatives", "--device", "cpu", *w)
    manifest = root / "manifests" / "sirst5k.json"
    sirst5k("publish", "--ingest", out / "ingest", "--negatives", out / "negatives", "--out", out / "sirst5k",
            "--manifest", manifest, "--shard-size", 40, *w)
    return manifest


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("run2"), workers=2)


def shard_files(manifest: Path) -> list[Path]:
    doc = json.loads(manifest.read_text())
    root = (manifest.parent / doc["dataset_dir"]).resolve()
    return [root / s["path"] for split in sorted(doc["splits"]) for s in doc["splits"][split]["shards"]]


def test_published_counts_follow_the_recipe(built: Path) -> None:
    doc = json.loads(built.read_text())
    train, test = doc["splits"]["train"], doc["splits"]["test"]
    assert train["kinds"]["original"] == 12 and test["kinds"]["original"] == 12
    # one negative per target per k, from every train image
    n_targets = 0
    for path in shard_files(built):
        with h5py.File(path) as f:
            kinds = f["meta/kind"].asstr()[()]
            n_targets += int(f["meta/n_targets"][()][kinds == "original"].sum()) if f.attrs["split"] == "train" else 0
    assert n_targets > 0
    assert train["kinds"]["negative"] == 4 * n_targets
    assert train["n_samples"] == 12 + 4 * n_targets
    assert test["n_samples"] == 12 and set(k for k, v in test["kinds"].items() if v) == {"original"}


def test_shards_follow_the_schema(built: Path) -> None:
    for path in shard_files(built):
        with h5py.File(path) as f:
            assert f.attrs["schema_version"] == 1 and f.attrs["dataset"] == "sirst5k"
            images, masks = f["images"], f["masks"]
            assert images.dtype == np.uint8 and masks.shape == images.shape and images.shape[1:] == (128, 128)
            assert images.chunks == (1, 128, 128)
            assert set(np.unique(masks[()])) <= {0, 255}
            n = images.shape[0]
            for field in ("sample_id", "source_id", "kind", "mix", "noise_id", "patch", "k", "flip",
                          "target_index", "center_y", "center_x", "n_targets"):
                assert f["meta"][field].shape == (n,)
            kinds = f["meta/kind"].asstr()[()]
            neg = kinds == "negative"
            if neg.any():
                assert np.allclose(f["meta/mix"][()][neg], 0.1)
                assert (f["meta/noise_id"][()][neg] >= 0).all()
                assert (f["meta/patch"][()][neg] == 32).all()
                assert set(f["meta/k"][()][neg]) <= {0, 1, 2, 3}


def test_verify_passes_and_catches_a_flipped_byte(built: Path, tmp_path: Path) -> None:
    assert "OK" in sirst5k("verify", built)
    # a copy of the dataset with one byte of image data flipped
    import shutil

    doc = json.loads(built.read_text())
    src = (built.parent / doc["dataset_dir"]).resolve()
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    victim = copy / doc["splits"]["train"]["shards"][0]["path"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    result = runner.invoke(app, ["verify", str(copy)])
    assert result.exit_code == 1
    assert victim.name in result.output and "sha256" in result.output


def test_one_worker_gives_identical_bytes(built: Path, tmp_path: Path) -> None:
    other = build(tmp_path, workers=1)
    a = {p.name: p.read_bytes() for p in shard_files(built)}
    b = {p.name: p.read_bytes() for p in shard_files(other)}
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), "shards differ between --workers 2 and --workers 1"
    da, db = json.loads(built.read_text()), json.loads(other.read_text())
    assert da["version"] == db["version"] and da["splits"] == db["splits"]
