"""Scale-out: the stages on an external dask scheduler give the local cluster's bytes; GPU routing.

A `dask scheduler` and two `dask worker --nthreads 1` processes are started on 127.0.0.1 (killed
when the module's tests end); `noise-bank` and `negatives` run on them with `--scheduler` and
must write exactly the files a LocalCluster run writes. GPU tasks ask for resource GPU only
where a worker offers it; `--device cuda` without any CUDA is a one-line error.

The tasks' batched fast paths (targets of a whole shard at once, label checks from the boxes
alone) are checked against straightforward per-mask versions at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sirst5k.formats import shards
from sirst5k.runner.cluster import cluster_has_gpu, run_tasks
from sirst5k.formats.imageio import write_png
from sirst5k.method.synth import make_labelled_sample, make_sequence
from sirst5k.method.negatives import apply_negatives, label_check, negative_boxes, plan_negatives, transform_boxes
from sirst5k.method.targets import batch_target_table, count_targets, target_centers, target_table
from sirst5k.stages.cli import app

REPO = Path(__file__).resolve().parents[1]
DASK = Path(sys.executable).parent / "dask"
runner = CliRunner()
START_TIMEOUT = 90.0


def sirst5k(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"sirst5k {' '.join(map(str, args))} failed:\n{result.output}"
    return result.output


# ---------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Two small train shards (64x64 synthetic labelled images) and two synthetic frame sequences."""
    root = tmp_path_factory.mktemp("inputs")
    ingest = root / "ingest"
    for s in range(2):
        pairs = [make_labelled_sample(7, s * 6 + i, 64) for i in range(6)]
        meta = shards.new_meta(6)
        for i, (_, mask) in enumerate(pairs):
            n_t, area = count_targets(mask)
            meta["sample_id"][i] = meta["source_id"][i] = f"{s * 6 + i + 1:06d}"
            meta["kind"][i] = "original"
            meta["n_targets"][i] = meta["source_n_targets"][i] = n_t
            meta["area"][i] = meta["source_area"][i] = area
        shards.write_shard(ingest / shards.shard_name("train", s), np.stack([p[0] for p in pairs]),
                           np.stack([p[1] for p in pairs]), meta,
                           {"dataset": "ingest", "version": "test", "split": "train", "shard_index": s, "n_shards": 2})
    frames = root / "frames"
    for q in range(2):
        for t, frame in enumerate(make_sequence(7, q, 4, 96)):
            write_png(frames / f"seq{q:03d}" / f"{t:04d}.png", frame)
    return {"ingest": ingest, "frames": frames}


# ---------------------------------------------------------------- an external scheduler


def _wait(predicate, what: str, procs: list[subprocess.Popen], logs: list[Path]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not predicate():
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            tail = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in logs if log.exists())
            pytest.fail(f"{what}: {'a process exited' if dead else f'not within {START_TIMEOUT:.0f} s'}\n{tail}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory, request) -> str:
    """Address of a `dask scheduler` with two one-thread `dask worker` processes on this machine."""
    if not DASK.is_file():
        pytest.skip(f"{DASK} not found (dask[distributed] is not installed in this environment)")
    root = tmp_path_factory.mktemp("scheduler")
    info = root / "scheduler.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []

    def start(name: str, *args) -> None:
        log = root / f"{name}.log"
        logs.append(log)
        with open(log, "wb") as fh:
            procs.append(subprocess.Popen([str(DASK), *map(str, args)], stdout=fh, stderr=subprocess.STDOUT,
                                          cwd=REPO, env=env))

    def stop() -> None:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=15)

    request.addfinalizer(stop)
    start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file", info, "--no-dashboard")
    _wait(lambda: info.is_file() and info.stat().st_size > 0, "dask scheduler start", procs, logs)
    address = json.loads(info.read_text())["address"]
    for i in range(2):
        start(f"worker{i}", "worker", "--scheduler-file", info, "--nthreads", "1", "--no-nanny", "--no-dashboard",
              "--name", f"worker{i}", "--local-directory", root / f"worker{i}")
    from distributed import Client

    with Client(address, timeout="30s") as client:
        _wait(lambda: len(client.scheduler_info()["workers"]) >= 2, "two dask workers", procs, logs)
    return address


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


class SubmitSpy:
    """Records the `resources` every task is submitted with."""

    def __init__(self, monkeypatch):
        from distributed import Client

        self.resources: list = []
        original = Client.submit

        def submit(client, fn, *args, **kwargs):
            self.resources.append(kwargs.get("resources"))
            return original(client, fn, *args, **kwargs)

        monkeypatch.setattr(Client, "submit", submit)


