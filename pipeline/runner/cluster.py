"""Where stage tasks run: here, or on a dask.distributed cluster; a progress bar; GPU routing.

A stage builds a list of task arguments (one per shard) and hands it to a `Runner`, which decides
where the tasks run (`Runner.run`, the one place that decides):
  - on an existing scheduler whenever one is given (`--scheduler`, DASK_SCHEDULER_ADDRESS);
  - otherwise here, in this process's lanes, min(`--workers`, cores) tasks at a time: forked
    children of this process where that is safe (below), which are a LocalCluster's workers
    without its start-up, so every task list stays here; where the lanes must be threads, for
    as long as the work left looks short: once the tasks left would take longer than
    CLUSTER_AFTER_S seconds here (judged, from the second task on, by the time of the tasks
    done per unit of work, the first left out as it also paid the imports), the rest go to a
    LocalCluster of `--workers` processes (default min(4, cores)), started then and kept for
    the stage's later task lists. `--workers 1` never starts one (one worker computes what
    this process computes, in the same order), and neither does a machine with one core.
    SIRST5K_CLUSTER=always / never overrides the rule.
A cluster costs seconds to start (processes, and each imports the stage's libraries again), so
work at the sizes of the public datasets (a few thousand samples) runs here, and at ten times
that size too (10 x SIRST's transfer + negatives: 13.0 s here in 2 forked lanes, 17.9 s on 2
threads, 18.4 s on a 2-worker LocalCluster with its start-up). The bytes written do not depend
on where a task ran, nor on how many ran at once (each task writes its own files; results come
back in task order).
The lanes here are children forked from this process when the task list starts (`forked`: they
inherit its imports, so they start in milliseconds, and run side by side past the GIL and h5py's
lock, which serialises every HDF5 call of a process), or threads where a fork is not safe
(torch imported, other threads running, not Linux; `SIRST5K_LANES=threads` asks for them),
which overlap only what releases the GIL (PNG codecs, hashing, numpy's bigger loops). Cluster
workers are processes with one thread each, for the same reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from sirst5k.errors import InputError, OutputError

if TYPE_CHECKING:
    import torch

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
# One thread per worker process: workers must not each spawn a full set of BLAS/torch threads
# on a shared machine. (External `dask worker`s want the same environment.)
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
# torch is imported only where a device is resolved: the CPU-only stages (ingest, publish,
# verify, report) and their workers then start ~1.5 s sooner.


def resolve_device(device: str) -> "torch.device":
    """`auto` -> CUDA when this process sees a GPU, else CPU; `cuda` without a GPU is an error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but no CUDA device is visible to this worker")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda")
    return torch.device(device)


