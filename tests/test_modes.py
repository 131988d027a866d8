"""The modes sheet (`sirst5k modes`), and the negatives stage's label checks end to end."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

import sirst5k.stages.modes
import sirst5k.stages.negatives
from sirst5k import stages
from sirst5k.formats import shards
from sirst5k.formats.layouts import SampleRef, load_sample
from sirst5k.report.modes import (
    CROP,
    LABEL_BAND,
    TILE,
    ZOOM,
    crop_window,
    draw_mode_params,
    mode_sheet,
    mode_tiles,
    render_mode_tile,
    zoom_crop,
)
from sirst5k.method.negatives import apply_negatives, label_check, negative_boxes
from sirst5k.report.drawing import BOX
from sirst5k.method.targets import label_components, target_centers
from sirst5k.method.transfer import additive, blend, mosaic_field, resize_field, to_uint8

runner = CliRunner()
S = 64
WINDOW = 16

TRANSFER_LABELS = [
    "blend / resize, m=0.1 (paper)",
    "blend / resize, m=0.5",
    "additive / resize, m=0.1",
    "blend / mosaic, m=0.1",
    "additive / mosaic, m=1",
]
NEGATIVE_LABELS = [f"negative p{p} k1 mirror" for p in (3, 5, 7, 9, 32)] + ["negative p32 k1 no mirror"]


def _scene(border: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A noisy 64x64 frame with an asymmetric 3x3 target at the middle and, if `border`, one at
    y = 20, where the "script" rule (box flush at 0) and "clip" (box at 4) disagree."""
    g = np.random.default_rng(1)
    image = np.clip(90 + g.normal(0, 4, (S, S)), 0, 255).astype(np.uint8)
    mask = np.zeros((S, S), np.uint8)
    image[31:34, 31:34] = np.array([[200, 150, 120], [180, 250, 130], [160, 140, 110]], np.uint8)
    mask[31:34, 31:34] = 255
    if border:
        image[19:22, 40:42] = 230
        mask[19:22, 40:42] = 255
    return image, mask


def _bank(n: int = 12, window: int = WINDOW) -> np.ndarray:
    g = np.random.default_rng(2)
    return np.clip(40 + g.normal(0, 6, (n, window, window)), 0, 255).astype(np.uint8)


def test_tiles_in_order_with_border_case():
    image, mask = _scene()
    tiles = mode_tiles(image, mask, _bank(), seed=3)
    labels = [t.label for t in tiles]
    # the border target is j=0 (label order), centre (20, 41): script pushes its box flush to the
    # top and right borders (y0 = 0, x0 = 64 - 32), clip shifts it the least (y0 = 4, x0 = 41 - 16)
    assert labels == ["original", *TRANSFER_LABELS, *NEGATIVE_LABELS,
                      "border script: p32 at y0 x32", "border clip: p32 at y4 x25"]
    assert [t.kind for t in tiles] == ["original"] + ["transfer"] * 5 + ["negative"] * 8
    assert np.array_equal(tiles[0].image, image) and np.array_equal(tiles[0].mask, mask)
    assert all(np.array_equal(t.mask, mask) for t in tiles[1:6])  # transfer keeps the label


def test_no_border_case_without_a_border_target():
    image, mask = _scene(border=False)
    labels = [t.label for t in mode_tiles(image, mask, _bank())]
    assert labels == ["original", *TRANSFER_LABELS, *NEGATIVE_LABELS]


