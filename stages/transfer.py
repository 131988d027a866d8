"""`sirst5k transfer SHARDS --noise-bank FILE --out DIR`: fuse bank noise into labelled images.

Each train sample gets one bank patch, drawn from (seed, "transfer", sample_id), so every mix
value of a sample uses the same noise and the draw does not depend on worker or task order.
Masks are unchanged.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import h5py
import numpy as np
import torch
import typer

from sirst5k.method import rng
from sirst5k.formats import shards
from sirst5k.runner.cluster import open_client, resolve_device, run_tasks
from sirst5k.errors import InputError
from sirst5k.runner.outputs import input_shards, read_stage_record, staged_folder, task_key, write_stage_record
from sirst5k.method.transfer import additive, blend, draw_mosaic_params, mosaic_field, resize_field, to_uint8

from sirst5k.stages.common import Device, Scheduler, Seed, Workers, check_device, computed_on, user_errors

STAGE = "transfer"
MODES = ("blend", "additive")
FIELDS = ("resize", "mosaic")
# Images per device batch. On a CPU, small batches keep each float tensor (2 MiB at 8 x 256 x
# 256) in cache and reuse freed memory instead of faulting in fresh pages: 8 is ~20% faster
# per image than 64 (benchmarks/stage_throughput.py). A GPU wants big batches.
BATCH = {"cpu": 8, "cuda": 64}


@functools.lru_cache(maxsize=2)
def load_bank(path: str, version: str) -> np.ndarray:
    """The bank's patches, once per worker process (version in the key: a rebuilt bank is reloaded)."""
    try:
        with h5py.File(path, "r") as f:
            return f["patches"][()]
    except (OSError, KeyError) as err:
        raise InputError(path, f"cannot read noise bank: {err}") from err


def bank_info(path: Path) -> dict:
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
            rows = int(f["patches"].shape[0])
    except (OSError, KeyError) as err:
        raise InputError(path, f"not a noise bank: {err}") from err
    if rows == 0:
        raise InputError(path, "noise bank is empty")
    return {"path": str(path), "version": str(attrs.get("version", "")), "rows": rows,
            "window": int(attrs.get("window", 0)), "frames_hash": str(attrs.get("frames_hash", ""))}


def transfer_shard(src: str, src_sha: str, dst: str, index: int, n_shards: int, bank: dict, params: dict,
                   device: str) -> dict:
    key = task_key(STAGE, params, src_sha, bank["version"])
    if shards.is_complete(dst, key):
        return {"path": dst, "sha256": shards.sha256_file(dst), "n_samples": shards.n_samples(dst)}
    images, masks, meta = shards.read_shard(src)
    patches = load_bank(bank["path"], bank["version"])
    dev = resolve_device(device)
    mixes = params["mix"]
    n, h, w = images.shape
    # Draw every sample's noise first (the replayable parameters), then run the batch math.
    draws = []
    for sid in meta["sample_id"]:
        g = rng.generator(params["seed"], STAGE, str(sid))
        if params["field"] == "resize":
            draws.append(np.array([g.integers(len(patches))]))
        else:
            draws.append(np.asarray(draw_mosaic_params(g, len(patches), (h, w), patches.shape[-1])).reshape(-1))
    out_images = np.empty((n * len(mixes), h, w), np.uint8)
    batch = BATCH.get(dev.type, BATCH["cpu"])
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        img = torch.from_numpy(images[start:stop]).to(dev, torch.float32)
        if params["field"] == "resize":
            idx = np.concatenate(draws[start:stop])
            noise = torch.from_numpy(patches[idx]).to(dev, torch.float32)
            field = resize_field(noise, (h, w))
        else:
            idx = np.stack(draws[start:stop])
            noise = torch.from_numpy(patches[idx]).to(dev, torch.float32)
            field = mosaic_field(noise, (h, w))
        for j, m in enumerate(mixes):
            mix = torch.full((stop - start,), float(m), device=dev)
            fused = blend(img, field, mix) if params["mode"] == "blend" else additive(img, field, mix)
            # sample-major order: sample i's mixes sit together
            out_images[np.arange(start, stop) * len(mixes) + j] = to_uint8(fused).cpu().numpy()
    rep = np.repeat(np.arange(n), len(mixes))
    out_meta = shards.take_meta(meta, rep)
    out_masks = masks[rep]
    mix_col = np.tile(np.asarray(mixes, dtype=np.float64), n)
    out_meta["mix"] = mix_col
    out_meta["kind"] = np.full(len(rep), "transfer", dtype=object)
    out_meta["sample_id"] = np.array([f"{meta['sample_id'][i]}_m{m:g}" for i, m in zip(rep, mix_col)], dtype=object)
    out_meta["noise_id"] = np.array([int(draws[i][0]) for i in rep], dtype=np.int64)
    info = shards.write_shard(dst, out_images, out_masks, out_meta,
                              {"dataset": STAGE, "version": key[:16], "split": "train", "shard_index": index,
                               "n_shards": n_shards, "task_key": key})
    return {"path": info.path, "sha256": info.sha256, "n_samples": info.n_samples, "device": dev.type}


