"""Train/test leakage (issue 17): the hashes and the rule alone, then through `sirst5k verify` and
the report on a small published-like dataset with known duplicates and shared sequences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sirst5k import PRODUCER
from sirst5k.formats.manifest import write_json_atomic
from sirst5k.formats.shards import new_meta, write_shard
from sirst5k.method import duplicates as D
from sirst5k.stages.cli import app
from sirst5k.verify import manifest_version, verify_dataset, verify_manifest

S = 64


def textured(seed: int, base: float = 100.0, amp: float = 40.0) -> np.ndarray:
    """A cloud-like image: smooth random texture (blocks of noise, upsampled) plus sensor noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, 1, (8, 8))
    field = np.kron(coarse, np.ones((S // 8, S // 8)))
    kernel = np.ones(5) / 5
    for axis in (0, 1):
        field = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), axis, field)
    image = base + amp * field / field.std() + rng.normal(0, 1, (S, S))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- pure functions


def test_content_hash_sees_every_pixel_and_the_shape():
    a = textured(1)
    b = a.copy()
    b[5, 7] ^= 1
    hashes = D.content_hashes(np.stack([a, a, b]))
    assert hashes[0] == hashes[1] != hashes[2] and len(hashes[0]) == 64
    flat = np.zeros((1, 4, 8), np.uint8)
    assert D.content_hashes(flat) != D.content_hashes(flat.reshape(1, 8, 4))


def test_dhash_bits():
    ramp = np.tile(np.arange(S, dtype=np.uint8), (S, 1))[None]  # brighter to the right everywhere
    assert int(D.dhash(ramp)[0]) == 2**64 - 1
    assert int(D.dhash(ramp[:, :, ::-1].copy())[0]) == 0
    one = np.zeros((1, 16, 18), np.uint8)
    one[0, 0:2, 2:4] = 9  # block (0, 1) of the 8x9 grid is brighter than block (0, 0): the first bit
    assert int(D.dhash(one)[0]) == 1 << 63
    assert D.hamming(np.array([0, 7], np.uint64), np.array([1, 2**64 - 1], np.uint64)).tolist() == [[1, 64], [2, 61]]


def test_area_means_and_thumbnails():
    images = np.arange(2 * 6 * 4, dtype=np.uint8).reshape(2, 6, 4)
    means = D.area_means(images, 3, 2)
    assert means[0, 0, 0] == images[0, :2, :2].mean() and means[1, 2, 1] == images[1, 4:, 2:].mean()
    assert D.thumbnails(np.zeros((3, 40, 40), np.uint8)).shape == (3, 256)
    with pytest.raises(ValueError, match="smaller"):
        D.area_means(images, 8, 8)


def test_area_means_of_integer_images_are_the_float64_means_bit_for_bit():
    """Integer pixels are summed as integers (faster); the means must be the float64 ones exactly,
    so fingerprints and the bank's overlap check do not change."""
    rng = np.random.default_rng(2)
    for dtype, top in ((np.uint8, 256), (np.uint16, 65536)):
        images = rng.integers(0, top, (3, 101, 77)).astype(dtype)
        re_, ce = (np.arange(10) * 101) // 9, (np.arange(9) * 77) // 8
        sums = np.add.reduceat(np.add.reduceat(images.astype(np.float64), re_[:-1], axis=1), ce[:-1], axis=2)
        want = sums / (np.diff(re_)[:, None] * np.diff(ce)[None, :])
        got = D.area_means(images, 9, 8)
        assert got.dtype == np.float64 and np.array_equal(got, want)


def test_thumb_similarity():
    a = D.thumbnails(textured(2)[None]).astype(np.float64)
    corr, ratio = D.thumb_similarity(a, np.concatenate([a * 1.5 + 10, np.full_like(a, 3), a]))
    assert corr[0].tolist() == pytest.approx([1.0, 0.0, 1.0]) and ratio[0, 0] == pytest.approx(1.5)
    flat = np.full((2, 256), 5.0)
    flat[1] = 6
    corr, ratio = D.thumb_similarity(flat[:1], flat)
    assert corr.tolist() == [[1.0, 0.0]] and ratio.tolist() == [[1.0, 1.0]]


def test_near_rule_finds_altered_copies_and_not_other_images():
    rng = np.random.default_rng(0)
    originals = np.stack([textured(s) for s in range(20)])
    copies = {
        "noise": np.clip(originals + rng.normal(0, 3, originals.shape), 0, 255),
        "agc": np.clip((originals - 100.0) * 1.15 + 112, 0, 255),
        "shift": np.roll(originals, 1, axis=2),
    }
    train = {"ids": [f"t{i}" for i in range(20)], "source_ids": [f"t{i}" for i in range(20)],
             "kinds": ["original"] * 20, **D.fingerprints(originals)}
    for name, copy in copies.items():
        copy = np.rint(copy).astype(np.uint8)
        test = {"ids": [f"c{i}" for i in range(20)], "source_ids": [f"c{i}" for i in range(20)],
                "kinds": ["original"] * 20, **D.fingerprints(copy)}
        leak = D.find_leakage(train, test)
        assert all(p[0][1:] == p[1][1:] for p in leak["near"]["list"]), f"{name}: an unrelated image matched"
        assert leak["near"]["test_images"] >= 19, name
        assert leak["exact"]["pairs"] == 0


def test_a_shared_brightness_ramp_alone_is_not_a_near_duplicate():
    """The vignetted frame and the flat sky: same dHash, rejected by the thumbnail check."""
    y, x = np.mgrid[0:S, 0:S]
    ramp = 60 + 2.5 * x  # strong ramp
    faint = 120 + 0.1 * x + np.random.default_rng(1).normal(0, 0.5, (S, S))  # nearly flat, same direction
    a, b = (np.clip(np.rint(v), 0, 255).astype(np.uint8)[None] for v in (ramp, faint))
    assert D.hamming(D.dhash(a), D.dhash(b))[0, 0] <= D.NEAR_HAMMING
    fa, fb = D.fingerprints(a), D.fingerprints(b)
    leak = D.find_leakage({"ids": ["a"], "source_ids": ["a"], "kinds": ["original"], **fa},
                          {"ids": ["b"], "source_ids": ["b"], "kinds": ["original"], **fb})
    assert leak["near"]["pairs"] == 0


def test_sequence_groups():
    g = D.sequence_group
    assert g("sirst-v2", "20210725-S1-161") == "20210725-S1" and g("sirst-v2", "S7_30") == "S7"
    assert g("sirst-v2", "S20210303_S3_146") == "S20210303_S3" and g("sirst-v2", "foo-00112") == "foo"
    assert g("sirst-v2", "Misc_3") is None and g("sirst-v2", "target") is None
    assert g("dnanet", "20210725-S1-161") is None and g(None, "S7_30") is None
    shared = D.shared_groups("sirst-v2", ["S7_1", "S7_2", "S8_1", "Misc_1"], ["S7_9", "S9_1", "Misc_2"])
    assert shared == {"layout": "sirst-v2", "groups_train": 2, "groups_test": 2, "in_both": 1,
                      "list": [{"group": "S7", "train": 2, "test": 1}]}
    assert D.shared_groups("dnanet", ["S7_1"], ["S7_2"]) is None


def test_exact_matches_every_train_sample_and_lists_are_capped():
    img = textured(5)[None]
    other = textured(6)[None]
    train = D.concat_fingerprints([
        {"ids": ["o"], "source_ids": ["o"], "kinds": ["original"], **D.fingerprints(img)},
        {"ids": ["n1", "n2"], "source_ids": ["o", "o"], "kinds": ["negative"] * 2,
         **D.fingerprints(np.concatenate([img, other]), np.array([False, False]))},
    ])
    assert train["rows"].tolist() == [0] and train["sha256"][1] == train["sha256"][0]
    test = {"ids": ["t"], "source_ids": ["t"], "kinds": ["original"], **D.fingerprints(img)}
    leak = D.find_leakage(train, test)
    assert leak["exact"] == {"pairs": 2, "test_images": 1, "list": [["t", "o"], ["t", "n1"]]}
    assert leak["near"]["pairs"] == 0, "an exact pair is not also listed as near"
    assert D.find_leakage(train, test, limit=1)["exact"]["list"] == [["t", "o"]]
    assert D.leakage_warnings(leak) == ["1 test image(s) have an exact duplicate in train (2 pair(s)), e.g. t ~ o, t ~ n1"]
    assert D.near_kind({"original": 3, "negative": 9}) == "original" and D.near_kind({"negative": 9}) is None


# ---------------------------------------------------------------- through verify and the report


def publish_like(root: Path, layout: str = "sirst-v2") -> Path:
    """A dataset folder that verifies: train = originals S1_1..S1_3, Misc_1 + one negative; test =
    an exact copy of S1_1 (as S1_9), a noisy copy of Misc_1 (as Misc_2), an unrelated S2_1."""
    rng = np.random.default_rng(0)
    train_imgs = [textured(10), textured(11), textured(12), textured(13, base=80)]
    neg = train_imgs[0].copy()
    neg[:8, :8] = neg[:8, :8][::-1].copy()
    noisy = np.clip(np.rint(train_imgs[3] + rng.normal(0, 2, (S, S))), 0, 255).astype(np.uint8)
    splits = {
        "train": (["S1_1", "S1_2", "S1_3", "Misc_1", "S1_1-neg"], ["S1_1", "S1_2", "S1_3", "Misc_1", "S1_1"],
                  ["original"] * 4 + ["negative"], np.stack([*train_imgs, neg])),
        "test": (["S1_9", "Misc_2", "S2_1"], ["S1_9", "Misc_2", "S2_1"], ["original"] * 3,
                 np.stack([train_imgs[0], noisy, textured(20)])),
    }
    manifest = {"schema_version": 1, "name": "leaky", "producer": PRODUCER, "dataset_dir": ".",
                "params": {}, "inputs": {"source": {"path": "data/sirst-v2", "layout": layout}}, "splits": {}}
    manifest["version"] = manifest_version(manifest)
    for split, (ids, sources, kinds, images) in splits.items():
        meta = new_meta(len(ids))
        meta["sample_id"][:], meta["source_id"][:], meta["kind"][:] = ids, sources, kinds
        masks = np.zeros_like(images)
        info = write_shard(root / f"{split}-00000.h5", images, masks, meta,
                           {"dataset": "leaky", "version": manifest["version"], "split": split, "shard_index": 0,
                            "n_shards": 1})
        counts = {k: kinds.count(k) for k in ("original", "transfer", "negative")}
        manifest["splits"][split] = {"n_samples": len(ids), "kinds": counts, "shards": [
            {"path": Path(info.path).name, "sha256": info.sha256, "n_samples": len(ids)}]}
    write_json_atomic(root / "manifest.json", manifest)
    return root / "manifest.json"


def test_verify_warns_about_leakage_and_passes(tmp_path):
    manifest = publish_like(tmp_path / "ds")
    assert verify_manifest(manifest) == [], "leakage is no problem: publish's verify still passes"
    found = verify_dataset(manifest)
    assert found.problems == []
    leak = found.leakage
    # the negative differs from S1_1 in its box: not exact, and negatives are no near candidates
    assert leak["exact"] == {"pairs": 1, "test_images": 1, "list": [["S1_9", "S1_1"]]}
    assert [p[:2] for p in leak["near"]["list"]] == [["Misc_2", "Misc_1"]]
    assert leak["checked"] == {"train": 5, "test": 3, "near_candidates": 4}
    assert leak["groups"]["list"] == [{"group": "S1", "train": 4, "test": 1}]
    result = CliRunner().invoke(app, ["verify", str(manifest)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 3 and all("leakage" in w for w in warnings)
    assert "S1_9 ~ S1_1" in warnings[0] and "Misc_2 ~ Misc_1" in warnings[1] and "S1" in warnings[2]
    assert "1 test image(s) with an exact duplicate in train, 1 with a near duplicate, 1 sequence(s) in both" \
        in result.stdout
    quiet = CliRunner().invoke(app, ["verify", str(manifest), "--no-leakage"])
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr and "leakage" not in quiet.stdout


def test_verify_without_sequence_names(tmp_path):
    manifest = publish_like(tmp_path / "ds", layout="dnanet")
    leak = verify_dataset(manifest).leakage
    assert leak["groups"] is None and leak["exact"]["test_images"] == 1
    result = CliRunner().invoke(app, ["verify", str(manifest)])
    assert result.exit_code == 0 and "in both splits" not in result.stdout


def test_report_shows_leakage_split_hashes_and_normalisation(tmp_path):
    import hashlib

    from sirst5k.export import export_dataset
    from sirst5k.report.build import build_report

    manifest = publish_like(tmp_path / "ds")
    stats = build_report(manifest, tmp_path / "report")
    assert stats["leakage"] == verify_dataset(manifest).leakage
    on_disk = json.loads((tmp_path / "report" / "stats.json").read_text())
    assert on_disk["leakage"]["near"]["list"][0][:2] == ["Misc_2", "Misc_1"]
    card = (tmp_path / "report" / "README.md").read_text()
    assert "| `S1_9` | `S1_1` | exact |" in card and "| `Misc_2` | `Misc_1` | near (dHash" in card
    assert "`S1` (4 train / 1 test)" in card
    # the id lists' hashes are those of the exported index files; the shard files' of the manifest
    export_dataset(manifest, tmp_path / "leaky", layout="basicirstd")
    for split in ("train", "test"):
        digest = hashlib.sha256((tmp_path / "leaky" / "img_idx" / f"{split}_leaky.txt").read_bytes()).hexdigest()
        assert f"| {split} | " in card and f"`{digest}`" in card
        entry = json.loads(manifest.read_text())["splits"][split]["shards"][0]
        assert f"- {split}: `{entry['path']}` `{entry['sha256']}`" in card
    # BasicIRSTD's normalisation, the same numbers the export writes
    cfg = json.loads((tmp_path / "leaky" / "img_norm_cfg.json").read_text())
    assert stats["basicirstd_norm"] == {"mean": cfg["mean"], "std": cfg["std"], "split": "train", "n_images": 5}
    assert f"--img_norm_cfg_mean {cfg['mean']!r} --img_norm_cfg_std {cfg['std']!r}" in card
