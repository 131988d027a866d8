"""`sirst5k noise-bank` on frame folders as they come: layouts, odd frames, 16-bit, errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sirst5k.formats.frames import sequence_shape
from sirst5k.stages.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
WINDOW = 16



def flat_frame(seed: int, size: tuple[int, int] = (64, 64), level: int = 100) -> np.ndarray:
    """A featureless frame with faint sensor noise: every 16-px window passes the default test."""
    rng = np.random.default_rng(seed)
    return (level + rng.integers(-2, 3, size)).astype(np.uint8)


def save(path: Path, frame: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(path)
    return path


def bank(frames: Path, out: Path, *extra: str, scheduler: str):
    return runner.invoke(app, ["noise-bank", str(frames), "--out", str(out), "--window", str(WINDOW),
                               "--scheduler", scheduler, *extra])


def table_rows(stdout: str) -> dict[str, tuple[int, int, int]]:
    """sequence -> (frames used, windows kept, patch rows) from the printed table."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if len(cells) == 4 and cells[1].isdigit():
            rows[cells[0]] = tuple(int(c) for c in cells[1:])
    return rows


def read_bank(path: Path) -> dict:
    with h5py.File(path) as f:
        return {"patches": f["patches"][()], "sequence": f["sequence"].asstr()[()], "frame": f["frame"].asstr()[()],
                "entry": f["entry"][()], "y": f["y"][()], "x": f["x"][()], "t0": f["t0"][()],
                "attrs": dict(f.attrs)}


def no_leftovers(out: Path) -> bool:
    return not out.exists() and not any(p.name.startswith(f".{out.name}") for p in out.parent.iterdir())


def test_folder_per_sequence_with_a_single_frame_sequence(tmp_path: Path, scheduler: str) -> None:
    frames = tmp_path / "frames"
    for i in range(3):
        save(frames / "seqA" / f"{i + 1}.png", flat_frame(i))
    save(frames / "seqB" / "7.png", flat_frame(9))
    out = tmp_path / "bank.h5"
    result = bank(frames, out, scheduler=scheduler)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "warning: sequence seqB: 1 usable frame(s), needs 2 to test stability; skipped"]
    assert table_rows(result.stdout) == {"seqA": (3, 16, 48), "seqB": (1, 0, 0), "total": (4, 16, 48)}
    b = read_bank(out)
    assert b["patches"].shape == (48, WINDOW, WINDOW) and set(b["sequence"]) == {"seqA"}
    assert b["attrs"]["n_sequences"] == 2 and b["attrs"]["window"] == WINDOW
    assert not (tmp_path / ".bank.h5.parts").exists()


def test_flat_folder_groups_by_prefix(tmp_path: Path, scheduler: str) -> None:
    frames = tmp_path / "frames"
    for n in (161, 162, 170):
        save(frames / f"S1-{n}.png", flat_frame(n))
    for n in (5, 6):
        save(frames / f"S2-{n}.png", flat_frame(n))
    out = tmp_path / "bank.h5"
    result = bank(frames, out, "--temporal", "2", scheduler=scheduler)
    assert result.exit_code == 0 and result.stderr == "", result.output
    # temporal 2: S1 has pairs (161,162), (162,170); S2 one pair; 16 windows each
    assert table_rows(result.stdout) == {"S1": (3, 32, 64), "S2": (2, 16, 32), "total": (5, 48, 96)}
    b = read_bank(out)
    s1 = b["sequence"] == "S1"
    assert set(b["frame"][s1]) == {"S1-161.png", "S1-162.png", "S1-170.png"}
    assert set(b["frame"][~s1]) == {"S2-5.png", "S2-6.png"}
    # each entry is a pair of consecutive frames of one sequence
    first = b["frame"][s1][0::2], b["frame"][s1][1::2]
    assert set(zip(*first)) == {("S1-161.png", "S1-162.png"), ("S1-162.png", "S1-170.png")}


