"""pipeline.imageio: every PNG flavour read as grey, masks binarised, atomic writes."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sirst5k.formats import imageio
from sirst5k.errors import InputError, OutputError
from sirst5k.formats.imageio import (
    binarise_mask,
    image_size,
    read_grey,
    read_mask,
    resize_image,
    resize_mask,
    wide_to_uint8,
    write_png,
)


def _grey(h: int = 12, w: int = 16) -> np.ndarray:
    return ((np.arange(h * w).reshape(h, w) * 7) % 256).astype(np.uint8)


def _save(path: Path, im: Image.Image, **kw) -> Path:
    im.save(path, **kw)
    return path


def _write_interlaced_grey_png(path: Path, arr: np.ndarray) -> Path:
    """An Adam7-interlaced 8-bit grey PNG, written by hand: PIL cannot write interlaced."""
    h, w = arr.shape
    passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]
    raw = b""
    for y0, x0, dy, dx in passes:
        sub = arr[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        raw += b"".join(b"\x00" + row.tobytes() for row in sub)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 1)  # depth 8, grey, interlace Adam7
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------ read_grey


def test_rgb_encoded_grey_with_differing_channels_reads_as_luma(tmp_path):
    g = _grey().astype(np.int16)
    rgb = np.stack([g, np.clip(g + 1, 0, 255), np.clip(g - 2, 0, 255)], axis=2).astype(np.uint8)
    path = _save(tmp_path / "rgb.png", Image.fromarray(rgb))
    out = read_grey(path)
    assert out.dtype == np.uint8 and out.shape == (12, 16)
    np.testing.assert_array_equal(out, np.asarray(Image.fromarray(rgb).convert("L")))
    assert np.abs(out.astype(int) - g).max() <= 2


def test_grey_png_is_exact(tmp_path):
    g = _grey()
    assert np.array_equal(read_grey(_save(tmp_path / "g.png", Image.fromarray(g))), g)


def test_rgba_and_la_ignore_alpha(tmp_path):
    g = _grey()
    alpha = np.full_like(g, 7)
    rgba = np.stack([g, g, g, alpha], axis=2)
    la = Image.merge("LA", [Image.fromarray(g), Image.fromarray(alpha)])
    np.testing.assert_array_equal(read_grey(_save(tmp_path / "a.png", Image.fromarray(rgba))), g)
    np.testing.assert_array_equal(read_grey(_save(tmp_path / "la.png", la)), g)


def test_palette_png(tmp_path):
    g = _grey()
    im = Image.fromarray(np.stack([g] * 3, axis=2)).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    path = _save(tmp_path / "p.png", im)
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(read_grey(path), np.asarray(im.convert("L")))


def test_interlaced_png(tmp_path):
    g = _grey(13, 11)
    path = _write_interlaced_grey_png(tmp_path / "i.png", g)
    with Image.open(path) as im:
        assert im.info.get("interlace") == 1
    np.testing.assert_array_equal(read_grey(path), g)


def test_one_bit_png_reads_as_0_255(tmp_path):
    b = (_grey() > 100)
    path = _save(tmp_path / "b.png", Image.fromarray(b))
    assert Image.open(path).mode == "1"
    np.testing.assert_array_equal(read_grey(path), np.where(b, 255, 0))


def test_sixteen_bit_png_scales_by_fixed_rule(tmp_path):
    v = np.array([[0, 128, 129, 257, 385, 386], [1000, 30000, 65278, 65279, 65534, 65535]], dtype=np.uint16)
    path = _save(tmp_path / "w.png", Image.fromarray(v))
    assert Image.open(path).mode.startswith("I")
    out = read_grey(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.round(v / 257.0).astype(np.uint8))
    assert out[0].tolist() == [0, 0, 1, 1, 1, 2] and out[1, -1] == 255


def test_sixteen_bit_rule_is_not_per_image_stretch():
    # Two frames of one dim sequence must keep their relative levels.
    a = np.full((2, 2), 1000, np.uint16)
    b = np.full((2, 2), 2000, np.uint16)
    assert wide_to_uint8(a)[0, 0] == 4 and wide_to_uint8(b)[0, 0] == 8


@pytest.mark.parametrize("fmt", ["jpg", "bmp", "tif"])
def test_other_formats(tmp_path, fmt):
    g = np.add.outer(np.arange(16) * 4, np.arange(24) * 3).astype(np.uint8)  # smooth: JPEG-friendly
    path = _save(tmp_path / f"x.{fmt}", Image.fromarray(g), **({"quality": 95} if fmt == "jpg" else {}))
    out = read_grey(path)
    assert out.shape == g.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - g).max() <= (6 if fmt == "jpg" else 0)


def _assert_one_line(err: InputError, path: Path, *words: str) -> None:
    text = str(err)
    assert "\n" not in text
    assert str(path) in text
    for word in words:
        assert word in text


@pytest.mark.parametrize(
    "content,word",
    [(b"", "empty"), (b"this is not an image at all" * 10, "cannot read image")],
    ids=["zero-byte", "garbage"],
)
def test_unreadable_file_is_one_line_input_error(tmp_path, content, word):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        read_grey(path)
    _assert_one_line(info.value, path, "cannot read image", word)
    assert info.value.path == str(path)


def test_truncated_png_is_input_error(tmp_path):
    good = _save(tmp_path / "good.png", Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)))
    path = tmp_path / "cut.png"
    path.write_bytes(good.read_bytes()[:200])
    with pytest.raises(InputError) as info:
        read_grey(path)
    _assert_one_line(info.value, path, "cannot read image")
    with pytest.raises(InputError):
        read_mask(path)


def test_missing_file_is_input_error(tmp_path):
    with pytest.raises(InputError) as info:
        read_grey(tmp_path / "nope.png")
    _assert_one_line(info.value, tmp_path / "nope.png", "no such file")
    with pytest.raises(InputError):
        image_size(tmp_path / "nope.png")


def test_image_size_reads_header(tmp_path):
    assert image_size(_save(tmp_path / "g.png", Image.fromarray(_grey(9, 21)))) == (9, 21)


# ------------------------------------------------------------------ read_mask


def test_binary_mask_passes_without_warning(tmp_path):
    m = np.zeros((8, 8), np.uint8)
    m[2:4, 3:5] = 255
    out, warnings = read_mask(_save(tmp_path / "m.png", Image.fromarray(m)))
    assert warnings == [] and np.array_equal(out, m)


def test_non_binary_mask_is_thresholded_with_warning(tmp_path):
    m = np.array([[0, 50, 127, 128, 200, 255]], np.uint8)
    path = _save(tmp_path / "soft.png", Image.fromarray(m))
    out, warnings = read_mask(path)
    assert out.tolist() == [[0, 0, 0, 255, 255, 255]]
    assert len(warnings) == 1 and str(path) in warnings[0] and "127" in warnings[0]


def test_zero_one_label_mask_keeps_targets(tmp_path):
    m = np.zeros((6, 6), np.uint8)
    m[1, 1] = 1
    out, warnings = read_mask(_save(tmp_path / "lab.png", Image.fromarray(m)))
    assert out[1, 1] == 255 and out.sum() == 255 and len(warnings) == 1


def test_colour_masks_keep_targets(tmp_path):
    red = np.zeros((6, 6, 3), np.uint8)
    red[2, 3] = (255, 0, 0)
    out, _ = read_mask(_save(tmp_path / "red.png", Image.fromarray(red)))
    assert out[2, 3] == 255 and out.sum() == 255
    # VOC-style palette: index 1 = (128, 0, 0).
    idx = np.zeros((6, 6), np.uint8)
    idx[4, 4] = 1
    pal = Image.frombytes("P", (6, 6), idx.tobytes())
    pal.putpalette([0, 0, 0, 128, 0, 0] + [0] * (256 * 3 - 6))
    path = _save(tmp_path / "voc.png", pal)
    with Image.open(path) as im:
        assert im.mode == "P" and np.asarray(im)[4, 4] == 1
    out, _ = read_mask(path)
    assert out[4, 4] == 255 and out.sum() == 255


def test_binarise_mask_unit():
    out, warnings = binarise_mask(np.array([[0, 255]], np.uint8))
    assert warnings == [] and out.tolist() == [[0, 255]]


# ------------------------------------------------------------------ resize


def test_resize_image_bilinear_matches_pil_and_takes_height_width():
    g = _grey(12, 16)
    out = resize_image(g, (6, 10))
    assert out.shape == (6, 10) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(Image.fromarray(g).resize((10, 6), Image.Resampling.BILINEAR)))
    assert resize_image(g, 8).shape == (8, 8)
    # Bilinear makes in-between values, unlike nearest.
    step = np.zeros((4, 4), np.uint8)
    step[:, 2:] = 200
    assert len(np.unique(resize_image(step, 9))) > 2


def test_resize_mask_nearest_stays_binary():
    m = np.zeros((7, 9), np.uint8)
    m[3, 4] = 255
    m[0:2, 0:2] = 255
    for size in [(14, 18), 5, (31, 3)]:
        out = resize_mask(m, size)
        assert set(np.unique(out)) <= {0, 255}
    assert resize_mask(m, (14, 18))[6:8, 8:10].min() == 255


def test_resize_rejects_nonpositive():
    with pytest.raises(ValueError):
        resize_image(_grey(), 0)


# ------------------------------------------------------------------ write_png


def test_write_png_roundtrip_and_no_temp_left(tmp_path):
    g = _grey()
    path = tmp_path / "sub" / "out.png"
    write_png(path, g)
    assert np.array_equal(np.asarray(Image.open(path)), g)
    rgb = np.stack([g, g, 255 - g], axis=2)
    write_png(path, rgb)
    assert np.array_equal(np.asarray(Image.open(path)), rgb)
    w = (g.astype(np.uint16) * 257)
    write_png(tmp_path / "w.png", w)
    assert np.array_equal(read_grey(tmp_path / "w.png"), g)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["out.png"]


def test_write_png_level_and_strategy_keep_the_pixels(tmp_path):
    """synth writes its PNGs at level 1 with zlib's run-length strategy: other bytes, same pixels."""
    import zlib

    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    mask = np.zeros((40, 50), np.uint8)
    mask[10:13, 20:24] = 255
    for a in (noisy, mask):
        write_png(tmp_path / "default.png", a)
        write_png(tmp_path / "rle.png", a, 1, zlib.Z_RLE)
        assert (tmp_path / "default.png").read_bytes() != (tmp_path / "rle.png").read_bytes()
        assert np.array_equal(np.asarray(Image.open(tmp_path / "rle.png")), a)