def test_negative_tiles_change_only_their_box():
    image, mask = _scene()
    tiles = mode_tiles(image, mask, _bank(), target=1)
    centre = tuple(target_centers(mask)[1])
    for t in tiles[6:]:
        p = t.params
        expected_centre = tuple(target_centers(mask)[p["target"]])
        (y0, x0), = negative_boxes([expected_centre], (S, S), p["patch"], p["clamp"])
        assert t.box == (y0, x0, p["patch"])
        outside = np.ones((S, S), bool)
        outside[y0 : y0 + p["patch"], x0 : x0 + p["patch"]] = False
        assert np.array_equal(t.image[outside], image[outside]), t.label
        assert np.array_equal(t.mask[outside], mask[outside]), t.label
        assert not np.array_equal(t.image, image), t.label  # the asymmetric target really moved
        ref_img, ref_mask = apply_negatives(torch.from_numpy(image)[None], torch.from_numpy(mask)[None],
                                            y0, x0, p["patch"], p["k"], p["flip"])
        assert np.array_equal(t.image, ref_img[0].numpy()) and np.array_equal(t.mask, ref_mask[0].numpy())
    assert all(t.focus == centre for t in tiles[:12])
    # mirror then k = 1 is a transpose: in the 3-px box the 6 off-diagonal pixels move, the diagonal stays
    p3 = tiles[6]
    assert p3.box == (31, 31, 3)
    assert np.count_nonzero(p3.image != image) == 6
    assert np.array_equal(p3.image[31:34, 31:34], image[31:34, 31:34].T)
    assert np.array_equal(p3.image[31:34, 31:34], np.rot90(np.fliplr(image[31:34, 31:34]), 1))
    # script and clip place the border box differently, and both stay inside the image
    script, clip = tiles[12], tiles[13]
    assert script.params["clamp"] == "script" and clip.params["clamp"] == "clip"
    assert script.box[0] == 0 and clip.box[0] == 4


def test_transfer_tiles_equal_the_pure_functions():
    image, mask = _scene()
    bank = _bank()
    tiles = mode_tiles(image, mask, bank, seed=5, key="scene")
    draws = draw_mode_params(5, len(bank), (S, S), WINDOW, key="scene")
    img = torch.from_numpy(image).float()[None]
    resized = resize_field(torch.from_numpy(bank[[draws.noise_id]]), (S, S))
    mosaic = mosaic_field(torch.from_numpy(bank[draws.mosaic.reshape(-1)])[None], (S, S))
    expected = [
        blend(img, resized, 0.1), blend(img, resized, 0.5), additive(img, resized, 0.1),
        blend(img, mosaic, 0.1), additive(img, mosaic, 1.0),
    ]
    for tile, want in zip(tiles[1:6], expected):
        assert np.array_equal(tile.image, to_uint8(want)[0].numpy()), tile.label
    assert tiles[1].params["noise_id"] == draws.noise_id
    # blend at 0.5 moves the image half way to the (dark) noise: its mean must drop
    assert tiles[2].image.mean() < tiles[1].image.mean() < image.mean()
    # additive keeps the brightness within rounding
    assert abs(float(tiles[3].image.mean()) - float(image.mean())) < 0.6