def test_frames_of_another_size_are_skipped_against_the_most_common_size(tmp_path: Path, scheduler: str) -> None:
    frames = tmp_path / "frames"
    odd = save(frames / "seqC" / "c-1.png", flat_frame(0, (48, 64)))  # first frame is the odd one
    for i in (2, 3, 4):
        save(frames / "seqC" / f"c-{i}.png", flat_frame(i))
    # a tie (two 64x64, two 48x64) goes to the size seen first
    for i, size in ((1, (64, 64)), (2, (64, 64)), (3, (48, 64)), (4, (48, 64))):
        save(frames / "seqD" / f"d-{i}.png", flat_frame(10 + i, size))
    out = tmp_path / "bank.h5"
    result = bank(frames, out, scheduler=scheduler)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"warning: {odd}: frame is 64x48, most frames of sequence seqC are 64x64; skipped",
        f"warning: {frames / 'seqD' / 'd-3.png'}: frame is 64x48, most frames of sequence seqD are 64x64; skipped",
        f"warning: {frames / 'seqD' / 'd-4.png'}: frame is 64x48, most frames of sequence seqD are 64x64; skipped",
    ]
    assert table_rows(result.stdout) == {"seqC": (3, 16, 48), "seqD": (2, 16, 32), "total": (5, 32, 80)}
    assert "c-1.png" not in set(read_bank(out)["frame"])


def test_sequence_shape_rule() -> None:
    assert sequence_shape([(4, 5), (6, 7), (6, 7)]) == (6, 7)
    assert sequence_shape([(4, 5), (6, 7), (6, 7), (4, 5)]) == (4, 5)
    assert sequence_shape(iter([(2, 2)])) == (2, 2)
    assert sequence_shape([]) is None


def test_sixteen_bit_frames(tmp_path: Path, scheduler: str) -> None:
    frames = tmp_path / "frames"
    grey = [flat_frame(i) for i in range(3)]
    for i, g in enumerate(grey):
        save(frames / "wide" / f"{i}.png", g.astype(np.uint16) * 257)
    assert Image.open(frames / "wide" / "0.png").mode.startswith("I")
    out = tmp_path / "bank.h5"
    result = bank(frames, out, scheduler=scheduler)
    assert result.exit_code == 0, result.output
    b = read_bank(out)
    assert len(b["patches"]) == 48
    for row in (0, 17, 47):
        t = int(b["frame"][row].split(".")[0])
        y, x = b["y"][row], b["x"][row]
        np.testing.assert_array_equal(b["patches"][row], grey[t][y : y + WINDOW, x : x + WINDOW])


@pytest.mark.parametrize("temporal", ["0", "2"])
def test_empty_bank_is_an_error_with_a_hint(tmp_path: Path, scheduler: str, temporal: str) -> None:
    frames = tmp_path / "frames"
    rng = np.random.default_rng(1)
    for i in range(3):
        save(frames / "busy" / f"{i}.png", rng.integers(0, 256, (64, 64)).astype(np.uint8))
    out = tmp_path / "bank.h5"
    # (--scene-corr 0: the default split would make each random frame a scene of its own)
    result = bank(frames, out, "--temporal", temporal, "--scene-corr", 0, scheduler=scheduler)
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {frames}: empty noise bank: no window passed the thresholds: loosen "
                           "--max-var / --max-seq-var / --max-seq-mean, lower --min-mean")
    assert line.endswith(", or set --temporal 2 (real sequences are sparse and moving)") == (temporal == "0")
    assert table_rows(result.stdout)["busy"] == (3, 0, 0)  # the table still says where nothing was kept
    assert no_leftovers(out)


def test_corrupt_frame_is_one_line_and_leaves_nothing(tmp_path: Path, scheduler: str) -> None:
    frames = tmp_path / "frames"
    for i in range(3):
        save(frames / "seqA" / f"{i}.png", flat_frame(i))
    bad = frames / "seqA" / "3.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    out = tmp_path / "bank.h5"
    result = bank(frames, out, scheduler=scheduler)
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {bad}: cannot read image")
    assert no_leftovers(out)


def test_skip_bad_leaves_corrupt_frames_out_and_says_so(tmp_path: Path, scheduler: str) -> None:
    frames = tmp_path / "frames"
    for i in range(3):
        save(frames / "seqA" / f"{i}.png", flat_frame(i))
        save(frames / "seqB" / f"{i}.png", flat_frame(10 + i))
    bad = frames / "seqA" / "3.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (frames / "seqB" / "3.png").write_bytes(b"")
    clean, out = tmp_path / "clean.h5", tmp_path / "bank.h5"
    result = bank(frames, out, "--skip-bad", scheduler=scheduler)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and any(str(bad) in w and "cannot read image" in w for w in warnings)
    assert "2 unreadable frame(s) skipped" in result.stdout
    assert table_rows(result.stdout)["seqA"][0] == 3 and table_rows(result.stdout)["seqB"][0] == 3
    # the bank holds exactly what the readable frames alone give
    bad.unlink()
    (frames / "seqB" / "3.png").unlink()
    assert bank(frames, clean, scheduler=scheduler).exit_code == 0
    got, want = read_bank(out), read_bank(clean)
    assert np.array_equal(got["patches"], want["patches"]) and list(got["frame"]) == list(want["frame"])
    assert got["attrs"]["skip_bad"] and "skip_bad" not in want["attrs"]


