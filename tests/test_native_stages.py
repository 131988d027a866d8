"""Issue 18: every stage and tool downstream of ingest on a dataset whose shards differ in size.

One size per shard: each shard is `[N, H, W]` as before, but the shards of one folder may hold
different sizes (native-size ingest). The inputs are built here directly with `write_shard`:
two native sizes (orig = shard size) and one resized from 128x128, plus a test split of a fourth
size. Transfer, negatives, report, export and modes run through the CLI as a user types them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sirst5k.formats import bank as bankfile
from sirst5k.formats import shards
from sirst5k.method.negatives import clamp_to_valid, negative_boxes, plan_negatives
from sirst5k.method.noise_model import fit_sequence
from sirst5k.method.norm import image_mean_std
from sirst5k.method.transfer import draw_transfer_params
from sirst5k.report.drawing import fit_tiles, render_tile
from sirst5k.stages.cli import app

runner = CliRunner()
W = 16  # bank window
SEED = 3
# (split, shard index) -> (n, shard size, orig size): native, native, resized 128 -> 64, test native
LAYOUT = {("train", 0): (4, (48, 64), (48, 64)), ("train", 1): (3, (80, 96), (80, 96)),
          ("train", 2): (3, (64, 64), (128, 128)), ("test", 0): (2, (40, 56), (40, 56))}


def cli(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def fail(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code != 0, result.output
    return [ln for ln in result.output.splitlines() if ln.strip()][-1]


def make_samples(rng, n: int, size: tuple[int, int], tag: str):
    """n images of `size` (flat grey 100..110) with a 3x3 target each, one of them at the
    bottom-right corner (where boxes must be clamped)."""
    h, w = size
    images = rng.integers(100, 111, (n, h, w)).astype(np.uint8)
    masks = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        y, x = (h - 3, w - 3) if i == 0 else (int(rng.integers(4, h - 7)), int(rng.integers(4, w - 7)))
        masks[i, y:y + 3, x:x + 3] = 255
        images[i, y:y + 3, x:x + 3] = 200
    ids = [f"{tag}_{i}" for i in range(n)]
    return images, masks, ids


def write_input(path: Path, images, masks, ids, orig, split: str, index: int, extra: dict | None = None):
    meta = shards.new_meta(len(images))
    meta["sample_id"][:] = ids
    meta["source_id"][:] = ids
    meta["kind"][:] = "original"
    meta["orig_h"][:], meta["orig_w"][:] = orig
    meta["n_targets"][:] = 1
    meta["area"][:] = 9
    for k, v in (extra or {}).items():
        meta[k][:] = v
    return shards.write_shard(path, images, masks, meta, {"dataset": "ingest", "version": "t", "split": split,
                                                         "shard_index": index, "n_shards": 3})


@pytest.fixture(scope="module")
def scheduler() -> str:
    from conftest import local_scheduler

    with local_scheduler(2) as address:  # two workers: 1 vs 2 must give the same bytes
        yield address


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("native")
    rng = np.random.default_rng(0)
    folder = root / "ing"
    folder.mkdir()
    arrays = {}
    for (split, index), (n, size, orig) in LAYOUT.items():
        images, masks, ids = make_samples(rng, n, size, f"{split}{index}")
        write_input(folder / shards.shard_name(split, index), images, masks, ids, orig, split, index)
        arrays[(split, index)] = (images, masks, ids)
    frames = np.clip(np.rint(120 + rng.normal(0, 6, (2, 64, 64))), 0, 255).astype(np.uint8)
    boxes = frames.reshape(2, 4, W, 4, W).transpose(1, 3, 0, 2, 4).reshape(16, 2, W, W)
    kept = np.array([[0, i, j] for i in range(4) for j in range(4)], np.int64)
    attrs = {"schema_version": 1, "producer": "test", "stage": "noise-bank", "version": "m", "frames_hash": "f",
             "window": W, "n_sequences": 1, "n_frames": 2}
    part = root / "bank.part.h5"
    rows = bankfile.write_part(part, boxes, kept, np.full((2, 4, 4), 36.0), np.full((2, 4, 4), 120.0),
                               ["a.png", "b.png"], W, model=fit_sequence(boxes, frames))
    bankfile.merge_parts([bankfile.Part("seq", str(part), 16, rows)], root / "bank.h5", attrs)
    return {"root": root, "ingest": folder, "bank": root / "bank.h5", "arrays": arrays}


def sizes_of(folder: Path, split: str = "train") -> list[tuple[int, int]]:
    return [shards.image_shape(p) for p in shards.list_shards(folder, split)]


def train_sizes() -> list[tuple[int, int]]:
    return [size for (split, _), (_, size, _) in LAYOUT.items() if split == "train"]


# ---------------------------------------------------------------- transfer


@pytest.mark.parametrize("field", ["resize", "mosaic", "model"])
def test_transfer_mixed_sizes_every_field_same_bytes_1_and_2_workers(data, scheduler, field):
    one, two = data["root"] / f"tr-{field}-1", data["root"] / f"tr-{field}-2"
    args = ["--noise-bank", data["bank"], "--field", field, "--mode", "additive", "--mix", "1", "--mix", "0.1",
            "--seed", SEED, "--device", "cpu"]
    cli("transfer", data["ingest"], "--out", one, "--workers", 1, *args)
    cli("transfer", data["ingest"], "--out", two, "--scheduler", scheduler, *args)
    assert sizes_of(one) == train_sizes() == sizes_of(two)
    for a, b in zip(shards.list_shards(one, "train"), shards.list_shards(two, "train")):
        assert shards.sha256_file(a) == shards.sha256_file(b)
    for (split, index), (n, size, _) in LAYOUT.items():
        if split != "train":
            continue
        out, masks, meta = shards.read_shard(one / shards.shard_name("train", index))
        images, in_masks, _ = data["arrays"][("train", index)]
        assert out.shape == (2 * n, *size) and np.array_equal(masks, np.repeat(in_masks, 2, axis=0))
        assert not np.array_equal(out[::2], images)  # noise was added at this size


def added_noise(folder: Path, data, index: int) -> float:
    out, _, _ = shards.read_shard(folder / shards.shard_name("train", index))
    images = data["arrays"][("train", index)][0]
    return float((out.astype(float) - images).std(axis=(1, 2)).mean())


@pytest.mark.parametrize("field", ["mosaic", "model"])
def test_source_scale_native_shards_get_the_noise_at_native_pitch(data, field):
    """A native shard (orig = shard size) gets its field unresampled: the bank's full noise (std 6
    at m = 1); the shard shrunk from 128 to 64 px gets ~half of it, as its image did."""
    out = data["root"] / f"tr-amp-{field}"
    cli("transfer", data["ingest"], "--noise-bank", data["bank"], "--out", out, "--field", field,
        "--mode", "additive", "--mix", 1, "--seed", SEED, "--workers", 1, "--device", "cpu")
    native = [added_noise(out, data, i) for i in (0, 1)]
    shrunk = added_noise(out, data, 2)
    for amp in native:
        assert amp == pytest.approx(6.0, rel=0.25)
    assert shrunk < 0.65 * min(native)
    # the draws: every native sample's field is built at its shard's own size (no resample)
    for index in (0, 1):
        _, _, meta = shards.read_shard(data["ingest"] / shards.shard_name("train", index))
        size = shards.image_shape(data["ingest"] / shards.shard_name("train", index))
        src = np.stack([meta["orig_h"], meta["orig_w"]], axis=1)
        draws = draw_transfer_params(SEED, meta["sample_id"], 16, size, W, field, source_sizes=src, n_models=1)
        assert (draws.build_size == np.array(size)).all()


def test_transfer_padded_shard_noise_stays_in_the_valid_region(data, tmp_path):
    """A padded `--keep-aspect` shard (meta valid_h/valid_w): the padding is left as it is."""
    from sirst5k.stages import transfer as stage

    rng = np.random.default_rng(5)
    images, masks, ids = make_samples(rng, 3, (64, 64), "pad")
    images[:, 40:], masks[:, 40:] = 0, 0  # valid region 40 x 64, zero padding below
    folder = tmp_path / "padded"
    folder.mkdir()
    write_input(folder / "train-00000.h5", images, masks, ids, (80, 128), "train", 0,
                {"valid_h": 40, "valid_w": 64})
    out = tmp_path / "out"
    cli("transfer", folder, "--noise-bank", data["bank"], "--out", out, "--field", "mosaic", "--mode", "additive",
        "--mix", 1, "--workers", 1, "--device", "cpu")
    got, _, meta = shards.read_shard(out / "train-00000.h5")
    assert (got[:, 40:] == 0).all()
    assert (got[:, :40] != images[:, :40]).mean() > 0.5
    assert (meta["noise_id"] >= 0).all() and (meta["valid_h"] == 40).all()
    regions = stage.valid_regions({"valid_h": np.array([40, -1]), "valid_w": np.array([64, -1])}, (64, 64))
    assert [(s, r.tolist()) for s, r in regions] == [((40, 64), [0]), ((64, 64), [1])]
    assert stage.valid_regions({"valid_h": np.array([-1]), "valid_w": np.array([-1])}, (64, 64)) is None


# ---------------------------------------------------------------- negatives


def test_negatives_mixed_sizes_boxes_clamped_per_image(data):
    out = data["root"] / "neg"
    cli("negatives", data["ingest"], "--out", out, "--patch", 16, "--patch", 3, "--workers", 1, "--device", "cpu")
    parts = shards.list_shards(out, "train")
    by_input = {}
    for p in parts:
        by_input.setdefault(int(p.name.split("-")[1]), []).append(p)
    assert sorted(by_input) == [0, 1, 2]
    for index, paths in by_input.items():
        n, size, _ = LAYOUT[("train", index)]
        images, masks, ids = data["arrays"][("train", index)]
        for p in paths:
            assert shards.image_shape(p) == size
        got, got_masks, meta = shards.read_shard(paths[0])
        assert len(got) == n * 2 * 4  # one target each, 2 patch sizes, 4 rotations
        for m in range(len(got)):
            src = ids.index(str(meta["sample_id"][m]).rsplit("_p", 1)[0])
            patch = int(meta["patch"][m])
            (y0, x0), = negative_boxes([[meta["center_y"][m], meta["center_x"][m]]], size, patch)
            assert 0 <= y0 <= size[0] - patch and 0 <= x0 <= size[1] - patch
            outside = np.ones(size, bool)
            outside[y0:y0 + patch, x0:x0 + patch] = False
            assert np.array_equal(got[m][outside], images[src][outside])  # only the box changed


def test_negatives_patch_must_fit_every_shard(data):
    out = data["root"] / "neg-big"
    line = fail("negatives", data["ingest"], "--out", out, "--patch", 50, "--workers", 1)
    assert "train-00000.h5" in line and "48x64" in line and "50" in line
    assert not out.exists()


def test_negatives_padded_boxes_stay_in_the_valid_region():
    masks = np.zeros((2, 64, 64), np.uint8)
    masks[:, 37:40, 60:63] = 1  # a target at the valid region's bottom-right corner
    valid = np.array([[40, 64], [-1, -1]])
    plan = plan_negatives(masks, [16], rotations=[1], valid_sizes=valid)
    whole = plan_negatives(masks, [16], rotations=[1])
    assert (plan.y0[0], plan.x0[0]) == (40 - 16, 64 - 16)  # inside rows 0..39
    assert (plan.y0[1], plan.x0[1]) == (whole.y0[1], whole.x0[1]) == (37 + 1 - 8, 48)
    # a region smaller than the box: placed in the whole image
    small = clamp_to_valid(whole, np.array([[8, 8], [8, 8]]), (64, 64))
    assert np.array_equal(small.y0, whole.y0)
    none = plan_negatives(masks, [16], rotations=[1], valid_sizes=np.full((2, 2), -1))
    assert np.array_equal(none.y0, whole.y0) and np.array_equal(none.x0, whole.x0)


def test_negatives_stage_reads_the_valid_region(data, tmp_path):
    rng = np.random.default_rng(6)
    images, masks, ids = make_samples(rng, 2, (64, 64), "pad")
    masks[:] = 0
    masks[:, 37:40, 60:63] = 255
    folder = tmp_path / "padded"
    folder.mkdir()
    write_input(folder / "train-00000.h5", images, masks, ids, (80, 128), "train", 0,
                {"valid_h": 40, "valid_w": 64})
    cli("negatives", folder, "--out", tmp_path / "neg", "--patch", 16, "--rotations", 1, "--workers", 1,
        "--device", "cpu")
    got, _, _ = shards.read_shard(shards.list_shards(tmp_path / "neg", "train")[0])
    assert np.array_equal(got[:, 40:], images[:, 40:])  # nothing of the box in the padding
    assert not np.array_equal(got[:, 24:40, 48:64], images[:, 24:40, 48:64])


def real_folder(root: Path, sizes) -> Path:
    """A `folder` layout source of images of several sizes, a 3x3 target each."""
    rng = np.random.default_rng(11)
    for d in ("images", "masks"):
        (root / d).mkdir(parents=True)
    for i, (h, w) in enumerate(sizes):
        image = rng.integers(90, 120, (h, w)).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        y, x = int(rng.integers(0, h - 3)), int(rng.integers(0, w - 3))
        mask[y:y + 3, x:x + 3], image[y:y + 3, x:x + 3] = 255, 220
        Image.fromarray(image).save(root / "images" / f"s{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"s{i}.png")
    return root


def test_ingest_native_and_keep_aspect_through_transfer_and_negatives(data, tmp_path):
    """Today's ingest (`--size native`, `--size N --keep-aspect`) into transfer and negatives."""
    src = real_folder(tmp_path / "src", [(60, 80), (60, 80), (96, 72), (96, 72), (50, 50)])
    for name, args in (("native", ["--size", "native"]), ("aspect", ["--size", 64, "--keep-aspect"])):
        ing, tr, neg = (tmp_path / f"{name}-{s}" for s in ("ing", "tr", "neg"))
        cli("ingest", src, "--out", ing, "--layout", "folder", *args, "--split-ratio", 1.0, "--workers", 1)
        cli("transfer", ing, "--noise-bank", data["bank"], "--out", tr, "--field", "mosaic", "--mode", "additive",
            "--mix", 1, "--workers", 1, "--device", "cpu")
        cli("negatives", tr, "--out", neg, "--patch", 16, "--workers", 1, "--device", "cpu")
        assert sizes_of(tr) == sizes_of(ing)
        for p_in, p_out in zip(shards.list_shards(ing, "train"), shards.list_shards(tr, "train")):
            schema = shards.read_attrs(p_in).get("schema_version")
            assert shards.read_attrs(p_out).get("schema_version") == schema
            before, _, meta = shards.read_shard(p_in)
            after, _, _ = shards.read_shard(p_out)
            for b, a, vh, vw in zip(before, after, meta["valid_h"], meta["valid_w"]):
                if vh > 0:  # padded: only the valid box got noise
                    assert np.array_equal(a[vh:], b[vh:]) and np.array_equal(a[:, vw:], b[:, vw:])
                assert not np.array_equal(a, b)
        for p in shards.list_shards(neg, "train"):
            got, _, meta = shards.read_shard(p)
            h, w = got.shape[1:]
            for m in range(len(got)):
                vh, vw = int(meta["valid_h"][m]), int(meta["valid_w"][m])
                vh, vw = (vh, vw) if vh > 0 else (h, w)
                (y0, x0), = negative_boxes([[meta["center_y"][m], meta["center_x"][m]]], (vh, vw), 16)
                assert y0 + 16 <= vh and x0 + 16 <= vw
    assert sorted(set(sizes_of(tmp_path / "native-ing"))) == [(50, 50), (60, 80), (96, 72)]
    assert set(sizes_of(tmp_path / "aspect-ing")) == {(64, 64)}


