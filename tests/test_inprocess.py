"""Small work runs in this process, big work on a cluster: the same bytes either way.

`Runner.run` (sirst5k.runner.cluster) decides where a stage's tasks run: a given scheduler takes
them all; otherwise they run here while the work left looks short, and move to a LocalCluster of
`--workers` processes once it does not (SIRST5K_CLUSTER=always / never overrides). Publish copies
stored chunks instead of decoding and encoding them again (`shards.copy_rows`): the same bytes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from sirst5k.errors import InputError
from sirst5k.formats import shards
from sirst5k.runner import cluster
from sirst5k.runner.cluster import Runner
from sirst5k.stages.cli import app

runner = CliRunner()


def sirst5k(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"sirst5k {' '.join(map(str, args))} failed:\n{result.output}"
    return result.output


class WhereSpy:
    """Records, per task list a Runner ran, its label and where each task ran."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[str, list[str]]] = []
        original = Runner.run

        def run(runner_, fn, tasks, label, **kw):
            out = original(runner_, fn, tasks, label, **kw)
            self.calls.append((label, list(runner_.where)))
            return out

        monkeypatch.setattr(Runner, "run", run)

    def places(self) -> set[str]:
        return {w for _, where in self.calls for w in where}


def build(root: Path, *where: str) -> None:
    """synth -> ingest -> noise-bank -> transfer -> negatives -> publish under root."""
    out = root / "output"
    sirst5k("synth", out, "--images", 16, "--sequences", 2, "--frames", 4, "--size", 96, *where)
    sirst5k("ingest", out / "source", "--out", out / "ingest", "--size", 96, "--shard-size", 4, *where)
    sirst5k("noise-bank", out / "frames", "--out", out / "noise_bank.h5", "--window", 24, *where)
    sirst5k("transfer", out / "ingest", "--noise-bank", out / "noise_bank.h5", "--out", out / "transfer",
            "--device", "cpu", *where)
    sirst5k("negatives", out / "transfer", "--out", out / "negatives", "--patch", 24, "--device", "cpu",
            "--shard-size", 10, *where)
    sirst5k("publish", "--ingest", out / "ingest", "--negatives", out / "negatives", "--out", out / "sirst5k",
            "--manifest", root / "manifests" / "sirst5k.json", "--shard-size", 12, *where)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_in_process_and_two_workers_write_the_same_bytes(tmp_path, monkeypatch):
    trees = {}
    for mode in ("never", "always"):
        with monkeypatch.context() as m:
            m.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
            m.setenv(cluster.CLUSTER_ENV, mode)
            spy = WhereSpy(m)
            shutil.rmtree(tmp_path / "run", ignore_errors=True)  # the same folder: records hold paths
            build(tmp_path / "run", "--workers", "2")
        assert spy.places() == {"here" if mode == "never" else "cluster"}, spy.calls
        assert {label for label, _ in spy.calls} >= {"ingest", "noise-bank", "transfer", "negatives",
                                                      "publish", "verify"}
        trees[mode] = tree_bytes(tmp_path / "run")
    a, b = trees["never"], trees["always"]
    assert sorted(a) == sorted(b)
    assert sum(n.endswith(".h5") for n in a) >= 15 and sum(n.endswith("stage.json") for n in a) >= 4
    assert [n for n in a if a[n] != b[n]] == [], "in-process and 2-worker runs wrote different bytes"


def _pid(i: int) -> int:
    return os.getpid()


