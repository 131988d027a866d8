"""Rotated negatives: boxes, the batched mirror+rotate, label checks, parity with the scripts.

The parity with the original scripts is checked twice: on the method functions, and through the
shipped stage task (`negatives_shard`: a shard in, shards out), which calls the same functions.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sirst5k.formats import shards
from sirst5k.method.negatives import (
    NegativeParams,
    apply_negatives,
    build_negatives,
    check_negatives,
    draw_negative_params,
    label_check,
    negative_boxes,
    plan_negatives,
)
from sirst5k.method.targets import count_targets, target_centers
from sirst5k.stages.negatives import negatives_shard


def _grey(path: Path) -> np.ndarray:
    return np.array(Image.open(path).convert("L"))


def _reference_case(reference_dir: Path, clamp: str, device: torch.device):
    """Our negatives for every reference file; returns (n compared, list of mismatching names)."""
    lines = (reference_dir / "inputs" / "coordinates.txt").read_text().splitlines()
    ids = sorted(p.stem for p in (reference_dir / "inputs" / "images").glob("*.png"))
    compared, wrong = 0, []
    for line, sid in zip(lines, ids):
        image = _grey(reference_dir / "outputs" / "mix" / "0.1" / f"{sid}.png")
        mask = _grey(reference_dir / "inputs" / "masks" / f"{sid}.png")
        centres = target_centers(mask)
        params = draw_negative_params(centres, mask.shape, 32, clamp=clamp)
        t = params.tensors(device)
        n = len(params)
        images = torch.from_numpy(image).to(device).expand(n, -1, -1)
        masks = torch.from_numpy(mask).to(device).expand(n, -1, -1)
        out_images, out_masks = apply_negatives(images, masks, t["y0"], t["x0"], 32, t["k"], t["flip"])
        out_images, out_masks = out_images.cpu().numpy(), out_masks.cpu().numpy()
        # coordinates.txt only says which of our targets the script called j
        listed = [(int(y), int(x)) for x, y in re.findall(r"\((\d+),\s*(\d+)\)", line)]
        for j, yx in enumerate(listed):
            target = int(np.abs(centres - np.array(yx)).sum(axis=1).argmin())
            for k in range(4):
                (s,) = np.flatnonzero((params.target_index == target) & (params.k == k))
                name = f"{sid}_k{k}_j{j}.png"
                ref_image = _grey(reference_dir / "outputs" / "0.1_32_images" / name)
                ref_mask = _grey(reference_dir / "outputs" / "32_masks" / name)
                compared += 1
                if not (np.array_equal(out_images[s], ref_image) and np.array_equal(out_masks[s], ref_mask)):
                    wrong.append(name)
    return compared, wrong


def test_parity_with_reference_scripts(reference_dir, device):
    assert len(list((reference_dir / "outputs" / "0.1_32_images").glob("*.png"))) == 52
    compared, wrong = _reference_case(reference_dir, "script", device)
    assert compared == 52
    assert wrong == []


def _listed_targets(reference_dir: Path) -> dict[str, list[tuple[int, int]]]:
    """Per reference image id, the (y, x) centres coordinates.txt lists, in the scripts' j order."""
    lines = (reference_dir / "inputs" / "coordinates.txt").read_text().splitlines()
    ids = sorted(p.stem for p in (reference_dir / "inputs" / "images").glob("*.png"))
    return {sid: [(int(y), int(x)) for x, y in re.findall(r"\((\d+),\s*(\d+)\)", line)]
            for line, sid in zip(lines, ids)}