# ---------------------------------------------------------------- report


@pytest.fixture(scope="module")
def report(data) -> Path:
    out = data["root"] / "report"
    cli("report", data["ingest"], "--out", out)
    return out


def test_report_size_histogram(report):
    stats = json.loads((report / "stats.json").read_text())
    sizes = stats["sizes"]
    assert sizes["n_sizes"] == 4
    assert list(sizes["total"].items()) == [("40x56", 2), ("48x64", 4), ("64x64", 3), ("80x96", 3)]
    assert sizes["splits"]["train"]["original"] == {"48x64": 4, "64x64": 3, "80x96": 3}
    assert sizes["splits"]["test"]["original"] == {"40x56": 2}
    with open(report / "image_sizes.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:5] == ["size", "height", "width", "pixels", "all"]
    assert [r[:5] for r in rows[1:]] == [["40x56", "40", "56", "2240", "2"], ["48x64", "48", "64", "3072", "4"],
                                         ["64x64", "64", "64", "4096", "3"], ["80x96", "80", "96", "7680", "3"]]
    card = (report / "README.md").read_text()
    assert "## Image sizes" in card and "| 80 x 96 | 3 |" in card and "4 image sizes" in card


def test_report_realism_pools_mixed_sizes(report):
    stats = json.loads((report / "stats.json").read_text())
    groups = stats["realism"]["groups"]
    assert "original" in groups


def test_report_contact_sheet_one_cell_per_tile(report):
    with Image.open(report / "originals.png") as sheet:
        # 12 originals, 4 columns of 128-px cells (the largest tile: 64x64 enlarged x2)
        assert sheet.size[0] == 4 * (128 + 4) + 4


def test_fit_tiles_keeps_aspect():
    tiles = [render_tile(np.full((h, w), 200, np.uint8), np.zeros((h, w), np.uint8)) for h, w in
             ((48, 64), (80, 96), (200, 100))]
    fitted = fit_tiles(tiles)
    side = max(max(t.size) for t in tiles)
    assert {t.size for t in fitted} == {(side, side)}
    for t, f in zip(tiles, fitted):
        ys, xs = np.nonzero(np.asarray(f)[:, :, 0] == 200)
        h, w = np.ptp(ys) + 1, np.ptp(xs) + 1
        assert max(h, w) == side and abs(w / h - t.size[0] / t.size[1]) < 0.05
    same = [render_tile(np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8))] * 2
    assert fit_tiles(same) == same