def gpu_impossible() -> bool:
    """True when this process can see no CUDA device, known without importing torch (1.3-2.5
    CPU-s): CUDA_VISIBLE_DEVICES hides every device, or the machine has no NVIDIA device node
    (/dev/nvidia0, ...; /dev/dxg under WSL). False means "maybe": ask torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return True
    import glob

    return not glob.glob("/dev/nvidia[0-9]*") and not os.path.exists("/dev/dxg")


def resolve_device_type(device: str) -> str:
    """`resolve_device(device).type` ("cpu" or "cuda"), without importing torch where no GPU can be
    seen (`gpu_impossible`): the CPU paths of the method modules are numpy, so a CPU-only stage
    task never loads torch. Same answers and errors as `resolve_device`."""
    if device == "cpu" or (device == "auto" and gpu_impossible()):
        return "cpu"
    return resolve_device(device).type


#: Seconds to wait for a scheduler given by address before giving up (SIRST5K_CONNECT_TIMEOUT).
CONNECT_TIMEOUT = 5.0
# schemes distributed can connect to, and those that take a HOST:PORT
_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")
_HOST_PORT_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")


def check_scheduler_address(address: str) -> str:
    """`address` as distributed takes it, or InputError (one line) when it cannot be a scheduler's
    address: an unknown scheme, no host, a port that is not a number in 1..65535. No connection
    is tried: a stage can call this first, before any work."""
    from distributed.comm.addressing import parse_address, parse_host_port

    where = f"--scheduler {address!r}"
    text = address.strip()
    if not text or any(c.isspace() for c in text):
        raise InputError(None, f"{where} is not a scheduler address; use tcp://HOST:PORT")
    try:
        scheme, loc = parse_address(text, strict=False)
    except ValueError as err:
        raise InputError(None, f"{where} is not a scheduler address ({err}); use tcp://HOST:PORT") from None
    if scheme not in _SCHEMES:
        raise InputError(None, f"{where}: unknown protocol {scheme}://; use tcp://HOST:PORT")
    if scheme in _HOST_PORT_SCHEMES:
        try:
            host, port = parse_host_port(loc)
        except (ValueError, TypeError):
            what = "its port is not a number" if loc.rsplit("]", 1)[-1].count(":") else "it needs a port"
            raise InputError(None, f"{where} is not a scheduler address: {what}, as in tcp://HOST:8786") from None
        if not host:
            raise InputError(None, f"{where} is not a scheduler address: no host; use tcp://HOST:PORT")
        if not 0 < int(port) < 65536:
            raise InputError(None, f"{where}: port {int(port)} is outside 1..65535")
    elif not loc:
        raise InputError(None, f"{where} is not a scheduler address")
    return text


def _connect_timeout() -> float:
    try:
        return max(0.1, float(os.environ.get("SIRST5K_CONNECT_TIMEOUT", CONNECT_TIMEOUT)))
    except ValueError:
        return CONNECT_TIMEOUT


def _connect(address: str):
    """A Client on the scheduler at `address`, or InputError (one line) when none answers in time."""
    from distributed import Client

    timeout = _connect_timeout()
    try:
        return Client(address, timeout=f"{timeout}s")
    except (OSError, TimeoutError, ValueError) as err:
        reason = "nothing answered" if isinstance(err, (TimeoutError,)) or "Timed out" in str(err) else \
            " ".join(str(err).split()) or type(err).__name__
        raise InputError(None, f"--scheduler {address}: cannot connect to a dask scheduler within {timeout:g} s "
                               f"({reason}); is `dask scheduler` running there?") from None


@contextlib.contextmanager
def open_client(workers: int | None = None, scheduler: str | None = None, device: str = "auto") -> Iterator[Any]:
    """A distributed.Client on an existing scheduler, or on a fresh LocalCluster of `workers` processes.

    A scheduler address (`scheduler`, else DASK_SCHEDULER_ADDRESS) that is malformed, or where no
    scheduler answers within CONNECT_TIMEOUT seconds, is an InputError (one line) before any task.
    `device="cuda"` is checked before any work starts: it needs a CUDA device here (local
    cluster) or a worker that offers resource GPU (scheduler); otherwise InputError, one line.
    """
    import dask
    from distributed import Client, LocalCluster

    address = scheduler or os.environ.get(SCHEDULER_ENV)
    if address:
        client = _connect(check_scheduler_address(address))
        try:
            if device == "cuda" and not cluster_has_gpu(client):
                raise InputError(None, f"--device cuda: no worker of the scheduler at {address} offers resource GPU "
                                       "(start GPU workers with `dask worker ... --resources GPU=1`), "
                                       "or use --device auto / cpu")
            yield client
        finally:
            client.close()
        return
    resources = None
    if device != "cpu" and not (device == "auto" and gpu_impossible()):
        import torch

        check_cuda_here(device)
        resources = {"GPU": 1} if torch.cuda.is_available() else None
    n = local_workers(workers)
    with contextlib.ExitStack() as stack:
        # The scheduler's HTTP endpoint tries port 8787 first; another cluster on this machine
        # only moves it elsewhere, which is no news for a batch stage.
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message="Port 8787 is already in use")
        # dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also switches off
        # glibc's adaptive mmap threshold: every buffer over 128 KiB (image batches, shard
        # chunks) is then a fresh mmap whose pages fault in again on each use, and the stage
        # tasks run 2x slower than the same code in a plain process
        # (benchmarks/stage_throughput.py). A task's memory is bounded by its shard sizes, so
        # the default allocator is kept.
        stack.enter_context(dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}))
        cluster = stack.enter_context(
            LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                resources=resources,
                # A failed task re-raises in the client, which turns it into the one-line error;
                # the worker's own "Compute Failed" log would only repeat it as a screenful.
                silence_logs=logging.CRITICAL,
                env=WORKER_ENV,
            )
        )
        client = stack.enter_context(Client(cluster))
        yield client


def local_workers(workers: int | None) -> int:
    """Worker processes of a LocalCluster: `--workers`, else min(4, cores)."""
    return workers or min(4, os.cpu_count() or 1)


def check_cuda_here(device: str) -> None:
    """`--device cuda` with no CUDA device visible to this process: InputError, one line, before any work."""
    if device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise InputError(None, "--device cuda: no CUDA device is visible on this machine "
                               f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
                               "use --device auto or cpu, or --scheduler with GPU workers")


#: Where tasks run when no scheduler is given: auto (the rule of `Runner.run`), always (a
#: LocalCluster for every task list), never (here, in the command's process: `run_here`).
CLUSTER_ENV = "SIRST5K_CLUSTER"
CLUSTER_MODES = ("auto", "always", "never")
#: auto: the tasks left move to a LocalCluster once they would take longer than this here. A
#: 2-worker LocalCluster costs ~3-5 s to start on a 2-core machine (its workers import numpy,
#: h5py and torch again) and halves the rest at best, so it pays from ~10 s of work on; 15
#: leaves room for the estimate's error.
CLUSTER_AFTER_S = 15.0
#: auto decides from this many finished tasks on: the first task also pays the imports of the
#: stage's libraries (torch: 1-3 s), so it says little about the others.
SPILL_AFTER_TASKS = 2


def seconds_left(seconds: Sequence[float], weights: Sequence[float]) -> float:
    """Seconds the tasks not yet run would take here, from the finished ones' times: their rate
    per unit of weight (the first task left out when there are others: it also paid the imports)
    times the weight left. `weights`: one per task, finished ones first; all 1 for tasks of one
    size, else e.g. the bytes a task reads."""
    done = len(seconds)
    first = 1 if done > 1 else 0
    work = sum(weights[first:done])
    rate = sum(seconds[first:]) / work if work > 0 else sum(seconds[first:]) / max(1, done - first)
    return rate * sum(weights[done:]) if work > 0 else rate * (len(weights) - done)


def cluster_mode() -> str:
    """SIRST5K_CLUSTER (auto when unset); an unknown value is an InputError, one line."""
    mode = os.environ.get(CLUSTER_ENV, "").strip().lower() or "auto"
    if mode not in CLUSTER_MODES:
        raise InputError(None, f"{CLUSTER_ENV}={os.environ[CLUSTER_ENV]!r}: use {', '.join(CLUSTER_MODES)}")
    return mode


class Runner:
    """Where one command's task lists run: here, or on a dask cluster opened once, when first needed.

    `run` decides (see the module's docstring): a given scheduler takes every task; otherwise the
    tasks run here while the rest looks short, and move to a LocalCluster of `workers` processes
    once it does not. Once a cluster is open, every later task list of the command runs on it.
    The cluster is closed with `stack` (the command's ExitStack).

    where: "here" / "cluster" for each task of the last `run`, in task order (for tests and
    benchmarks).
    """

    def __init__(self, stack: contextlib.ExitStack, workers: int | None = None, scheduler: str | None = None,
                 device: str = "auto"):
        self._stack = stack
        self.workers, self.device = workers, device
        self.scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or None
        self.mode = cluster_mode()
        self._client = None
        self._checked = False
        self.where: list[str] = []

    @property
    def client(self):
        """The cluster's client, opened on first use (a scheduler's, or a fresh LocalCluster's)."""
        if self._client is None:
            self._client = self._stack.enter_context(open_client(self.workers, self.scheduler, self.device))
        return self._client

    def connect(self) -> "Runner":
        """Connect now when a scheduler is given, so that one that does not answer fails before any work."""
        if self.scheduler:
            self.client  # noqa: B018 - opens it
        return self

    def _cluster_only(self) -> bool:
        return bool(self.scheduler) or self.mode == "always"

    def _may_spill(self) -> bool:
        return self.mode == "auto" and not self.scheduler and local_workers(self.workers) > 1

    def run(self, fn: Callable[..., Any], tasks: Sequence[tuple], label: str, *, gpu: bool = False,
            weights: Sequence[float] | None = None) -> list[Any]:
        """fn(*args) for every args in `tasks`; results in task order. The first failing task (in
        task order) raises its InputError/OutputError, as `run_tasks` raises it.

        gpu: the tasks may use a GPU: on a cluster they ask for resource GPU where a worker offers it.
        weights: how much work each task is, relatively (e.g. bytes it reads), when tasks differ
        in size; the estimate of the work left uses them (default: all alike).
        """
        tasks = list(tasks)
        weights = [1.0] * len(tasks) if weights is None else [float(w) for w in weights]
        if len(weights) != len(tasks):
            raise ValueError(f"{len(weights)} weights for {len(tasks)} tasks")
        if not tasks:
            self.where = []
            return []
        if self._client is not None or self._cluster_only():
            self.where = ["cluster"] * len(tasks)
            return run_tasks(self.client, fn, tasks, label, gpu=gpu)
        if not self._checked:
            check_cuda_here(self.device)
            self._checked = True
        threads = min(local_workers(self.workers), _usable_cores())
        lanes = threads if not (gpu and not gpu_impossible()) else 1  # one GPU: one task at a time
        from sirst5k.runner import forked

        # forked lanes are a LocalCluster's workers without its start-up: moving gains nothing
        spill = self._may_spill() and not (lanes > 1 and forked.can_fork() is None)

        def spill_now(seconds: list[float]) -> bool:
            # the wall time left shares the lanes (each task's own time already counts the sharing)
            return spill and len(seconds) >= SPILL_AFTER_TASKS and \
                seconds_left(seconds, weights) / lanes > CLUSTER_AFTER_S

        with worker_threads(), here_threads(threads):
            results = run_here(fn, tasks, label, lanes, stop=spill_now)
        self.where = ["here"] * len(results)
        if len(results) < len(tasks):
            rest = tasks[len(results):]
            results += run_tasks(self.client, fn, rest, f"{label} ({local_workers(self.workers)} workers)", gpu=gpu)
            self.where += ["cluster"] * len(rest)
        return results


def run_here(fn: Callable[..., Any], tasks: Sequence[tuple], label: str, lanes: int,
             stop: Callable[[list[float]], bool] | None = None) -> list[Any]:
    """fn(*args) for every args in `tasks`, in this process's lanes, `lanes` at a time, under a
    progress bar; results in task order, and the first failure in task order is raised (the
    tasks started beside it finish first). A lane takes the next task as soon as it is free,
    whichever task finished, so a long task does not hold the others back. The lanes are
    children forked from this process where that is safe (`forked.can_fork`), else threads
    (which overlap only what releases the GIL: PNG codecs, hashing, numpy's bigger loops).

    stop(seconds of the tasks done, in order) is asked after each task: True returns the results
    so far, with those of the tasks already started (the caller runs the rest elsewhere).
    """
    tasks = list(tasks)
    results: list[Any] = []
    seconds: list[float] = []
    lanes = max(1, min(lanes, len(tasks)))

    def timed(args: tuple) -> tuple[Any, float]:
        start = time.perf_counter()
        return fn(*args), time.perf_counter() - start

    started: dict[int, Any] = {}  # task index -> its future, until its result is taken (in order)
    stopping = False
    # the lanes start (fork) before the progress bar's thread does
    with _lanes(lanes, lambda i: timed(tasks[i])) as lane, progress_bar(label, len(tasks)) as advance:
        while True:
            busy = [f for f in started.values() if not f.done()]
            while not stopping and len(results) + len(started) < len(tasks) and len(busy) < lanes:
                i = len(results) + len(started)
                started[i] = lane.submit(i)
                busy.append(started[i])
            head = started.get(len(results))
            if head is None:
                break  # every task started has been taken
            if not head.done():
                lane.wait_any(busy)
                continue
            result, took = started.pop(len(results)).result()
            results.append(result)
            seconds.append(took)
            advance()
            if len(results) < len(tasks) and stop is not None and not stopping and stop(seconds):
                stopping = True  # the tasks started finish here; no more start
    return results


class _Inline:
    """n = 1: each task runs at once, here, as the loop would run it."""

    def __init__(self, fn: Callable[[int], Any]):
        self.fn = fn

    def submit(self, i: int) -> Any:
        from concurrent.futures import Future

        f: Future = Future()
        f.set_result(self.fn(i))  # raised at once, as the loop raised it
        return f

    def wait_any(self, futures: Sequence[Any]) -> None:  # every future is done at once
        return None


class _Threads:
    def __init__(self, pool: Any, fn: Callable[[int], Any]):
        self.pool, self.fn = pool, fn

    def submit(self, i: int) -> Any:
        return self.pool.submit(self.fn, i)

    def wait_any(self, futures: Sequence[Any]) -> None:
        from concurrent.futures import FIRST_COMPLETED, wait

        wait(futures, return_when=FIRST_COMPLETED)


@contextlib.contextmanager
def _lanes(n: int, fn: Callable[[int], Any]) -> Iterator[Any]:
    """Lanes for n tasks at a time: `.submit(i)` -> a future of fn(i); `.wait_any(futures)`
    returns once one of them is done. Forked children of this process where that is safe
    (`forked.can_fork`: past the GIL and h5py's lock), else a pool of n threads; n = 1 runs
    each task at once, here."""
    if n <= 1:
        yield _Inline(fn)
        return
    from sirst5k.runner import forked

    if forked.can_fork() is None:
        with forked.forked_lanes(n, fn) as lanes:
            yield lanes
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n, thread_name_prefix="sirst5k-task") as pool:
        try:
            yield _Threads(pool, fn)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


#: Threads a task may use for work that releases the GIL (numpy, PIL codecs), set while `Runner.run`
#: runs tasks here: the cores this process may use, at most `--workers`. A task on a cluster
#: worker sees 1 (the workers already fill the cores).
_HERE_THREADS = 1


def task_threads() -> int:
    """Threads the running task may use for GIL-free work (1 on a cluster worker); see `_HERE_THREADS`."""
    return _HERE_THREADS


def thread_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """[fn(item) for item in items] on `task_threads()` threads (in order; for work that releases
    the GIL: PNG codecs, PIL resizes, numpy). The first exception in item order is raised, after
    every thread has stopped, as the loop would raise it; the results do not depend on the threads."""
    items = list(items)
    threads = min(task_threads(), len(items))
    if threads <= 1:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, items))


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def here_threads(n: int) -> Iterator[None]:
    """`task_threads()` is `n` (at least 1) inside."""
    global _HERE_THREADS
    saved, _HERE_THREADS = _HERE_THREADS, max(1, int(n))
    try:
        yield
    finally:
        _HERE_THREADS = saved


