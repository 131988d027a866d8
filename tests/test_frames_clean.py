"""A clean bank of real frames: scene runs in a frame folder, and no test image among the frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sirst5k.errors import InputError
from sirst5k.formats import shards
from sirst5k.formats.frames import (
    check_test_overlap,
    evaluation_images,
    list_sequences,
    pixel_hash,
    scene_runs,
    similarity,
    split_scene_runs,
    thumbnail,
)
from sirst5k.formats.imageio import read_grey, resize_image


def scene(seed: int, shape=(96, 128)) -> np.ndarray:
    """A smooth random scene (blobs), uint8."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 200, (6, 8)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize(shape[::-1], Image.Resampling.BICUBIC)).clip(0, 255).astype(np.uint8)


def noisy(img: np.ndarray, seed: int, sigma: float = 2.0) -> np.ndarray:
    return np.clip(img + np.random.default_rng(seed).normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def save(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def test_similarity_of_thumbnails():
    a = scene(0)
    assert similarity(thumbnail(a), thumbnail(noisy(a, 1))) > 0.99  # the same scene, fresh noise
    assert similarity(thumbnail(a), thumbnail(scene(5))) < 0.8  # another scene
    flat = np.full((64, 64), 90, np.uint8)
    assert not thumbnail(flat).any()
    assert similarity(thumbnail(flat), thumbnail(flat + 3)) == 1.0
    assert similarity(thumbnail(flat), thumbnail(a)) == 0.0


def test_scene_runs_split_at_cuts_and_size_changes():
    a, b = scene(0), scene(7)
    frames = [noisy(a, 1), noisy(a, 2), noisy(b, 3), noisy(b, 4), noisy(b, 5)[:64], noisy(b, 6)[:64]]
    run, corr = scene_runs(frames, 0.9)
    assert run.tolist() == [0, 0, 1, 1, 2, 2]
    assert corr[0] > 0.99 and corr[1] < 0.9 and np.isnan(corr[3])
    assert scene_runs(frames, 0.0)[0].tolist() == [0, 0, 0, 0, 1, 1]  # sizes still cut


def test_a_flat_folder_prefix_of_two_scenes_becomes_two_runs(tmp_path: Path):
    a, b = scene(0), scene(7)
    for i, img in enumerate([noisy(a, 1), noisy(a, 2), noisy(a, 3), noisy(b, 4), noisy(b, 5)]):
        save(tmp_path / f"cam-{i:03d}.png", img)
    save(tmp_path / "other" / "o-1.png", noisy(b, 9))
    save(tmp_path / "other" / "o-2.png", noisy(b, 10))
    seqs = list_sequences(tmp_path)
    split = split_scene_runs(seqs, 0.9)
    assert list(split) == ["cam-run1", "cam-run2", "other"]
    assert [p.name for p in split["cam-run1"]] == ["cam-000.png", "cam-001.png", "cam-002.png"]
    assert [p.name for p in split["cam-run2"]] == ["cam-003.png", "cam-004.png"]
    assert split["other"] == seqs["other"]  # one scene: the name is kept


def test_scene_split_and_unreadable_frames(tmp_path: Path):
    a = scene(0)
    for i in range(3):
        save(tmp_path / f"s-{i}.png", noisy(a, i))
    (tmp_path / "s-1.png").write_bytes(b"not a png")
    seqs = list_sequences(tmp_path)
    with pytest.raises(InputError, match="s-1.png"):
        split_scene_runs(seqs, 0.9)
    kept = split_scene_runs(seqs, 0.9, skip_bad=True)
    assert [p.name for p in kept["s"]] == ["s-0.png", "s-1.png", "s-2.png"]  # the task reports it later


def test_real_sirst_v2_folders_are_sparse_views(sirst_v2_frames):
    """What the 0.9 test makes of the real folders: most consecutive frames are other views."""
    seqs = list_sequences(sirst_v2_frames)
    runs = split_scene_runs({k: seqs[k] for k in ("TH", "S7")}, 0.9)
    th = [k for k in runs if k.startswith("TH")]
    assert len(runs["TH-run" + str(len(th))]) >= 8  # TH ends in one slow scene (correlations 0.93-1.00)
    assert sum(k.startswith("S7") for k in runs) >= 35  # S7's 42 frames are ~40 views


# ---------------------------------------------------------------- bank frames vs the test split


@pytest.fixture
def test_split(tmp_path: Path) -> list[Path]:
    return [save(tmp_path / "test" / f"t{i}.png", noisy(scene(20 + i, (80, 120)), i)) for i in range(3)]


def test_no_overlap_passes(tmp_path: Path, test_split):
    frames = [save(tmp_path / "frames" / f"f-{i}.png", noisy(scene(40 + i, (80, 120)), i)) for i in range(3)]
    assert check_test_overlap(frames, evaluation_images(test_split)) == []


def test_a_test_image_among_the_frames_is_an_error_naming_both(tmp_path: Path, test_split):
    copy = tmp_path / "frames" / "f-1.bmp"  # the same pixels, another encoding
    copy.parent.mkdir()
    Image.open(test_split[1]).save(copy)
    frames = [save(tmp_path / "frames" / "f-0.png", scene(50, (80, 120))), copy]
    with pytest.raises(InputError) as err:
        check_test_overlap(frames, evaluation_images(test_split))
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{copy}: is test image {test_split[1]} (the same pixels)")
    assert "--allow-overlap" in text
    warnings = check_test_overlap(frames, evaluation_images(test_split), allow=True)
    assert len(warnings) == 1 and warnings[0].startswith(f"{copy}: is test image {test_split[1]}")


def test_a_resized_copy_is_caught_both_ways(tmp_path: Path, test_split):
    big = resize_image(read_grey(test_split[2]), (160, 240))  # the frame is an enlarged copy
    frame = save(tmp_path / "frames" / "f-big.png", big)
    with pytest.raises(InputError, match="resized copy"):
        check_test_overlap([frame], evaluation_images(test_split))
    # a test split held as ingest shards: 64x64 squashed copies of the originals
    images = np.stack([resize_image(read_grey(p), 64) for p in test_split])
    meta = shards.new_meta(3)
    meta["sample_id"] = np.array(["t0", "t1", "t2"], dtype=object)
    folder = tmp_path / "shards"
    folder.mkdir()
    shards.write_shard(folder / shards.shard_name("test", 0), images, np.zeros_like(images), meta,
                       {"dataset": "ingest", "version": "x", "split": "test", "shard_index": 0, "n_shards": 1})
    original = save(tmp_path / "frames" / "f-orig.png", read_grey(test_split[0]))
    with pytest.raises(InputError) as err:
        check_test_overlap([original], evaluation_images(folder))
    assert f"is test image {folder / shards.shard_name('test', 0)}:t0 (a resized copy" in str(err.value)


def test_a_similar_but_other_scene_is_not_an_overlap(tmp_path: Path, test_split):
    # the same scene under other noise and a brightness shift of 10: not a copy
    other = np.clip(read_grey(test_split[0]).astype(int) + 10, 0, 255).astype(np.uint8)
    frame = save(tmp_path / "frames" / "f-shift.png", noisy(other, 99))
    assert check_test_overlap([frame], evaluation_images(test_split)) == []


def test_pixel_hash_and_test_set_errors(tmp_path: Path):
    a = scene(1)
    assert pixel_hash(a) == pixel_hash(a.copy()) != pixel_hash(a.T.copy())
    with pytest.raises(InputError, match="test set not found"):
        list(evaluation_images(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no test shard and no image"):
        list(evaluation_images(tmp_path / "empty"))