# ---------------------------------------------------------------- export


def target_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return ys.min(), xs.min(), ys.max() + 1, xs.max() + 1


@pytest.fixture(scope="module")
def samples(data) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """id -> (image, mask, split) of every input sample."""
    return {i: (im, mk, split) for (split, _), (images, masks, ids) in data["arrays"].items()
            for im, mk, i in zip(images, masks, ids)}


def test_export_dnanet_and_basicirstd_pngs_at_each_size(data, samples):
    out = data["root"] / "exp" / "dnanet"
    cli("export", data["ingest"], out, "--layout", "dnanet")
    for sid, (image, mask, _) in samples.items():
        with Image.open(out / "images" / f"{sid}.png") as im:
            assert np.array_equal(np.asarray(im), image)
        with Image.open(out / "masks" / f"{sid}.png") as im:
            assert np.asarray(im).shape == mask.shape
    bi = data["root"] / "exp" / "native_bi"
    cli("export", data["ingest"], bi, "--layout", "basicirstd")
    cfg = json.loads((bi / "img_norm_cfg.json").read_text())
    stats = [image_mean_std(im) for im, _, split in samples.values() if split == "train"]
    assert cfg["n_images"] == 10
    assert cfg["mean"] == pytest.approx(float(np.mean(np.float32([m for m, _ in stats]))), abs=1e-4)
    assert cfg["std"] == pytest.approx(float(np.mean(np.float32([s for _, s in stats]))), abs=1e-4)
    for sid, (image, _, _) in samples.items():
        with Image.open(bi / "images" / f"{sid}.png") as im:
            assert np.asarray(im).shape == image.shape