def test_max_peak_keeps_bright_spots_out_of_the_bank(tmp_path: Path, scheduler: str) -> None:
    frames = tmp_path / "frames"
    for i in range(3):
        frame = flat_frame(i)
        # a hot pixel or a slow target, 2x2 at +40 in every frame: it adds ~25 to its 16-px box's
        # variance and nothing to the variance across frames, so the paper's tests keep the box
        frame[20:22, 40:42] += 40
        save(frames / "seqA" / f"{i}.png", frame)
    paper, peaked = tmp_path / "paper.h5", tmp_path / "peaked.h5"
    # (--spot-sigmas 0: the paper's rule; the clean-bank default would take the spot out itself)
    assert bank(frames, paper, "--spot-sigmas", "0", scheduler=scheduler).exit_code == 0
    result = bank(frames, peaked, "--max-peak", "20", "--spot-sigmas", "0", scheduler=scheduler)
    assert result.exit_code == 0, result.output
    got, want = read_bank(peaked), read_bank(paper)
    # 16 boxes of 16 px on a 64 x 64 frame; the spot's box (y 16, x 32) goes, in all three frames
    assert len(set(want["entry"])) == 16 and len(set(got["entry"])) == 15
    assert (16, 32) in set(zip(want["y"], want["x"])) and (16, 32) not in set(zip(got["y"], got["x"]))
    assert got["patches"].max() < 110 <= want["patches"].max()
    assert got["attrs"]["max_peak"] == 20 and "max_peak" not in want["attrs"]


def test_unwritable_bank(tmp_path: Path, scheduler: str) -> None:
    frames = tmp_path / "frames"
    for i in range(2):
        save(frames / "seqA" / f"{i}.png", flat_frame(i))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = bank(frames, blocker / "bank.h5", scheduler=scheduler)
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()  # checked before any work: also names the file in the way
    assert line == f"error: {blocker / 'bank.h5'}: cannot write: Not a directory ({blocker} is a file)"


def test_empty_frames_folder(tmp_path: Path, scheduler: str) -> None:
    (tmp_path / "frames").mkdir()
    result = bank(tmp_path / "frames", tmp_path / "bank.h5", scheduler=scheduler)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: {tmp_path / 'frames'}: folder is empty"]
    assert no_leftovers(tmp_path / "bank.h5")


def test_bad_frame_in_a_worker_reaches_the_terminal_as_one_line(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    for i in range(2):
        save(frames / "seqA" / f"{i}.png", flat_frame(i))
    (frames / "seqA" / "2.png").write_bytes(b"")
    out = tmp_path / "bank.h5"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore:Port:UserWarning"}
    proc = subprocess.run([sys.executable, "-m", "sirst5k.stages.cli", "noise-bank", str(frames), "--out", str(out),
                           "--workers", "1", "--device", "cpu"], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 2
    bad = frames / "seqA" / "2.png"
    assert proc.stderr.splitlines() == [f"error: {bad}: cannot read image: file is empty (0 bytes)"]
    assert "Traceback" not in proc.stdout and no_leftovers(out)


def test_disk_full_while_merging_is_one_line_and_leaves_nothing(tmp_path: Path, scheduler: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins
    import errno

    from sirst5k.formats import bank as bank_format

    frames = tmp_path / "frames"
    for i in range(2):
        save(frames / "seqA" / f"{i}.png", flat_frame(i))
    real_open = builtins.open

    def full_disk(path, mode="r", *args, **kwargs):
        if ".partial-" in str(path) and "w" in mode:  # the bank's temporary name (the parts are written in workers)
            real_open(path, mode).close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(bank_format, "open", full_disk, raising=False)
    out = tmp_path / "bank.h5"
    result = bank(frames, out, scheduler=scheduler)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: {out}: cannot write noise bank: No space left on device"]
    assert no_leftovers(out)