@contextlib.contextmanager
def worker_threads() -> Iterator[None]:
    """Tasks that run here run as in a worker: one BLAS/OpenMP/torch thread (WORKER_ENV).

    Measured on a busy 2-core machine: transfer in one process runs 1.6x slower with torch's
    default two threads than with one. The caller's settings come back afterwards (a torch
    imported by the tasks gets the thread count its environment would have given it).
    """
    saved_env = {k: os.environ.get(k) for k in WORKER_ENV}
    torch = sys.modules.get("torch")
    saved = torch.get_num_threads() if torch is not None else None
    os.environ.update(WORKER_ENV)
    if torch is not None:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        torch = sys.modules.get("torch")
        if torch is not None:
            if saved is None:
                try:
                    saved = int(saved_env["OMP_NUM_THREADS"] or 0)
                except ValueError:
                    saved = 0
            torch.set_num_threads(saved if saved > 0 else max(1, os.cpu_count() or 1))


def cluster_has_gpu(client) -> bool:
    workers = client.scheduler_info().get("workers", {})
    return any(w.get("resources", {}).get("GPU", 0) > 0 for w in workers.values())


def run_tasks(
    client,
    fn: Callable[..., Any],
    tasks: Sequence[tuple],
    label: str,
    *,
    gpu: bool = False,
    show_progress: bool | None = None,
) -> list[Any]:
    """Run fn(*args) for each args in `tasks` on the cluster; results in task order.

    gpu: ask for resource GPU; only when the cluster offers it (a task asking for a resource no
    worker has waits forever).
    """
    from distributed import as_completed

    if not tasks:
        return []
    resources = {"GPU": 1} if gpu and cluster_has_gpu(client) else None
    run_id = uuid.uuid4().hex[:8]
    futures = [
        client.submit(_capture, fn, *args, key=f"{label}-{run_id}-{i:06d}", resources=resources, pure=False)
        for i, args in enumerate(tasks)
    ]
    index = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * len(futures)
    try:
        with progress_bar(label, len(futures), show_progress) as advance:
            for fut in as_completed(futures):
                results[index[fut.key]] = fut.result()
                advance()
    except BaseException:
        client.cancel(futures)
        raise
    failed = [r for r in results if isinstance(r, TaskFailure)]
    if failed:
        # the first in task order, so the same bad input always names the same file
        raise failed[0].error()
    return results


