"""The dataset report: statistics of a constructed set, plots, contact sheets, card."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from scipy import ndimage as ndi
from typer.testing import CliRunner

from sirst5k.formats.manifest import write_json_atomic
from sirst5k.formats.shards import KINDS, META_FIELDS, SCHEMA_VERSION, new_meta, write_shard
from sirst5k.report.build import build_report
from sirst5k.report.drawing import outline, pick_evenly
from sirst5k.report.stats import count_targets, highpass_energy, merge_summaries, summarize_shard
from sirst5k.stages.report import command

S = 32  # image side


def _image(rng, noise: float, targets: list[tuple[int, int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """A flat image with Gaussian noise and bright rectangles (y, x, h, w) that are also the mask."""
    image = np.clip(80 + rng.normal(0, noise, (S, S)), 0, 255).astype(np.uint8)
    mask = np.zeros((S, S), np.uint8)
    for y, x, h, w in targets:
        image[y : y + h, x : x + w] = 220
        mask[y : y + h, x : x + w] = 255
    return image, mask


# (kind, targets, cut, meta area, meta n_targets); -1 = not recorded
TRAIN = [
    ("original", [], -1, -1, -1),
    ("original", [(4, 4, 1, 1)], -1, -1, -1),
    ("original", [(4, 4, 2, 2), (20, 20, 3, 3)], -1, -1, -1),
    ("original", [(2, 2, 2, 2), (4, 4, 2, 2), (10, 20, 4, 4)], -1, -1, -1),  # first two touch diagonally
    ("transfer", [(8, 8, 3, 3)], -1, -1, -1),
    ("transfer", [(8, 8, 3, 3)], -1, -1, -1),
    ("transfer", [(20, 2, 5, 2)], -1, -1, -1),
    ("negative", [(8, 8, 3, 3)], 0, 9, 1),
    ("negative", [(8, 8, 3, 3)], 1, 9, 1),
    ("negative", [(8, 8, 3, 3), (0, 30, 2, 2)], 1, 13, 2),
    ("negative", [(16, 16, 2, 8)], 0, 99, 1),  # stored area is wrong
    ("negative", [(16, 16, 2, 8)], 0, 16, 3),  # stored count is wrong
]
TEST = [("original", [(30, 0, 2, 2)], -1, -1, -1), ("original", [], -1, -1, -1)]
NOISE = {"original": 1.0, "transfer": 8.0, "negative": 8.0}


def build(root: Path, shard_size: int = 5) -> dict[str, tuple]:
    rng = np.random.default_rng(3)
    arrays, entries = {}, {}
    for split, rows in (("train", TRAIN), ("test", TEST)):
        pairs = [_image(rng, NOISE[kind], t) for kind, t, *_ in rows]
        images = np.stack([p[0] for p in pairs])
        masks = np.stack([p[1] for p in pairs])
        meta = new_meta(len(rows))
        for i, (kind, targets, cut, area, n) in enumerate(rows):
            meta["sample_id"][i] = f"{split}_{i:02d}"
            meta["source_id"][i] = f"src_{i:02d}"
            meta["kind"][i] = kind
            meta["cut"][i], meta["area"][i], meta["n_targets"][i] = cut, area, n
            if kind == "transfer":
                meta["mix"][i] = 0.1
            if kind == "negative":
                meta["patch"][i], meta["k"][i], meta["flip"][i] = 8, i % 4, 1
                meta["center_y"][i], meta["center_x"][i] = targets[0][0] + 1, targets[0][1] + 1
        shards = []
        for index, start in enumerate(range(0, len(rows), shard_size)):
            sl = slice(start, start + shard_size)
            info = write_shard(root / f"{split}-{index:05d}.h5", images[sl], masks[sl],
                               {k: v[sl] for k, v in meta.items()}, {"split": split})
            shards.append({"path": Path(info.path).name, "sha256": info.sha256, "n_samples": info.n_samples})
        arrays[split] = (images, masks, meta)
        entries[split] = {"n_samples": len(rows), "shards": shards}
    write_json_atomic(root / "manifest.json", {
        "schema_version": 1, "name": "toy-5k", "version": "0123abcd", "producer": "sirst5k 0.1.0",
        "dataset_dir": ".", "params": {"negatives": {"patch": [8], "clamp": "clip"}},
        "inputs": {"source": {"path": "data/NUDT-SIRST", "layout": "dnanet", "n_images": 14}},
        "splits": entries,
    })
    return arrays


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "toy"
    arrays = build(root)
    stats = build_report(root)
    return root, arrays, stats


def test_counts(reported):
    root, _, stats = reported
    assert json.loads((root / "report" / "stats.json").read_text()) == stats
    assert stats["samples"] == 14
    assert stats["splits"]["train"] == {"samples": 12, "original": 4, "transfer": 3, "negative": 5,
                                        "targets": 14, "no_target": 1}
    assert stats["splits"]["test"] == {"samples": 2, "original": 2, "transfer": 0, "negative": 0,
                                       "targets": 1, "no_target": 1}
    assert stats["targets"] == 15 and stats["no_target"] == 2
    assert stats["targets_per_image"]["hist"] == {"0": 2, "1": 9, "2": 3}
    assert stats["targets_per_image"]["mean"] == round(15 / 14, 4)
    # areas: 1, 4, 9, 8 (diagonal pair), 16, 9, 9, 10, 9, 9, 9, 4, 16, 16, 4
    hist = stats["target_area"]["hist"]
    assert hist["1"] == 1 and hist["2-3"] == 0 and hist["4-7"] == 3 and hist["8-15"] == 8 and hist["16-31"] == 3
    assert sum(hist.values()) == 15 and stats["target_area"]["max"] == 16
    assert stats["label_checks"] == {"cut": 2, "area_mismatch": 1, "n_targets_mismatch": 1}
    kinds = stats["kinds"]
    assert list(kinds) == ["original", "transfer", "negative"]
    assert kinds["original"]["samples"] == 6 and kinds["original"]["targets"] == 6 and kinds["original"]["no_target"] == 2
    assert kinds["negative"]["cut"] == 2 and kinds["transfer"]["targets_per_image_mean"] == 1.0


def test_intensity_and_noise(reported):
    _, arrays, stats = reported
    kinds = stats["kinds"]
    for kind in ("original", "negative"):
        pixels = np.concatenate([arrays[s][0][arrays[s][2]["kind"] == kind].ravel() for s in ("train", "test")])
        assert kinds[kind]["intensity_mean"] == pytest.approx(pixels.mean(), abs=1e-3)
        assert kinds[kind]["intensity_std"] == pytest.approx(pixels.std(), abs=1e-3)
    # Noise transfer is visible: sigma 8 against sigma 1 (a 3x3 box residual keeps sqrt(8/9) of it).
    assert kinds["original"]["noise_rms"] == pytest.approx(np.sqrt(8 / 9) * 1.0, rel=0.15)
    assert kinds["transfer"]["noise_rms"] == pytest.approx(np.sqrt(8 / 9) * 8.0, rel=0.15)
    assert kinds["negative"]["noise_rms"] > 5 * kinds["original"]["noise_rms"]


def test_highpass_energy_matches_reference():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 20, 17)).astype(np.uint8)
    masks = np.zeros_like(images)
    for b in range(12):
        for _ in range(b % 3):
            y, x = rng.integers(0, 18), rng.integers(0, 15)
            masks[b, y : y + 2, x : x + 2] = 255
    masks[5, 0, 0] = masks[6, -1, -1] = masks[7, 10, 0] = 255
    energy, count = highpass_energy(images, masks, guard=3)
    for b in range(12):
        img = images[b].astype(float)
        residual = img - ndi.uniform_filter(img, 3)
        keep = ~ndi.binary_dilation(masks[b] > 0, np.ones((7, 7), bool))
        keep[0], keep[-1], keep[:, 0], keep[:, -1] = False, False, False, False
        assert count[b] == keep.sum()
        assert energy[b] == pytest.approx((residual[keep] ** 2).sum(), rel=1e-9)


def test_count_targets_keeps_images_apart():
    masks = np.zeros((3, 6, 6), np.uint8)
    masks[0, 5, 2] = masks[1, 0, 2] = 255  # touch across the image boundary when stacked
    masks[1, 2, 2] = masks[1, 3, 3] = 255  # diagonal: one target
    masks[2, 0, 0] = masks[2, 0, 2] = 255  # a gap: two targets
    n, areas, image = count_targets(masks)
    assert n.tolist() == [1, 2, 2]
    assert sorted(zip(image.tolist(), areas.tolist())) == [(0, 1), (1, 1), (1, 2), (2, 1), (2, 1)]


def test_summaries_merge_in_any_order(reported):
    root, _, stats = reported
    tasks = [(str(p), p.name.split("-")[0]) for p in sorted(root.glob("*.h5"))]
    forward = merge_summaries(summarize_shard(*t) for t in tasks)
    backward = merge_summaries(summarize_shard(*t) for t in reversed(tasks))
    assert forward == backward
    other = build_report(root, root.parent / "elsewhere", map_fn=lambda fn, ts: [fn(*t) for t in reversed(ts)][::-1])
    assert other == stats


def test_plots(reported):
    root, _, stats = reported
    with open(root / "report" / "target_sizes.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["area", "area_max", "all", "original", "transfer", "negative"]
    assert sum(int(r["all"]) for r in rows) == stats["targets"]
    assert [int(r["area"]) for r in rows][:4] == [1, 2, 4, 8]
    assert sum(int(r["negative"]) for r in rows) == stats["kinds"]["negative"]["targets"]
    with open(root / "report" / "targets_per_image.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["targets"]), int(r["all"])) for r in rows] == [(0, 2), (1, 9), (2, 3)]


def test_contact_sheets(reported):
    root, _, _ = reported
    report = root / "report"
    for name in ("originals.png", "transfers.png", "negatives.png"):
        with Image.open(report / name) as im:
            im.verify()
        with Image.open(report / name) as im:
            rgb = np.asarray(im.convert("RGB"))
        red = (rgb[..., 0] > 200) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)
        assert red.sum() > 0, name  # mask outlines drawn
        yellow = (rgb[..., 0] > 200) & (rgb[..., 1] > 180) & (rgb[..., 2] < 60)
        assert (yellow.sum() > 0) == (name == "negatives.png")
    # Deterministic: a second report writes the same bytes.
    again = root.parent / "again"
    build_report(root, again)
    for name in ("stats.json", "originals.png", "negatives.png", "README.md", "target_sizes.csv"):
        assert (again / name).read_bytes() == (report / name).read_bytes(), name


def test_card(reported):
    root, _, _ = reported
    card = (root / "report" / "README.md").read_text()
    for text in ("# toy-5k", "0123abcd", "sirst5k 0.1.0", "2403.05416", "SIRST-5K", "ShardDataset",
                 "| train | 12 | 4 | 3 | 5 | 14 | 1 |", '"clamp": "clip"', "data/NUDT-SIRST", "Dense Nested Attention"):
        assert text in card, text


def test_card_format_follows_the_shard_schema(reported):
    """The card writes its field list out (to keep its line breaks): it must be the schema's."""
    root, _, _ = reported
    card = (root / "report" / "README.md").read_text()
    section = card.split("## Format\n\n", 1)[1].split("\n\n## ", 1)[0]
    assert f"(schema_version {SCHEMA_VERSION})" in section
    text = " ".join(section.split())
    listed = text.split("under `/meta` (", 1)[1].split(", ...;", 1)[0]
    names = [part.split("`")[1] for part in listed.split(", ") if part.startswith("`")]
    assert names == list(META_FIELDS)[: len(names)] and "n_targets" in names
    assert f"`kind` {' | '.join(KINDS)}," in text


