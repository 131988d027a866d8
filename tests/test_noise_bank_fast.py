"""The faster noise bank (issue 16) computes what the slower one did, bit for bit.

Each new piece against the old way: window statistics in numpy against the float64 torch
reduction, the spot test's 5x5 median network and its restriction to the boxes that matter
against scipy.ndimage on whole frames, the scene split from one decode against the old
two-decode split, the table against rich's; and the command: no torch or scipy imported, the
same bank for any worker count and where the tasks run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from sirst5k.errors import InputError
from sirst5k.formats.frames import (
    list_sequences,
    run_names,
    scene_run_index,
    scene_runs,
    sequence_shape,
    split_scene_runs,
    standardised,
    thumbnail,
)
from sirst5k.formats.imageio import read_grey
from sirst5k.method import noise_bank as nb
from sirst5k.stages.cli import app
from sirst5k.stages.noise_bank import _TABLE_COLUMNS, _TABLE_TITLE, table_text

runner = CliRunner()


def torch_stats(frames: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """window_stats' float64 torch reduction (a tensor input takes it)."""
    var, mean = nb.window_stats(torch.from_numpy(np.ascontiguousarray(frames)), window, stride)
    return var.numpy(), mean.numpy()


def spiky(rng, t: int, h: int, w: int, level: int = 100, sigma: float = 3.0) -> np.ndarray:
    x = np.clip(np.rint(level + rng.normal(0, sigma, (t, h, w))), 0, 255).astype(np.uint8)
    for _ in range(max(1, h * w // 400)):  # hot pixels, dead pixels, 2x2 targets
        i, y, xx = rng.integers(0, t), rng.integers(0, h - 1), rng.integers(0, w - 1)
        x[i, y : y + rng.integers(1, 3), xx : xx + rng.integers(1, 3)] = rng.choice([0, 255, level + 30])
    return x


# ---------------------------------------------------------------- window statistics without torch


@pytest.mark.parametrize("window,stride", [(32, 32), (32, 16), (16, 5), (8, 8), (64, 48), (4, 1)])
def test_numpy_window_stats_are_the_torch_bits(window, stride):
    rng = np.random.default_rng(window * 100 + stride)
    for frames in (rng.integers(0, 256, (3, 77, 141)).astype(np.uint8), spiky(rng, 2, 96, 130),
                   np.full((2, 70, 70), 255, np.uint8), rng.integers(-128, 128, (2, 65, 66)).astype(np.int8)):
        assert nb._exact_in_float64(frames, window)
        var, mean = nb.window_stats(frames, window, stride)
        ref_var, ref_mean = torch_stats(frames, window, stride)
        assert var.dtype == mean.dtype == np.float64 and var.shape == ref_var.shape
        assert var.tobytes() == ref_var.tobytes() and mean.tobytes() == ref_mean.tobytes()


def test_window_stats_keep_torch_where_float64_is_not_exact():
    rng = np.random.default_rng(3)
    wide = rng.integers(0, 65536, (2, 64, 64)).astype(np.uint16)  # 2 x 16 + 3 x 10 bits > 53
    assert not nb._exact_in_float64(wide, 32)
    assert not nb._exact_in_float64(rng.integers(0, 256, (2, 48, 48)).astype(np.uint8), 24)  # 576 px: no power of 2
    assert not nb._exact_in_float64(rng.normal(size=(2, 40, 40)), 32)  # float pixels
    assert nb._exact_in_float64(np.zeros((0, 10, 10), np.float32), 32)  # nothing to add
    for frames, window in ((wide, 32), (rng.integers(0, 256, (2, 48, 48)).astype(np.uint8), 24)):
        var, mean = nb.window_stats(frames, window, window)
        ref_var, ref_mean = torch_stats(frames, window, window)
        assert var.tobytes() == ref_var.tobytes() and mean.tobytes() == ref_mean.tobytes()


# ---------------------------------------------------------------- the spot test


def old_window_spots(frames: np.ndarray, window: int, stride: int, sigmas: float, floor: float) -> np.ndarray:
    """window_spots as it was: a whole-frame scipy.ndimage median filter."""
    t, h, w = frames.shape
    gy, gx = nb.grid_shape(h, w, window, stride)
    out = np.zeros((t, gy, gx), bool)
    for i in range(t):
        f = frames[i].astype(np.float32)
        dev = f - ndimage.median_filter(f, size=5, mode="nearest")
        boxes = np.lib.stride_tricks.sliding_window_view(dev, (window, window))[::stride, ::stride][:gy, :gx]
        boxes = boxes.reshape(gy, gx, -1)
        centre = np.median(boxes, axis=-1, keepdims=True)
        s = 1.4826 * np.median(np.abs(boxes - centre), axis=-1)
        out[i] = np.abs(boxes).max(axis=-1) >= np.maximum(sigmas * s, floor)
    return out


def test_median_network_is_the_exact_median():
    rng = np.random.default_rng(0)
    assert len(nb._MEDIAN_25) == 113
    for dtype, values in ((np.uint8, rng.integers(0, 256, (4, 30, 41))), (np.uint8, rng.integers(0, 3, (4, 30, 41))),
                          (np.float32, rng.normal(0, 50, (4, 30, 41))), (np.int16, rng.integers(-900, 900, (4, 30, 41)))):
        x = values.astype(dtype)
        samples = np.lib.stride_tricks.sliding_window_view(x, (5, 5), axis=(1, 2)).reshape(4, 26, 37, 25)
        assert np.array_equal(nb.median_5x5(x), np.partition(samples, 12, axis=-1)[..., 12])
        ref = np.stack([ndimage.median_filter(f, size=5, mode="nearest")[2:-2, 2:-2] for f in x])
        assert np.array_equal(nb.median_5x5(x), ref)
    for n in (3, 9, 16, 25):  # the construction, by the 0-1 principle, for other sizes too
        net = nb._median_network(n)
        for bits in range(0, 1 << min(n, 16), 7 if n > 9 else 1):
            wires = [(bits >> i) & 1 for i in range(n)]
            for a, b, _, _ in net:
                wires[a], wires[b] = min(wires[a], wires[b]), max(wires[a], wires[b])
            assert wires[n // 2] == sorted((bits >> i) & 1 for i in range(n))[n // 2]


@pytest.mark.parametrize("window,stride", [(32, 32), (16, 8), (12, 5)])
def test_window_spots_match_the_scipy_filter_on_whole_frames(window, stride):
    rng = np.random.default_rng(window + stride)
    for frames in (spiky(rng, 3, 80, 115), spiky(rng, 2, 64, 64, level=5, sigma=0.4),
                   spiky(rng, 2, 70, 90).astype(np.float64) + 0.25):
        for sigmas, floor in ((8, 10), (3, 0), (1, 2)):
            ref = old_window_spots(frames, window, stride, sigmas, floor)
            assert np.array_equal(nb.window_spots(frames, window, stride, sigmas, floor), ref)
            where = rng.random(ref.shape) < 0.4
            assert np.array_equal(nb.window_spots(frames, window, stride, sigmas, floor, where=where), ref & where)
    with pytest.raises(ValueError, match="where must be"):
        nb.window_spots(frames, window, stride, 8, 10, where=np.ones((1, 1, 1), bool))


def test_spots_only_where_the_other_tests_passed_keep_the_same_windows():
    rng = np.random.default_rng(7)
    frames = spiky(rng, 6, 128, 160)
    frames[2, :40] = rng.integers(0, 256, (40, 160))  # a busy band the variance test takes out
    var, mean = nb.window_stats(frames, 16, 16)
    for temporal in (0, 2, 3):
        kept = nb.select_windows(var, mean, temporal=temporal)
        length = nb.temporal_length(len(frames), temporal)
        where = nb.spot_test_boxes(kept, var.shape, length)
        assert where.sum() < where.size
        full = nb.select_windows(var, mean, temporal=temporal, spots=nb.window_spots(frames, 16, 16, 8, 10))
        part = nb.select_windows(var, mean, temporal=temporal, spots=nb.window_spots(frames, 16, 16, 8, 10, where=where))
        assert np.array_equal(full, part) and len(full) < len(kept)


# ---------------------------------------------------------------- the scene split from one decode


def old_split_scene_runs(sequences, min_corr, *, skip_bad=False, read=read_grey):
    """split_scene_runs as it was (its own loop, a thumbnail resized twice)."""
    out = {}
    for name, paths in sequences.items():
        images, where = [], []
        for i, p in enumerate(paths):
            try:
                images.append(read(p))
                where.append(i)
            except InputError:
                if not skip_bad:
                    raise
        common = sequence_shape(np.shape(im) for im in images)
        keep = [j for j, im in enumerate(images) if np.shape(im) == common]
        images, where = [images[j] for j in keep], [where[j] for j in keep]
        run_of_readable, _ = scene_runs(images, min_corr)
        readable_run = dict(zip(where, run_of_readable.tolist()))
        run = np.zeros(len(paths), np.int64)
        last = 0
        for i in range(len(paths)):
            last = readable_run.get(i, last)
            run[i] = last
        n_runs = int(run.max()) + 1 if len(paths) else 0
        if n_runs <= 1:
            out[name] = list(paths)
            continue
        for k in range(n_runs):
            out[f"{name}-run{k + 1}"] = [p for p, r in zip(paths, run) if r == k]
    return out


def test_thumbnails_of_uint8_frames_are_the_float32_ones():
    rng = np.random.default_rng(1)
    for img in (rng.integers(0, 256, (97, 211)).astype(np.uint8), rng.integers(0, 256, (5, 3)).astype(np.uint8),
                np.full((40, 40), 7, np.uint8), rng.integers(0, 256, (90, 120)).astype(np.uint8)[::2, 1::3]):
        ref = np.asarray(Image.fromarray(np.ascontiguousarray(img, np.float32)).resize((32, 32), Image.Resampling.BOX),
                         np.float64)
        assert thumbnail(img, standardise=False).tobytes() == ref.tobytes()
        assert thumbnail(img).tobytes() == standardised(ref).tobytes()


def test_split_from_one_decode_is_the_old_split(tmp_path: Path):
    rng = np.random.default_rng(2)
    scenes = [np.asarray(Image.fromarray(rng.uniform(40, 200, (6, 8)).astype(np.float32)).resize((96, 72)))
              for _ in range(3)]

    def frame(k, shape=None):
        img = np.clip(scenes[k] + rng.normal(0, 2, scenes[k].shape), 0, 255).astype(np.uint8)
        return img if shape is None else img[: shape[0], : shape[1]]

    plan = {"A": [frame(0), frame(0), frame(1), "bad", frame(1), frame(2)[:50], frame(2)],  # a cut, a bad and an odd frame
            "B": ["bad", frame(0), frame(0)], "C": [frame(1)], "D": ["bad", "bad"],
            "E": [frame(0)[:40], frame(1)[:40], frame(2), frame(2), frame(2)]}
    for name, frames in plan.items():
        for i, f in enumerate(frames):
            p = tmp_path / name / f"{name}-{i}.png"
            p.parent.mkdir(exist_ok=True)
            if isinstance(f, str):
                p.write_bytes(b"not a png")
            else:
                Image.fromarray(f).save(p)
    seqs = list_sequences(tmp_path)
    for corr in (0.9, 0.5, 0.999):
        want = old_split_scene_runs(seqs, corr, skip_bad=True)
        assert split_scene_runs(seqs, corr, skip_bad=True) == want
        for name, paths in seqs.items():  # the task's way: decoded frames (and thumbnails) in hand
            images = []
            for p in paths:
                try:
                    images.append(read_grey(p))
                except InputError:
                    images.append(None)
            thumbs = [None if im is None else thumbnail(im, standardise=False) for im in images]
            for run in (scene_run_index(images, corr), scene_run_index(images, corr, thumbs)):
                got = {run_name: [paths[i] for i in idx] for run_name, idx in run_names(name, run)}
                assert got == {k: v for k, v in want.items() if k == name or k.startswith(f"{name}-run")}
    assert len(old_split_scene_runs(seqs, 0.9, skip_bad=True)) > len(seqs)
    with pytest.raises(InputError, match="A-3.png"):
        split_scene_runs(seqs, 0.9)
    assert run_names("X", np.zeros(0, np.int64)) == [("X", [])]


# ---------------------------------------------------------------- the table


def rich_table(results: list[dict]) -> str:
    import io

    from rich.console import Console
    from rich.table import Table

    table = Table(title=_TABLE_TITLE)
    for col in _TABLE_COLUMNS:
        table.add_column(col, justify="left" if col == "sequence" else "right")
    for r in results:
        table.add_row(r["sequence"], str(r["frames"]), str(r["kept"]), str(r["rows"]))
    table.add_row("total", str(sum(r["frames"] for r in results)), str(sum(r["kept"] for r in results)),
                  str(sum(r["rows"] for r in results)), style="bold")
    buf = io.StringIO()
    Console(file=buf, width=100).print(table)
    return buf.getvalue()


def test_table_is_the_one_rich_draws():
    def res(name, frames=2, kept=31, rows=62):
        return {"sequence": name, "frames": frames, "kept": kept, "rows": rows}

    for results in ([], [res("a", 1, 0, 0)], [res("20210725-S1-run12", 123456, 3, 1234567), res("S7")],
                    [res("x" * n) for n in (1, 2, 3, 4, 5)], [res("y" * 54)]):
        assert table_text(results) + "\n" == rich_table(results)
    assert table_text([res("y" * 55)]) is None  # wider than the console: rich folds it, and prints it


# ---------------------------------------------------------------- the command


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def spot_frames(root: Path) -> Path:
    """Two sequences of flat noisy frames, a hot pixel and a scene cut in them: every default test has work."""
    rng = np.random.default_rng(5)
    for s in range(2):
        base = rng.uniform(60, 140)
        for i in range(6):
            f = np.clip(np.rint(base + rng.normal(0, 2, (96, 128))), 0, 255).astype(np.uint8)
            if i >= 4 and s == 0:
                f = np.clip(f.astype(int) + np.linspace(0, 120, 128).astype(int), 0, 255).astype(np.uint8)  # a cut
            if i == 2:
                f[40, 50] += 40  # a warm pixel: +6 to its box's variance, 20 of the box's sigmas
            path = root / f"seq{s}" / f"seq{s}-{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(f).save(path)
    return root


def test_noise_bank_imports_neither_torch_nor_scipy_and_its_bytes_do_not_depend_on_workers(tmp_path: Path):
    frames = spot_frames(tmp_path / "frames")
    script = textwrap.dedent(f"""
        import json, sys
        from typer.testing import CliRunner
        from sirst5k.stages.cli import app
        res = CliRunner().invoke(app, ["noise-bank", {str(frames)!r}, "--out", {str(tmp_path / "w2.h5")!r},
                                       "--window", "16", "--temporal", "2", "--workers", "2"])
        assert res.exit_code == 0, res.output
        print(json.dumps({{"torch": "torch" in sys.modules, "scipy": "scipy" in sys.modules, "out": res.output}}))
    """)
    env = {**os.environ, "SIRST5K_CLUSTER": "never", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert not got["torch"] and not got["scipy"]
    # the pixel's box is in two temporal windows of each sequence
    assert "4 scene runs" not in got["out"] and "seq0-run2" in got["out"] and "; 4 window(s) with a spot" in got["out"]
    args = ["noise-bank", str(frames), "--window", "16", "--temporal", "2"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "w1.h5"), "--workers", "1"])
    assert res.exit_code == 0, res.output
    os.environ["SIRST5K_CLUSTER"] = "always"
    try:
        res = runner.invoke(app, [*args, "--out", str(tmp_path / "cluster.h5"), "--workers", "2"])
    finally:
        del os.environ["SIRST5K_CLUSTER"]
    assert res.exit_code == 0, res.output
    assert sha256(tmp_path / "w1.h5") == sha256(tmp_path / "w2.h5") == sha256(tmp_path / "cluster.h5")


def test_unreadable_frame_is_still_the_first_one_in_frame_order(tmp_path: Path):
    frames = spot_frames(tmp_path / "frames")
    (frames / "seq1" / "seq1-3.png").write_bytes(b"broken")
    (frames / "seq1" / "seq1-5.png").write_bytes(b"")
    res = runner.invoke(app, ["noise-bank", str(frames), "--out", str(tmp_path / "b.h5"), "--window", "16",
                              "--workers", "2"])
    assert res.exit_code != 0 and "seq1-3.png" in res.output and "seq1-5.png" not in res.output
    assert not (tmp_path / "b.h5").exists() and not (tmp_path / ".b.h5.parts").exists()