def test_stage_task_parity_with_reference_scripts(reference_dir, device, tmp_path):
    """The shipped path: the mix/0.1 images and the masks as one shard, through the stage's
    per-shard task, must give the scripts' 52 negatives pixel for pixel, found by sample id."""
    listed = _listed_targets(reference_dir)
    ids = sorted(listed)
    images = np.stack([_grey(reference_dir / "outputs" / "mix" / "0.1" / f"{sid}.png") for sid in ids])
    masks = np.stack([_grey(reference_dir / "inputs" / "masks" / f"{sid}.png") for sid in ids])
    meta = shards.new_meta(len(ids))
    meta["sample_id"][:], meta["source_id"][:], meta["kind"][:] = ids, ids, "transfer"
    src = shards.write_shard(tmp_path / "in" / "train-00000.h5", images, masks, meta,
                             {"dataset": "reference", "version": "0", "split": "train", "shard_index": 0,
                              "n_shards": 1})
    params = {"patch": [32], "mirror": True, "rotations": [0, 1, 2, 3], "clamp": "script", "keep_cut": True,
              "split": "train", "shard_size": 20}
    result = negatives_shard(src.path, src.sha256, str(tmp_path / "out"), 0, params, device.type)
    assert [info.n_samples for info in result.shards] == [20, 20, 12] and result.device == device.type
    parts = [shards.read_shard(info.path) for info in result.shards]
    out_images, out_masks = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    out = shards.concat_meta([p[2] for p in parts])
    row = {sid: i for i, sid in enumerate(out["sample_id"].astype(str))}
    compared, wrong = 0, []
    for sid, targets in listed.items():
        ours = (out["source_id"].astype(str) == sid) & (out["k"] == 0)
        centres = np.stack([out["center_y"][ours], out["center_x"][ours]], axis=1)
        for j, yx in enumerate(targets):
            # coordinates.txt only says which of our targets (label order) the script called j
            ours_j = int(out["target_index"][ours][np.abs(centres - np.array(yx)).sum(axis=1).argmin()])
            for k in range(4):
                i = row[f"{sid}_p32_k{k}_j{ours_j}"]
                assert (out["patch"][i], out["k"][i], out["flip"][i]) == (32, k, 1)
                name = f"{sid}_k{k}_j{j}.png"
                compared += 1
                if not (np.array_equal(out_images[i], _grey(reference_dir / "outputs" / "0.1_32_images" / name))
                        and np.array_equal(out_masks[i], _grey(reference_dir / "outputs" / "32_masks" / name))):
                    wrong.append(name)
    assert compared == 52 == len(row)
    assert wrong == []


def test_clip_rule_differs_from_reference(reference_dir):
    # Targets at x=230 (000008) and y=228 (000006) get boxes at 224 from the script, 214/212 from clip.
    _, wrong = _reference_case(reference_dir, "clip", torch.device("cpu"))
    assert {name.split("_")[0] for name in wrong} >= {"000006", "000008"}


# ---------------------------------------------------------------- boxes


@pytest.mark.parametrize(
    "centre, script, clip",
    [
        ((128, 128), (112, 112), (112, 112)),
        ((0, 0), (0, 0), (0, 0)),
        ((255, 255), (224, 224), (224, 224)),
        ((20, 31), (0, 0), (4, 15)),  # below P: script snaps to 0
        ((32, 224), (16, 208), (16, 208)),  # the thresholds themselves are inside
        ((225, 230), (224, 224), (209, 214)),  # above S-P: script snaps to S-P
        ((0, 243), (0, 224), (0, 224)),
        ((16, 240), (0, 224), (0, 224)),
    ],
)
def test_boxes_32_on_256(centre, script, clip):
    assert negative_boxes([centre], (256, 256), 32, "script").tolist() == [list(script)]
    assert negative_boxes([centre], (256, 256), 32, "clip").tolist() == [list(clip)]


