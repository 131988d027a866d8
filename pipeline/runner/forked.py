"""Task lanes as forked children of the command's process: tasks side by side past the GIL and h5py's lock.

Threads in one process overlap only what releases the GIL, and h5py takes one lock for every
HDF5 call of a process: measured on SIRST v1, publish's shard copies took 1.03 s on two threads
and 1.02 s on one, its verify 0.90 s on both. A LocalCluster's workers do run side by side, but
cost 3-5 s to start (each imports the libraries again). A child forked when a task list starts
costs a few milliseconds: it inherits every module the command has imported and the task list
itself, so the parent sends it only task indices and gets back each task's result, pickled
(results are small, as they must be for a cluster: paths, counts, checksums).

`forked_lanes` forks only where that is safe, else `can_fork` says why not and the caller keeps
its threads: on Linux (fork is the platform's own), from a process with one thread (a thread
holding a lock at the fork would leave it held in the child forever: rich's refresh, a pool,
a dask client), and with torch not imported (its OpenMP pool and CUDA do not survive a fork).

A child runs one task at a time, in index order of what it is given; an error travels back
as the task's exception (with the child's traceback as its cause) and is raised by that task's
`result()`. A child that dies (killed, out of memory) is an error naming its task. A child
dies with the command (PR_SET_PDEATHSIG): a killed run leaves no lane writing behind it, and
the output lock (inherited) is free for the rerun.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator

_HEADER = 8  # bytes of a message's length, and of a task index
_PR_SET_PDEATHSIG = 1


def can_fork() -> str | None:
    """None when task lanes may be forked children of this process, else why not (one phrase)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return "not Linux"
    if os.environ.get("SIRST5K_LANES") == "threads":
        return "SIRST5K_LANES=threads"
    if "torch" in sys.modules:
        return "torch is imported (its thread pool and CUDA do not survive a fork)"
    if threading.active_count() != 1 or threading.current_thread() is not threading.main_thread():
        return "other threads are running"
    return None


class RemoteTraceback(Exception):
    """The traceback of an error raised in a lane, as text (the cause of the error raised here)."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class LaneDied(RuntimeError):
    """A lane's process ended while it ran a task."""


@dataclass
class _Pending:
    """A task's future: `result()` waits for it (pumping the lanes' messages meanwhile)."""

    lanes: "_Lanes"
    index: int
    finished: bool = False
    ok: bool = True
    value: Any = None

    def done(self) -> bool:
        return self.finished

    def result(self) -> Any:
        while not self.finished:
            self.lanes.pump()
        if not self.ok:
            self.lanes.failed = True
            raise self.value
        return self.value


@dataclass
class _Child:
    pid: int
    tasks: int  # parent's end of the pipe it reads task indices from
    results: int  # parent's end of the pipe it writes results to
    running: _Pending | None = None


def _read_exact(fd: int, n: int) -> bytes:
    parts, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break  # end of file: the writer is gone
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the prctl took
        os._exit(1)


