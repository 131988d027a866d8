"""Reliability: identical bytes from clean runs, crash safety (SIGKILL, lost workers), clear disk errors.

A small synthetic pipeline is built once per module (through an in-process dask cluster); its
`negatives` and `publish` outputs are the references every interrupted run must reproduce byte
for byte. Stages that get killed run as `sirst5k` subprocesses in their own session, so one
SIRST5K_CLUSTER decides where their tasks run: `never`, in the command's own process (what small
work does by default), or `always`, on a LocalCluster, whose workers one SIGKILL to the process
group takes down with the command.

To kill a stage at a chosen point without racing it, the processes that write shards load
`FAULTS` (as `sitecustomize` for the command's own process, as a dask worker preload for
workers): it only slows `fsync` in `pipeline.shards` (or makes it fail with ENOSPC), so a shard
sits fully written under its temporary name for a moment before the rename.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from sirst5k.formats import shards
from sirst5k.formats.manifest import canonical_json, write_json_atomic
from sirst5k.runner.outputs import partial_dir
from sirst5k.stages.cli import app

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
SIRST5K = BIN / "sirst5k"
DASK = BIN / "dask"
runner = CliRunner()

WRITE_DELAY = "0.2"  # seconds each shard waits, complete, under its temporary name
SHARD_SIZE = "4"  # small shards: many kill points
TIMEOUT = 120.0  # bound on any wait for a subprocess

FAULTS = '''
"""dask worker preload (tests only): slow down or fail fsync in pipeline.shards, nowhere else."""
import errno, os, time
from sirst5k.formats import shards

_DELAY = float(os.environ.get("SIRST5K_TEST_WRITE_DELAY", "0"))
_FAIL_AFTER = int(os.environ.get("SIRST5K_TEST_ENOSPC_AFTER", "-1"))
_calls = [0]


class _OS:
    def __getattr__(self, name):
        return getattr(os, name)

    def fsync(self, fd):
        _calls[0] += 1
        if 0 <= _FAIL_AFTER < _calls[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        time.sleep(_DELAY)
        os.fsync(fd)


shards.os = _OS()
'''


# ---------------------------------------------------------------------------------------------
# helpers


def cli(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"sirst5k {' '.join(map(str, args))} failed:\n{result.output}"
    return result.output


def negatives_args(src: Path, out: Path) -> list:
    return ["negatives", src, "--out", out, "--device", "cpu", "--shard-size", SHARD_SIZE]


def publish_args(base: Path, dest: Path) -> list:
    return ["publish", "--ingest", base / "ingest", "--negatives", base / "negatives", "--out", dest / "sirst5k",
            "--manifest", dest / "manifests" / "sirst5k.json", "--shard-size", SHARD_SIZE]


def build(root: Path, scheduler: str) -> None:
    """synth -> ingest -> noise-bank -> transfer -> negatives -> publish, all under root."""
    s = ["--scheduler", scheduler]
    cli("synth", root / "out", "--images", 24, "--sequences", 2, "--frames", 4, "--size", 128, *s)
    # two images a shard: six transfer shards, so negatives has six tasks to be killed between
    cli("ingest", root / "out" / "source", "--out", root / "ingest", "--size", 128, "--shard-size", 2, *s)
    cli("noise-bank", root / "out" / "frames", "--out", root / "noise_bank.h5", *s)
    cli("transfer", root / "ingest", "--noise-bank", root / "noise_bank.h5", "--out", root / "transfer",
        "--device", "cpu", *s)
    cli(*negatives_args(root / "transfer", root / "negatives"), *s)
    cli(*publish_args(root, root / "pub"), *s)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under root (hidden ones too) by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_tree(got: Path, want: Path) -> None:
    a, b = tree_bytes(got), tree_bytes(want)
    assert sorted(a) == sorted(b), f"{got} holds {sorted(set(a) ^ set(b))} unlike {want}"
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, f"files differ from the uninterrupted run: {differ}"


def finished(folder: Path) -> list[Path]:
    """Shards under their final name."""
    return sorted(p for p in folder.glob("*.h5") if not p.name.startswith("."))


def in_flight(folder: Path) -> list[Path]:
    """Shards still under their temporary name (written, not yet renamed)."""
    return sorted(p for p in folder.glob(f".*{shards.PARTIAL_MARK}-*") if p.is_file())


def assert_complete(path: Path, reference: Path) -> None:
    """A shard under a final name opens, is whole, and is the uninterrupted run's shard byte for byte."""
    with h5py.File(path, "r") as f:
        n = f["images"].shape[0]
        assert f["masks"][()].shape == f["images"][()].shape
        # the padding box is written only where an image is padded (--keep-aspect)
        assert all(f["meta"][name].shape == (n,) for name in shards.META_FIELDS if name not in shards.PADDING_FIELDS)
        assert f.attrs["task_key"]
    assert path.read_bytes() == (reference / path.name).read_bytes(), f"{path.name} differs from the reference"