@dataclass(frozen=True)
class TaskFailure:
    """A task's input/output error as plain data: a task that raises has its worker log a
    traceback on the user's terminal; this comes back quietly and run_tasks raises it."""

    output: bool
    path: str | None
    problem: str

    def error(self) -> InputError | OutputError:
        if self.output:
            return OutputError(self.path or "", self.problem)
        return InputError(self.path, self.problem)


def _capture(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except (InputError, OutputError) as err:
        return TaskFailure(isinstance(err, OutputError), err.path, err.problem)


@contextlib.contextmanager
def progress_bar(label: str, total: int, show: bool | None = None) -> Iterator[Callable[[], None]]:
    """A rich progress bar on stderr (silent when stderr is not a terminal, unless asked)."""
    if show is None:
        show = sys.stderr.isatty() or os.environ.get("SIRST5K_PROGRESS") == "1"
    if not show:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda: progress.advance(task)


def map_tasks(fn: Callable[..., Any], tasks: Sequence[tuple], label: str, client: Any = None) -> list[Any]:
    """fn(*args) for each args in `tasks`, results in task order: on `client`'s cluster when
    given (`run_tasks`), else here (`run_here`, min(4, cores) at a time), under a progress bar.

    The one place the commands that may run without a cluster (report, verify) choose where
    their tasks run; here an error is the first failing task in task order, as `run_tasks`
    would raise it.
    """
    if client is not None:
        return run_tasks(client, fn, tasks, label)
    threads = min(local_workers(None), _usable_cores())
    with worker_threads(), here_threads(threads):
        return run_here(fn, tasks, label, threads)
