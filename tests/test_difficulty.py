"""Difficulty tags (issue 17): size, local contrast, SCR and their bins; in shards, loader, stats, pipeline."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from sirst5k.formats import shards
from sirst5k.loader import ShardDataset
from sirst5k.method import difficulty as D
from sirst5k.report import stats
from sirst5k.stages.cli import app

ATTRS = {"dataset": "t", "version": "0", "split": "train", "shard_index": 0, "n_shards": 1}


def checker(h: int, w: int, level: float = 100.0, amp: float = 4.0) -> np.ndarray:
    """A background of mean `level` and std exactly `amp` over any region holding as many pixels
    of each parity."""
    yy, xx = np.mgrid[:h, :w]
    return np.where((yy + xx) % 2 == 0, level + amp, level - amp)


# ---------------------------------------------------------------- the math, on known answers


@pytest.mark.parametrize("peak,contrast,scr,bin_", [(130, 30.0, 7.5, "mid"), (150, 50.0, 12.5, "high"),
                                                      (110, 10.0, 2.5, "low"), (90, -10.0, -2.5, "low")])
def test_a_3x3_target_on_a_known_background(peak, contrast, scr, bin_):
    image = checker(48, 48)
    mask = np.zeros((48, 48), np.uint8)
    image[20:23, 20:23] = peak
    mask[20:23, 20:23] = 255
    t = D.target_difficulty(image[None].astype(np.uint8), mask[None])
    assert len(t["row"]) == 1
    assert (t["row"][0], t["label"][0], t["area"][0], t["y"][0], t["x"][0]) == (0, 1, 9, 21.0, 21.0)
    # ring: chessboard distance 3..7 from the target = 17x17 minus 7x7 = 240 pixels, 120 of each parity
    assert t["ring_pixels"][0] == 240
    assert t["target_mean"][0] == peak and t["ring_mean"][0] == 100.0 and t["ring_std"][0] == 4.0
    assert t["contrast"][0] == contrast and t["scr"][0] == scr
    assert (t["size_bin"][0], t["scr_bin"][0]) == ("tiny", bin_)


def test_std_floor_border_and_other_targets():
    image = np.full((1, 40, 40), 50, np.uint8)
    mask = np.zeros((1, 40, 40), np.uint8)
    image[0, 0:2, 0:2], mask[0, 0:2, 0:2] = 80, 255  # in the corner: the ring is clipped
    image[0, 20:23, 20:23], mask[0, 20:23, 20:23] = 90, 255
    image[0, 20:23, 26:29], mask[0, 20:23, 26:29] = 250, 255  # a bright neighbour 3 px to the right
    t = D.target_difficulty(image, mask)
    assert list(t["area"]) == [4, 9, 9] and list(t["label"]) == [1, 2, 3]
    # flat background: std 0, floored at STD_FLOOR = 1 grey level
    assert list(t["ring_std"]) == [0.0, 0.0, 0.0]
    assert list(t["scr"]) == [30.0 / D.STD_FLOOR, 40.0, 200.0]
    # corner: (2 + 7)^2 square minus (2 + 2)^2 = 81 - 16
    assert t["ring_pixels"][0] == 65
    # the neighbour and its 2-px guard are not in the ring: the ring mean stays the background's
    assert t["ring_mean"][1] == 50.0 and t["ring_pixels"][1] < 240
    ring = (ndimage.distance_transform_cdt(mask[0] == 0, metric="chessboard") > 2)  # reference, whole image
    assert t["ring_pixels"][1] == int((ring & _within(mask[0], 20, 20, 7)).sum())


def _within(mask: np.ndarray, y: int, x: int, d: int) -> np.ndarray:
    lab, _ = ndimage.label(mask != 0, structure=np.ones((3, 3)))
    own = lab == lab[y, x]
    return ndimage.distance_transform_cdt(~own, metric="chessboard") <= d


def test_bins_and_edges():
    assert list(D.size_bin([0, 1, 9, 10, 36, 37, 81, 82, 4000])) == \
        ["", "tiny", "tiny", "small", "small", "medium", "medium", "large", "large"]
    assert list(D.scr_bin([-5.0, 2.999, 3.0, 9.999, 10.0, float("nan")])) == ["low", "low", "mid", "mid", "high", ""]


def test_per_sample_tags_are_the_hardest_targets():
    image = checker(40, 40)[None].repeat(3, axis=0)
    mask = np.zeros((3, 40, 40), np.uint8)
    image[0, 5:8, 5:8], mask[0, 5:8, 5:8] = 150, 255  # 9 px, SCR 12.5
    image[0, 20:30, 20:30], mask[0, 20:30, 20:30] = 108, 255  # 100 px, SCR 2
    image[2, 10:16, 10:16], mask[2, 10:16, 10:16] = 140, 255  # 36 px, SCR 10
    table, sample = D.difficulty(image.astype(np.uint8), mask)
    assert list(table["row"]) == [0, 0, 2]
    assert list(sample["min_target_area"]) == [9, -1, 36]
    assert list(sample["size_bin"]) == ["tiny", "", "small"]
    assert sample["min_scr"][0] == 2.0 and math.isnan(sample["min_scr"][1]) and sample["min_scr"][2] == 10.0
    assert list(sample["scr_bin"]) == ["low", "", "high"]
    assert list(sample["min_contrast"][[0, 2]]) == [8.0, 40.0]


# ---------------------------------------------------------------- shards: written, copied, old ones read


def toy(n: int = 6, seed: int = 0):
    gen = np.random.default_rng(seed)
    images = gen.normal(90, 6, (n, 40, 40))
    masks = np.zeros((n, 40, 40), np.uint8)
    for i in range(n):
        for _ in range(i % 3):
            y, x = gen.integers(2, 34, 2)
            s = int(gen.integers(1, 6))
            images[i, y:y + s, x:x + s] += gen.uniform(5, 80)
            masks[i, y:y + s, x:x + s] = 255
    meta = shards.new_meta(n)
    meta["sample_id"][:] = [f"s{seed}-{i}" for i in range(n)]
    meta["kind"][:] = "original"
    return images.clip(0, 255).astype(np.uint8), masks, meta


def make_old(src: Path, dst: Path) -> Path:
    """A copy of a shard as written before the tags: no /targets, no difficulty meta."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        del f["targets"]
        for name in shards.DIFFICULTY_FIELDS:
            del f["meta"][name]
    return dst