def test_outline_and_pick():
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 255
    ring = outline(mask)
    assert ring.sum() == 12 and not ring[3:5, 3:5].any() and ring[2, 2:6].all()
    assert outline(np.full((3, 3), 255)).sum() == 8  # pixels on the image edge are boundary
    assert pick_evenly(5, 16).tolist() == [0, 1, 2, 3, 4]
    assert pick_evenly(100, 4).tolist() == [0, 33, 66, 99]


def test_command_replaces_old_report(reported, tmp_path):
    root, _, stats = reported
    out = tmp_path / "rep"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")
    app = typer.Typer()
    app.command()(command)
    # a folder the report did not write is the user's: refused, untouched, unless --overwrite
    refused = CliRunner().invoke(app, [str(root / "manifest.json"), "--out", str(out)])
    assert refused.exit_code == 2 and "--overwrite replaces it" in refused.output
    assert sorted(p.name for p in out.iterdir()) == ["stale.png"]
    result = CliRunner().invoke(app, [str(root / "manifest.json"), "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "stats.json").read_text()) == stats
    assert not (out / "stale.png").exists()
    # its own earlier output it replaces without asking
    again = CliRunner().invoke(app, [str(root / "manifest.json"), "--out", str(out)])
    assert again.exit_code == 0, again.output
    missing = CliRunner().invoke(app, [str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such" in missing.output


@pytest.mark.slow
def test_command_on_a_dask_cluster(reported, tmp_path):
    root, _, stats = reported
    app = typer.Typer()
    app.command()(command)
    out = tmp_path / "dask"
    result = CliRunner().invoke(app, [str(root), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "stats.json").read_text()) == stats


def test_card_documents_the_splits_and_leakage(reported, tmp_path):
    """Issue 17: each split's id list and shard files by sha256, the leakage check, BasicIRSTD's numbers."""
    import hashlib

    root, arrays, stats = reported
    card = (root / "report" / "README.md").read_text()
    manifest = json.loads((root / "manifest.json").read_text())
    for split in ("train", "test"):
        ids = "".join(f"{i}\n" for i in arrays[split][2]["sample_id"]).encode()
        assert f"| {split} | {len(arrays[split][2]['sample_id'])} | `{hashlib.sha256(ids).hexdigest()}` |" in card
        for entry in manifest["splits"][split]["shards"]:
            assert f"- {split}: `{entry['path']}` `{entry['sha256']}`" in card
    assert "sha256 as `manifest.json` records them" in card
    assert stats["leakage"]["checked"] == {"train": 12, "test": 2, "near_candidates": 4}
    assert stats["leakage"]["groups"] is None  # a dnanet source names no sequences
    assert "- sequences in both splits: not known" in card
    means = [arrays["train"][0][i].astype(np.float64).mean() for i in range(12)]
    assert stats["basicirstd_norm"]["mean"] == pytest.approx(np.mean(means), rel=1e-6)
    assert stats["basicirstd_norm"]["n_images"] == 12 and "--img_norm_cfg_mean " in card
    # a bare shard folder: no record of the checksums, and no manifest to say so
    bare = tmp_path / "bare"
    bare.mkdir()
    for p in root.glob("*.h5"):
        (bare / p.name).write_bytes(p.read_bytes())
    build_report(bare)
    bare_card = (bare / "report" / "README.md").read_text()
    assert "no manifest or stage record gives their sha256" in bare_card and "- train: `train-00000.h5`\n" in bare_card


def test_rerun_after_dvc_removed_some_of_its_files(reported, tmp_path):
    """DVC deletes a stage's declared outputs before it reruns it, and leaves undeclared ones:
    the report's own folder with some of its files gone is still its own, not a stranger's."""
    root, _, stats = reported
    app = typer.Typer()
    app.command()(command)
    out = tmp_path / "rep"
    first = CliRunner().invoke(app, [str(root / "manifest.json"), "--out", str(out)])
    assert first.exit_code == 0, first.output
    for name in ("stats.json", "README.md"):
        (out / name).unlink()
    again = CliRunner().invoke(app, [str(root / "manifest.json"), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "stats.json").read_text()) == stats
    # a file it did not write still makes the folder someone else's
    (out / "mine.txt").write_text("user data")
    refused = CliRunner().invoke(app, [str(root / "manifest.json"), "--out", str(out)])
    assert refused.exit_code == 2 and "--overwrite replaces it" in refused.output
    assert (out / "mine.txt").read_text() == "user data"
    # so does one of its files the user changed (another size)
    (out / "mine.txt").unlink()
    (out / "stats.json").write_text("{}")
    refused = CliRunner().invoke(app, [str(root / "manifest.json"), "--out", str(out)])
    assert refused.exit_code == 2