def stamp(paths) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


def group_alive(pgid: int) -> bool:
    """Any process of the group still running (zombies excluded)?"""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def faults_file(tmp: Path) -> Path:
    faults = tmp / "sirst5k_test_faults.py"
    faults.write_text(FAULTS)
    return faults


def faults_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for subprocesses that load FAULTS: the command's own process (a `sitecustomize`
    on PYTHONPATH, for tasks run in it) and its dask workers (a preload)."""
    faults = faults_file(tmp)
    (tmp / "sitecustomize.py").write_text("import sirst5k_test_faults  # noqa: F401\n")
    path = os.pathsep.join(p for p in (str(tmp), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "DASK_DISTRIBUTED__WORKER__PRELOAD": json.dumps([str(faults)]), **extra}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return env


def kill_when(args: list, partial: Path, n_done: int, env: dict, log: Path) -> None:
    """Run `sirst5k ARGS`; SIGKILL its whole process group once `partial` holds at least n_done
    finished shards and another is half-way (written, not renamed)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(SIRST5K), *map(str, args)], start_new_session=True, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (len(finished(partial)) >= n_done and in_flight(partial)):
            assert proc.poll() is None, f"stage ended (rc {proc.returncode}) before the kill:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no {n_done} finished shards in {partial}:\n{log.read_text()}"
            time.sleep(0.01)
    finally:
        kill_group(proc)


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """One in-process worker thread for the reference builds: no cluster start-up per command."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def base(tmp_path_factory, scheduler: str) -> Path:
    root = tmp_path_factory.mktemp("base")
    build(root, scheduler)
    return root


# ---------------------------------------------------------------------------------------------
# identical bytes


def test_two_clean_runs_in_the_same_folder_write_identical_bytes(base: Path, scheduler: str) -> None:
    before = tree_bytes(base)
    shutil.rmtree(base)
    build(base, scheduler)
    after = tree_bytes(base)
    assert sorted(before) == sorted(after)
    differ = [k for k in before if before[k] != after[k]]
    assert not differ, f"a clean rerun in the same folder changed: {differ}"
    names = set(before)
    assert "pub/manifests/sirst5k.json" in names and "pub/sirst5k/manifest.json" in names
    assert sum(n.startswith("pub/sirst5k/") and n.endswith(".h5") for n in names) == 24


def test_manifest_bytes_are_canonical(base: Path, tmp_path: Path) -> None:
    manifest = base / "pub" / "manifests" / "sirst5k.json"
    text = manifest.read_text(encoding="utf-8")
    doc = json.loads(text)
    assert text == canonical_json(doc)
    # insertion order does not reach the bytes; floats are written by repr, shortest round trip
    shuffled = json.loads(text, object_pairs_hook=lambda pairs: dict(reversed(pairs)))
    assert canonical_json(shuffled) == text
    assert json.loads(canonical_json({"m": 0.1, "r": 1 / 3}))["r"] == 1 / 3
    assert '"m": 0.1,' in canonical_json({"m": 0.1, "r": 1 / 3})
    # numpy scalars (counts, params read back from HDF5) write exactly as Python numbers do
    plain = {"n": 12, "mix": [0.1, 0.3], "ratio": 0.5, "flag": True}
    numpyish = {"n": np.int64(12), "mix": np.array([0.1, 0.3]), "ratio": np.float64(0.5), "flag": np.bool_(True)}
    assert canonical_json(numpyish) == canonical_json(plain)
    with pytest.raises(ValueError):
        canonical_json({"mix": float("nan")})
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "m.json", {"mix": float("nan")})
    assert list(tmp_path.iterdir()) == []


def shard_to_rewrite(base: Path) -> tuple:
    src = base / "pub" / "sirst5k" / "train-00001.h5"
    return (*shards.read_shard(src), shards.read_attrs(src))


def test_the_shard_codecs_carry_no_state_from_one_chunk_to_the_next(base: Path) -> None:
    """A worker compresses many shards: each codec must give the same bytes for the same chunk
    whatever it compressed before (h5py's lzf does not: liblzf built with INIT_HTAB 0 reuses a
    stale hash table)."""
    import hashlib
    import io

    images = shards.read_shard(base / "pub" / "sirst5k" / "train-00001.h5")[0]

    def compressed(arr: np.ndarray, codec: dict) -> str:
        buf = io.BytesIO()
        with h5py.File(buf, "w") as f:
            f.create_dataset("x", data=arr, chunks=(1, *arr.shape[1:]), **codec)
        return hashlib.sha256(buf.getvalue()).hexdigest()

    for name, codec in shards.dataset_codecs().items():
        digests = set()
        for trial in range(12):
            other = np.random.default_rng(trial).integers(0, 256, images.shape, dtype=np.uint8)
            other[:, :, : trial * 8] = images[:, :, : trial * 8]
            compressed(other, codec)
            digests.add(compressed(images, codec))
        assert len(digests) == 1, f"/{name} codec {codec}: the same images gave {len(digests)} different files"


def test_shard_bytes_do_not_depend_on_other_threads(base: Path, tmp_path: Path) -> None:
    """A dask worker's profiler thread holds the task thread's frames every few ms; a dataset that
    closes late (its chunks flushed late) must not move anything in the file."""
    import threading

    images, masks, meta, attrs = shard_to_rewrite(base)
    stop = threading.Event()

    def sampler() -> None:
        held: list = []
        while not stop.is_set():
            held = [*held[-2:], sys._current_frames()]
            time.sleep(0.0005)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    try:
        digests = {shards.write_shard(tmp_path / "same.h5", images, masks, meta, attrs).sha256 for _ in range(40)}
    finally:
        stop.set()
        thread.join()
    assert len(digests) == 1, (f"the same samples gave {len(digests)} different shards while another thread held "
                               "frames (chunk space is allocated when the dataset closes)")


# ---------------------------------------------------------------------------------------------
# crash safety


@pytest.mark.parametrize("where", ["never", "always"], ids=["in-process", "local-cluster"])
@pytest.mark.parametrize("stage", ["negatives", "publish"])
def test_sigkill_then_rerun_resumes_to_identical_bytes(stage: str, where: str, base: Path, scheduler: str,
                                                       tmp_path: Path) -> None:
    if stage == "negatives":
        out, ref = tmp_path / "negatives", base / "negatives"
        args = negatives_args(base / "transfer", out)
    else:
        out, ref = tmp_path / "pub" / "sirst5k", base / "pub" / "sirst5k"
        args = publish_args(base, tmp_path / "pub")
    partial = partial_dir(out)
    env = faults_env(tmp_path, SIRST5K_TEST_WRITE_DELAY=WRITE_DELAY, SIRST5K_CLUSTER=where)
    log = tmp_path / "stage.log"
    reused: dict[str, tuple[int, int]] = {}
    n_done = 1
    for _ in range(2):  # kill after 1 finished shard, then after 3 more (the second run resumes the first)
        kill_when([*args, "--workers", 1], partial, n_done, env, log)
        assert not out.exists(), "a killed stage swapped its output into place"
        assert not (tmp_path / "pub" / "manifests").exists()
        done = finished(partial)
        assert len(done) >= n_done and in_flight(partial)
        for p in done:
            assert_complete(p, ref)
        # shards kept from the previous kill were reused: not rewritten
        assert {k: v for k, v in stamp(done).items() if k in reused} == reused
        reused = stamp(complete_tasks(done) if stage == "negatives" else done)
        n_done = len(done) + 3
    assert reused, "no finished task to reuse: kill later"
    cli(*args, "--scheduler", scheduler)
    assert not partial.exists()
    assert_same_tree(out, ref)
    final = stamp(finished(out))
    assert {k: final[k] for k in reused} == reused, "the rerun rewrote shards it could reuse"
    if stage == "publish":
        a, b = tmp_path / "pub" / "manifests" / "sirst5k.json", base / "pub" / "manifests" / "sirst5k.json"
        assert a.read_bytes() == b.read_bytes()


def complete_tasks(done: list[Path]) -> list[Path]:
    """Negatives shards of input shards whose every part is written (`train-<input>-<part>.h5`)."""
    by_task: dict[str, list[Path]] = {}
    for p in done:
        by_task.setdefault(p.name.rsplit("-", 1)[0], []).append(p)
    keep = []
    for parts in by_task.values():
        if shards.read_attrs(parts[0])["n_parts"] == len(parts):
            keep += parts
    return keep


@contextlib.contextmanager
def dask_cluster(tmp: Path, n_workers: int, env: dict) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """`dask scheduler` + n `dask worker` processes on 127.0.0.1, each in its own process group."""
    from distributed import Client

    sched_file = tmp / "scheduler.json"
    faults = json.loads(env["DASK_DISTRIBUTED__WORKER__PRELOAD"])[0]
    env = {k: v for k, v in env.items() if k != "DASK_DISTRIBUTED__WORKER__PRELOAD"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        with open(tmp / "cluster.log", "ab") as log:
            procs.append(subprocess.Popen([str(DASK), *args], start_new_session=True, stdout=log,
                                          stderr=subprocess.STDOUT, env=env))
        return procs[-1]

    workers = []
    try:
        start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file))
        deadline = time.monotonic() + TIMEOUT
        while not sched_file.is_file() or not sched_file.read_text().strip():
            assert time.monotonic() < deadline and procs[0].poll() is None, (tmp / "cluster.log").read_text()
            time.sleep(0.1)
        time.sleep(0.1)  # the file is written in one go, but be sure it is whole
        address = json.loads(sched_file.read_text())["address"]
        for _ in range(n_workers):
            workers.append(start("worker", "--scheduler-file", str(sched_file), "--nthreads", "1", "--nworkers", "1",
                                 "--no-dashboard", "--preload", faults))
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(n_workers, timeout=TIMEOUT)
        yield address, workers
    finally:
        for p in reversed(procs):
            kill_group(p)


def test_losing_a_worker_mid_stage_still_gives_identical_bytes(base: Path, tmp_path: Path) -> None:
    out, ref = tmp_path / "negatives", base / "negatives"
    partial = partial_dir(out)
    env = faults_env(tmp_path, SIRST5K_TEST_WRITE_DELAY=WRITE_DELAY)
    log = tmp_path / "stage.log"
    with dask_cluster(tmp_path, 2, env) as (address, workers):
        with open(log, "ab") as fh:
            stage = subprocess.Popen([str(SIRST5K), *map(str, negatives_args(base / "transfer", out)),
                                      "--scheduler", address], start_new_session=True, stdout=fh,
                                     stderr=subprocess.STDOUT, env=env)
        try:
            # kill the worker that is half-way through writing a shard: its task is lost mid-write
            deadline = time.monotonic() + TIMEOUT
            victim = None
            while victim is None:
                assert stage.poll() is None, f"stage ended before a worker was lost:\n{log.read_text()}"
                assert time.monotonic() < deadline, log.read_text()
                for tmp_file in in_flight(partial) if finished(partial) else []:
                    pid = int(tmp_file.name.rsplit("-", 1)[1])
                    victim = next((w for w in workers if pgid_of(pid) == w.pid), None)
                    if victim:
                        break
                time.sleep(0.01)
            kill_group(victim)
            rc = stage.wait(timeout=TIMEOUT)
        finally:
            kill_group(stage)
    assert rc == 0, log.read_text()
    assert not partial.exists()
    assert_same_tree(out, ref)


def pgid_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


# ---------------------------------------------------------------------------------------------
# unwritable output, full disk


def assert_one_line_error(result, *words: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for w in words:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"
    return lines[0]


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".partial" in p.name or ".old-" in p.name]


@pytest.mark.parametrize("stage", ["negatives", "publish"])
def test_output_under_a_regular_file_is_one_line_and_exit_2(stage: str, base: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    out = blocker / "sub" / "data"
    if stage == "negatives":
        args = negatives_args(base / "transfer", out)
    else:
        args = ["publish", "--ingest", base / "ingest", "--negatives", base / "negatives", "--out", out,
                "--manifest", tmp_path / "manifests" / "m.json"]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2
    assert_one_line_error(result, str(out), "Not a directory")
    assert blocker.read_text() == "a regular file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_manifest_under_a_regular_file_fails_before_any_work(base: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    manifest = blocker / "m.json"
    result = runner.invoke(app, ["publish", "--ingest", str(base / "ingest"), "--negatives", str(base / "negatives"),
                                 "--out", str(tmp_path / "sirst5k"), "--manifest", str(manifest)])
    assert result.exit_code == 2
    assert_one_line_error(result, str(manifest), "Not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"], "publish wrote a dataset it cannot describe"


@pytest.mark.parametrize("where", ["never", "always"], ids=["in-process", "local-cluster"])
def test_disk_full_mid_stage_is_one_line_exit_2_and_leaves_nothing(where: str, base: Path, tmp_path: Path,
                                                                   monkeypatch) -> None:
    import dask
    import importlib.util

    faults = faults_file(tmp_path)
    monkeypatch.setenv("SIRST5K_TEST_ENOSPC_AFTER", "3")  # three shards fit on the "disk", the fourth does not
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.setenv("SIRST5K_CLUSTER", where)
    dest = tmp_path / "pub"
    if where == "never":  # the tasks run in this process: load FAULTS here, for this test only
        spec = importlib.util.spec_from_file_location("sirst5k_test_faults", faults)
        monkeypatch.setattr(shards, "os", shards.os)  # restored afterwards
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    # the in-process LocalCluster hands this config to its spawned workers
    with dask.config.set({"distributed.worker.preload": [str(faults)]}):
        result = runner.invoke(app, [str(a) for a in publish_args(base, dest)] + ["--workers", "1"])
    assert result.exit_code == 2, result.output
    line = assert_one_line_error(result, str(dest / "sirst5k"), "No space left on device")
    assert ".partial" not in line, "the message names a hidden temporary path"
    assert not (dest / "sirst5k").exists() and not (dest / "manifests").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["never", "always"], ids=["in-process", "local-cluster"])
def test_a_real_full_filesystem(where: str, base: Path, tmp_path: Path) -> None:
    """A 512 KiB tmpfs cannot hold the dataset (~1.7 MB). Run as a user would: the terminal shows
    one line (workers' output included), exit status 2, nothing left on the full disk."""
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(tiny)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); test_disk_full_* covers ENOSPC")
    try:
        env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
        env["SIRST5K_CLUSTER"] = where
        # another process's cluster on port 8787 makes dask warn: not what this test checks
        env["PYTHONWARNINGS"] = "ignore:Port:UserWarning"
        run = subprocess.run([str(SIRST5K), *map(str, publish_args(base, tiny)), "--workers", "1"],
                             capture_output=True, text=True, env=env, timeout=TIMEOUT)
        assert run.returncode == 2, run.stderr
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: {tiny / 'sirst5k'}") and last.endswith("No space left on device"), last
        assert list(tiny.iterdir()) == []
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, f"{len(lines)} lines on stderr, not one:\n" + "\n".join(lines[:12])
    finally:
        subprocess.run(["umount", "-l", str(tiny)], check=False)
