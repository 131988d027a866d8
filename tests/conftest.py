"""Shared fixtures: the compute device (CPU, and CUDA where present), the real data, a dask scheduler."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

import pytest
import torch

_CUDA = torch.cuda.is_available()


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not _CUDA, reason="no CUDA device"))])
def device(request) -> torch.device:
    """Run a test once per available device, as kornia's suite does."""
    return torch.device(request.param)


def _data_root() -> Path | None:
    env = os.environ.get("SIRST5K_DATA")
    if env:
        return Path(env)
    guess = Path(__file__).resolve().parents[2] / "shared" / "data"
    return guess if guess.is_dir() else None


def require_data(*parts: str) -> Path:
    """Path to real data under SIRST5K_DATA; skip when absent, fail under CI=true."""
    root = _data_root()
    path = root.joinpath(*parts) if root else None
    if path is None or not path.exists():
        reason = f"real data {'/'.join(parts) or '.'} not found: set SIRST5K_DATA to ../shared/data"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture
def data_root() -> Path:
    return require_data()


@pytest.fixture
def reference_dir() -> Path:
    return require_data("sirst5k-reference")


@pytest.fixture
def sirst_dir() -> Path:
    return require_data("sirst")


@pytest.fixture
def sirst_v2_frames() -> Path:
    return require_data("sirst-v2-frames")


@contextlib.contextmanager
def local_scheduler(n_workers: int = 1, **kwargs) -> Iterator[str]:
    """The address of a LocalCluster of `n_workers` single-thread worker processes, for `--scheduler`.
    Dashboard ":0": the scheduler's HTTP server takes a free port instead of warning that 8787 is taken."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": ":0"}, silence_logs=logging.ERROR, **kwargs) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """One worker process, started once per test module (a module may define its own)."""
    with local_scheduler() as address:
        yield address