def parse_floats(values: list[str]) -> list[float]:
    out = []
    for v in values:
        for part in str(v).split(","):
            if part.strip():
                out.append(float(part))
    return out


@user_errors
def command(
    shards_dir: Annotated[Path, typer.Argument(metavar="SHARDS", help="Shard folder (e.g. output/ingest).")],
    noise_bank: Annotated[Path, typer.Option("--noise-bank", help="Noise bank file from `noise-bank`.")],
    out: Annotated[Path, typer.Option("--out", help="Output shard folder.")],
    mix: Annotated[list[str], typer.Option("--mix", help="Noise weight m (repeat, or comma-separated).")] = ["0.1"],
    mode: Annotated[str, typer.Option(help="blend: m*noise+(1-m)*image (paper); additive: add the zero-mean residual.")] = "blend",
    field: Annotated[str, typer.Option(help="resize: one patch resized to the image (paper); mosaic: native-scale tiles.")] = "resize",
    split: Annotated[str, typer.Option(help="Which split to transfer.")] = "train",
    seed: Seed = 0,
    workers: Workers = None,
    scheduler: Scheduler = None,
    device: Device = "auto",
) -> None:
    """Fuse noise-bank patches into every image of a shard folder's train split."""
    check_device(device)
    mixes = parse_floats(mix)
    if not mixes or any(not 0.0 <= m <= 1.0 for m in mixes):
        raise typer.BadParameter(f"--mix {mix}: values in [0, 1]")
    if mode not in MODES:
        raise typer.BadParameter(f"--mode {mode}: use {' or '.join(MODES)}")
    if field not in FIELDS:
        raise typer.BadParameter(f"--field {field}: use {' or '.join(FIELDS)}")
    bank = bank_info(noise_bank)
    inputs = input_shards(shards_dir, split)
    params = {"mix": mixes, "mode": mode, "field": field, "split": split, "seed": seed}
    with staged_folder(out) as tmp:
        names = [shards.shard_name("train", i) for i in range(len(inputs))]
        shards.remove_stale(tmp, names)
        tasks = [(str(p), sha, str(tmp / name), i, len(inputs), bank, params, device)
                 for i, ((p, sha), name) in enumerate(zip(inputs, names))]
        with open_client(workers, scheduler, device) as client:
            results = run_tasks(client, transfer_shard, tasks, "transfer", gpu=device != "cpu")
        records = [{"path": Path(r["path"]).name, "sha256": r["sha256"], "n_samples": r["n_samples"], "split": "train"}
                   for r in results]
        upstream = read_stage_record(shards_dir) or {}
        write_stage_record(tmp, STAGE, {**upstream.get("params", {}), STAGE: params},
                           {**upstream.get("inputs", {}), "frames": {"path": bank["path"], "noise_bank_version": bank["version"],
                                                                    "content_hash": bank["frames_hash"]}}, records)
    total = sum(r["n_samples"] for r in results)
    typer.echo(f"transfer: {total} samples ({mode}, {field}, m={','.join(f'{m:g}' for m in mixes)}) -> {out}"
               + computed_on(results))