@pytest.mark.slow
def test_external_scheduler_gives_the_local_bytes(inputs, scheduler, tmp_path, monkeypatch):
    # here (small work runs in the command's process), on a LocalCluster, on the external scheduler
    runs = {"here": ({"SIRST5K_CLUSTER": "never"}, ["--workers", "2"]),
            "local": ({"SIRST5K_CLUSTER": "always"}, ["--workers", "2"]),
            "remote": ({}, ["--scheduler", scheduler])}
    for name, (env, where) in runs.items():
        out = tmp_path / name
        with monkeypatch.context() as m:
            m.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
            for k, v in env.items():
                m.setenv(k, v)
            sirst5k("noise-bank", inputs["frames"], "--out", out / "bank.h5", *where)
            spy = SubmitSpy(m)
            sirst5k("negatives", inputs["ingest"], "--out", out / "negatives", "--shard-size", 20, *where)
        if name == "here":
            assert spy.resources == [], "small work went to a cluster"
        else:
            # --device auto on workers without resource GPU: no task may ask for one (it would wait forever)
            assert spy.resources and all(r is None for r in spy.resources)
    ref = tmp_path / "remote"
    for name in ("here", "local"):
        assert (tmp_path / name / "bank.h5").read_bytes() == (ref / "bank.h5").read_bytes()
        a, b = _files(tmp_path / name / "negatives"), _files(ref / "negatives")
        assert len([n for n in a if n.endswith(".h5")]) >= 2
        assert a.keys() == b.keys()
        assert [n for n in a if a[n] != b[n]] == [], f"{name} and the external scheduler wrote different bytes"
    # the work really ran on the external workers
    from distributed import Client

    with Client(scheduler, timeout="30s") as client:
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert sum(executed.values()) >= 4 and len(executed) == 2


@pytest.mark.slow
def test_cuda_without_cuda_is_a_clear_error(inputs, scheduler, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for mode, where, says in (("auto", ["--workers", "1"], "no CUDA device is visible"),  # here
                              ("always", ["--workers", "1"], "no CUDA device is visible"),  # a LocalCluster
                              ("auto", ["--scheduler", scheduler], "offers resource GPU")):
        out = tmp_path / f"neg-{mode}-{len(where[1])}"
        with pytest.MonkeyPatch.context() as m:
            m.setenv("SIRST5K_CLUSTER", mode)
            result = runner.invoke(app, ["negatives", str(inputs["ingest"]), "--out", str(out), "--device", "cuda",
                                         *where])
        assert result.exit_code == 2, result.output
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: --device cuda") and says in lines[0], result.output
        assert "Traceback" not in result.output
        assert not out.exists()


# ---------------------------------------------------------------- GPU routing without a GPU


@pytest.fixture(scope="module")
def gpu_cluster():
    """An in-process cluster of two one-thread workers, one advertising resources={"GPU": 1}."""
    from distributed import Client, Scheduler, SpecCluster, Worker

    workers = {
        "cpu-worker": {"cls": Worker, "options": {"nthreads": 1}},
        "gpu-worker": {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}}},
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Port 8787 is already in use")
        cluster = SpecCluster(workers=workers, scheduler={"cls": Scheduler, "options": {"dashboard_address": None}},
                              silence_logs=40)
    with cluster:
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=START_TIMEOUT)
            yield client


def _worker_name(i: int) -> str:
    from distributed import get_worker

    return get_worker().name


@pytest.mark.slow
def test_gpu_tasks_land_on_the_gpu_worker(gpu_cluster):
    assert cluster_has_gpu(gpu_cluster)
    names = run_tasks(gpu_cluster, _worker_name, [(i,) for i in range(12)], "route", gpu=True)
    assert set(names) == {"gpu-worker"}
    # without gpu=True tasks go anywhere; 12 quick tasks on two idle workers use both
    names = run_tasks(gpu_cluster, _worker_name, [(i,) for i in range(12)], "spread", gpu=False)
    assert set(names) <= {"cpu-worker", "gpu-worker"}


@pytest.mark.slow
def test_device_cpu_never_asks_for_gpu(inputs, gpu_cluster, tmp_path, monkeypatch):
    address = gpu_cluster.scheduler.address
    spy = SubmitSpy(monkeypatch)
    sirst5k("negatives", inputs["ingest"], "--out", tmp_path / "cpu", "--device", "cpu", "--scheduler", address)
    assert spy.resources and all(r is None for r in spy.resources)
    spy.resources.clear()
    # --device auto on a cluster offering GPU: the tasks ask for it, land on the GPU worker and,
    # without CUDA there, run on its CPU: same bytes
    sirst5k("negatives", inputs["ingest"], "--out", tmp_path / "auto", "--device", "auto", "--scheduler", address)
    assert spy.resources and all(r == {"GPU": 1} for r in spy.resources)
    assert _files(tmp_path / "cpu") == _files(tmp_path / "auto")