def test_export_yolo_and_coco_use_each_image_size(data, samples):
    yolo = data["root"] / "exp" / "yolo"
    cli("export", data["ingest"], yolo, "--layout", "yolo")
    for sid, (image, mask, split) in samples.items():
        h, w = image.shape
        with Image.open(yolo / "images" / split / f"{sid}.png") as im:
            assert im.size == (w, h)
        y0, x0, y1, x1 = target_box(mask)
        line = (yolo / "labels" / split / f"{sid}.txt").read_text().split()
        assert [float(v) for v in line[1:]] == pytest.approx(
            [(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h], abs=1e-6)
    pytest.importorskip("pycocotools")
    coco = data["root"] / "exp" / "coco"
    cli("export", data["ingest"], coco, "--layout", "coco")
    for split in ("train", "test"):
        doc = json.loads((coco / "annotations" / f"instances_{split}.json").read_text())
        for entry in doc["images"]:
            image = samples[Path(entry["file_name"]).stem][0]
            assert (entry["height"], entry["width"]) == image.shape
        by_id = {e["id"]: e for e in doc["images"]}
        for ann in doc["annotations"]:
            e = by_id[ann["image_id"]]
            assert ann["segmentation"]["size"] == [e["height"], e["width"]]


# ---------------------------------------------------------------- modes


def test_modes_native_size(data, tmp_path, monkeypatch):
    import sirst5k.report.modes as modes

    rng = np.random.default_rng(8)
    image = rng.integers(90, 120, (72, 100)).astype(np.uint8)
    mask = np.zeros((72, 100), np.uint8)
    mask[30:33, 50:53] = 255
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    seen = []
    real = modes.mode_tiles

    def spy(image, mask, patches, **kw):
        seen.append((image.shape, kw.get("source_size")))
        return real(image, mask, patches, **kw)

    monkeypatch.setattr(modes, "mode_tiles", spy)
    text = cli("modes", tmp_path / "img.png", tmp_path / "mask.png", "--noise-bank", data["bank"],
               "--out", tmp_path / "sheet.png", "--size", "native")
    assert seen == [((72, 100), (72, 100))] and (tmp_path / "sheet.png").is_file() and "tiles" in text
    cli("modes", tmp_path / "img.png", tmp_path / "mask.png", "--noise-bank", data["bank"],
        "--out", tmp_path / "sheet64.png", "--size", 64)
    assert seen[-1] == ((64, 64), (72, 100))
    line = fail("modes", tmp_path / "img.png", tmp_path / "mask.png", "--noise-bank", data["bank"],
                "--out", tmp_path / "bad.png", "--size", "tiny")
    assert "--size tiny" in line and "native" in line


def test_negatives_parts_of_large_images_are_capped_in_bytes():
    from sirst5k.runner.tasks import PART_PIXELS, part_size

    assert part_size(1024, (256, 256)) == 1024 and part_size(5000, (256, 256)) == 5000  # as before
    assert part_size(1024, (1080, 1918)) == PART_PIXELS // (1080 * 1918) == 32
    assert part_size(8, (1080, 1918)) == 8 and part_size(1024, (20000, 20000)) == 1


def test_transfer_batches_of_large_images_hold_the_pixels_of_a_default_batch():
    """The batch size never changes a bit (the math is per image), only the buffers' size."""
    from sirst5k.method import transfer as method

    assert method.batch_size("cpu", (256, 256)) == 8 and method.batch_size("cuda", (128, 128)) == 64
    assert method.batch_size("cpu", (512, 640)) == 1 and method.batch_size("cuda", (1080, 1918)) == 2
    assert method.batch_size("cpu", (300, 260)) == 6
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (12, 300, 260)).astype(np.uint8)  # batches of 6
    patches = rng.integers(100, 140, (6, W, W)).astype(np.uint8)
    ids = [f"s{i}" for i in range(12)]
    for field in ("resize", "mosaic"):
        draws = draw_transfer_params(0, ids, 6, (300, 260), W, field)
        whole = method.transfer_images(images, patches, draws, [0.1, 1.0], "additive")
        one_by_one = np.concatenate([method.transfer_images(images[i:i + 1], patches, draws_i, [0.1, 1.0], "additive")
                                     for i, draws_i in enumerate(draw_transfer_params(0, [s], 6, (300, 260), W, field)
                                                                 for s in ids)])
        assert np.array_equal(whole, one_by_one)


