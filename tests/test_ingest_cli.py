"""`sirst5k ingest` on bad and unusual labelled input: one line out, nothing half-written left.

Most cases go through typer's CliRunner against one dask cluster shared by the module (so each
invocation does not pay for starting workers); two run the real command in a subprocess, on
its own local cluster, to see exactly what reaches the terminal, dask workers' output included.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sirst5k.stages.cli import app

ROOT = Path(__file__).resolve().parents[1]
H, W = 40, 60
TRAIN = ["000001", "000002", "000003", "000004"]
TEST = ["000005", "000006", "000007", "000008"]

runner = CliRunner()



def write_image(path: Path, value: int = 60, size: tuple[int, int] = (H, W), dtype=np.uint8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    g = (np.add.outer(np.arange(size[0]), np.arange(size[1])) % 40 + value).astype(dtype)
    Image.fromarray(g).save(path)
    return path


def write_mask(path: Path, boxes=((10, 20, 3),), size: tuple[int, int] = (H, W)) -> Path:
    """A 0/255 mask with a square target of side s at each (y, x, s)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros(size, np.uint8)
    for y, x, s in boxes:
        m[y : y + s, x : x + s] = 255
    Image.fromarray(m).save(path)
    return path


def make_dataset(root: Path) -> Path:
    """DNANet layout: images/, masks/, 50_50/train.txt and test.txt, 4 + 4 samples."""
    for i, sample_id in enumerate(TRAIN + TEST):
        write_image(root / "images" / f"{sample_id}.png", value=30 + 10 * i)
        write_mask(root / "masks" / f"{sample_id}.png")
    (root / "50_50").mkdir(parents=True)
    (root / "50_50" / "train.txt").write_text("\n".join(TRAIN))
    (root / "50_50" / "test.txt").write_text("\n".join(TEST))
    return root


def ingest(source: Path, out: Path, *extra: str, scheduler: str | None = None):
    args = ["ingest", str(source), "--out", str(out), "--size", "32", "--shard-size", "3", *extra]
    if scheduler:
        args += ["--scheduler", scheduler]
    return runner.invoke(app, args)


def read_ids(out: Path) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {"train": [], "test": []}
    for p in sorted(out.glob("*.h5")):
        with h5py.File(p) as f:
            ids[f.attrs["split"]] += list(f["meta/sample_id"].asstr()[()])
    return ids


def nothing_left(out: Path) -> bool:
    partial = out.parent / f".{out.name}.partial"
    return not out.exists() and not partial.exists()


