"""Targets: 8-connected components, centres, areas, boxes."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from sirst5k.method.targets import count_targets, label_components, target_centers, target_table


def _mask(h: int = 32, w: int = 40) -> np.ndarray:
    return np.zeros((h, w), np.uint8)


def test_diagonal_neighbours_are_one_target():
    m = _mask()
    m[5, 5] = m[6, 6] = m[7, 7] = 255  # touch only at corners: one target under 8-connectivity
    m[20, 30] = 255
    assert count_targets(m) == (2, 4)
    _, n = label_components(m)
    assert n == 2


def test_separated_by_one_pixel_are_two_targets():
    m = _mask()
    m[10, 10] = m[10, 12] = 255
    assert count_targets(m)[0] == 2


def test_centres_and_rounding():
    m = _mask()
    m[9:12, 19:22] = 255  # 3x3 square centred on (10, 20)
    m[25:27, 3:5] = 255  # 2x2: centroid (25.5, 3.5) rounds half up to (26, 4)
    m[2, 35] = 255  # single pixel
    m[15:18, 30] = 255  # vertical bar of 3, centroid (16, 30)
    m[28, 30:32] = 255  # horizontal pair: centroid (28, 30.5) -> (28, 31)
    centres = target_centers(m)
    assert centres.dtype == np.int64
    # label order = raster order of each target's first pixel
    assert centres.tolist() == [[2, 35], [10, 20], [16, 30], [26, 4], [28, 31]]


def test_table_area_bbox_centroid():
    m = _mask()
    m[4:7, 8:10] = 255  # 3x2 block
    m[6, 10] = 255  # joins the block beside (6, 9)
    m[20, 20] = m[21, 21] = 255  # diagonal pair
    t = target_table(m)
    assert t["area"].tolist() == [7, 2]
    assert t["bbox"].tolist() == [[4, 8, 7, 11], [20, 20, 22, 22]]
    np.testing.assert_allclose(t["centroid"][1], [20.5, 20.5])
    assert t["center"].tolist()[1] == [21, 21]
    ys, xs = np.nonzero(m[:10])
    np.testing.assert_allclose(t["centroid"][0], [ys.mean(), xs.mean()])


def test_empty_mask():
    m = _mask()
    assert count_targets(m) == (0, 0)
    assert target_centers(m).shape == (0, 2)
    t = target_table(m)
    assert t["area"].shape == (0,) and t["bbox"].shape == (0, 4)


def test_accepts_bool_and_tensor_and_rejects_3d():
    m = _mask()
    m[3:5, 3:5] = 255
    assert target_centers(m.astype(bool)).tolist() == [[4, 4]]
    assert target_centers(torch.from_numpy(m)).tolist() == [[4, 4]]
    with pytest.raises(ValueError):
        target_centers(m[None])


def test_reference_centres_match_coordinates(reference_dir):
    lines = (reference_dir / "inputs" / "coordinates.txt").read_text().splitlines()
    masks = sorted((reference_dir / "inputs" / "masks").glob("*.png"))
    assert len(masks) == 10
    for line, path in zip(lines, masks):
        mask = np.array(Image.open(path).convert("L"))
        listed = {(int(y), int(x)) for x, y in re.findall(r"\((\d+),\s*(\d+)\)", line)}
        assert {tuple(c) for c in target_centers(mask).tolist()} == listed, path.name


def test_batch_target_table_of_an_empty_batch() -> None:
    from sirst5k.method.targets import batch_target_table

    table = batch_target_table(np.zeros((0, 8, 8), np.uint8))
    assert table["count"].shape == (0,) and table["center"].shape == (0, 2)


@pytest.mark.parametrize("density", [0.02, 0.3, 0.55, 0.9])
def test_batch_table_equals_skimage_per_mask(density) -> None:
    """The batch labelling (numpy components, no scipy) numbers targets as skimage does, mask by mask."""
    from sirst5k.method.targets import batch_target_table

    rng = np.random.default_rng(int(density * 100))
    masks = (rng.random((7, 41, 57)) < density).astype(np.uint8) * 255
    # a one-pixel-wide snake through a whole mask: one target of the longest possible path
    masks[3] = 0
    masks[3, ::2, :] = 255
    masks[3, 1::4, -1] = 255
    masks[3, 3::4, 0] = 255
    table = batch_target_table(masks)
    assert table["count"][3] == 1
    for b in range(len(masks)):
        want = target_table(masks[b])
        sel = table["image"] == b
        assert table["count"][b] == len(want["area"])
        for key in ("center", "centroid", "area", "bbox"):
            assert np.array_equal(table[key][sel], want[key]), (b, key)


def test_batch_labelling_does_not_import_scipy() -> None:
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from sirst5k.method.targets import batch_target_table\n"
            "m = np.zeros((2, 16, 16), np.uint8); m[0, 2:4, 2:4] = 255; m[1, 5, 5] = 255\n"
            "assert batch_target_table(m)['count'].tolist() == [1, 1]\n"
            "print(sorted(k for k in sys.modules if k.startswith('scipy')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