@pytest.mark.parametrize("patch", [3, 5, 7, 9])
def test_odd_boxes_are_centred(patch):
    centres = np.array([[50, 60], [10, 90]])
    for clamp in ("script", "clip"):
        corners = negative_boxes(centres, (100, 120), patch, clamp)
        # interior centre: the box's middle pixel is the centre
        np.testing.assert_array_equal(corners + patch // 2, centres)


def test_boxes_stay_inside_non_square_image():
    h, w = 70, 150
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    centres = np.stack([ys.ravel(), xs.ravel()], axis=1)
    for patch in (2, 5, 32, 70):
        for clamp in ("script", "clip"):
            c = negative_boxes(centres, (h, w), patch, clamp)
            assert (c >= 0).all()
            assert (c[:, 0] <= h - patch).all() and (c[:, 1] <= w - patch).all()
            clipped = np.clip(centres - patch // 2, 0, [h - patch, w - patch])
            if clamp == "clip":
                np.testing.assert_array_equal(c, clipped)


def test_box_errors():
    with pytest.raises(ValueError):
        negative_boxes([[10, 10]], (40, 30), 31)
    with pytest.raises(ValueError):
        negative_boxes([[10, 10]], (40, 30), 0)
    with pytest.raises(ValueError):
        negative_boxes([[10, 10]], (40, 30), 5, clamp="nearest")


# ---------------------------------------------------------------- params


def test_params_enumerate_targets_times_rotations():
    centres = [np.array([[10, 10], [40, 50]]), np.zeros((0, 2), int), np.array([[60, 5]])]
    p = draw_negative_params(centres, (64, 64), 8)
    assert len(p) == 12
    assert p.source.tolist() == [0] * 8 + [2] * 4
    assert p.target_index.tolist() == [0] * 4 + [1] * 4 + [0] * 4
    assert p.k.tolist() == [0, 1, 2, 3] * 3
    assert p.flip.all()
    np.testing.assert_array_equal(np.stack([p.y0, p.x0], 1), negative_boxes(p.center, (64, 64), 8))
    q = draw_negative_params(centres, (64, 64), 8, rotations=(1, 3), mirror=False)
    assert q.k.tolist() == [1, 3] * 3 and not q.flip.any()


def test_params_sampled_are_replayable():
    centres = np.array([[10, 10], [40, 50], [30, 30]])
    draw = lambda seed: draw_negative_params(  # noqa: E731
        centres, (64, 64), 8, rng=np.random.default_rng(seed), n_per_target=2
    )
    a, b = draw(7), draw(7)
    assert len(a) == 6
    np.testing.assert_array_equal(a.k, b.k)
    for t in range(3):
        ks = a.k[a.target_index == t]
        assert len(set(ks.tolist())) == 2
    with pytest.raises(ValueError):
        draw_negative_params(centres, (64, 64), 8, n_per_target=2)


def test_params_empty():
    p = draw_negative_params([np.zeros((0, 2), int)], (64, 64), 8)
    assert len(p) == 0
    out, _ = apply_negatives(torch.zeros(0, 64, 64), torch.zeros(0, 64, 64), p.y0, p.x0, 8, p.k, p.flip)
    assert out.shape == (0, 64, 64)


# ---------------------------------------------------------------- plans of a batch of masks


def _random_masks(seed: int, n: int = 5, h: int = 40, w: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = (rng.random((n, h, w)) < 0.02).astype(np.uint8) * 255
    masks[0, :2, :3] = 255  # a target on the border
    masks[2] = 0  # a mask without targets
    return masks


def test_plan_enumerates_sample_patch_target_k():
    masks = _random_masks(2)
    plan = plan_negatives(masks, [8, 3], rotations=[1, 3], mirror=True, clamp="script")
    rows = []
    for i, mask in enumerate(masks):
        centers = target_centers(mask)
        for p in (8, 3):  # in the order given, not sorted
            for j, ((cy, cx), (y, x)) in enumerate(zip(centers, negative_boxes(centers, mask.shape, p, "script"))):
                rows += [(i, j, p, k, True, y, x, cy, cx) for k in (1, 3)]
    got = list(zip(plan.source.tolist(), plan.target_index.tolist(), plan.patch.tolist(), plan.k.tolist(),
                   plan.flip.tolist(), plan.y0.tolist(), plan.x0.tolist(), plan.center[:, 0].tolist(),
                   plan.center[:, 1].tolist()))
    assert got == rows and len(plan) == len(rows) > 0


def test_plan_of_one_patch_is_draw_negative_params():
    masks = _random_masks(3)
    plan = plan_negatives(masks, [5], rotations=(0, 2), mirror=False, clamp="clip")
    drawn = draw_negative_params([target_centers(m) for m in masks], masks.shape[1:], 5, rotations=(0, 2),
                                 mirror=False, clamp="clip")
    for name in ("patch", "source", "target_index", "center", "y0", "x0", "k", "flip"):
        np.testing.assert_array_equal(getattr(plan, name), getattr(drawn, name), err_msg=name)


def test_plan_empty_cases():
    masks = _random_masks(4)
    assert len(plan_negatives(np.zeros((3, 20, 20), np.uint8), [32])) == 0  # no target: nothing to place
    assert len(plan_negatives(masks, [])) == 0
    assert len(plan_negatives(masks, [3], rotations=[])) == 0
    empty = plan_negatives(masks[:0], [3])
    images, out_masks = build_negatives(masks[:0], masks[:0], empty)
    assert images.shape == (0, 40, 48) and out_masks.shape == (0, 40, 48)
    assert all(len(v) == 0 for v in check_negatives(masks[:0], empty).values())
    with pytest.raises(ValueError):
        plan_negatives(masks, [41])  # does not fit 40 rows
    with pytest.raises(ValueError):
        plan_negatives(masks, [3], clamp="nearest")


def test_plan_take_and_concat():
    plan = plan_negatives(_random_masks(5), [3, 8])
    head, tail = plan.take(slice(0, 7)), plan.take(slice(7, None))
    both = NegativeParams.concat([head, tail])
    for name in ("patch", "source", "target_index", "center", "y0", "x0", "k", "flip"):
        np.testing.assert_array_equal(getattr(both, name), getattr(plan, name))
    picked = plan.take(plan.patch == 8)
    assert len(picked) == int((plan.patch == 8).sum()) and (picked.patch == 8).all()
    assert [p for p, _ in plan.by_patch()] == [3, 8]


@pytest.mark.parametrize("clamp", ["script", "clip"])
def test_build_equals_apply_per_negative(device, clamp):
    """The stage's builder (several patch sizes, a slice of a plan) makes what apply_negatives makes."""
    rng = np.random.default_rng(6)
    masks = _random_masks(6)
    images = rng.integers(0, 256, masks.shape, dtype=np.uint8)
    snapshot = images.copy(), masks.copy()
    plan = plan_negatives(masks, [3, 32, 8], rotations=(0, 1, 2, 3), mirror=True, clamp=clamp)
    part = plan.take(slice(3, len(plan) - 2))
    built_images, built_masks = build_negatives(images, masks, part, device)
    assert built_images.shape == (len(part), 40, 48) and built_images.dtype == np.uint8
    for i in range(len(part)):
        s, p = int(part.source[i]), int(part.patch[i])
        ref_i, ref_m = apply_negatives(torch.from_numpy(images[s : s + 1]).to(device),
                                       torch.from_numpy(masks[s : s + 1]).to(device),
                                       int(part.y0[i]), int(part.x0[i]), p, int(part.k[i]), bool(part.flip[i]))
        np.testing.assert_array_equal(built_images[i], ref_i[0].cpu().numpy())
        np.testing.assert_array_equal(built_masks[i], ref_m[0].cpu().numpy())
    assert np.array_equal(images, snapshot[0]) and np.array_equal(masks, snapshot[1]), "sources modified"


def test_check_equals_label_check_of_built_masks(device):
    masks = _random_masks(7, n=6)
    masks[1, 10, 4:30] = 255  # a line that boxes around its neighbours cut
    masks[1, 11, 20] = 255
    plan = plan_negatives(masks, [8, 3], rotations=(0, 1, 2, 3), mirror=False)
    check = check_negatives(masks, plan, device)
    _, built = build_negatives(masks, masks, plan, device)
    for p, sel in plan.by_patch():
        ref = label_check(masks, built[sel], plan.y0[sel], plan.x0[sel], p, source=plan.source[sel])
        for name, values in ref.items():
            np.testing.assert_array_equal(check[name][sel], values, err_msg=f"patch {p} {name}")
    assert check["cut"].any() and not check["cut"].all()


def test_build_and_check_refuse_bad_plans():
    masks = _random_masks(8)
    plan = plan_negatives(masks, [3])
    with pytest.raises(ValueError):
        build_negatives(masks[:1], masks[:1], plan)  # sources beyond the batch
    with pytest.raises(ValueError):
        check_negatives(masks[:, :2, :2], plan)  # boxes outside smaller images
    with pytest.raises(ValueError):
        build_negatives(masks, masks[:, :, :10], plan)


# ---------------------------------------------------------------- transform


def _reference_negative(image, y0, x0, patch, k, flip):
    out = image.copy()
    box = image[y0 : y0 + patch, x0 : x0 + patch]
    out[y0 : y0 + patch, x0 : x0 + patch] = np.rot90(box[:, ::-1] if flip else box, k)
    return out


@pytest.mark.parametrize("patch", [1, 3, 4, 7, 32])
def test_matches_numpy_and_pil(device, patch):
    rng = np.random.default_rng(patch)
    h, w, n = 48, 80, 16
    images = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
    masks = (rng.random((n, h, w)) < 0.1).astype(np.uint8) * 255
    y0 = rng.integers(0, h - patch + 1, n)
    x0 = rng.integers(0, w - patch + 1, n)
    k = np.arange(n) % 4
    flip = np.arange(n) // 4 % 2 == 0
    ti, tm = torch.from_numpy(images).to(device), torch.from_numpy(masks).to(device)
    out_i, out_m = apply_negatives(ti, tm, torch.as_tensor(y0), torch.as_tensor(x0), patch, k, flip)
    assert out_i.device == ti.device and out_i.dtype == torch.uint8
    out_i, out_m = out_i.cpu().numpy(), out_m.cpu().numpy()
    for s in range(n):
        np.testing.assert_array_equal(out_i[s], _reference_negative(images[s], y0[s], x0[s], patch, k[s], flip[s]))
        np.testing.assert_array_equal(out_m[s], _reference_negative(masks[s], y0[s], x0[s], patch, k[s], flip[s]))
        # the scripts' PIL operations: transpose(FLIP_LEFT_RIGHT) then rotate(90 * k)
        box = Image.fromarray(images[s][y0[s] : y0[s] + patch, x0[s] : x0[s] + patch])
        if flip[s]:
            box = box.transpose(Image.FLIP_LEFT_RIGHT)
        box = np.array(box.rotate(90 * int(k[s])))
        np.testing.assert_array_equal(out_i[s][y0[s] : y0[s] + patch, x0[s] : x0[s] + patch], box)


def test_identities(device):
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (3, 40, 40), dtype=np.uint8)).to(device)
    masks = images.clone()
    snapshot = images.clone()
    y0, x0 = torch.tensor([0, 5, 31]), torch.tensor([31, 17, 0])
    zero, no = torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.bool)
    same, _ = apply_negatives(images, masks, y0, x0, 9, zero, no)
    assert torch.equal(same, images)
    twice, _ = apply_negatives(*apply_negatives(images, masks, y0, x0, 9, zero + 2, no), y0, x0, 9, zero + 2, no)
    assert torch.equal(twice, images)
    four = (images, masks)
    for _ in range(4):
        four = apply_negatives(*four, y0, x0, 9, zero + 1, no)
    assert torch.equal(four[0], images)
    # mirror then k=2 is an up-down flip; doing it twice is the identity
    flipped, _ = apply_negatives(images, masks, y0, x0, 9, zero + 2, ~no)
    assert not torch.equal(flipped, images)
    back, _ = apply_negatives(flipped, masks, y0, x0, 9, zero + 2, ~no)
    assert torch.equal(back, images)
    assert torch.equal(images, snapshot), "input modified"