# Each bad input: how to break the dataset, words the error line must hold, what --skip-bad
# leaves (None: not a single-file problem, still an error).
def _corrupt(root: Path) -> None:
    (root / "images" / "000006.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)


def _zero_bytes(root: Path) -> None:
    (root / "images" / "000006.png").write_bytes(b"")


def _missing_mask(root: Path) -> None:
    (root / "masks" / "000006.png").unlink()


def _other_aspect(root: Path) -> None:
    write_mask(root / "masks" / "000006.png", size=(H, H))


def _list_names_missing(root: Path) -> None:
    (root / "50_50" / "test.txt").write_text("\n".join(TEST + ["000099"]))


def _duplicate(root: Path) -> None:
    (root / "50_50" / "test.txt").write_text("\n".join(TEST + ["000006"]))


BAD = {
    "corrupt image": (_corrupt, ["000006.png", "cannot read image"], 7),
    "zero-byte image": (_zero_bytes, ["000006.png", "empty (0 bytes)"], 7),
    "missing mask": (_missing_mask, ["000006.png", "no mask", "masks/000006"], 7),
    "mask of another aspect ratio": (_other_aspect, ["masks/000006.png", "40x40", "60x40", "aspect ratio"], 7),
    "split list naming a missing file": (_list_names_missing, ["test.txt", "000099"], 8),
    "duplicate id": (_duplicate, ["test.txt", "'000006'", "twice"], 8),
}


def ingest_broken(case: str, tmp_path: Path, scheduler: str, *extra: str):
    """Ingest a dataset damaged as BAD[case] says; (result, output folder)."""
    breaks, _, _ = BAD[case]
    source = make_dataset(tmp_path / "src")
    breaks(source)
    out = tmp_path / "out"
    return ingest(source, out, *extra, scheduler=scheduler), out


@pytest.mark.parametrize("case", list(BAD))
def test_bad_file_is_one_line_and_leaves_nothing(case: str, tmp_path: Path, scheduler: str) -> None:
    _, words, _ = BAD[case]
    result, out = ingest_broken(case, tmp_path, scheduler)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.stdout == ""
    assert nothing_left(out)


@pytest.mark.parametrize("case", list(BAD))
def test_skip_bad_warns_counts_and_ingests_the_rest(case: str, tmp_path: Path, scheduler: str) -> None:
    _, words, n_left = BAD[case]
    result, out = ingest_broken(case, tmp_path, scheduler, "--skip-bad")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and all(w in warnings[0] for w in words), result.stderr
    assert "left out" in warnings[0]
    assert "1 bad file(s) skipped" in result.stdout.splitlines()[-1]
    ids = read_ids(out)
    assert ids["train"] == TRAIN
    assert len(ids["train"]) + len(ids["test"]) == n_left
    assert ids["test"][:1] == ["000005"] and "000099" not in ids["test"]
    if n_left == 7:
        assert "000006" not in ids["test"]
    assert not (tmp_path / ".out.partial").exists()


def test_skip_bad_with_every_file_bad_is_still_an_error(tmp_path: Path, scheduler: str) -> None:
    source = make_dataset(tmp_path / "src")
    for p in (source / "images").iterdir():
        p.write_bytes(b"")
    result = ingest(source, tmp_path / "out", "--skip-bad", scheduler=scheduler)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == f"error: {source}: no usable samples: all 8 listed file(s) were bad"
    assert nothing_left(tmp_path / "out")


@pytest.mark.parametrize("skip", [[], ["--skip-bad"]])
def test_empty_folder(tmp_path: Path, skip: list[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = ingest(empty, tmp_path / "out", *skip)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: {empty}: folder is empty"]
    assert nothing_left(tmp_path / "out")


def test_empty_image_folder(tmp_path: Path) -> None:
    source = make_dataset(tmp_path / "src")
    for p in (source / "images").iterdir():
        p.unlink()
    result = ingest(source, tmp_path / "out")
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {source / 'images'}: no images")
    assert nothing_left(tmp_path / "out")


@pytest.mark.parametrize("skip", [[], ["--skip-bad"]])
def test_unwritable_output(tmp_path: Path, skip: list[str]) -> None:
    # Tests run as root, so permissions do not stop a write: a path under a regular file does.
    source = make_dataset(tmp_path / "src")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "out"
    result = ingest(source, out, *skip)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: {out}: cannot write output folder: Not a directory"]
    assert blocker.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "src"]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # A cluster of another process holding port 8787 makes dask warn on stderr (pipeline/cluster.py
    # issue, not ingest's); it is no part of what these tests check.
    env["PYTHONWARNINGS"] = "ignore:Port:UserWarning"
    return subprocess.run([sys.executable, "-m", "sirst5k.stages.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_error_inside_a_dask_task_reaches_the_terminal_as_one_line(tmp_path: Path) -> None:
    """The corrupt image is found by a worker: no worker log, no traceback, just the line."""
    source = make_dataset(tmp_path / "src")
    _corrupt(source)
    out = tmp_path / "out"
    proc = _run("ingest", str(source), "--out", str(out), "--size", "32", "--workers", "1")
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {source / 'images' / '000006.png'}: cannot read image")
    assert "Traceback" not in proc.stderr + proc.stdout and proc.stdout == ""
    assert nothing_left(out)


def test_skip_bad_counts_every_bad_file(tmp_path: Path, scheduler: str) -> None:
    source = make_dataset(tmp_path / "src")
    _corrupt(source)
    (source / "images" / "000002.png").write_bytes(b"")
    write_mask(source / "masks" / "000008.png", size=(H, H))
    out = tmp_path / "out"
    result = ingest(source, out, "--skip-bad", scheduler=scheduler)
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert [line.split(": ")[1].rsplit("/", 1)[-1] for line in lines] == ["000002.png", "000006.png", "000008.png"]
    assert all(line.startswith("warning: ") and line.endswith("; left out") for line in lines)
    assert result.stdout.splitlines()[-1].endswith("; 3 bad file(s) skipped")
    assert "3 train / 2 test" in result.stdout
    assert read_ids(out) == {"train": ["000001", "000003", "000004"], "test": ["000005", "000007"]}


# ------------------------------------------------------------------ warnings and odd-but-valid input


def test_resize_erasing_every_target_warns_and_keeps_the_sample(tmp_path: Path, scheduler: str) -> None:
    source = make_dataset(tmp_path / "src")
    # 64x64 -> 16x16 nearest samples every 4th pixel from 2: a 1-px target at (1, 1) is stepped over.
    write_image(source / "images" / "000003.png", size=(64, 64))
    write_mask(source / "masks" / "000003.png", boxes=((1, 1, 1),), size=(64, 64))
    out = tmp_path / "out"
    result = runner.invoke(app, ["ingest", str(source), "--out", str(out), "--size", "16", "--scheduler", scheduler])
    assert result.exit_code == 0, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"warning: {source / 'masks' / '000003.png'}: ") and "erased every target" in line
    assert "16x16" in line
    with h5py.File(out / "train-00000.h5") as f:
        ids = list(f["meta/sample_id"].asstr()[()])
        n_targets = dict(zip(ids, f["meta/n_targets"][()]))
        assert not f["masks"][ids.index("000003")].any()
    assert n_targets == {"000001": 1, "000002": 1, "000003": 0, "000004": 1}
    assert "1 with no target" in result.stdout and "1 warning(s)" in result.stdout


def test_a_rerun_after_a_crash_repeats_the_warnings_of_reused_shards(tmp_path: Path, scheduler: str,
                                                                     monkeypatch) -> None:
    import sirst5k.runner.tasks as runner_tasks

    source = make_dataset(tmp_path / "src")
    write_image(source / "images" / "000003.png", size=(64, 64))
    write_mask(source / "masks" / "000003.png", boxes=((1, 1, 1),), size=(64, 64))
    out = tmp_path / "out"
    args = ["ingest", str(source), "--out", str(out), "--size", "16", "--scheduler", scheduler]

    def crash(*_args, **_kwargs):  # dies after every shard is written, as a killed run would
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(runner_tasks, "write_stage_record", crash)
        first = runner.invoke(app, args)
    assert first.exit_code != 0 and not out.exists()
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    assert partial, "the crash should leave the partial folder to resume from"
    shard_times = {p.name: p.stat().st_mtime_ns for p in partial[0].glob("*.h5")}
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"warning: {source / 'masks' / '000003.png'}: ") and "erased every target" in line
    assert "1 warning(s)" in result.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")} == shard_times, "shards were not reused"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "scratch files were published"


def test_image_without_target_is_valid_and_silent(tmp_path: Path, scheduler: str) -> None:
    source = make_dataset(tmp_path / "src")
    write_mask(source / "masks" / "000007.png", boxes=())
    out = tmp_path / "out"
    result = ingest(source, out, scheduler=scheduler)
    assert result.exit_code == 0 and result.stderr == "", result.output
    with h5py.File(out / "test-00001.h5") as f:
        ids = list(f["meta/sample_id"].asstr()[()])
        assert ids == ["000008"]
    with h5py.File(out / "test-00000.h5") as f:
        ids = list(f["meta/sample_id"].asstr()[()])
        n = dict(zip(ids, f["meta/n_targets"][()]))
        area = dict(zip(ids, f["meta/area"][()]))
    assert n == {"000005": 1, "000006": 1, "000007": 0} and area["000007"] == 0
    assert "1 with no target" in result.stdout


def test_sixteen_bit_images_and_masks(tmp_path: Path, scheduler: str) -> None:
    source = make_dataset(tmp_path / "src")
    grey = (np.add.outer(np.arange(32), np.arange(32)) * 3 % 256).astype(np.uint16)
    Image.fromarray(grey * 257).save(source / "images" / "000001.png")  # full-range 16-bit
    label = np.zeros((32, 32), np.uint16)
    label[5:8, 9:11] = 1  # a 16-bit label mask: 0 / 1
    Image.fromarray(label).save(source / "masks" / "000001.png")
    assert Image.open(source / "images" / "000001.png").mode.startswith("I")
    out = tmp_path / "out"
    result = ingest(source, out, scheduler=scheduler)
    assert result.exit_code == 0, result.output
    with h5py.File(out / "train-00000.h5") as f:
        image, mask = f["images"][0], f["masks"][0]
        assert f["meta/sample_id"].asstr()[0] == "000001"
        assert (f["meta/orig_h"][0], f["meta/orig_w"][0], f["meta/n_targets"][0], f["meta/area"][0]) == (32, 32, 1, 6)
    np.testing.assert_array_equal(image, grey.astype(np.uint8))
    assert set(np.unique(mask)) == {0, 255} and mask[5:8, 9:11].all()
    assert "0/1 labels" in result.stderr


def test_summary_line_and_stage_record(tmp_path: Path, scheduler: str) -> None:
    source = make_dataset(tmp_path / "src")
    out = tmp_path / "out"
    result = ingest(source, out, scheduler=scheduler)
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.strip() == f"ingest: dnanet layout, 4 train / 4 test samples at 32x32 in {out}"
    assert sorted(p.name for p in out.iterdir()) == [
        "stage.json", "test-00000.h5", "test-00001.h5", "train-00000.h5", "train-00001.h5"]
    assert read_ids(out) == {"train": TRAIN, "test": TEST}


def test_images_in_no_split_list_are_one_counted_warning(tmp_path):
    source = make_dataset(tmp_path / "src")
    write_image(source / "images" / "000009.png")
    write_mask(source / "masks" / "000009.png")
    result = ingest(source, tmp_path / "out", "--workers", "1")
    assert result.exit_code == 0, result.output
    (line,) = result.stderr.splitlines()
    assert line == (f"warning: {source}: 1 image(s) are in neither 50_50/train.txt nor 50_50/test.txt (000009); "
                    "not ingested (another --layout may list them)")
    assert result.stdout.strip().endswith("; 1 warning(s)")
    assert read_ids(tmp_path / "out") == {"train": TRAIN, "test": TEST}