# ---------------------------------------------------------------- the tasks' batched fast paths


def _random_masks(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    masks = (rng.random((n, h, w)) < rng.uniform(0.0, 0.4)).astype(np.uint8) * 255
    masks[0] = 0  # an empty mask in every batch
    return masks


def test_batch_targets_equal_per_mask_tables():
    rng = np.random.default_rng(0)
    for trial in range(60):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        masks = _random_masks(rng, 5, h, w)
        table = batch_target_table(masks)
        for i, mask in enumerate(masks):
            ref = target_table(mask)
            sel = table["image"] == i
            assert table["count"][i] == len(ref["area"]) == sel.sum()
            np.testing.assert_array_equal(table["index"][sel], np.arange(sel.sum()))
            for key in ("center", "area", "bbox"):
                np.testing.assert_array_equal(table[key][sel], ref[key], err_msg=f"trial {trial} mask {i} {key}")
            np.testing.assert_allclose(table["centroid"][sel], ref["centroid"])


def _label_check_reference(before: np.ndarray, after: np.ndarray, y0, x0, patch: int) -> dict:
    """Whole-image labelling of every sample, the obvious way."""
    from skimage.measure import label

    out: dict[str, list] = {k: [] for k in ("n_targets_before", "n_targets_after", "area_before", "area_after",
                                            "straddle", "cut")}
    for b, a, y, x in zip(before, after, y0, x0):
        lab = label(b > 0, connectivity=2)
        inside = np.zeros(b.shape, bool)
        inside[y : y + patch, x : x + patch] = True
        straddle = bool(np.intersect1d(lab[inside & (lab > 0)], lab[~inside & (lab > 0)]).size)
        changed = bool(((b[inside] > 0) != (a[inside] > 0)).any())
        for key, v in (("n_targets_before", lab.max()), ("n_targets_after", label(a > 0, connectivity=2).max()),
                       ("area_before", (b > 0).sum()), ("area_after", (a > 0).sum()), ("straddle", straddle),
                       ("cut", straddle and changed)):
            out[key].append(v)
    return {k: np.asarray(v) for k, v in out.items()}


def test_label_check_equals_whole_image_labelling():
    rng = np.random.default_rng(1)
    for trial in range(60):
        h, w = (int(v) for v in rng.integers(6, 30, 2))
        patch = int(rng.integers(1, min(h, w) + 1))
        sources = _random_masks(rng, 3, h, w)
        src = rng.integers(0, 3, 8)
        y0, x0 = rng.integers(0, h - patch + 1, 8), rng.integers(0, w - patch + 1, 8)
        k, flip = rng.integers(0, 4, 8), rng.random(8) < 0.5
        before = torch.from_numpy(sources[src])
        _, after = apply_negatives(before, before, y0, x0, patch, k, flip)
        ref = _label_check_reference(sources[src], after.numpy(), y0, x0, patch)
        for got in (label_check(sources[src], after, y0, x0, patch),
                    label_check(sources, after, y0, x0, patch, source=src)):
            for key, values in ref.items():
                np.testing.assert_array_equal(got[key], values, err_msg=f"trial {trial} {key}")


def test_transform_boxes_is_mirror_then_rot90():
    boxes = torch.arange(8 * 5 * 5).reshape(8, 5, 5)
    k = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    flip = torch.tensor([False] * 4 + [True] * 4)
    out = transform_boxes(boxes, k, flip).numpy()
    for b in range(8):
        box = boxes[b].numpy()
        np.testing.assert_array_equal(out[b], np.rot90(np.fliplr(box) if flip[b] else box, int(k[b])))


def test_plan_enumerates_sample_patch_target_k():
    rng = np.random.default_rng(2)
    masks = (rng.random((4, 40, 48)) < 0.02).astype(np.uint8) * 255
    named = plan_negatives(masks, [3, 8], rotations=[1, 3], mirror=True, clamp="script")
    plan = np.stack([named.source, named.target_index, named.patch, named.k, named.flip.astype(np.int64), named.y0,
                     named.x0, named.center[:, 0], named.center[:, 1]], axis=1)
    rows = []
    for i, mask in enumerate(masks):
        centers = target_centers(mask)
        for p in (3, 8):
            for j, ((cy, cx), (y, x)) in enumerate(zip(centers, negative_boxes(centers, mask.shape, p, "script"))):
                rows += [(i, j, p, k, 1, y, x, cy, cx) for k in (1, 3)]
    np.testing.assert_array_equal(plan, np.array(rows, np.int64).reshape(-1, 9))
