"""formats.layouts and formats.frames: labelled datasets and frame folders as they are published."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sirst5k.errors import InputError
from sirst5k.formats.frames import frame_sizes, list_sequences, split_frame_name
from sirst5k.formats.layouts import (
    LAYOUT_CHOICES,
    LAYOUTS,
    REGISTRY,
    LabelledSet,
    SampleRef,
    detect_layout,
    list_labelled,
    load_sample,
    read_split_list,
    seeded_split,
    unlisted_note,
)

H, W = 10, 14


def _write_image(path: Path, value: int = 90, size: tuple[int, int] = (H, W)) -> Path:
    """RGB-encoded grey whose channels differ a little, as most real SIRST images are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    g = (np.arange(h * w).reshape(h, w) % 50 + value).astype(np.int16)
    rgb = np.stack([g, g + 1, g - 1], axis=2).clip(0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def _write_mask(path: Path, size: tuple[int, int] = (H, W), at: tuple[int, int] | None = (3, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros(size, np.uint8)
    if at is not None:
        m[at[0] : at[0] + 2, at[1] : at[1] + 2] = 255
    Image.fromarray(m).save(path)
    return path


def _write_list(path: Path, ids: list[str], crlf: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    end = "\r\n" if crlf else "\n"
    path.write_bytes(end.join(ids).encode())  # no final newline, as in SIRST's idx_427
    return path


def _pairs(root: Path, ids: list[str], mask_suffix: str = "", images: str = "images", masks: str = "masks") -> None:
    for i, sample_id in enumerate(ids):
        _write_image(root / images / f"{sample_id}.png", value=20 + 10 * i)
        _write_mask(root / masks / f"{sample_id}{mask_suffix}.png")


TRAIN = ["000010", "000002", "000007"]
TEST = ["000001", "000005"]


def make_dnanet(root: Path, train=TRAIN, test=TEST) -> Path:
    _pairs(root, TRAIN + TEST)  # lists may name ids that have no files
    _write_list(root / "50_50" / "train.txt", train, crlf=True)
    _write_list(root / "50_50" / "test.txt", test, crlf=True)
    return root


def make_basicirstd(root: Path, name: str = "NUDT-SIRST") -> Path:
    root = root / name
    _pairs(root, TRAIN + TEST)
    _write_list(root / "img_idx" / f"train_{name}.txt", TRAIN)
    _write_list(root / "img_idx" / f"test_{name}.txt", TEST)
    return root


def make_sirst(root: Path) -> Path:
    ids = [f"Misc_{i}" for i in range(1, 8)]
    _pairs(root, ids, mask_suffix="_pixels0")
    _write_list(root / "idx_427" / "train.txt", ids[:3])
    _write_list(root / "idx_427" / "val.txt", ids[3:5])
    _write_list(root / "idx_427" / "trainval.txt", ids[:5])
    _write_list(root / "idx_427" / "test.txt", ids[5:])
    _write_list(root / "idx_427" / "trainvaltest.txt", ids)
    return root


def make_sirst_v2(root: Path) -> Path:
    targets = ["Misc_3", "S20210303_S3_146", "foo-00112"]
    backgrounds = ["20210725-S1-161", "S7_30"]
    _pairs(root, targets, "_pixels0", images="images/targets", masks="annotations/masks")
    _pairs(root, backgrounds, "_pixels0", images="images/backgrounds", masks="annotations/masks")
    (root / "annotations" / "masks" / "Misc_3.xml").write_text("<annotation/>")
    (root / "annotations" / "bboxes").mkdir(parents=True)
    _write_list(root / "splits" / "trainval_full.txt", ["S7_30", "Misc_3", "S20210303_S3_146"])
    _write_list(root / "splits" / "test_full.txt", ["foo-00112", "20210725-S1-161"])
    _write_list(root / "splits" / "mini_trainval.txt", ["Misc_3"])
    _write_list(root / "splits" / "mini_test.txt", ["S7_30"])
    _write_list(root / "splits" / "v2background.txt", backgrounds)
    return root


def make_folder(root: Path, n: int = 9, mask_suffix: str = "") -> Path:
    _pairs(root, [f"img{i}" for i in range(n)], mask_suffix)
    return root


def _one_line_naming(err: InputError, path: Path) -> str:
    text = str(err)
    assert "\n" not in text and "\r" not in text
    assert str(path) in text
    return text


# ------------------------------------------------------------------ detection


@pytest.mark.parametrize(
    "builder,layout",
    [(make_dnanet, "dnanet"), (make_basicirstd, "basicirstd"), (make_sirst, "sirst"), (make_sirst_v2, "sirst-v2"), (make_folder, "folder")],
)
def test_detect_each_layout(tmp_path, builder, layout):
    root = builder(tmp_path / "ds")
    assert detect_layout(root) == layout
    listed = list_labelled(root)
    assert listed.layout == layout and listed.problems == []
    assert {s.split for s in listed.samples} == {"train", "test"}
    for s in listed.samples:
        assert s.image.is_file() and s.mask is not None and s.mask.is_file()


def test_folder_with_pixels0_masks(tmp_path):
    root = make_folder(tmp_path / "ds", mask_suffix="_pixels0")
    assert detect_layout(root) == "folder"
    assert all(s.mask.name.endswith("_pixels0.png") for s in list_labelled(root).samples)


def test_ambiguous_layout_names_both_and_the_option(tmp_path):
    root = make_dnanet(tmp_path / "ds")
    _write_list(root / "img_idx" / "train_ds.txt", TRAIN)
    _write_list(root / "img_idx" / "test_ds.txt", TEST)
    with pytest.raises(InputError) as info:
        detect_layout(root)
    text = _one_line_naming(info.value, root)
    assert "dnanet" in text and "basicirstd" in text and "--layout" in text
    # An explicit layout settles it.
    assert list_labelled(root, "basicirstd").layout == "basicirstd"
    assert list_labelled(root, "dnanet").layout == "dnanet"


def test_unknown_layout_lists_what_was_found(tmp_path):
    root = tmp_path / "odd"
    _write_image(root / "pics" / "a.png")
    (root / "readme.txt").write_text("hi")
    with pytest.raises(InputError) as info:
        detect_layout(root)
    text = _one_line_naming(info.value, root)
    assert "pics/" in text and "readme.txt" in text and "sirst-v2" in text


def test_missing_or_empty_root(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        detect_layout(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty") as info:
        list_labelled(tmp_path / "empty")
    _one_line_naming(info.value, tmp_path / "empty")


def test_unknown_layout_name(tmp_path):
    root = make_folder(tmp_path / "ds")
    with pytest.raises(InputError, match="--layout auto\\|dnanet"):
        list_labelled(root, "voc")


# ------------------------------------------------------------------ listing


def test_dnanet_crlf_split_order_train_then_test(tmp_path):
    root = make_dnanet(tmp_path / "ds")
    assert b"\r\n" in (root / "50_50" / "train.txt").read_bytes()
    listed = list_labelled(root)
    assert [s.id for s in listed.samples] == TRAIN + TEST
    assert [s.split for s in listed.samples] == ["train"] * 3 + ["test"] * 2
    assert [s.id for s in listed.train] == TRAIN and [s.id for s in listed.test] == TEST
    assert listed.split_files == {"train": root / "50_50" / "train.txt", "test": root / "50_50" / "test.txt"}
    assert all(not s.id.endswith("\r") for s in listed.samples)


def test_read_split_list_tolerates_bom_blank_comments_and_extensions(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes(b"\xef\xbb\xbfa\r\n\r\n# note\r\n  b.png  \r\nimages/c.bmp\rd")
    assert read_split_list(path) == [(1, "a"), (4, "b"), (5, "c"), (6, "d")]


def test_sirst_uses_trainval_and_test(tmp_path):
    root = make_sirst(tmp_path / "sirst")
    listed = list_labelled(root)
    assert [s.id for s in listed.train] == [f"Misc_{i}" for i in range(1, 6)]
    assert [s.id for s in listed.test] == ["Misc_6", "Misc_7"]
    assert listed.samples[0].mask == root / "masks" / "Misc_1_pixels0.png"


def test_sirst_v2_uses_full_splits_over_both_image_folders(tmp_path):
    root = make_sirst_v2(tmp_path / "v2")
    listed = list_labelled(root)
    assert [s.id for s in listed.samples] == ["S7_30", "Misc_3", "S20210303_S3_146", "foo-00112", "20210725-S1-161"]
    assert listed.samples[0].image == root / "images" / "backgrounds" / "S7_30.png"
    assert listed.samples[1].mask == root / "annotations" / "masks" / "Misc_3_pixels0.png"
    assert listed.split_files["train"].name == "trainval_full.txt"


def test_sirst_v2_falls_back_to_mini_splits(tmp_path):
    root = make_sirst_v2(tmp_path / "v2")
    (root / "splits" / "trainval_full.txt").unlink()
    listed = list_labelled(root)
    assert [s.id for s in listed.samples] == ["Misc_3", "S7_30"]


def test_basicirstd_picks_list_named_after_folder(tmp_path):
    root = make_basicirstd(tmp_path, "IRSTD-1k")
    _write_list(root / "img_idx" / "train_Other.txt", TEST)
    _write_list(root / "img_idx" / "test_Other.txt", TRAIN)
    listed = list_labelled(root)
    assert [s.id for s in listed.train] == TRAIN


def test_folder_split_is_seeded_and_deterministic(tmp_path):
    root = make_folder(tmp_path / "ds", n=20)
    a = list_labelled(root, seed=3)
    b = list_labelled(root, seed=3)
    assert a.samples == b.samples
    assert len(a.train) == 10 and len(a.test) == 10
    assert [s.split for s in a.samples] == ["train"] * 10 + ["test"] * 10
    others = {tuple(s.id for s in list_labelled(root, seed=k).train) for k in range(4)}
    assert len(others) > 1
    assert len(list_labelled(root, split_ratio=0.75).train) == 15
    # The draw is keyed by the folder name, not by where it lives.
    moved = make_folder(tmp_path / "elsewhere" / "ds", n=20)
    assert [s.id for s in list_labelled(moved, seed=3).train] == [s.id for s in a.train]


def test_seeded_split_edges():
    assert set(seeded_split(["a", "b"], 0.1, 0, "k").values()) == {"train", "test"}
    assert set(seeded_split(["a", "b", "c"], 1.0, 0, "k").values()) == {"train"}
    with pytest.raises(InputError):
        seeded_split(["a"], 1.5, 0, "k")


# ------------------------------------------------------------------ bad inputs


def test_split_naming_missing_image(tmp_path):
    root = make_dnanet(tmp_path / "ds", train=TRAIN + ["ghost"])
    with pytest.raises(InputError) as info:
        list_labelled(root)
    text = _one_line_naming(info.value, root / "50_50" / "train.txt")
    assert "ghost" in text and "line 4" in text


def test_image_without_mask(tmp_path):
    root = make_dnanet(tmp_path / "ds")
    (root / "masks" / "000007.png").unlink()
    with pytest.raises(InputError) as info:
        list_labelled(root)
    text = _one_line_naming(info.value, root / "images" / "000007.png")
    assert "no mask" in text
    root2 = make_folder(tmp_path / "f")
    (root2 / "masks" / "img4.png").unlink()
    with pytest.raises(InputError) as info:
        list_labelled(root2)
    _one_line_naming(info.value, root2 / "images" / "img4.png")


def test_duplicate_within_a_list(tmp_path):
    root = make_dnanet(tmp_path / "ds", train=TRAIN + ["000002"])
    with pytest.raises(InputError) as info:
        list_labelled(root)
    text = _one_line_naming(info.value, root / "50_50" / "train.txt")
    assert "000002" in text and "twice" in text


def test_duplicate_across_splits(tmp_path):
    root = make_dnanet(tmp_path / "ds", test=TEST + ["000010"])
    with pytest.raises(InputError) as info:
        list_labelled(root)
    text = _one_line_naming(info.value, root / "50_50" / "test.txt")
    assert "both train" in text


def test_unreadable_split_file(tmp_path):
    root = make_dnanet(tmp_path / "ds")
    (root / "50_50" / "test.txt").write_bytes(b"\xff\xfe\x00bad\x80\x81")
    with pytest.raises(InputError) as info:
        list_labelled(root)
    assert "cannot read split list" in _one_line_naming(info.value, root / "50_50" / "test.txt")


def test_no_images(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "images" / "notes.txt").write_text("x")
    with pytest.raises(InputError) as info:
        list_labelled(root)
    assert "no images" in _one_line_naming(info.value, root / "images")


def test_two_files_for_one_id(tmp_path):
    root = make_folder(tmp_path / "ds", n=3)
    _write_image(root / "images" / "img1.bmp")
    with pytest.raises(InputError) as info:
        list_labelled(root)
    assert "img1.png" in str(info.value) and "img1.bmp" in str(info.value)


def test_skip_bad_collects_problems(tmp_path):
    root = make_dnanet(tmp_path / "ds", train=TRAIN + ["ghost", "000002"], test=TEST + ["000010"])
    (root / "masks" / "000005.png").unlink()
    listed = list_labelled(root, skip_bad=True)
    assert [s.id for s in listed.samples] == TRAIN + ["000001"]
    assert len(listed.problems) == 4
    assert all("\n" not in p for p in listed.problems)
    joined = " | ".join(listed.problems)
    for word in ("ghost", "twice", "both train", "000005.png"):
        assert word in joined


def test_skip_bad_with_nothing_left_still_fails(tmp_path):
    root = make_dnanet(tmp_path / "ds", train=["x"], test=["y"])
    with pytest.raises(InputError, match="no usable samples"):
        list_labelled(root, skip_bad=True)


# ------------------------------------------------------------------ load_sample


def test_load_sample_resizes_and_keeps_masks_binary(tmp_path):
    root = make_dnanet(tmp_path / "ds")
    ref = list_labelled(root).samples[0]
    loaded = load_sample(ref, 32)
    assert loaded.image.shape == (32, 32) and loaded.mask.shape == (32, 32)
    assert loaded.image.dtype == np.uint8 and set(np.unique(loaded.mask)) == {0, 255}
    assert (loaded.orig_h, loaded.orig_w) == (H, W) and loaded.warnings == []
    kept = load_sample(ref, None)
    assert kept.image.shape == (H, W)


def test_mask_at_other_scale_same_aspect_is_resized_with_warning(tmp_path):
    img = _write_image(tmp_path / "i.png", size=(20, 30))
    mask = _write_mask(tmp_path / "m.png", size=(40, 60), at=(10, 20))
    loaded = load_sample(SampleRef("i", img, mask, "train"), None)
    assert loaded.mask.shape == (20, 30) and loaded.mask[5, 10] == 255
    assert len(loaded.warnings) == 1 and str(mask) in loaded.warnings[0] and "60x40" in loaded.warnings[0]


def test_mask_with_other_aspect_is_error(tmp_path):
    img = _write_image(tmp_path / "i.png", size=(20, 30))
    mask = _write_mask(tmp_path / "m.png", size=(20, 20))
    with pytest.raises(InputError) as info:
        load_sample(SampleRef("i", img, mask, "train"), 16)
    text = _one_line_naming(info.value, mask)
    assert "mask is 20x20 but image is 30x20 (aspect ratio differs)" in text


def test_image_without_target_and_soft_mask(tmp_path):
    img = _write_image(tmp_path / "i.png")
    empty = _write_mask(tmp_path / "e.png", at=None)
    assert load_sample(SampleRef("i", img, empty, "test"), 8).mask.max() == 0
    assert load_sample(SampleRef("i", img, None, "test"), 8).mask.max() == 0
    soft = tmp_path / "soft.png"
    m = np.zeros((H, W), np.uint8)
    m[2, 2], m[3, 3] = 200, 60
    Image.fromarray(m).save(soft)
    loaded = load_sample(SampleRef("i", img, soft, "test"), None)
    assert loaded.mask[2, 2] == 255 and loaded.mask[3, 3] == 0
    assert len(loaded.warnings) == 1 and str(soft) in loaded.warnings[0]


def test_corrupt_image_is_error_naming_it(tmp_path):
    root = make_dnanet(tmp_path / "ds")
    bad = root / "images" / "000002.png"
    bad.write_bytes(b"")
    ref = next(s for s in list_labelled(root).samples if s.id == "000002")
    with pytest.raises(InputError) as info:
        load_sample(ref, 16)
    _one_line_naming(info.value, bad)


# ------------------------------------------------------------------ sequences


def test_flat_folder_groups_by_prefix_and_sorts_numerically(tmp_path):
    root = tmp_path / "frames"
    for name in ["S1-161", "S1-10", "S1-81", "S1-1041", "seqA_0003", "seqA_0010", "seqA_0001", "20210725-S2-51", "20210725-S2-101"]:
        _write_image(root / f"{name}.png")
    seqs = list_sequences(root)
    assert list(seqs) == ["20210725-S2", "S1", "seqA"]
    assert [p.stem for p in seqs["S1"]] == ["S1-10", "S1-81", "S1-161", "S1-1041"]
    assert [p.stem for p in seqs["seqA"]] == ["seqA_0001", "seqA_0003", "seqA_0010"]
    assert [p.stem for p in seqs["20210725-S2"]] == ["20210725-S2-51", "20210725-S2-101"]


def test_subfolder_sequences(tmp_path):
    root = tmp_path / "frames"
    for name in ["S7_30", "S7_7", "S7_100"]:
        _write_image(root / "S7" / f"{name}.png")
    _write_image(root / "TH" / "TH_2.png", size=(6, 8))
    (root / "empty").mkdir()
    (root / "S7" / "notes.txt").write_text("x")
    seqs = list_sequences(root)
    assert list(seqs) == ["S7", "TH"]
    assert [p.stem for p in seqs["S7"]] == ["S7_7", "S7_30", "S7_100"]
    assert frame_sizes(seqs["TH"]) == [(6, 8)]


def test_split_frame_name():
    assert split_frame_name("S1-161") == ("S1", 161)
    assert split_frame_name("seqA_0003") == ("seqA", 3)
    assert split_frame_name("frame0012") == ("frame", 12)
    assert split_frame_name("still") == ("still", None)


def test_empty_sequences_is_error(tmp_path):
    root = tmp_path / "frames"
    (root / "a").mkdir(parents=True)
    (root / "notes.txt").write_text("x")
    with pytest.raises(InputError) as info:
        list_sequences(root)
    _one_line_naming(info.value, root)
    (tmp_path / "none").mkdir()
    with pytest.raises(InputError, match="empty"):
        list_sequences(tmp_path / "none")


# ------------------------------------------------------------------ real data


def test_real_sirst(sirst_dir):
    assert detect_layout(sirst_dir) == "sirst"
    listed = list_labelled(sirst_dir)
    assert isinstance(listed, LabelledSet) and listed.layout == "sirst"
    assert len(listed.samples) == 427 and listed.problems == []

    def count(name: str) -> int:
        return len(read_split_list(sirst_dir / "idx_427" / name))

    assert len(listed.train) == count("trainval.txt") and len(listed.test) == count("test.txt")
    assert len({s.id for s in listed.samples}) == 427

    misc111 = next(s for s in listed.samples if s.id == "Misc_111")
    loaded = load_sample(misc111, None)
    assert (loaded.orig_w, loaded.orig_h) == (325, 220) and loaded.mask.shape == (220, 325)
    assert any("Misc_111_pixels0.png" in w and "592x400" in w for w in loaded.warnings)
    assert loaded.mask.max() == 255

    # Every SIRST image holds a target, and at 256 none is lost to the nearest resize.
    for ref in listed.samples:
        s = load_sample(ref, 256)
        assert s.image.shape == (256, 256) and s.image.dtype == np.uint8
        assert set(np.unique(s.mask)) == {0, 255}, ref.id


def test_real_sirst_v2_frames(sirst_v2_frames):
    seqs = list_sequences(sirst_v2_frames)
    assert len(seqs) == 15 and sum(len(v) for v in seqs.values()) == 245
    numbers = [split_frame_name(p.stem)[1] for p in seqs["20210725-S1"]]
    assert numbers == sorted(numbers) and numbers[:3] == [10, 81, 161]


def test_layouts_constant():
    assert LAYOUTS == ("dnanet", "basicirstd", "sirst", "sirst-v2", "folder")
    # the choices are the registry's names, written once
    assert LAYOUTS == tuple(layout.name for layout in REGISTRY)
    assert LAYOUT_CHOICES == ("auto", *LAYOUTS)


def test_images_no_split_list_names_are_reported_not_silently_dropped(tmp_path):
    root = make_dnanet(tmp_path / "ds")
    assert list_labelled(root).unlisted == []
    _pairs(root, ["extra_1", "extra_2"])  # in images/ and masks/, in no list
    listed = list_labelled(root)
    assert listed.unlisted == ["extra_1", "extra_2"] and [s.id for s in listed.samples] == TRAIN + TEST
    assert unlisted_note(listed) == (f"{root}: 2 image(s) are in neither 50_50/train.txt nor 50_50/test.txt "
                                     "(extra_1, extra_2); not ingested (another --layout may list them)")
    assert unlisted_note(list_labelled(make_sirst(tmp_path / "sirst"))) is None
    assert list_labelled(make_folder(tmp_path / "folder")).unlisted == []  # no lists: every image is a sample


def test_real_sirst_read_as_dnanet_names_the_val_images_it_leaves_out(sirst_dir):
    listed = list_labelled(sirst_dir, "dnanet")
    val = [i for _, i in read_split_list(sirst_dir / "idx_427" / "val.txt")]
    assert sorted(listed.unlisted) == sorted(val) and len(val) == 85
    assert unlisted_note(listed).startswith(f"{sirst_dir}: 85 image(s) are in neither idx_427/train.txt nor "
                                            "idx_427/test.txt")
    assert list_labelled(sirst_dir).unlisted == []  # read as sirst: trainval + test is every image
