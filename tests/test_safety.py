"""Issue 13, "never lose a user's data": outputs that refuse to clobber, publish that swaps only a
dataset that verified, one writer per output, inputs checked against their records, one-line errors.

The hostile cases run through the command line as a user would type them (typer's CliRunner on
`sirst5k.stages.cli.app`, or a `python -m sirst5k.stages.cli` subprocess where stderr must be
exactly one line). The upstream shard folders are small constructed ones with the `stage.json`
their stages write, so these tests do not depend on the image stages; `staged_folder`,
`check_output_file` and `input_shards` are also tested directly, for the stages (ingest,
transfer, negatives, synth, report, noise-bank) that call them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from sirst5k.errors import InputError, OutputError
from sirst5k.formats.shards import new_meta, sha256_file, shard_name, write_shard
from sirst5k.runner.outputs import (check_output_file, folder_owner, input_shards, lock_path, output_lock, owner_path,
                                    partial_dir, read_stage_record, staged_folder, write_stage_record)
from sirst5k.stages.cli import app

runner = CliRunner()
SIZE = 16
HOLD_LOCK = ("import sys, time\nfrom sirst5k.runner.outputs import output_lock\n"
             "with output_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n")
DIE_HOLDING_LOCK = ("import os, signal, sys\nfrom sirst5k.runner.outputs import output_lock\n"
                    "with output_lock(sys.argv[1]):\n    os.kill(os.getpid(), signal.SIGKILL)\n")


# ---------------------------------------------------------------------------------------------
# helpers


def shard_folder(folder: Path, stage: str, kind: str, counts: dict[str, list[int]], seed: int) -> None:
    """Shards `<split>-NNNNN.h5` and the `stage.json` a stage writes beside them."""
    rng = np.random.default_rng(seed)
    records = []
    for split, sizes in counts.items():
        for index, n in enumerate(sizes):
            images = rng.integers(0, 256, (n, SIZE, SIZE), dtype=np.uint8)
            masks = np.zeros((n, SIZE, SIZE), np.uint8)
            masks[:, 4:6, 4:7] = 255
            meta = new_meta(n)
            meta["sample_id"][:] = [f"{stage}-{split}-{index}-{i}" for i in range(n)]
            meta["source_id"][:] = meta["sample_id"]
            meta["kind"][:] = kind
            info = write_shard(folder / shard_name(split, index), images, masks, meta,
                               {"dataset": stage, "version": "v0", "split": split, "shard_index": index,
                                "n_shards": len(sizes)})
            records.append({**info.record(), "split": split} if hasattr(info, "record") else
                           {"path": Path(info.path).name, "sha256": info.sha256, "n_samples": n, "split": split})
    write_stage_record(folder, stage, {stage: {"seed": seed}}, {"source": {"path": "x", "content_hash": "h"}}, records)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_line(result, *words: str, code: int = 2) -> str:
    """The command failed with `code` and printed exactly one line on stderr, naming `words`."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for w in words:
        assert str(w) in lines[0], f"{w!r} not in {lines[0]!r}"
    return lines[0]


def flip_byte(path: Path, dataset: str = "images", row: int = 0) -> None:
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(row)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0x01]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """base/ingest (train 3+3, test 4) and base/negatives (train 4+4), as their stages leave them."""
    base = tmp_path_factory.mktemp("upstream")
    shard_folder(base / "ingest", "ingest", "original", {"train": [3, 3], "test": [4]}, seed=1)
    shard_folder(base / "negatives", "negatives", "negative", {"train": [4, 4]}, seed=2)
    return base


@pytest.fixture
def base(clean: Path, tmp_path: Path) -> Path:
    """A private copy of the upstream folders (tests damage them)."""
    root = tmp_path / "base"
    for name in ("ingest", "negatives"):
        (root / name).mkdir(parents=True)
        for p in (clean / name).iterdir():
            (root / name / p.name).write_bytes(p.read_bytes())
    return root


def publish(scheduler: str, base: Path, out: Path, manifest: Path, *extra, env: dict | None = None):
    args = ["publish", "--ingest", base / "ingest", "--negatives", base / "negatives", "--out", out,
            "--manifest", manifest, "--shard-size", 5, "--scheduler", scheduler, *extra]
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture
def published(scheduler: str, base: Path) -> tuple[Path, Path, Path]:
    """base, its published dataset folder and manifest (a previous, good dataset)."""
    out, manifest = base / "pub" / "ds", base / "manifests" / "ds.json"
    result = publish(scheduler, base, out, manifest)
    assert result.exit_code == 0, result.output
    return base, out, manifest