# ---------------------------------------------------------------- real SIRST v1 at native size


def test_real_sirst_native_through_every_stage(data, tmp_path, sirst_dir):
    """48 real SIRST v1 images (their own sizes, many of them) through ingest --size native,
    transfer (mosaic at source scale), negatives, publish, report and export."""
    import shutil

    src = tmp_path / "v1"
    for d in ("images", "masks"):
        (src / d).mkdir(parents=True)
    for p in sorted((sirst_dir / "images").glob("*.png"))[:48]:
        shutil.copy(p, src / "images" / p.name)
        shutil.copy(sirst_dir / "masks" / f"{p.stem}_pixels0.png", src / "masks" / p.name)
    ing, tr, neg, pub = (tmp_path / s for s in ("ing", "tr", "neg", "pub"))
    cli("ingest", src, "--out", ing, "--layout", "folder", "--size", "native", "--workers", 1)
    cli("transfer", ing, "--noise-bank", data["bank"], "--out", tr, "--field", "mosaic", "--workers", 1,
        "--device", "cpu")
    cli("negatives", tr, "--out", neg, "--workers", 1, "--device", "cpu")
    cli("publish", "--ingest", ing, "--negatives", neg, "--out", pub, "--manifest", tmp_path / "m.json",
        "--workers", 1)
    assert sizes_of(tr) == sizes_of(ing) and len(set(sizes_of(ing))) > 5
    cli("report", pub, "--out", tmp_path / "rep")
    stats = json.loads((tmp_path / "rep" / "stats.json").read_text())
    native = {}
    for p in sorted((src / "images").glob("*.png")):
        with Image.open(p) as im:
            key = f"{im.size[1]}x{im.size[0]}"
        native[key] = native.get(key, 0) + 1
    originals = {}
    for split in stats["sizes"]["splits"].values():
        for size, n in split.get("original", {}).items():
            originals[size] = originals.get(size, 0) + n
    assert originals == native  # every image at its own size
    cli("export", tmp_path / "m.json", tmp_path / "yolo", "--layout", "yolo")
    for p in sorted((src / "images").glob("*.png"))[:10]:
        with Image.open(p) as a:
            split = "train" if (tmp_path / "yolo" / "images" / "train" / p.name).is_file() else "test"
            with Image.open(tmp_path / "yolo" / "images" / split / p.name) as b:
                assert a.size == b.size


def test_realism_leaves_the_padding_out(tmp_path):
    """A padded shard's zero padding is flat but holds no noise: no realism window lies in it,
    and the originals' scale is that of the valid region."""
    from sirst5k.report.realism import shard_realism

    rng = np.random.default_rng(9)
    images = np.zeros((4, 128, 128), np.uint8)
    images[:, :64] = np.clip(rng.normal(100, 2, (4, 64, 128)), 0, 255).astype(np.uint8)
    masks = np.zeros_like(images)
    ids = [f"p{i}" for i in range(4)]
    path = tmp_path / "train-00000.h5"
    write_input(path, images, masks, ids, (128, 256), "train", 0, {"valid_h": 64, "valid_w": 128})
    part = shard_realism(str(path))
    summary = part["groups"]["original"]
    assert summary.n_windows == 4 * 2 * 4  # the 32-px windows of the valid 64 x 128 only (not the 64 of 128 x 128)
    assert np.allclose(part["scales"], 0.5)