def test_the_writer_computes_the_tags_whatever_the_caller_passed(tmp_path):
    images, masks, meta = toy()
    meta["size_bin"][:] = "large"  # stale values from an input shard are replaced
    meta["min_scr"][:] = 99.0
    info = shards.write_shard(tmp_path / "a.h5", images, masks, meta, ATTRS)
    table, sample = D.difficulty(images, masks)
    got = shards.read_meta(info.path)
    for name in shards.DIFFICULTY_FIELDS:
        np.testing.assert_array_equal(got[name], sample[name])
    stored = shards.read_targets(info.path, compute_missing=False)
    for name in D.TARGET_COLUMNS:
        np.testing.assert_array_equal(stored[name], table[name])
    with h5py.File(info.path) as f:
        assert json.loads(f["targets"].attrs["definition"]) == D.definition()
    # a caller's meta without the difficulty fields is accepted, and gives the same bytes
    bare = {k: v for k, v in toy()[2].items() if k not in shards.DIFFICULTY_FIELDS}
    assert shards.write_shard(tmp_path / "b.h5", images, masks, bare, ATTRS).sha256 == info.sha256


def test_old_shards_read_copy_and_are_not_reused(tmp_path):
    images, masks, meta = toy()
    new = shards.write_shard(tmp_path / "new.h5", images, masks, meta, {**ATTRS, "task_key": "k"})
    old = make_old(Path(new.path), tmp_path / "old.h5")
    plain = shards.read_meta(old)
    assert list(plain["size_bin"]) == [""] * 6 and (plain["min_target_area"] == -1).all()
    assert np.isnan(plain["min_scr"]).all()
    full = shards.read_meta(old, compute_missing=True)
    for name in shards.DIFFICULTY_FIELDS:
        np.testing.assert_array_equal(full[name], shards.read_meta(new.path)[name])
    assert not shards.has_targets(old) and shards.has_targets(new.path)
    assert shards.read_targets(old, compute_missing=False) is None
    np.testing.assert_array_equal(shards.read_targets(old)["scr"], shards.read_targets(new.path)["scr"])
    # a finished shard without the tags is redone, not reused
    assert shards.is_complete(new.path, "k") and not shards.is_complete(old, "k")
    # copy_rows (publish's fast path) from an old and a new shard gives the bytes write_shard gives
    pieces = [(old, 1, 5), (new.path, 0, 3)]
    rows = shards.concat_meta(shards.take_meta(shards.read_meta(p), slice(a, b)) for p, a, b in pieces)
    copied = shards.copy_rows(tmp_path / "c.h5", pieces, rows, ATTRS)
    idx = [1, 2, 3, 4, 0, 1, 2]
    written = shards.write_shard(tmp_path / "w.h5", images[idx], masks[idx], rows, ATTRS)
    assert copied.sha256 == written.sha256