def snapshot(*paths: Path) -> dict:
    """Every byte under the given files and folders (hidden files too)."""
    snap = {}
    for p in paths:
        if p.is_dir():
            snap.update({f"{p}/{k}": v for k, v in tree_bytes(p).items()})
        elif p.exists():
            snap[str(p)] = p.read_bytes()
    return snap


# ---------------------------------------------------------------------------------------------
# --out that is a file, an input, inside an input or an ancestor of one (publish, through the CLI)


def test_out_onto_a_regular_file_is_refused_and_the_file_kept(scheduler, base, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("my notes")
    result = publish(scheduler, base, target, tmp_path / "m.json")
    one_line(result, target, "is a file")
    assert target.read_text() == "my notes" and not (tmp_path / "m.json").exists()
    assert not partial_dir(target).exists() and not lock_path(target).exists()


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
@pytest.mark.parametrize("where", ["input", "inside", "ancestor", "dot", "symlink"])
def test_out_that_is_or_holds_an_input_is_refused_even_with_overwrite(scheduler, base, tmp_path, monkeypatch,
                                                                      where, overwrite):
    before = snapshot(base)
    out = {"input": base / "negatives", "inside": base / "ingest" / "ds", "ancestor": base,
           "dot": Path("."), "symlink": tmp_path / "link"}[where]
    if where == "dot":
        monkeypatch.chdir(base)  # `--out .` in the folder holding the inputs
    if where == "symlink":
        out.symlink_to(base / "ingest")
    result = publish(scheduler, base, out, tmp_path / "m.json", *overwrite)
    line = one_line(result, out)
    assert ("is the input" in line or "is inside the input" in line or "holds the input" in line), line
    assert snapshot(base) == before, "an input changed"
    assert not (tmp_path / "m.json").exists()


def test_a_foreign_non_empty_folder_needs_overwrite(scheduler, base, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    result = publish(scheduler, base, out, tmp_path / "m.json")
    one_line(result, out, "not an earlier output of publish", "--overwrite")
    assert (out / "thesis.tex").read_text() == "years of work" and not (tmp_path / "m.json").exists()
    result = publish(scheduler, base, out, tmp_path / "m.json", "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (out / "thesis.tex").exists() and (out / "manifest.json").is_file()


def test_an_empty_folder_is_fine(scheduler, base, tmp_path):
    (tmp_path / "empty").mkdir()
    result = publish(scheduler, base, tmp_path / "empty", tmp_path / "m.json")
    assert result.exit_code == 0, result.output


def test_a_rerun_replaces_its_own_output_with_identical_bytes_and_keeps_no_record_inside(scheduler, published):
    base, out, manifest = published
    first = snapshot(out, manifest)
    assert owner_path(out).is_file() and folder_owner(out)[0] == "publish"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    result = publish(scheduler, base, out, manifest)
    assert result.exit_code == 0, result.output
    assert snapshot(out, manifest) == first
    assert sorted(p.name for p in out.parent.iterdir()) == [".ds.stage.json", "ds"], "a lock or partial was left"


def test_a_user_edit_inside_an_earlier_output_makes_it_the_users(scheduler, published):
    base, out, manifest = published
    (out / "my-notes.txt").write_text("mine now")
    one_line(publish(scheduler, base, out, manifest), out, "changed since publish wrote it")
    assert (out / "my-notes.txt").is_file()


def test_a_report_inside_the_dataset_does_not_make_it_foreign(scheduler, published):
    """`sirst5k report DATASET` writes DATASET/report by default: another stage's output, marked
    by its own record, which leaves the dataset publish's own."""
    base, out, manifest = published
    with staged_folder(out / "report", stage="report") as tmp:
        (tmp / "stats.json").write_text("{}")
    assert folder_owner(out)[0] == "publish"
    assert publish(scheduler, base, out, manifest).exit_code == 0


def test_manifest_onto_a_file_that_is_not_a_manifest_is_refused(scheduler, base, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# my project\n")
    one_line(publish(scheduler, base, tmp_path / "ds", readme), readme, "not an earlier output of publish")
    assert readme.read_text() == "# my project\n" and not (tmp_path / "ds").exists()


def test_manifest_inside_the_dataset_folder_is_refused(scheduler, base, tmp_path):
    out = tmp_path / "ds"
    one_line(publish(scheduler, base, out, out / "sub" / "m.json"), "inside the dataset folder")
    assert not out.exists()


def test_manifest_inside_an_input_is_refused(scheduler, base, tmp_path):
    before = snapshot(base)
    one_line(publish(scheduler, base, tmp_path / "ds", base / "ingest" / "m.json"), "is inside the input")
    assert snapshot(base) == before


# ---------------------------------------------------------------------------------------------
# publish swaps in only a dataset that verified


def test_failed_verify_leaves_the_previous_dataset_and_manifest_byte_identical(scheduler, published, monkeypatch):
    import sirst5k.verify

    base, out, manifest = published
    before = snapshot(out.parent, manifest)
    # a different build (another shard size), which verify rejects
    monkeypatch.setattr(sirst5k.verify, "verify_manifest", lambda path, **kw: [f"{Path(path).parent}/x.h5: injected"])
    result = publish(scheduler, base, out, manifest, "--shard-size", 3)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: {out}/x.h5: injected", "the problem names the file as it would have been"
    assert lines[-1].startswith(f"error: {out}: the new build failed verify (1 problem(s) above)")
    assert snapshot(out.parent, manifest) == before
    assert not partial_dir(out).exists() and not lock_path(out).exists()
    assert not [p for p in manifest.parent.iterdir() if p.name.startswith(".")]


def test_a_damaged_upstream_shard_is_one_line_naming_it_and_nothing_changes(scheduler, published):
    base, out, manifest = published
    before = snapshot(out.parent, manifest)
    shard = base / "negatives" / "train-00001.h5"
    flip_byte(shard)  # edited after its stage wrote it: stage.json's sha256 no longer matches
    one_line(publish(scheduler, base, out, manifest), shard, "does not match stage.json")
    assert snapshot(out.parent, manifest) == before


def test_version_and_shards_hash_come_from_the_bytes_read(scheduler, published):
    """A shard replaced together with its record (so nothing mismatches) gives another version:
    publish hashes what it read, never the upstream record alone."""
    base, out, manifest = published
    clean = json.loads(manifest.read_text())
    shard = base / "negatives" / "train-00000.h5"
    flip_byte(shard)
    record = read_stage_record(base / "negatives")
    for s in record["shards"]:
        if s["path"] == shard.name:
            s["sha256"] = sha256_file(shard)
    (base / "negatives" / "stage.json").write_text(json.dumps(record))
    assert publish(scheduler, base, out, manifest).exit_code == 0
    new = json.loads(manifest.read_text())
    assert new["inputs"]["shards_hash"] != clean["inputs"]["shards_hash"] and new["version"] != clean["version"]


@pytest.mark.parametrize("damage", ["truncated", "not-hdf5", "empty", "missing", "stray"])
def test_upstream_shards_are_checked_against_their_record(scheduler, base, tmp_path, damage):
    folder = base / "ingest"
    shard = folder / "train-00001.h5"
    if damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:-100])
    elif damage == "not-hdf5":
        shard.write_bytes(b"PK\x03\x04" + shard.read_bytes()[4:])
    elif damage == "empty":
        shard.write_bytes(b"")
    elif damage == "missing":
        shard.unlink()
    else:
        shard = folder / "train-00007.h5"
        shard.write_bytes((folder / "train-00000.h5").read_bytes())
    words = {"truncated": "does not match", "not-hdf5": "not an HDF5 file", "empty": "empty (0 bytes)",
             "missing": "listed in stage.json is missing", "stray": "not listed in stage.json"}[damage]
    one_line(publish(scheduler, base, tmp_path / "ds", tmp_path / "m.json"), shard, words)
    assert not (tmp_path / "ds").exists() and not (tmp_path / "m.json").exists()


def test_input_shards_returns_the_digests_of_the_bytes(base):
    got = input_shards(base / "ingest", "train")
    assert [(p.name, d) for p, d in got] == [(p.name, sha256_file(p)) for p in sorted((base / "ingest").glob("train-*"))]
    (base / "ingest" / "stage.json").unlink()  # shards from elsewhere: signature checked, digests computed
    assert input_shards(base / "ingest", "train") == got


def test_a_published_dataset_read_as_input_is_checked_against_its_manifest(published):
    base, out, manifest = published
    assert [d for _, d in input_shards(out, "train")] == [s["sha256"] for s in
                                                          json.loads(manifest.read_text())["splits"]["train"]["shards"]]
    flip_byte(out / "train-00000.h5")
    with pytest.raises(InputError, match="train-00000.h5: sha256 .* does not match manifest.json"):
        input_shards(out, "train")


# ---------------------------------------------------------------------------------------------
# one writer per output


def test_a_second_writer_gets_one_line_with_the_holders_pid_and_touches_nothing(scheduler, published):
    base, out, manifest = published
    partial = partial_dir(out)
    partial.mkdir()
    (partial / "train-00000.h5").write_bytes(b"the holder's half-written work")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(out.parent, manifest)
        line = one_line(publish(scheduler, base, out, manifest), out, f"pid {holder.pid}", "is writing it")
        assert "\n" not in line
        assert snapshot(out.parent, manifest) == before, "the second writer touched something"
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_of_a_dead_process_is_taken_over(scheduler, published):
    base, out, manifest = published
    dead = subprocess.run([sys.executable, "-c", DIE_HOLDING_LOCK, str(out)])
    assert dead.returncode == -signal.SIGKILL
    assert lock_path(out).is_file() and json.loads(lock_path(out).read_text())["pid"] > 0
    result = publish(scheduler, base, out, manifest)
    assert result.exit_code == 0, result.output
    assert not lock_path(out).exists()


def test_lock_in_process_names_this_pid(tmp_path):
    out = tmp_path / "x"
    with output_lock(out):
        with pytest.raises(OutputError, match=f"pid {os.getpid()}"):
            with output_lock(out):
                pass
    assert not lock_path(out).exists()
    with output_lock(out):  # free again
        pass


def test_the_lock_of_a_file_output_in_a_folder_not_made_yet(tmp_path):
    """`noise-bank --out new/bank.h5`: the lock comes before the folder, and makes it."""
    out = tmp_path / "new" / "deeper" / "bank.h5"
    with output_lock(out):
        assert lock_path(out).is_file()
    assert not lock_path(out).exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="Not a directory"):
        with output_lock(tmp_path / "file" / "bank.h5"):
            pass


def test_a_lock_file_removed_by_its_last_holder_before_our_flock_is_taken_anew(tmp_path, monkeypatch):
    """The holder before us removes its lock file as it ends. If that falls between our open and
    our flock, we would lock a file no later run sees, and two runs would write at once: the lock
    must be taken again on the file that is at the lock's path."""
    import fcntl

    out = tmp_path / "ds"
    path = lock_path(out)
    real, calls = fcntl.flock, []

    def flock(fd, op):
        if not calls:
            path.unlink()  # the last holder ends right here
        calls.append(fd)
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    with output_lock(out):
        assert len(calls) == 2 and json.loads(path.read_text())["pid"] == os.getpid()
        with pytest.raises(OutputError, match="another sirst5k run"):
            with output_lock(out):
                pass
    assert not path.exists()


# ---------------------------------------------------------------------------------------------
# staged_folder for every stage: ownership, inputs, interruption, resume


def test_staged_folder_replaces_only_the_same_stages_earlier_output(tmp_path):
    ingest = tmp_path / "ing"
    shard_folder(ingest, "ingest", "original", {"train": [2]}, seed=3)
    with pytest.raises(OutputError, match="its stage.json says ingest wrote it"):
        with staged_folder(ingest, stage="negatives"):
            pytest.fail("must not start")
    before = tree_bytes(ingest)
    with staged_folder(ingest, stage="ingest") as tmp:  # its own earlier output: replaced
        shard_folder(tmp, "ingest", "original", {"train": [1]}, seed=4)
    assert tree_bytes(ingest) != before and not owner_path(ingest).exists(), "stage.json alone marks it"


def test_staged_folder_marks_folders_without_stage_json_beside_them(tmp_path):
    """synth's DNANet folders and the report hold no stage.json: their record lies beside them, so
    their bytes (DVC hash) are the stage's alone."""
    src = tmp_path / "source"
    for _ in range(2):
        with staged_folder(src, stage="synth") as tmp:
            (tmp / "images").mkdir()
            (tmp / "images" / "000001.png").write_bytes(b"png")
    assert sorted(p.name for p in src.rglob("*")) == ["000001.png", "images"]
    assert folder_owner(src)[0] == "synth"
    with pytest.raises(OutputError, match="not an earlier output of report"):
        with staged_folder(src, stage="report"):
            pass
    (src / "images" / "000001.png").write_bytes(b"my own image")
    with pytest.raises(OutputError, match="changed since synth wrote it"):
        with staged_folder(src, stage="synth"):
            pass


def test_a_users_dataset_is_not_taken_for_synths_output(tmp_path):
    users = tmp_path / "source"
    (users / "images").mkdir(parents=True)
    (users / "images" / "000001.png").write_bytes(b"a real image")
    with pytest.raises(OutputError, match="no stage.json: not written by a sirst5k stage"):
        with staged_folder(users, stage="synth"):
            pass
    assert (users / "images" / "000001.png").read_bytes() == b"a real image"


@pytest.mark.parametrize("stage", ["transfer", "negatives", "ingest"])
def test_staged_folder_refuses_its_input_for_every_shard_stage(tmp_path, stage):
    """`transfer ing --out ing`, `negatives ing --out ing`, `ingest par/src --out par`."""
    ing = tmp_path / "par" / "src"
    shard_folder(ing, "ingest", "original", {"train": [2]}, seed=5)
    before = tree_bytes(tmp_path)
    for out in (ing, ing.parent, ing / "sub"):
        with pytest.raises(OutputError, match="input"):
            with staged_folder(out, stage=stage, inputs=[ing], overwrite=True):
                pass
    assert tree_bytes(tmp_path) == before


def test_staged_folder_with_no_stage_keeps_todays_behaviour(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "anything").write_text("x")
    with staged_folder(out) as tmp:
        (tmp / "new").write_text("y")
    assert sorted(p.name for p in out.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_interrupted_stage_leaves_no_empty_partial_but_keeps_finished_work(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with staged_folder(out, stage="ingest") as tmp:
            (tmp / "sub").mkdir()  # folders, no file yet
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt):
        with staged_folder(out, stage="ingest") as tmp:
            (tmp / "train-00000.h5").write_bytes(b"finished")
            raise KeyboardInterrupt
    assert (partial_dir(out) / "train-00000.h5").is_file(), "finished work is kept to resume from"
    assert not lock_path(out).exists()
    with staged_folder(out, stage="ingest", resume=False) as tmp:  # export's way: start afresh
        assert list(tmp.iterdir()) == []


def test_check_output_file_for_the_noise_bank(tmp_path):
    bank = tmp_path / "bank.h5"
    with h5py.File(bank, "w") as f:
        f.attrs["stage"] = "noise-bank"
    check_output_file(bank, "noise-bank")  # its own earlier bank: fine
    other = tmp_path / "data.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(OutputError, match="without a sirst5k stage attribute"):
        check_output_file(other, "noise-bank")
    shard = tmp_path / "ing" / "train-00000.h5"
    shard_folder(shard.parent, "ingest", "original", {"train": [1]}, seed=6)
    with pytest.raises(OutputError, match="stage attribute|not an earlier output"):
        check_output_file(shard, "noise-bank")
    text = tmp_path / "notes.txt"
    text.write_text("mine")
    with pytest.raises(OutputError, match="not a file sirst5k wrote"):
        check_output_file(text, "noise-bank")
    check_output_file(text, "noise-bank", overwrite=True)
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path, "noise-bank", overwrite=True)
    frames = tmp_path / "frames"
    frames.mkdir()
    with pytest.raises(OutputError, match="is inside the input"):
        check_output_file(frames / "bank.h5", "noise-bank", inputs=[frames], overwrite=True)
    with pytest.raises(OutputError, match="is the input"):
        check_output_file(bank, "transfer", inputs=[bank], overwrite=True)
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(OutputError, match="Not a directory"):
        check_output_file(blocker / "bank.h5", "noise-bank")
    assert text.read_text() == "mine"


# ---------------------------------------------------------------------------------------------
# bad options and addresses: one line, no traceback, nothing created


@pytest.mark.parametrize("address", ["localhost", "tcp://", "http://example.org:8786", "tcp://host:99999",
                                     "tcp://host:port", "two words:1"])
def test_a_scheduler_that_is_not_an_address_is_one_line(base, tmp_path, address):
    result = publish(address, base, tmp_path / "pub" / "ds", tmp_path / "m.json")
    one_line(result, "--scheduler")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"], "something was created"


def test_a_scheduler_where_nothing_listens_fails_within_the_connect_timeout(base, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    result = publish(address, base, tmp_path / "pub" / "ds", tmp_path / "m.json",
                     env={"SIRST5K_CONNECT_TIMEOUT": "1"})
    assert time.monotonic() - start < 15
    one_line(result, f"--scheduler {address}", "cannot connect", "within 1 s")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]


def cli_subprocess(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    full.pop("DASK_SCHEDULER_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "sirst5k.stages.cli", *map(str, args)], capture_output=True,
                          text=True, env=full, timeout=120)


def test_as_typed_a_bad_out_is_exactly_one_line_on_stderr(base, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    run = cli_subprocess("publish", "--ingest", base / "ingest", "--negatives", base / "negatives", "--out", target,
                         "--manifest", tmp_path / "m.json", "--scheduler", "nowhere")
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"error: {target}: exists and is a file, not a folder; the output names a "
                                       "folder"]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(base, tmp_path, how):
    args = ["publish", "--ingest", base / "ingest", "--negatives", base / "negatives", "--out", tmp_path / "ds",
            "--manifest", tmp_path / "m.json", "--scheduler", "nowhere"]
    plain = cli_subprocess(*args)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and len(plain.stderr.splitlines()) == 1
    run = cli_subprocess("--debug", *args) if how == "flag" else cli_subprocess(*args, env={"SIRST5K_DEBUG": "1"})
    assert run.returncode == 2
    assert "Traceback (most recent call last)" in run.stderr and "check_scheduler_address" in run.stderr
    assert run.stderr.splitlines()[-1] == plain.stderr.strip()


def test_an_internal_error_is_one_line_that_points_to_debug(scheduler, base, tmp_path, monkeypatch):
    import sirst5k.stages.publish as publish_stage

    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(publish_stage, "plan_split", broken)
    line = one_line(publish(scheduler, base, tmp_path / "ds", tmp_path / "m.json"), "RuntimeError: a bug over two "
                    "lines", "--debug", code=1)
    assert "internal error" in line


# ---------------------------------------------------------------------------------------------
# export


def test_export_refuses_to_write_into_or_over_its_dataset(published, tmp_path):
    base, out, manifest = published
    before = snapshot(out, manifest)
    one_line(runner.invoke(app, ["export", str(manifest), str(out / "export")]), "is inside the input")
    one_line(runner.invoke(app, ["export", str(manifest), str(out.parent), "--overwrite"]), "holds the input")
    one_line(runner.invoke(app, ["export", str(out), str(out), "--overwrite"]), "is the input")
    assert snapshot(out, manifest) == before


def test_a_killed_exports_partial_folder_is_discarded_by_the_next(published, tmp_path):
    base, out, manifest = published
    dest = tmp_path / "export"
    leftover = partial_dir(dest)
    leftover.mkdir()
    (leftover / "images").mkdir()
    (leftover / "images" / "stale.png").write_bytes(b"from a SIGKILLed export")
    result = runner.invoke(app, ["export", str(manifest), str(dest)])
    assert result.exit_code == 0, result.output
    assert not (dest / "images" / "stale.png").exists() and not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "export"]


def test_export_names_an_unreadable_shard_as_input_not_as_a_write_error(published, tmp_path):
    base, out, manifest = published
    shard = out / "train-00001.h5"
    shard.write_bytes(shard.read_bytes()[:2000])
    line = one_line(runner.invoke(app, ["export", str(manifest), str(tmp_path / "export")]), shard)
    assert "cannot write" not in line
    assert not (tmp_path / "export").exists() and not partial_dir(tmp_path / "export").exists()


# ---------------------------------------------------------------------------------------------
# the image stages through the command line (synth -> ingest -> noise-bank -> transfer -> negatives)


def cli(*args) -> None:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"sirst5k {' '.join(map(str, args))} failed:\n{result.output}"


@pytest.fixture(scope="module")
def chain(tmp_path_factory, scheduler: str) -> Path:
    root = tmp_path_factory.mktemp("chain")
    s = ["--scheduler", scheduler]
    cli("synth", root / "par", "--images", 40, "--size", 64, "--sequences", 2, "--frames", 4, *s)
    cli("ingest", root / "par" / "source", "--out", root / "ing", "--size", 64, *s)
    cli("noise-bank", root / "par" / "frames", "--out", root / "bank.h5", *s)
    cli("transfer", root / "ing", "--noise-bank", root / "bank.h5", "--out", root / "tr", "--device", "cpu", *s)
    cli("negatives", root / "tr", "--out", root / "neg", "--device", "cpu", *s)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("case", ["ingest-into-parent", "ingest-onto-source", "transfer-onto-input",
                                  "negatives-onto-input", "negatives-dot", "negatives-onto-ancestor",
                                  "noise-bank-into-frames"])
def test_a_stage_never_replaces_its_input(chain, scheduler, monkeypatch, case):
    before = tree_bytes(chain)
    s = ["--scheduler", scheduler, "--overwrite"]
    args = {
        "ingest-into-parent": ["ingest", chain / "par" / "source", "--out", chain / "par", "--size", 64],
        "ingest-onto-source": ["ingest", chain / "par" / "source", "--out", chain / "par" / "source", "--size", 64],
        "transfer-onto-input": ["transfer", chain / "ing", "--noise-bank", chain / "bank.h5", "--out", chain / "ing",
                                "--device", "cpu"],
        "negatives-onto-input": ["negatives", chain / "ing", "--out", chain / "ing", "--device", "cpu"],
        "negatives-dot": ["negatives", "tr", "--out", ".", "--device", "cpu"],
        "negatives-onto-ancestor": ["negatives", chain / "tr", "--out", chain, "--device", "cpu"],
        "noise-bank-into-frames": ["noise-bank", chain / "par" / "frames", "--out", chain / "par" / "frames" / "b.h5"],
    }[case]
    monkeypatch.chdir(chain)
    result = runner.invoke(app, [str(a) for a in [*args, *s]])
    line = one_line(result)
    assert "input" in line, line
    assert tree_bytes(chain) == before


@pytest.mark.slow
def test_stage_outputs_onto_files_and_foreign_folders(chain, scheduler, tmp_path):
    s = ["--scheduler", scheduler]
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    one_line(runner.invoke(app, [str(a) for a in ["ingest", chain / "par" / "source", "--out", notes, *s]]),
             notes, "is a file")
    one_line(runner.invoke(app, [str(a) for a in ["noise-bank", chain / "par" / "frames", "--out", notes, *s]]),
             notes, "not an earlier output of noise-bank")
    assert notes.read_text() == "mine"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep").write_text("x")
    one_line(runner.invoke(app, [str(a) for a in ["negatives", chain / "tr", "--out", foreign, "--device", "cpu",
                                                   *s]]), foreign, "--overwrite")
    assert sorted(p.name for p in foreign.iterdir()) == ["keep"]
    # the same stage's earlier output is replaced, and the bank too
    cli("negatives", chain / "tr", "--out", chain / "neg", "--device", "cpu", *s)
    cli("noise-bank", chain / "par" / "frames", "--out", chain / "bank.h5", *s)


@pytest.mark.slow
def test_synth_over_a_users_dataset_is_refused(chain, scheduler, tmp_path):
    users = tmp_path / "data"
    (users / "source" / "images").mkdir(parents=True)
    (users / "source" / "images" / "000001.png").write_bytes(b"a real image")
    one_line(runner.invoke(app, [str(a) for a in ["synth", users, "--images", 4, "--size", 64, "--scheduler",
                                                   scheduler]]), users / "source")
    assert (users / "source" / "images" / "000001.png").read_bytes() == b"a real image"


@pytest.mark.slow
def test_a_damaged_shard_stops_the_next_stage_naming_it(chain, scheduler, tmp_path):
    copy = tmp_path / "tr"
    copy.mkdir()
    for p in (chain / "tr").iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    shard = sorted(copy.glob("train-*.h5"))[0]
    flip_byte(shard)
    one_line(runner.invoke(app, [str(a) for a in ["negatives", copy, "--out", tmp_path / "neg", "--device", "cpu",
                                                   "--scheduler", scheduler]]), shard, "does not match stage.json")
    assert not (tmp_path / "neg").exists()


@pytest.mark.slow
def test_two_writers_of_one_stage_output(chain, scheduler):
    out = chain / "neg"
    before = tree_bytes(chain)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = runner.invoke(app, [str(a) for a in ["negatives", chain / "tr", "--out", out, "--device", "cpu",
                                                       "--scheduler", scheduler]])
        one_line(result, out, f"pid {holder.pid}")
        assert {k: v for k, v in tree_bytes(chain).items() if ".lock" not in k} == before
    finally:
        holder.kill()
        holder.wait()
