"""The report's noise realism (issue 15.3): stats.json `realism`, psd.png, realism.csv, the card.

A small dataset made through the CLI (synth -> ingest -> noise-bank -> transfer at two m ->
negatives -> publish with the transfers) must report every group it holds, the bank its manifest
names, and the same bytes twice; a constructed set whose transfers are the originals plus white
noise of known sigma must give the ratios computed by hand.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sirst5k.formats.imageio import write_png
from sirst5k.formats.manifest import write_json_atomic
from sirst5k.formats.shards import new_meta, write_shard
from sirst5k.report.card import _difficulty
from sirst5k.stages.cli import app

runner = CliRunner()
TRANSFER = "transfer additive/mosaic source"


def sirst5k(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"sirst5k {' '.join(map(str, args))} failed:\n{result.output}"
    return result.output


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """The pipeline run from `root` with relative paths, as `dvc repro` runs it from the repo."""
    root = tmp_path_factory.mktemp("realism")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        sirst5k("synth", "output", "--images", 12, "--sequences", 2, "--frames", 4, "--size", 128)
        sirst5k("ingest", "output/source", "--out", "output/ingest", "--size", 128, "--shard-size", 4)
        sirst5k("noise-bank", "output/frames", "--out", "output/noise_bank.h5")
        sirst5k("transfer", "output/ingest", "--noise-bank", "output/noise_bank.h5", "--out", "output/transfer",
                "--mode", "additive", "--field", "mosaic", "--mix", "0.1,0.5", "--device", "cpu")
        sirst5k("negatives", "output/transfer", "--out", "output/negatives", "--patch", 24, "--device", "cpu")
        sirst5k("publish", "--ingest", "output/ingest", "--negatives", "output/negatives", "--transfer",
                "output/transfer", "--out", "output/sirst5k", "--manifest", "manifests/sirst5k.json",
                "--shard-size", 8)
    return root


def report(dataset: Path, out: Path) -> dict:
    sirst5k("report", dataset, "--out", out)
    return json.loads((out / "stats.json").read_text())


def test_every_group_of_the_set_and_the_bank(published, tmp_path):
    # run from elsewhere: the bank's recorded relative path is found from the manifest's folder
    stats = report(published / "output" / "sirst5k", tmp_path / "rep")
    r = stats["realism"]
    assert list(r["groups"]) == ["original", f"{TRANSFER} m=0.1", f"{TRANSFER} m=0.5", "negative", "bank"]
    g = r["groups"]
    assert g["original"]["samples"] == stats["kinds"]["original"]["samples"]
    assert g[f"{TRANSFER} m=0.1"]["samples"] + g[f"{TRANSFER} m=0.5"]["samples"] == stats["kinds"]["transfer"]["samples"]
    assert g["negative"]["samples"] == stats["kinds"]["negative"]["samples"]
    assert r["bank"]["used"] and r["bank"]["path"] == "output/noise_bank.h5" and r["bank"]["scale"] == [1.0, 1.0]
    assert r["window"] == 32 and len(r["frequencies"]) == 16
    for name, group in g.items():
        assert group["windows"] > 0, name
        assert len(group["psd"]) == 16 and len(group["row_spectrum"]) == 17 and group["highpass_std"] > 0
        assert ("vs_reference" in group) == (name != "original")
        assert ("vs_sensor" in group) == (name != "bank")
    # additive noise: more of it at m = 0.5 than at 0.1, and the originals' own level is the floor
    low, high = (g[f"{TRANSFER} m={m}"]["vs_reference"]["highpass_ratio"] for m in ("0.1", "0.5"))
    assert 1.0 <= low < high
    # the picture, the curves, the card
    with Image.open(tmp_path / "rep" / "psd.png") as im:
        assert im.format == "PNG" and im.size == (860, 460)
    with open(tmp_path / "rep" / "realism.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["frequency", "original", "transfer_additive_mosaic_source_m_0_1",
                             "transfer_additive_mosaic_source_m_0_5", "negative", "bank"]
    assert len(rows) == 16
    assert float(rows[0]["original"]) == pytest.approx(math.log10(g["original"]["psd"][0]), abs=1e-3)
    card = (tmp_path / "rep" / "README.md").read_text()
    section = card.split("## Noise realism\n", 1)[1].split("\n## ", 1)[0]
    assert "![radially averaged noise PSD per group](psd.png)" in section and "`output/noise_bank.h5`" in section
    assert f"| {TRANSFER} m=0.5 | {g[f'{TRANSFER} m=0.5']['samples']} |" in section and "| bank |" in section


def test_two_reports_are_the_same_bytes(published, tmp_path):
    """Deterministic, whatever order the tasks run in (as with any worker count)."""
    from sirst5k.report.build import build_report

    dataset = published / "output" / "sirst5k"
    report(dataset, tmp_path / "a")
    report(dataset, tmp_path / "b")
    build_report(dataset, tmp_path / "c", map_fn=lambda fn, ts: [fn(*t) for t in reversed(ts)][::-1])
    for name in ("stats.json", "psd.png", "realism.csv", "README.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "c" / name).read_bytes(), name


def test_a_bank_that_is_gone_or_rebuilt_is_not_measured(published, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the bank is looked for from here too
    copy = tmp_path / "ds" / "output" / "sirst5k"
    shutil.copytree(published / "output" / "sirst5k", copy)
    manifest = json.loads((published / "manifests" / "sirst5k.json").read_text())
    manifest["dataset_dir"] = "."
    write_json_atomic(copy / "manifest.json", manifest)
    r = report(copy, tmp_path / "rep")["realism"]
    assert "bank" not in r["groups"] and r["bank"]["used"] is False and r["bank"]["note"] == "not found"
    assert "vs_sensor" not in r["groups"]["original"]
    assert "is not measured: not found" in (tmp_path / "rep" / "README.md").read_text()
    # a bank of that name but another version: not the one the set was made with
    (tmp_path / "ds" / "output" / "noise_bank.h5").write_bytes((published / "output" / "noise_bank.h5").read_bytes())
    manifest["inputs"]["frames"]["noise_bank_version"] = "0" * 16
    write_json_atomic(copy / "manifest.json", manifest)
    r = report(copy, tmp_path / "rep2")["realism"]
    assert "bank" not in r["groups"] and "the dataset was made with 0000000000000000" in r["bank"]["note"]


# ---------------------------------------------------------------- a set whose answer is known

SIDE, SIGMA0, SIGMA_ADD, SIGMA_BANK = 128, 2.0, 3.0, 4.0


def _flat(rng, sigma: float, n: int) -> np.ndarray:
    return np.clip(np.rint(100 + rng.normal(0, sigma, (n, SIDE, SIDE))), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def known(tmp_path_factory) -> Path:
    """Flat originals with white noise sigma 2, transfers: the same originals plus white noise
    sigma 3 (m = 1), and a noise bank made by `sirst5k noise-bank` from flat frames of sigma 4."""
    root = tmp_path_factory.mktemp("known")
    rng = np.random.default_rng(7)
    for seq in ("a", "b"):
        for t in range(3):
            write_png(root / "frames" / seq / f"{t:04d}.png", _flat(rng, SIGMA_BANK, 1)[0])
    sirst5k("noise-bank", root / "frames", "--out", root / "bank.h5")
    from sirst5k.formats.bank import read_attrs

    version = read_attrs(root / "bank.h5")["version"]
    originals = 100 + rng.normal(0, SIGMA0, (8, SIDE, SIDE))
    transfers = originals + rng.normal(0, SIGMA_ADD, originals.shape)
    images = np.clip(np.rint(np.concatenate([originals, transfers])), 0, 255).astype(np.uint8)
    meta = new_meta(16)
    for i in range(16):
        meta["sample_id"][i], meta["source_id"][i] = f"s{i:02d}", f"o{i % 8:02d}"
        meta["kind"][i] = "original" if i < 8 else "transfer"
        meta["mix"][i] = np.nan if i < 8 else 1.0
    ds = root / "ds"
    info = write_shard(ds / "train-00000.h5", images, np.zeros_like(images), meta, {"split": "train"})
    write_json_atomic(ds / "manifest.json", {
        "schema_version": 1, "name": "known", "version": "0", "producer": "test", "dataset_dir": ".",
        "params": {"transfer": {"mode": "additive", "field": "mosaic", "noise_scale": "source", "mix": [1.0]}},
        "inputs": {"frames": {"path": str(root / "bank.h5"), "noise_bank_version": version}},
        "splits": {"train": {"n_samples": 16, "shards": [{"path": Path(info.path).name, "sha256": info.sha256,
                                                             "n_samples": 16}]}},
    })
    return ds


def test_white_noise_of_known_sigma_gives_the_ratio_by_hand(known, tmp_path):
    r = report(known, tmp_path / "rep")["realism"]
    g = r["groups"]
    assert list(g) == ["original", f"{TRANSFER} m=1", "bank"]
    q = 1 / 12  # rounding to grey levels adds (nearly white) noise of variance 1/12
    var0, var1, var_bank = SIGMA0**2 + q, SIGMA0**2 + SIGMA_ADD**2 + q, SIGMA_BANK**2 + q
    # white noise: the 5x5 median residual keeps the same fraction of every sigma, the PSD is flat at sigma^2
    t = g[f"{TRANSFER} m=1"]
    assert t["vs_reference"]["highpass_ratio"] == pytest.approx(math.sqrt(var1 / var0), rel=0.05)
    assert t["vs_reference"]["log_psd_ratio"] == pytest.approx(math.log10(var1 / var0), abs=0.03)
    assert g["original"]["estimate_sigma"] == pytest.approx(math.sqrt(var0), rel=0.05)
    assert g["original"]["psd"][5] == pytest.approx(var0, rel=0.15)
    # the bank's frames (its patches in place, scale 1: orig_h/orig_w not recorded)
    assert r["bank"]["used"] and r["bank"]["scale"] == [1.0, 1.0]
    assert g["bank"]["vs_reference"]["highpass_ratio"] == pytest.approx(math.sqrt(var_bank / var0), rel=0.05)
    assert g["bank"]["estimate_sigma"] == pytest.approx(math.sqrt(var_bank), rel=0.08)
    assert t["vs_sensor"]["log_psd_ratio"] == pytest.approx(abs(math.log10(var1 / var_bank)), abs=0.03)


def test_the_bank_is_resampled_to_the_images_scale(known, tmp_path):
    """Originals read at twice their shard size: the bank's frames are halved before measuring."""
    import h5py

    ds = tmp_path / "ds"
    shutil.copytree(known, ds)
    with h5py.File(ds / "train-00000.h5", "r+") as f:
        f["meta/orig_h"][:8] = 2 * SIDE
        f["meta/orig_w"][:8] = 2 * SIDE
    manifest = json.loads((ds / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0].pop("sha256")
    write_json_atomic(ds / "manifest.json", manifest)
    r = report(ds, tmp_path / "rep")["realism"]
    assert r["bank"]["scale"] == [0.5, 0.5]
    full = report(known, tmp_path / "full")["realism"]["groups"]["bank"]
    # bilinear halving averages the white noise: far less left at the images' scale
    assert 0 < r["groups"]["bank"]["highpass_std"] < 0.6 * full["highpass_std"]


# ---------------------------------------------------------------- the card's difficulty table


def test_difficulty_table_in_either_shape_and_nothing_for_another():
    plain = {"train": {"original": {"size": {"tiny": 3, "small": 1}, "scr": {"low": 2, "high": 2}}},
             "test": {"original": {"size": {"tiny": 1, "large": 1}, "scr": {"low": 2}}}}
    text = "\n".join(_difficulty(plain))
    assert "| split | kind | tiny | small | large |" in text
    assert "| train | original | 3 | 1 | 0 |" in text and "| test | original | 1 | 0 | 1 |" in text
    assert "| train | original | 2 | 2 |" in text  # scr: low, high
    nested = {"definition": {"size_bins": {"tiny": "<= 9 px"}, "none": "no target"},
              "splits": {"train": {"negative": {"samples": {"size_bin": {"tiny": 5, "none": 0}},
                                                "targets": {"size_bin": {"tiny": 7, "none": 1}}}}},
              "total": {"samples": {"size_bin": {"tiny": 5}}}}
    text = "\n".join(_difficulty(nested))
    assert "| split | kind | counted | tiny (<= 9 px) | none |" in text
    assert "| train | negative | samples | 5 | 0 |" in text and "| train | negative | targets | 7 | 1 |" in text
    assert "total" not in text.split("## Difficulty", 1)[1].split("| split")[1]
    for odd in (None, [], {"train": [1, 2]}, {"train": {"original": {"size": "many"}}}, {"train": {"original": 3}}):
        assert _difficulty(odd) == []