def _message(index: int, ok: bool, value: Any, tb: str) -> bytes:
    try:
        return pickle.dumps((ok, value, tb), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:  # noqa: BLE001 - any pickling failure is reported as one error
        what = "result" if ok else "error"
        return pickle.dumps((False, RuntimeError(f"task {index}: its {what} cannot travel back from its lane "
                                                 f"({type(err).__name__}: {err}): {value!r:.500}"), tb))


def _serve(fn: Callable[[int], Any], tasks: int, results: int) -> None:
    """A lane's loop: read a task index, run it, write back (ok, value); end at end of file."""
    while True:
        head = _read_exact(tasks, _HEADER)
        if len(head) < _HEADER:
            return
        index = int.from_bytes(head, "little", signed=True)
        tb = ""
        try:
            ok, value = True, fn(index)
        except BaseException as exc:  # noqa: BLE001 - every error travels back to be raised there
            # pickling drops an exception's traceback and cause: they travel as text
            ok, value, tb = False, exc, "".join(traceback.format_exception(exc)).rstrip()
        _flush_std()  # what the task printed comes before its result
        data = _message(index, ok, value, tb)
        _write_all(results, len(data).to_bytes(_HEADER, "little") + data)


def inherit_lazy_imports() -> None:
    """Import here, once, what tasks would otherwise import lazily in every lane of every task list.

    A lane inherits the modules this process has imported when it forks, and nothing it imports
    itself outlives it, so a command that runs several task lists (the recipe: ten) pays such an
    import in each lane of each list. Measured in the recipe on SIRST v1: `numpy.ma` (which
    `np.unique` imports on first use, 20-70 ms a lane) 8 times; PIL's image plugins, which
    `Image.open` loads on first use (PNG, JPEG -> TIFF -> fractions, decimal), 3 times. PIL's
    only where this process has imported PIL already, i.e. its tasks read images.
    """
    import numpy.ma  # noqa: F401

    image = sys.modules.get("PIL.Image")
    if image is not None:
        image.preinit()


class _Lanes:
    def __init__(self, n: int, fn: Callable[[int], Any]):
        self.children: list[_Child] = []
        self.failed = False
        _flush_std()  # else a child's first print repeats what the parent had buffered
        inherit_lazy_imports()
        parent = os.getpid()
        for _ in range(n):
            task_r, task_w = os.pipe()
            res_r, res_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the lane
                code = 0
                try:
                    os.close(task_w)
                    os.close(res_r)
                    for c in self.children:
                        os.close(c.tasks)
                        os.close(c.results)
                    _die_with_parent(parent)
                    _serve(fn, task_r, res_w)
                except BaseException:  # noqa: BLE001 - a lane never returns into the parent's code
                    code = 1
                finally:
                    os._exit(code)
            os.close(task_r)
            os.close(res_w)
            self.children.append(_Child(pid, task_w, res_r))

    def submit(self, index: int) -> _Pending:
        """Start task `index` on an idle lane (the caller keeps at most n tasks running, so one is
        idle unless a lane died: that lane's task, earlier in task order, is the error raised)."""
        pending = _Pending(self, index)
        idle = [c for c in self.children if c.pid and c.running is None]
        if idle:
            self._start(idle[0], pending)
        else:
            pending.ok, pending.value, pending.finished = False, LaneDied(f"task {index}: no lane left to run it"), True
        return pending

    def _start(self, child: _Child, pending: _Pending) -> None:
        child.running = pending
        _write_all(child.tasks, pending.index.to_bytes(_HEADER, "little", signed=True))

    def wait_any(self, futures: Any) -> None:
        """Return once a task has finished (`futures`, the caller's running ones: all of them are here)."""
        self.pump()

    def pump(self) -> None:
        """Wait for the next result of any busy lane and deliver it."""
        busy = {c.results: c for c in self.children if c.running is not None}
        if not busy:
            raise RuntimeError("waiting for a task that no lane runs")  # a bug in the caller
        ready, _, _ = select.select(list(busy), [], [])
        for fd in ready:
            child = busy[fd]
            pending, child.running = child.running, None
            head = _read_exact(fd, _HEADER)
            data = _read_exact(fd, int.from_bytes(head, "little")) if len(head) == _HEADER else b""
            if len(head) < _HEADER or not data:
                pending.ok, pending.value = False, LaneDied(
                    f"task {pending.index}: its lane (pid {child.pid}) ended while running it ({self._reap(child)})")
            else:
                pending.ok, pending.value, tb = pickle.loads(data)
                if tb:
                    pending.value.__cause__ = RemoteTraceback(tb)
            pending.finished = True

    def _reap(self, child: _Child) -> str:
        pid, child.pid = child.pid, 0
        if not pid:
            return "already reaped"
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            return f"killed by signal {os.WTERMSIG(status)}"
        return f"exit status {os.WEXITSTATUS(status)}"

    def close(self, kill: bool) -> None:
        """End every lane: after the tasks they run (kill: at once)."""
        if not kill:
            while any(c.running is not None for c in self.children):
                self.pump()
        for c in self.children:
            if kill and c.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(c.pid, signal.SIGKILL)
            for fd in (c.tasks, c.results):
                with contextlib.suppress(OSError):
                    os.close(fd)
            if c.pid:
                self._reap(c)


@contextlib.contextmanager
def forked_lanes(n: int, fn: Callable[[int], Any]) -> Iterator[_Lanes]:
    """Lanes: `.submit(i)` -> a future of fn(i), run in one of `n` children forked now (check
    `can_fork` first); `.wait_any(futures)` returns once one task more has finished.

    On leaving: the lanes end after their running tasks (a task's error raised by `result()`
    included: the tasks started beside it finish first, as a thread pool's would); on any other
    exception (Ctrl-C) they are killed at once: what they were writing is under temporary names,
    which the rerun removes.
    """
    lanes = _Lanes(n, fn)
    try:
        yield lanes
    except BaseException:
        lanes.close(kill=not lanes.failed)
        raise
    lanes.close(kill=False)