# ---------------------------------------------------------------- stats counts


def test_stats_count_samples_and_targets_per_bin(tmp_path):
    images, masks, meta = toy(9)
    meta["kind"][6:] = "negative"
    new = shards.write_shard(tmp_path / "train-00000.h5", images, masks, meta, ATTRS)
    old = make_old(Path(new.path), tmp_path / "old.h5")
    table, sample = D.difficulty(images, masks)
    summaries = {p: stats.summarize_shard(str(p), "train") for p in (new.path, old)}
    # a shard without tags counts the same, from its pixels
    assert summaries[new.path]["kinds"] == summaries[old]["kinds"]
    result = stats.compute_stats(stats.merge_summaries([summaries[new.path]]))["difficulty"]
    assert set(result) == {"definition", "splits", "total"}
    assert result["definition"]["size_bins"]["tiny"] == "<= 9 px" and result["definition"]["scr_bins"]["low"] == "< 3"
    for kind, rows in (("original", slice(0, 6)), ("negative", slice(6, 9))):
        got = result["splits"]["train"][kind]
        sel = np.zeros(9, bool)
        sel[rows] = True
        for field, names in (("size_bin", D.SIZE_BINS), ("scr_bin", D.SCR_BINS)):
            want = {b: int((sample[field][sel] == b).sum()) for b in names}
            want["none"] = int((sample[field][sel] == "").sum())
            assert got["samples"][field] == want
            tsel = sel[table["row"]]
            want_t = {b: int((table[field][tsel] == b).sum()) for b in names}
            want_t["none"] = int((table[field][tsel] == "").sum())
            assert got["targets"][field] == want_t
        assert sum(got["samples"]["size_bin"].values()) == int(sel.sum())
    assert sum(result["total"]["targets"]["scr_bin"].values()) == len(table["row"])


# ---------------------------------------------------------------- loader selection on real SIRST v1


def reference_tags(image: np.ndarray, mask: np.ndarray) -> list[tuple[int, float]]:
    """(area, SCR) of each target by the module doc's definition, on whole-image distance transforms."""
    lab, n = ndimage.label(mask != 0, structure=np.ones((3, 3)))
    near_any = ndimage.distance_transform_cdt(mask == 0, metric="chessboard") <= D.GUARD
    out = []
    for j in range(1, n + 1):
        own = lab == j
        dist = ndimage.distance_transform_cdt(~own, metric="chessboard")
        ring = (dist <= D.GUARD + D.RING) & ~near_any
        v = image[ring].astype(np.float64)
        scr = (image[own].mean() - v.mean()) / max(v.std(), D.STD_FLOOR) if v.size else float("nan")
        out.append((int(own.sum()), float(scr)))
    return out


@pytest.fixture(scope="module")
def sirst_shards(tmp_path_factory):
    from conftest import require_data

    source = require_data("sirst")
    out = tmp_path_factory.mktemp("sirst") / "ingest"
    r = CliRunner().invoke(app, ["ingest", str(source), "--out", str(out), "--size", "256", "--workers", "1"])
    assert r.exit_code == 0, r.output
    return out


