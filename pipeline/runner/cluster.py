"""Where stage tasks run: a dask.distributed client, a progress bar, and GPU routing.

A stage builds a list of task arguments (one per shard) and calls `run_tasks`; the tasks run on
a LocalCluster (default) or an existing scheduler (`--scheduler`, DASK_SCHEDULER_ADDRESS).
Workers are processes with one thread each: h5py serialises every HDF5 call of a process behind
one lock, so threads would only queue on it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
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
    if device != "cpu":
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise InputError(None, "--device cuda: no CUDA device is visible on this machine "
                                   f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
                                   "use --device auto or cpu, or --scheduler with GPU workers")
        resources = {"GPU": 1} if torch.cuda.is_available() else None
    n = workers or min(4, os.cpu_count() or 1)
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
    given (`run_tasks`), else here, one after another, under a progress bar.

    The one place the commands that may run without a cluster (report, verify) choose where
    their tasks run; here an error stops at the first failing task, which is the first in task
    order, as `run_tasks` would raise it.
    """
    if client is not None:
        return run_tasks(client, fn, tasks, label)
    results = []
    with progress_bar(label, len(tasks)) as advance:
        for args in tasks:
            results.append(fn(*args))
            advance()
    return results
