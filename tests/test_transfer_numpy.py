"""The CPU paths of transfer and negatives run in numpy, without torch, and write the same bits.

`transfer_images` and `build_negatives` / `check_negatives` on the CPU compute in numpy (torch's
import alone is 1.3-2.5 CPU-s a process); the public field and fusion functions take numpy arrays
or torch tensors. Each numpy result is compared bit for bit with the same function run on torch
tensors (the torch loop a CUDA device runs, `transfer._transfer_torch`, here on torch's CPU), and
the stage commands are run in a fresh
process to check that torch is never imported there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from sirst5k.method import negatives as N
from sirst5k.method import transfer as T
from sirst5k.method.reductions import pairwise_mean, pairwise_sum


@pytest.mark.parametrize("field", ["resize", "mosaic", "mosaic-source"])
@pytest.mark.parametrize("mode", ["blend", "additive"])
@pytest.mark.parametrize("shape", [(256, 256), (97, 130)])
def test_numpy_transfer_equals_torch_bit_for_bit(field, mode, shape):
    rng = np.random.default_rng(len(field) + len(mode) + shape[1])
    n, window = 11, 16 if shape[0] < 200 else 32
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    patches = rng.integers(0, 256, (40, window, window), dtype=np.uint8)
    ids = [f"id{i}" for i in range(n)]
    source = rng.integers(40, 500, (n, 2)) if field == "mosaic-source" else None
    draws = T.draw_transfer_params(3, ids, len(patches), shape, window, field.split("-")[0], source_sizes=source)
    mixes = [0.1, 0.37, 1.0]
    ours = T.transfer_images(images, patches, draws, mixes, mode, "cpu")
    assert "numpy" in type(ours).__module__
    # the torch loop a CUDA device runs, here on torch's CPU (transfer_images sends any CPU to numpy)
    assert np.array_equal(ours, T._transfer_torch(images, patches, draws, mixes, mode, None, "flat", "cpu"))
    assert np.array_equal(ours, T.transfer_images(images, patches, draws, mixes, mode, torch.device("cpu")))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_fields_and_fusions_equal_torch(dtype):
    rng = np.random.default_rng(5)
    noise = (rng.random((3, 17, 23)) * 255).astype(dtype)
    a = T.resize_field(noise, (50, 61))
    assert isinstance(a, np.ndarray) and a.dtype == dtype
    assert np.array_equal(a, T.resize_field(torch.from_numpy(noise), (50, 61)).numpy())
    tiles = (rng.random((2, 16, 8, 8)) * 255).astype(dtype)
    assert np.array_equal(T.mosaic_field(tiles, (30, 31)), T.mosaic_field(torch.from_numpy(tiles), (30, 31)).numpy())
    img = (rng.random((3, 50, 61)) * 255).astype(dtype)
    for fuse in (T.blend, T.additive):
        for mix in (0.3, [0.1, 0.5, 0.9]):
            x = fuse(img, a, mix)
            assert np.array_equal(x, fuse(torch.from_numpy(img), torch.from_numpy(a), mix).numpy())
            assert np.array_equal(T.to_uint8(x), T.to_uint8(torch.from_numpy(x)).numpy())
    with pytest.raises(ValueError, match="one value per sample"):
        T.blend(img, a, [0.1, 0.2])
    with pytest.raises(ValueError, match="numpy arrays or both torch tensors"):
        T.blend(img, torch.from_numpy(a), 0.1)


def test_numpy_pairwise_sums_equal_torch():
    rng = np.random.default_rng(2)
    x = (rng.random((4, 7, 33, 5)) * 1e3).astype(np.float32)
    for dims in [(1,), (2, 3), (0, 2), (3,), (0, 1, 2, 3)]:
        ours = pairwise_sum(x, dims)
        assert isinstance(ours, np.ndarray)
        assert np.array_equal(ours, pairwise_sum(torch.from_numpy(x), dims).numpy())
        kept = pairwise_mean(x, dims, keepdim=True)
        assert np.array_equal(kept, pairwise_mean(torch.from_numpy(x), dims, keepdim=True).numpy())
    assert pairwise_sum(np.zeros((3, 0), np.float32), (1,)).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="floating"):
        pairwise_sum(np.zeros((3, 4), np.int64), (1,))


def test_numpy_negatives_equal_torch():
    rng = np.random.default_rng(9)
    boxes = rng.integers(0, 256, (64, 9, 9)).astype(np.uint8)
    k, flip = rng.integers(-3, 8, 64), rng.integers(0, 2, 64).astype(bool)
    assert np.array_equal(N.transform_boxes(boxes, k, flip), N.transform_boxes(torch.from_numpy(boxes), k, flip).numpy())
    images = rng.integers(0, 256, (6, 70, 90), dtype=np.uint8)
    masks = np.zeros_like(images)
    for s in range(6):
        for _ in range(3):
            y, x = rng.integers(0, 60), rng.integers(0, 80)
            masks[s, y:y + rng.integers(1, 9), x:x + rng.integers(1, 9)] = 255
    plan = N.plan_negatives(masks, [5, 32], mirror=True)
    built = N.build_negatives(images, masks, plan)
    # the torch path: one box per sample of the plan's copies, as apply_negatives does it
    for patch, sel in plan.by_patch():
        src = plan.source[sel]
        ti, tm = N.apply_negatives(torch.from_numpy(images[src]), torch.from_numpy(masks[src]), plan.y0[sel],
                                   plan.x0[sel], patch, plan.k[sel], plan.flip[sel])
        assert np.array_equal(built[0][sel], ti.numpy()) and np.array_equal(built[1][sel], tm.numpy())
    # the loop a CUDA device runs (build_negatives sends any CPU to numpy), here on torch's CPU
    shipped = images[plan.source], masks[plan.source]
    N._negate_plan_torch(*shipped, plan, "cpu")
    assert np.array_equal(built[0], shipped[0]) and np.array_equal(built[1], shipped[1])
    check = N.check_negatives(masks, plan, "cpu")
    want = N.label_check(masks, built[1], plan.y0, plan.x0, 32, source=plan.source) if set(plan.patch) == {32} else None
    assert want is None or all(np.array_equal(check[k], want[k]) for k in want)
    assert check["area_after"].tolist() == check["area_before"].tolist()


def _run_commands(commands: list[list], env: dict) -> dict:
    """Run sirst5k commands in one fresh process; returns {"torch": imported at the end?}."""
    script = textwrap.dedent(f"""
        import json, sys
        from typer.testing import CliRunner
        from sirst5k.stages.cli import app
        for args in {[[str(a) for a in c] for c in commands]!r}:
            res = CliRunner().invoke(app, args)
            assert res.exit_code == 0, res.output
        print(json.dumps({{"torch": "torch" in sys.modules}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_transfer_and_negatives_commands_never_import_torch_on_the_cpu(tmp_path):
    """Through the command line, in a fresh process: `--device auto` (no GPU visible) and `cpu`."""
    out = tmp_path / "o"
    env = {**os.environ, "SIRST5K_CLUSTER": "never", "CUDA_VISIBLE_DEVICES": ""}
    _run_commands([
        ["synth", out, "--images", 12, "--sequences", 2, "--frames", 4, "--size", 64, "--workers", 1],
        ["ingest", out / "source", "--out", out / "ingest", "--size", 64, "--shard-size", 4, "--workers", 1],
        ["noise-bank", out / "frames", "--out", out / "bank.h5", "--window", 16, "--workers", 1],
    ], env)
    assert _run_commands([
        ["transfer", out / "ingest", "--noise-bank", out / "bank.h5", "--out", out / "transfer", "--mix", "0.1",
         "--mix", "0.3", "--device", "auto", "--workers", 2],
        ["negatives", out / "transfer", "--out", out / "negatives", "--patch", 16, "--device", "cpu", "--workers", 2],
    ], env) == {"torch": False}
    assert len(list((out / "negatives").glob("*.h5"))) >= 1