def test_loader_selects_a_tiny_low_scr_subset_of_sirst(sirst_shards):
    split = "train"  # 341 images, 424 targets: 45 samples with a tiny target, 22 with a low-SCR one, 5 both
    full = ShardDataset(sirst_shards, split=split, dtype="uint8")
    qualifies, tiny, scr_of = [], [], []
    for i in range(len(full)):
        image, mask = full.read_uint8(i)
        tags = reference_tags(image[0], mask[0])
        qualifies.append(any(a <= 9 for a, _ in tags) and any(s < 3 for _, s in tags))
        tiny.append(any(a <= 9 for a, _ in tags))
        scr_of.append(min((s for _, s in tags if not math.isnan(s)), default=float("nan")))
    hard = ShardDataset(sirst_shards, split=split, select={"size_bin": ["tiny"], "scr_bin": ["low"]}, return_meta=True)
    assert 0 < len(hard) < len(full)
    np.testing.assert_array_equal(hard.indices, np.flatnonzero(qualifies))  # every one, and only those
    for j in range(len(hard)):
        image, mask, meta = hard[j]
        assert meta["size_bin"] == "tiny" and meta["scr_bin"] == "low" and meta["min_target_area"] <= 9
        assert meta["sample_id"] == full.sample_meta(int(hard.indices[j]))["sample_id"]
    # SCRs agree with the reference to rounding
    np.testing.assert_allclose(full.meta["min_scr"], scr_of, rtol=1e-12, atol=1e-12)
    # ranges select as the bins do
    ranged = ShardDataset(sirst_shards, split=split, select={"min_target_area": {"min": 1, "max": 9}})
    np.testing.assert_array_equal(ranged.indices, np.flatnonzero(tiny))
    low = ShardDataset(sirst_shards, split=split, select={"min_scr": {"max": 2.9999999}})
    assert set(low.indices) == {i for i, s in enumerate(scr_of) if s < 3}
    with pytest.raises(ValueError, match="not a meta field"):
        ShardDataset(sirst_shards, split=split, select={"snr": ["low"]})
    with pytest.raises(ValueError, match="a range is"):
        ShardDataset(sirst_shards, split=split, select={"min_scr": {"below": 3}})


def test_loader_selection_computes_tags_of_old_shards(tmp_path):
    images, masks, meta = toy(8)
    folder = tmp_path / "ds"
    folder.mkdir()
    new = shards.write_shard(tmp_path / "train-00000.h5", images, masks, meta, ATTRS)
    make_old(Path(new.path), folder / "train-00000.h5")
    want = ShardDataset(tmp_path, select={"size_bin": ["tiny", "small"]}).indices
    got = ShardDataset(folder, select={"size_bin": ["tiny", "small"]})
    assert len(want) and list(got.indices) == list(want)
    assert len(ShardDataset(folder, select={"size_bin": [""]})) == int((masks.reshape(8, -1).max(1) == 0).sum())


# ---------------------------------------------------------------- every stage's shards carry them


def test_tags_survive_transfer_negatives_and_publish(tmp_path):
    from sirst5k.verify import verify_manifest

    runner = CliRunner()

    def sirst5k(*args):
        r = runner.invoke(app, [str(a) for a in args])
        assert r.exit_code == 0, r.output

    out = tmp_path / "output"
    sirst5k("synth", out, "--images", 12, "--sequences", 2, "--frames", 4, "--size", 96, "--workers", 1)
    sirst5k("ingest", out / "source", "--out", out / "ingest", "--size", 96, "--shard-size", 4, "--workers", 1)
    sirst5k("noise-bank", out / "frames", "--out", out / "noise_bank.h5", "--workers", 1)
    sirst5k("transfer", out / "ingest", "--noise-bank", out / "noise_bank.h5", "--out", out / "transfer",
            "--device", "cpu", "--workers", 1)
    sirst5k("negatives", out / "transfer", "--out", out / "negatives", "--device", "cpu", "--workers", 1)
    manifest = tmp_path / "manifests" / "sirst5k.json"
    sirst5k("publish", "--ingest", out / "ingest", "--negatives", out / "negatives", "--transfer", out / "transfer",
            "--out", out / "sirst5k", "--manifest", manifest, "--shard-size", 10, "--workers", 1)
    kinds = set()
    for stage in ("ingest", "transfer", "negatives", "sirst5k"):
        paths = shards.list_shards(out / stage)
        assert paths, stage
        for path in paths:
            images, masks, meta = shards.read_shard(path)
            kinds.update(meta["kind"])
            table, sample = D.difficulty(images, masks)  # what the pixels say
            stored = shards.read_targets(path, compute_missing=False)
            assert stored is not None, path
            for name in D.TARGET_COLUMNS:
                np.testing.assert_array_equal(stored[name], table[name], err_msg=f"{path}: {name}")
            for name in shards.DIFFICULTY_FIELDS:
                np.testing.assert_array_equal(meta[name], sample[name], err_msg=f"{path}: {name}")
    assert kinds == {"original", "transfer", "negative"}
    assert verify_manifest(manifest) == []
    # verify notices tags that disagree with the masks
    first = shards.list_shards(out / "sirst5k", "train")[0]
    with h5py.File(first, "r+") as f:
        area = f["targets/area"][()]
        area[0] += 1
        f["targets/area"][...] = area
        f["meta/size_bin"][0] = "large"
    problems = verify_manifest(manifest)
    assert any("areas differ from the masks' targets" in p for p in problems), problems
    assert any("meta size_bin differs" in p for p in problems), problems