def test_draws_replay_and_depend_on_seed_and_key():
    a = draw_mode_params(0, 1000, (S, S), WINDOW, key="x")
    b = draw_mode_params(0, 1000, (S, S), WINDOW, key="x")
    assert a.noise_id == b.noise_id and np.array_equal(a.mosaic, b.mosaic)
    assert a.mosaic.shape == (S // WINDOW, S // WINDOW)
    assert not np.array_equal(a.mosaic, draw_mode_params(1, 1000, (S, S), WINDOW, key="x").mosaic)
    assert not np.array_equal(a.mosaic, draw_mode_params(0, 1000, (S, S), WINDOW, key="y").mosaic)


def test_bad_inputs_raise():
    image, mask = _scene()
    with pytest.raises(ValueError, match="no target"):
        mode_tiles(image, np.zeros_like(mask), _bank())
    with pytest.raises(ValueError, match="out of range"):
        mode_tiles(image, mask, _bank(), target=2)
    with pytest.raises(ValueError, match="smaller than"):
        mode_tiles(image[:20, :20], mask[:20, :20], _bank())
    with pytest.raises(ValueError, match="patches"):
        mode_tiles(image, mask, np.zeros((0, 16, 16), np.uint8))


def test_crop_window_holds_the_box_and_stays_inside():
    assert crop_window((32, 32), (S, S)) == (8, 8, CROP)
    assert crop_window((2, 62), (S, S)) == (0, S - CROP, CROP)
    # the script's border box (0..31) would be cut by a window centred on y = 40; it is moved to hold it
    y0, x0, side = crop_window((40, 32), (S, S), box=(0, 16, 32))
    assert y0 == 0 and x0 <= 16 and x0 + side >= 48
    assert crop_window((5, 5), (20, 30)) == (0, 0, 20)


def test_zoom_keeps_target_values_visible():
    image = np.full((S, S), 50, np.uint8)
    mask = np.zeros((S, S), np.uint8)
    image[30, 30], mask[30, 30] = 240, 255
    zoomed = np.asarray(zoom_crop(image, mask, (24, 24, 16), box=(29, 29, 3)))
    assert zoomed.shape == (16 * ZOOM, 16 * ZOOM, 3)
    block = zoomed[6 * ZOOM : 7 * ZOOM, 6 * ZOOM : 7 * ZOOM]
    assert (block[1:-1, 1:-1] == 240).all()  # the inside of the zoomed pixel keeps its grey
    assert (block[0] == (255, 40, 40)).all()  # its rim is the red outline
    assert tuple(zoomed[5 * ZOOM - 1, 5 * ZOOM + 2]) == BOX  # box drawn just outside its pixels


def test_sheet_layout():
    image, mask = _scene()
    tiles = mode_tiles(image, mask, _bank())
    picture = render_mode_tile(tiles[0])
    assert picture.size == (TILE, LABEL_BAND + TILE + 4 + CROP * ZOOM)
    sheet = mode_sheet(tiles, "title")
    assert sheet.size[0] == 4 * (TILE + 4) + 4
    assert sheet.size[1] > 4 * picture.size[1]  # 14 tiles: four rows


def test_real_sirst_image(sirst_dir):
    stem = "Misc_425"
    ref = SampleRef(stem, sirst_dir / "images" / f"{stem}.png", sirst_dir / "masks" / f"{stem}_pixels0.png", "train")
    sample = load_sample(ref, 256)
    bank = _bank(window=32)
    tiles = mode_tiles(sample.image, sample.mask, bank, target=1, key=stem)
    labels = [t.label for t in tiles]
    assert labels[:12] == ["original", *TRANSFER_LABELS, *NEGATIVE_LABELS]
    # target 0 (y = 27 at 256 px) lies in the band where the two border rules disagree
    assert labels[12].startswith("border script: p32 at y0 ") and labels[13].startswith("border clip: p32 at y11 ")
    assert len(target_centers(sample.mask)) == 2
    for t in tiles[6:]:
        y0, x0, p = t.box
        diff = (t.image != sample.image) | (t.mask != sample.mask)
        diff[y0 : y0 + p, x0 : x0 + p] = False
        assert not diff.any(), t.label
        assert np.count_nonzero(t.mask) == np.count_nonzero(sample.mask)  # boxes inside: area kept


# ---------------------------------------------------------------- the command


def _app(fn) -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(fn)
    return app


def _write_case(tmp_path: Path) -> tuple[Path, Path, Path]:
    image, mask = _scene()
    Image.fromarray(np.stack([image] * 3, axis=2)).save(tmp_path / "scene.png")  # RGB-encoded grey, as SIRST
    Image.fromarray(mask).save(tmp_path / "scene_pixels0.png")
    with h5py.File(tmp_path / "bank.h5", "w") as f:
        f["patches"] = _bank(window=32)
    return tmp_path / "scene.png", tmp_path / "scene_pixels0.png", tmp_path / "bank.h5"


def test_command_writes_png(tmp_path):
    image, mask, bank = _write_case(tmp_path)
    out = tmp_path / "docs" / "modes.png"
    result = runner.invoke(_app(stages.modes.command),
                           [str(image), str(mask), "--noise-bank", str(bank), "--out", str(out), "--size", "64"])
    assert result.exit_code == 0, result.output
    assert "14 tiles" in result.output
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size[0] == 4 * (TILE + 4) + 4
    assert [p.name for p in out.parent.iterdir()] == ["modes.png"]  # no temporary left behind


@pytest.mark.parametrize("problem", ["missing image", "bad bank", "no target"])
def test_command_one_line_errors(tmp_path, problem):
    image, mask, bank = _write_case(tmp_path)
    if problem == "missing image":
        image = tmp_path / "nope.png"
    elif problem == "bad bank":
        bank.write_bytes(b"not hdf5")
    else:
        Image.fromarray(np.zeros((S, S), np.uint8)).save(mask)
    out = tmp_path / "modes.png"
    result = runner.invoke(_app(stages.modes.command), [str(image), str(mask), "--noise-bank", str(bank), "--out", str(out)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    expected = {"missing image": str(image), "bad bank": str(bank), "no target": "no target"}[problem]
    assert expected in lines[0]
    assert "Traceback" not in result.output and not out.exists()


# ---------------------------------------------------------------- the negatives stage: cut label check


def _straddle_shard(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """One 64x64 sample: target A, one pixel at (32, 32), whose 32-px box spans columns 16..47,
    and target B, rows 31..33 x columns 46..50, cut by that box's right edge (47 | 48).
    B's own box (columns 32..63) holds all of A, so B's negatives cut nothing. B starts on an
    earlier row, so in label order B is target j0 and A is j1."""
    image = np.full((1, S, S), 60, np.uint8)
    mask = np.zeros((1, S, S), np.uint8)
    image[0, 32, 32], mask[0, 32, 32] = 250, 255
    image[0, 31:34, 46:51] = np.arange(15, dtype=np.uint8).reshape(3, 5) * 10 + 100
    mask[0, 31:34, 46:51] = 255
    meta = shards.new_meta(1)
    meta["sample_id"][0], meta["source_id"][0], meta["kind"][0] = "s0", "s0", "original"
    shards.write_shard(folder / "train-00000.h5", image, mask, meta,
                       {"dataset": "test", "version": "0", "split": "train", "shard_index": 0, "n_shards": 1})
    return image, mask


def _run_negatives(src: Path, out: Path, keep: bool) -> dict[str, np.ndarray]:
    args = [str(src), "--out", str(out), "--patch", "32", "--rotations", "0,1", "--no-mirror",
            "--keep-cut" if keep else "--drop-cut", "--workers", "1", "--device", "cpu"]
    result = runner.invoke(_app(stages.negatives.command), args)
    assert result.exit_code == 0, result.output
    paths = shards.list_shards(out, "train")
    parts = [shards.read_shard(p) for p in paths]
    images = np.concatenate([p[0] for p in parts])
    masks = np.concatenate([p[1] for p in parts])
    meta = shards.concat_meta([p[2] for p in parts])
    return {"images": images, "masks": masks, **meta}


def test_negatives_stage_keeps_or_drops_cut(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    image, mask = _straddle_shard(src)
    assert label_components(mask[0])[1] == 2

    kept = _run_negatives(src, tmp_path / "keep", keep=True)
    ids = list(kept["sample_id"].astype(str))
    assert ids == ["s0_p32_k0_j0", "s0_p32_k1_j0", "s0_p32_k0_j1", "s0_p32_k1_j1"]
    assert kept["cut"].tolist() == [0, 0, 0, 1]  # A's box, rotated, cuts B
    assert kept["source_n_targets"].tolist() == [2] * 4
    assert kept["source_area"].tolist() == [16] * 4
    assert kept["area"].tolist() == [16] * 4  # the box is inside the image: rotation keeps the area
    for i in range(4):
        n, area = label_components(kept["masks"][i])[1], np.count_nonzero(kept["masks"][i])
        assert kept["n_targets"][i] == n and kept["area"][i] == area
        # the stored numbers are what the pure label check says about the stored masks
        (y0, x0), = negative_boxes([[kept["center_y"][i], kept["center_x"][i]]], (S, S), 32, "script")
        check = label_check(mask, kept["masks"][i : i + 1], y0, x0, 32)
        assert bool(check["cut"][0]) == bool(kept["cut"][i])
        ref_img, ref_mask = apply_negatives(torch.from_numpy(image), torch.from_numpy(mask), y0, x0, 32,
                                            int(kept["k"][i]), False)
        assert np.array_equal(kept["images"][i], ref_img[0].numpy())
        assert np.array_equal(kept["masks"][i], ref_mask[0].numpy())
    assert kept["n_targets"][3] > 2  # B's inner part was carried away from the rest of B
    assert np.array_equal(kept["masks"][0], mask[0])  # k = 0 unmirrored: the identity

    dropped = _run_negatives(src, tmp_path / "drop", keep=False)
    assert list(dropped["sample_id"].astype(str)) == ["s0_p32_k0_j0", "s0_p32_k1_j0", "s0_p32_k0_j1"]
    assert dropped["cut"].tolist() == [0, 0, 0]
    assert dropped["source_n_targets"].tolist() == [2] * 3 and dropped["source_area"].tolist() == [16] * 3
    assert (dropped["n_targets"] >= 0).all() and (dropped["area"] == 16).all()


@pytest.mark.slow
@pytest.mark.parametrize("mode, field, mix", [("blend", "resize", 0.1), ("additive", "mosaic", 1.0)])
def test_transfer_tiles_are_what_the_transfer_stage_writes(tmp_path, mode, field, mix):
    """`sirst5k modes` shows exactly what `sirst5k transfer` makes of an image: same draws (keyed by
    the sample id), same function."""
    from sirst5k.formats.bank import read_patches
    from sirst5k.stages.cli import app

    def cli(*args):
        result = runner.invoke(app, [*map(str, args), *(["--workers", "1"] if args[0] != "ingest" else [])])
        assert result.exit_code == 0, result.output

    cli("synth", tmp_path, "--images", 6, "--sequences", 2, "--frames", 4, "--size", 64, "--seed", 5)
    runner.invoke(app, ["ingest", str(tmp_path / "source"), "--out", str(tmp_path / "ing"), "--size", "64",
                        "--layout", "dnanet", "--workers", "1"])
    cli("noise-bank", tmp_path / "frames", "--out", tmp_path / "bank.h5", "--window", 16, "--max-var", 400,
        "--max-seq-var", 1e6, "--max-seq-mean", 1e6)
    cli("transfer", tmp_path / "ing", "--noise-bank", tmp_path / "bank.h5", "--out", tmp_path / "tr", "--mix", mix,
        "--mode", mode, "--field", field, "--seed", 7)
    images, masks, meta = shards.read_shard(shards.list_shards(tmp_path / "tr", "train")[0])
    originals, omasks, ometa = shards.read_shard(shards.list_shards(tmp_path / "ing", "train")[0])
    patches = read_patches(tmp_path / "bank.h5")
    label = f"{mode} / {field}, m={mix:g}"
    compared = 0
    for i, sid in enumerate(ometa["sample_id"].astype(str)):
        if not omasks[i].any():
            continue
        source = (int(ometa["orig_h"][i]), int(ometa["orig_w"][i]))
        tile = next(t for t in mode_tiles(originals[i], omasks[i], patches, seed=7, key=sid, source_size=source)
                    if t.label.startswith(label))
        j = list(meta["sample_id"].astype(str)).index(f"{sid}_m{mix:g}")
        np.testing.assert_array_equal(tile.image, images[j])
        assert np.asarray(tile.params["noise_id"]).flat[0] == meta["noise_id"][j]  # the row the shard records
        compared += 1
    assert compared >= 1