def test_small_work_runs_here_without_a_cluster(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.delenv(cluster.CLUSTER_ENV, raising=False)

    def no_cluster(*a, **k):
        raise AssertionError("a cluster was opened for small work")

    monkeypatch.setattr(cluster, "open_client", no_cluster)
    for workers in (None, 1, 2, 8):
        with contextlib.ExitStack() as stack:
            r = Runner(stack, workers, None, "cpu")
            assert r.run(_pid, [(i,) for i in range(5)], "t") == [os.getpid()] * 5
            assert r.where == ["here"] * 5
    # --workers 1 never starts one, however long the work
    monkeypatch.setattr(cluster, "CLUSTER_AFTER_S", 0.0)
    with contextlib.ExitStack() as stack:
        r = Runner(stack, 1, None, "cpu")
        assert r.run(_pid, [(i,) for i in range(3)], "t") == [os.getpid()] * 3
    monkeypatch.setenv(cluster.CLUSTER_ENV, "never")
    with contextlib.ExitStack() as stack:
        assert Runner(stack, 4, None, "cpu").run(_pid, [(i,) for i in range(3)], "t") == [os.getpid()] * 3


@pytest.mark.slow
def test_long_work_moves_to_a_local_cluster_once(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.delenv(cluster.CLUSTER_ENV, raising=False)
    monkeypatch.setattr(cluster, "CLUSTER_AFTER_S", 0.0)  # every task "long": spill after the first
    opened = []
    original = cluster.open_client

    def counting(*a, **k):
        opened.append(a)
        return original(*a, **k)

    monkeypatch.setattr(cluster, "open_client", counting)
    with contextlib.ExitStack() as stack:
        r = Runner(stack, 2, None, "cpu")
        pids = r.run(_pid, [(i,) for i in range(5)], "t")
        # decided from the second task on (the first also pays the imports); two tasks run here at
        # a time (2 workers, 2 cores), so the one started beside the deciding task finishes here
        here = cluster.SPILL_AFTER_TASKS + (min(2, cluster._usable_cores()) - 1)
        assert r.where == ["here"] * here + ["cluster"] * (5 - here)
        assert set(pids[:here]) == {os.getpid()} and os.getpid() not in pids[here:]
        # a later task list of the same command uses the open cluster, from its first task
        again = r.run(_pid, [(i,) for i in range(2)], "t2")
        assert r.where == ["cluster", "cluster"] and os.getpid() not in again
    assert len(opened) == 1


def test_the_estimate_leaves_out_the_first_task_and_weighs_the_rest():
    # the first task also imported the stage's libraries: tasks of one size
    assert cluster.seconds_left([2.0, 0.5, 0.3], [1] * 10) == pytest.approx(0.4 * 7)
    assert cluster.seconds_left([2.0], [1] * 4) == pytest.approx(2.0 * 3)
    # tasks of different sizes (noise-bank's sequences, weighed by their bytes): a big one done
    # does not make the small ones left look big
    assert cluster.seconds_left([2.0, 1.0], [5, 10, 1, 1, 1, 1]) == pytest.approx(0.1 * 4)


def test_an_unknown_cluster_mode_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(cluster.CLUSTER_ENV, "sometimes")
    result = runner.invoke(app, ["synth", str(tmp_path / "out"), "--images", "4", "--sequences", "1", "--frames", "2"])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "SIRST5K_CLUSTER='sometimes'" in lines[0] and "auto, always, never" in lines[0]
    assert list(tmp_path.iterdir()) == [], "a stage with a bad SIRST5K_CLUSTER left files"


def test_cuda_asked_for_in_process_without_cuda_is_one_line_before_any_task(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    ran = []
    with contextlib.ExitStack() as stack:
        with pytest.raises(InputError, match="--device cuda: no CUDA device is visible"):
            Runner(stack, 1, None, "cuda").run(ran.append, [(1,)], "t")
    assert ran == []


def _threads(i: int) -> int:
    return cluster.task_threads()


def test_tasks_run_here_may_use_the_cores_up_to_workers(monkeypatch):
    """`task_threads()`: min(--workers, cores) for tasks run here, 1 outside and on a worker."""
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.setenv(cluster.CLUSTER_ENV, "never")
    cores = cluster._usable_cores()
    for workers, want in ((1, 1), (2, min(2, cores)), (None, min(cluster.local_workers(None), cores))):
        with contextlib.ExitStack() as stack:
            assert Runner(stack, workers, None, "cpu").run(_threads, [(0,), (1,)], "t") == [want, want]
    assert cluster.task_threads() == 1


def _meet(barrier, i: int, fail: set, timeout: float = 20) -> int:
    # every task waits for the other lane's: this returns only when two tasks run at once
    barrier.wait(timeout=timeout)
    if i in fail:
        raise InputError(f"task-{i}", "bad")
    return i * i


@pytest.mark.skipif(cluster._usable_cores() < 2, reason="needs 2 cores for 2 tasks at a time here")
def test_tasks_here_run_two_at_a_time_in_task_order(monkeypatch):
    """`--workers 2` here: two tasks at once on threads (the barrier needs both), results in
    task order, and the first failure in task order is the error, as one after another."""
    import threading

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.setenv(cluster.CLUSTER_ENV, "never")
    with contextlib.ExitStack() as stack:
        barrier = threading.Barrier(2)
        assert Runner(stack, 2, None, "cpu").run(_meet, [(barrier, i, set()) for i in range(6)], "t") == \
            [i * i for i in range(6)]
        barrier = threading.Barrier(2)
        # 3 fails beside 2; 4, started beside 3, then waits alone and fails too (after 1 s), but
        # after 3 in task order
        with pytest.raises(InputError, match="task-3"):
            Runner(stack, 2, None, "cpu").run(_meet, [(barrier, i, {3}, 1.0) for i in range(6)], "t")
        # one worker: one task at a time, so a task never meets another (the barrier of 1 passes)
        barrier = threading.Barrier(1)
        assert Runner(stack, 1, None, "cpu").run(_meet, [(barrier, i, set()) for i in range(3)], "t") == [0, 1, 4]


@pytest.mark.slow
def test_synth_writes_the_same_bytes_on_one_thread_and_two(tmp_path, monkeypatch):
    monkeypatch.setenv(cluster.CLUSTER_ENV, "never")
    trees = []
    for n in (1, 2):
        monkeypatch.setattr(cluster, "_usable_cores", lambda: 2)
        shutil.rmtree(tmp_path / "s", ignore_errors=True)
        sirst5k("synth", tmp_path / "s", "--images", 20, "--sequences", 1, "--frames", 3, "--size", 48,
                "--workers", n)
        trees.append(tree_bytes(tmp_path / "s" / "source"))
    assert len(trees[0]) == 42 and trees[0] == trees[1]


def test_device_auto_without_a_visible_gpu_is_the_cpu_without_torch(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert cluster.gpu_impossible()
    assert cluster.resolve_device_type("auto") == "cpu" and cluster.resolve_device_type("cpu") == "cpu"
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device is visible"):
            cluster.resolve_device_type("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        cluster.resolve_device_type("tpu")


# ---------------------------------------------------------------- publish's chunk copy


def _sources(tmp_path: Path, compression=None) -> list[Path]:
    rng = np.random.default_rng(3)
    paths = []
    for s, n in enumerate((5, 7)):
        images = rng.integers(0, 256, (n, 32, 40), dtype=np.uint8)
        masks = np.zeros_like(images)
        masks[:, 10:13, 5:8] = 255
        meta = shards.new_meta(n)
        meta["sample_id"][:] = [f"s{s}-{i}" for i in range(n)]
        paths.append(tmp_path / f"src{s}.h5")
        shards.write_shard(paths[-1], images, masks, meta, {"dataset": "up", "split": "train"}, compression=compression)
    return paths


def _rows(pieces):
    imgs, msks, metas = [], [], []
    for p, a, b in pieces:
        i, m, meta = shards.read_shard(p, slice(a, b))
        imgs.append(i), msks.append(m), metas.append(meta)
    return np.concatenate(imgs), np.concatenate(msks), shards.concat_meta(metas)


@pytest.mark.parametrize("compression", [None, {"compression": "lzf"}], ids=["stored-as-written", "other-codec"])
def test_copy_rows_writes_the_bytes_of_read_then_write(tmp_path, compression):
    a, b = _sources(tmp_path, compression)
    pieces = [(a, 2, 5), (b, 0, 7), (a, 0, 1)]
    images, masks, meta = _rows(pieces)
    attrs = {"dataset": "pub", "version": "v", "split": "train", "shard_index": 0, "n_shards": 1}
    want = shards.write_shard(tmp_path / "want.h5", images, masks, meta, attrs)
    got = shards.copy_rows(tmp_path / "got.h5", pieces, meta, attrs)
    assert got.n_samples == 11 and got.sha256 == want.sha256
    assert (tmp_path / "got.h5").read_bytes() == (tmp_path / "want.h5").read_bytes()
    assert not list(tmp_path.glob(".*partial*"))


def test_copy_rows_names_a_source_it_cannot_read(tmp_path):
    a, b = _sources(tmp_path)
    with h5py.File(b, "r+") as f:  # a chunk whose bytes do not decompress, stored as written otherwise
        off = f["masks"].id.get_chunk_info(1).byte_offset
    data = bytearray(b.read_bytes())
    data[off: off + 8] = b"\xff" * 8
    b.write_bytes(bytes(data))
    meta = shards.concat_meta([shards.take_meta(shards.read_meta(p), slice(0, 2)) for p in (a, b)])
    # the copy does not decode: the damaged chunk travels; verify (publish's last step) decodes it
    shards.copy_rows(tmp_path / "copied.h5", [(a, 0, 2), (b, 0, 2)], meta, {"dataset": "pub"})
    with pytest.raises(InputError, match="copied.h5: cannot read shard"):
        shards.read_shard(tmp_path / "copied.h5")
    b.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)  # a source that does not open
    with pytest.raises(InputError, match="src1.h5: cannot open shard"):
        shards.copy_rows(tmp_path / "x.h5", [(a, 0, 2), (b, 0, 2)], meta, {"dataset": "pub"})
    assert not (tmp_path / "x.h5").exists() and not list(tmp_path.glob(".*partial*"))


def test_copy_rows_on_two_lanes_at_once_from_a_fresh_process(tmp_path, monkeypatch):
    """Publish's first two tasks on two lanes (`run_here`) both look up the filters the writer
    uses, which are read from a dataset made in an in-memory HDF5 file: HDF5 refuses a second
    file of one name, and publish failed one run in three on SIRST v1. The barrier holds both
    lanes inside that lookup together, as the race did."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    a, b = _sources(tmp_path)
    meta = shards.concat_meta([shards.read_meta(p) for p in (a, b)])
    attrs = {"dataset": "pub", "split": "train"}
    want = shards.copy_rows(tmp_path / "want.h5", [(a, 0, 5), (b, 0, 7)], meta, attrs).sha256
    barrier = threading.Barrier(2, timeout=10)
    codecs = shards.dataset_codecs

    def meeting_codecs(*args, **kwargs):
        barrier.wait()
        return codecs(*args, **kwargs)

    monkeypatch.setattr(shards, "dataset_codecs", meeting_codecs)
    shards._default_filters.cache_clear()
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda i: shards.copy_rows(tmp_path / f"lane{i}.h5", [(a, 0, 5), (b, 0, 7)], meta,
                                                       attrs).sha256, range(2)))
    assert got == [want, want]
