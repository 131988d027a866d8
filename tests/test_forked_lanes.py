"""The command's own task lanes (`runner.cluster.run_here`): forked children where that is safe,
else threads. Both kinds give results in task order, raise the first failure in task order,
keep every lane busy (a long task does not hold back the ones after it), and write the same
bytes as one task at a time."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sirst5k.errors import InputError
from sirst5k.runner import cluster, forked

FORK = multiprocessing.get_context("fork")
needs_fork = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked lanes are Linux only")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["fork", "threads"])
def lanes(request, monkeypatch):
    """Which lanes run_here uses: forked children (allowed although the test process imported
    torch and may hold other threads: the tasks here use neither) or threads."""
    if request.param == "fork":
        if not sys.platform.startswith("linux"):
            pytest.skip("forked lanes are Linux only")
        monkeypatch.setattr(forked, "can_fork", lambda: None)
    else:
        monkeypatch.setenv("SIRST5K_LANES", "threads")
    return request.param


def _meet(barrier, i: int, fail: set) -> int:
    barrier.wait(timeout=20)  # returns only when the other lane runs a task too
    if i in fail:
        raise InputError(f"task-{i}", "bad")
    return i * i


def test_two_lanes_run_at_once_results_in_task_order(lanes):
    barrier = FORK.Barrier(2)  # shared by threads and by forked children alike
    assert cluster.run_here(_meet, [(barrier, i, set()) for i in range(6)], "t", 2) == [i * i for i in range(6)]


def _wait_then(event, i: int, started) -> int:
    if i == 0:
        # the first task waits for the last: only a lane that takes tasks 1..3 while 0 runs
        # lets it finish (before, a lane waited for the oldest task before taking another)
        assert event.wait(timeout=20), "task 0 was never joined by tasks 1-3"
    started.put(i)
    if i == 3:
        event.set()
    return i


def test_a_free_lane_takes_the_next_task_while_a_long_one_runs(lanes):
    event, started = FORK.Event(), FORK.SimpleQueue()  # SimpleQueue: written at put, no feeder thread
    assert cluster.run_here(_wait_then, [(event, i, started) for i in range(4)], "t", 2) == [0, 1, 2, 3]
    order = [started.get() for _ in range(4)]
    assert order[-1] == 0  # tasks 1, 2, 3 finished while task 0 waited


def _fails(i: int, fail: set, delay: dict) -> int:
    time.sleep(delay.get(i, 0.0))
    if i in fail:
        raise InputError(f"task-{i}", f"bad input {i}")
    return i


def test_the_first_failure_in_task_order_is_raised(lanes):
    # task 4 fails first in time, task 2 first in task order: task 2's error is the one
    with pytest.raises(InputError, match="task-2"):
        cluster.run_here(_fails, [(i, {2, 4}, {2: 0.5}) for i in range(6)], "t", 2)


@needs_fork
def test_a_lanes_error_keeps_its_own_traceback(monkeypatch):
    monkeypatch.setattr(forked, "can_fork", lambda: None)
    with pytest.raises(InputError, match="bad input 1") as err:
        cluster.run_here(_fails, [(i, {1}, {}) for i in range(2)], "t", 2)
    assert isinstance(err.value.__cause__, forked.RemoteTraceback)
    assert "_fails" in str(err.value.__cause__)  # the child's frames, by name


def _kill_self(i: int) -> int:
    if i == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return i


@needs_fork
def test_a_lane_that_dies_is_an_error_naming_its_task(monkeypatch):
    monkeypatch.setattr(forked, "can_fork", lambda: None)
    with pytest.raises(forked.LaneDied, match=r"task 1: its lane \(pid \d+\) ended while running it \(killed by signal 9\)"):
        cluster.run_here(_kill_self, [(i,) for i in range(4)], "t", 2)


def _unpicklable(i: int):
    return lambda: i


@needs_fork
def test_a_result_that_cannot_travel_back_is_an_error(monkeypatch):
    monkeypatch.setattr(forked, "can_fork", lambda: None)
    with pytest.raises(RuntimeError, match="task 0: its result cannot travel back"):
        cluster.run_here(_unpicklable, [(0,), (1,)], "t", 2)


def test_can_fork_says_why_not(monkeypatch):
    assert "torch" in sys.modules  # conftest imports it
    assert "torch" in (forked.can_fork() or "")
    monkeypatch.setenv("SIRST5K_LANES", "threads")
    assert forked.can_fork() == "SIRST5K_LANES=threads"


@needs_fork
def test_lanes_die_with_the_command(tmp_path):
    """A killed command (kill -9) leaves no lane running behind it: its output lock, which the
    lanes inherit, is free for the rerun at once."""
    pids = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import os, time
        from sirst5k.runner import cluster, forked
        assert forked.can_fork() is None, forked.can_fork()
        def task(i):
            with open({str(pids)!r}, "a") as fh:
                fh.write(f"{{os.getpid()}}\\n")
            time.sleep(60)
        cluster.run_here(task, [(0,), (1,)], "t", 2)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not pids.exists() or len(pids.read_text().split()) < 2):
        time.sleep(0.05)
    children = [int(p) for p in pids.read_text().split()]
    assert len(children) == 2 and proc.pid not in children
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    alive = children
    while alive and time.monotonic() < deadline:
        alive = [p for p in children if Path(f"/proc/{p}").exists() and
                 Path(f"/proc/{p}/stat").read_text().split()[2] != "Z"]
        time.sleep(0.05)
    assert not alive, f"lanes {alive} outlived their command"


@pytest.mark.slow
def test_forked_lanes_threads_and_one_lane_write_the_same_bytes(tmp_path):
    """The command line in a fresh process (no torch: forked lanes) against threads and one lane."""
    env = {**os.environ, "SIRST5K_CLUSTER": "never"}

    def cli(*args, lanes: str | None = None) -> None:
        e = dict(env)
        if lanes:
            e["SIRST5K_LANES"] = lanes
        subprocess.run([sys.executable, "-m", "sirst5k", *map(str, args)], check=True, env=e, cwd=REPO,
                       capture_output=True, text=True)

    cli("synth", tmp_path / "s", "--images", 24, "--sequences", 1, "--frames", 3, "--size", 64, "--workers", 1)
    trees = []
    for name, workers, kind in (("fork", 2, None), ("threads", 2, "threads"), ("one", 1, None)):
        out = tmp_path / name
        cli("ingest", tmp_path / "s" / "source", "--out", out / "ingest", "--size", 64, "--shard-size", 5,
            "--workers", workers, lanes=kind)
        cli("negatives", out / "ingest", "--out", out / "negatives", "--patch", 8, "--shard-size", 7,
            "--workers", workers, lanes=kind)
        trees.append({p.relative_to(out).as_posix(): p.read_bytes()
                      for p in sorted(out.rglob("*.h5"))})
    assert len(trees[0]) > 6 and trees[0] == trees[1] == trees[2]


@needs_fork
def test_lanes_inherit_what_tasks_import_lazily():
    """numpy.ma (np.unique imports it on first use) and PIL's plugins (Image.open loads them) are
    imported once before the fork, so each lane of each task list does not import them again."""
    script = textwrap.dedent("""
        import sys
        import numpy as np
        import PIL.Image
        from sirst5k.runner import cluster
        assert "numpy.ma" not in sys.modules and "PIL.PngImagePlugin" not in sys.modules
        def task(i):
            inherited = "numpy.ma" in sys.modules and "PIL.PngImagePlugin" in sys.modules
            np.unique(np.arange(3))
            return inherited
        print(cluster.run_here(task, [(i,) for i in range(4)], "t", 2))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[True, True, True, True]"