def test_mirror_off_differs_from_mirror_on(device):
    image = torch.arange(16 * 16, dtype=torch.uint8).view(1, 16, 16).to(device)
    on, _ = apply_negatives(image, image, [4], [4], 6, [1], [True])
    off, _ = apply_negatives(image, image, [4], [4], 6, [1], [False])
    expected_off = _reference_negative(image[0].cpu().numpy(), 4, 4, 6, 1, False)
    np.testing.assert_array_equal(off[0].cpu().numpy(), expected_off)
    assert not torch.equal(on, off)


def test_transform_errors():
    x = torch.zeros(2, 20, 30, dtype=torch.uint8)
    with pytest.raises(ValueError):
        apply_negatives(x, x, [0, 0], [0, 0], 21, [0, 0], [False, False])  # too big
    with pytest.raises(ValueError):
        apply_negatives(x, x, [0, 16], [0, 0], 5, [0, 0], [False, False])  # starts too low
    with pytest.raises(ValueError):
        apply_negatives(x, x, [0, -1], [0, 0], 5, [0, 0], [False, False])
    with pytest.raises(ValueError):
        apply_negatives(x, x[:1], [0, 0], [0, 0], 5, [0, 0], [False, False])
    with pytest.raises(ValueError):
        apply_negatives(x, x, [0, 0, 0], [0, 0, 0], 5, [0, 0, 0], [False] * 3)


