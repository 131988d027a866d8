"""Shared fixtures: the compute device (CPU, and CUDA where present) and the real data."""

from __future__ import annotations

import os
from pathlib import Path

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
