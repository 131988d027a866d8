"""The transfer and negatives stages on CUDA workers write the bytes CPU workers write.

Runs only where CUDA is visible (a lent GPU machine; CI has none). The unit tests check the
same property on the batch math with the `device` fixture; this one checks the whole stage:
GPU workers take the tasks (the stage says where it computed) and every shard's bytes equal
the CPU run's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sirst5k.stages.cli import app

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

runner = CliRunner()


def sirst5k(*args: object) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"sirst5k {' '.join(map(str, args))} failed:\n{result.output}"
    return result.output


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.h5"))}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu") / "output"
    sirst5k("synth", out, "--images", 40, "--sequences", 2, "--frames", 4, "--size", 160, "--workers", 2)
    sirst5k("ingest", out / "source", "--out", out / "ingest", "--size", 160, "--shard-size", 8, "--workers", 2)
    sirst5k("noise-bank", out / "frames", "--out", out / "noise_bank.h5", "--window", 24, "--workers", 2)
    return out


@pytest.mark.parametrize("mode,field,mix", [("blend", "resize", "0.1,0.3"), ("additive", "mosaic", "1.0")])
def test_cuda_workers_write_the_cpu_bytes(source, tmp_path, mode, field, mix):
    outputs = {}
    for device in ("cpu", "cuda"):
        t, n = tmp_path / f"transfer-{device}", tmp_path / f"negatives-{device}"
        said = sirst5k("transfer", source / "ingest", "--noise-bank", source / "noise_bank.h5", "--out", t,
                       "--mix", mix, "--mode", mode, "--field", field, "--device", device, "--workers", 2)
        assert f"[computed on {device}]" in said
        said = sirst5k("negatives", t, "--out", n, "--patch", "24", "--patch", "9", "--device", device, "--workers", 2)
        assert f"[computed on {device}]" in said
        outputs[device] = (shard_bytes(t), shard_bytes(n), (t / "stage.json").read_bytes(),
                           (n / "stage.json").read_bytes())
    assert len(outputs["cpu"][0]) > 1 and len(outputs["cpu"][1]) > 1
    assert outputs["cuda"] == outputs["cpu"]


def test_auto_takes_the_gpu(source, tmp_path):
    said = sirst5k("negatives", source / "ingest", "--out", tmp_path / "n", "--workers", 2)
    assert "[computed on cuda]" in said