# ---------------------------------------------------------------- label check


def test_inside_target_keeps_label(device):
    mask = np.zeros((64, 64), np.uint8)
    mask[30:33, 28:34] = 255  # 3x6 bar, well inside a 16-px box
    mask[5, 5] = 255
    centres = target_centers(mask)  # label order: the pixel at (5, 5) first, then the bar
    p = draw_negative_params(centres[1:], (64, 64), 16)
    n = len(p)
    masks = torch.from_numpy(mask).to(device).expand(n, -1, -1)
    _, out = apply_negatives(masks, masks, p.y0, p.x0, 16, p.k, p.flip)
    out = out.cpu().numpy()
    assert set(np.unique(out).tolist()) == {0, 255}
    check = label_check(masks, out, p.y0, p.x0, 16)
    assert not check["cut"].any() and not check["straddle"].any()
    np.testing.assert_array_equal(check["area_before"], check["area_after"])
    np.testing.assert_array_equal(check["n_targets_after"], [2] * 4)
    for s in range(n):
        assert count_targets(out[s]) == (2, 3 * 6 + 1)


def test_straddling_target_is_cut():
    mask = np.zeros((40, 40), np.uint8)
    mask[10, 4:20] = 255  # a 16-px line; an 8-px box at x0=12 holds only its right end
    masks = np.repeat(mask[None], 3, 0)
    y0, x0 = np.array([6, 6, 6]), np.array([12, 12, 12])
    k, flip = np.array([1, 0, 2]), np.array([False, False, False])
    _, out = apply_negatives(torch.from_numpy(masks), torch.from_numpy(masks), y0, x0, 8, k, flip)
    check = label_check(masks, out, y0, x0, 8)
    assert check["straddle"].all()
    assert check["cut"].tolist() == [True, False, True]  # k=0 without flip changes nothing
    assert check["n_targets_before"].tolist() == [1, 1, 1]
    assert check["n_targets_after"][0] == 2
    np.testing.assert_array_equal(check["area_before"], check["area_after"])