def test_write_png_is_atomic_when_rename_fails(tmp_path, monkeypatch):
    path = tmp_path / "keep.png"
    write_png(path, _grey())
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(imageio.os, "replace", boom)
    with pytest.raises(OutputError) as info:
        write_png(path, np.zeros((5, 5), np.uint8))
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_write_png_unwritable_location_is_output_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        write_png(blocker / "out.png", _grey())


def test_write_png_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError):
        write_png(tmp_path / "f.png", np.zeros((4, 4), np.float32))
    assert not os.listdir(tmp_path)


def test_thresholded_mask_says_how_many_target_pixels_were_lost(tmp_path):
    # an anti-aliased target: a bright core of 2 pixels, a soft rim of 5 that the threshold drops
    m = np.zeros((6, 6), np.uint8)
    m[2, 2:4] = 255
    m[1, 2:4] = 90
    m[3, 1:4] = 40
    _, warnings = binarise_mask(m, "soft.png")
    assert warnings == ["soft.png: mask has 5 pixels not 0 or 255; binarised at value > 127: 5 non-zero pixel(s) "
                        "at or below 127 dropped from the target(s), 2 target pixel(s) kept"]
    m[m == 90] = 200  # the rim above the threshold is kept
    _, warnings = binarise_mask(m, "soft.png")
    assert warnings[0].endswith(": 3 non-zero pixel(s) at or below 127 dropped from the target(s), 4 target pixel(s) kept")
    m[m == 40] = 130
    _, warnings = binarise_mask(m, "soft.png")
    assert warnings[0].endswith("no target pixel lost, 7 kept")
