"""`sirst5k negatives SHARDS --out DIR`: mirrored and rotated target patches, image and mask alike.

For every sample, every target (connected components of its mask), every patch size and every
k in --rotations: the patch around the target's centre is mirrored (unless --no-mirror), rotated
by k x 90 degrees and pasted back. The paper enumerates all of these, so nothing is random.
One task per input shard; its negatives go to output shards of at most --shard-size samples
(`train-<input>-<part>.h5`), so a worker's memory does not grow with the number of targets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from pipeline import shards
from pipeline.cluster import open_client, resolve_device, run_tasks
from pipeline.negatives import apply_negatives, label_check, negative_boxes
from pipeline.outputs import read_stage_record, staged_folder, task_key, write_stage_record
from pipeline.targets import target_centers

from .common import Device, Scheduler, Seed, Workers, check_device, user_errors
from .transfer import input_shards

STAGE = "negatives"
CLAMPS = ("script", "clip")
BATCH = 256


def plan_negatives(masks: np.ndarray, patches: list[int], rotations: list[int], mirror: bool, clamp: str) -> np.ndarray:
    """Rows (sample, target j, patch, k, flip, y0, x0, cy, cx) in sample, patch, target, k order."""
    rows = []
    h, w = masks.shape[1:]
    for i, mask in enumerate(masks):
        centers = np.asarray(target_centers(mask)).reshape(-1, 2)
        for p in patches:
            boxes = np.asarray(negative_boxes(centers, (h, w), p, clamp)).reshape(-1, 2)
            for j, ((cy, cx), (y0, x0)) in enumerate(zip(centers, boxes)):
                for k in rotations:
                    rows.append((i, j, p, k, int(mirror), y0, x0, cy, cx))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 9)


def negatives_shard(src: str, src_sha: str, dst_dir: str, index: int, params: dict, device: str) -> list[dict]:
    key = task_key(STAGE, params, src_sha)
    prefix = f"{params['split']}-{index:05d}"
    done = sorted(Path(dst_dir).glob(f"{prefix}-*.h5"))
    if done and all(shards.is_complete(p, key) for p in done) and _read_parts(done[0]) == len(done):
        return [{"path": str(p), "sha256": shards.sha256_file(p), "n_samples": shards.n_samples(p)} for p in done]
    for p in done:
        p.unlink()
    images, masks, meta = shards.read_shard(src)
    plan = plan_negatives(masks, params["patch"], params["rotations"], params["mirror"], params["clamp"])
    dev = resolve_device(device)
    out_imgs, out_masks, out_meta = [], [], []
    for start in range(0, len(plan), BATCH):
        rows = plan[start : start + BATCH]
        for p in np.unique(rows[:, 2]):
            sel = rows[rows[:, 2] == p]
            src_idx = sel[:, 0]
            img_t = torch.from_numpy(images[src_idx]).to(dev)
            msk_t = torch.from_numpy(masks[src_idx]).to(dev)
            t = lambda c: torch.from_numpy(sel[:, c]).to(dev)  # noqa: E731
            new_img, new_msk = apply_negatives(img_t, msk_t, t(5), t(6), int(p), t(3), t(4).bool())
            new_img, new_msk = new_img.cpu().numpy(), new_msk.cpu().numpy()
            check = label_check(masks[src_idx], new_msk, sel[:, 5], sel[:, 6], int(p))
            keep = np.ones(len(sel), bool) if params["keep_cut"] else ~np.asarray(check["cut"], bool)
            m = shards.take_meta(meta, src_idx)
            m["kind"] = np.full(len(sel), "negative", dtype=object)
            m["sample_id"] = np.array([f"{sid}_p{r[2]}_k{r[3]}_j{r[1]}" for sid, r in zip(m["sample_id"], sel)], dtype=object)
            m["patch"], m["k"], m["flip"], m["target_index"] = sel[:, 2], sel[:, 3], sel[:, 4], sel[:, 1]
            m["center_y"], m["center_x"] = sel[:, 7], sel[:, 8]
            m["n_targets"] = np.asarray(check["n_targets_after"])
            m["area"] = np.asarray(check["area_after"])
            m["source_n_targets"] = np.asarray(check["n_targets_before"])
            m["source_area"] = np.asarray(check["area_before"])
            m["cut"] = np.asarray(check["cut"]).astype(np.int32)
            out_imgs.append(new_img[keep])
            out_masks.append(new_msk[keep])
            out_meta.append(shards.take_meta(m, keep))
    all_imgs = np.concatenate(out_imgs) if out_imgs else np.zeros((0,) + images.shape[1:], np.uint8)
    all_masks = np.concatenate(out_masks) if out_masks else np.zeros((0,) + images.shape[1:], np.uint8)
    all_meta = shards.concat_meta(out_meta)
    size = params["shard_size"]
    n_parts = max(1, -(-len(all_imgs) // size))
    results = []
    for part in range(n_parts):
        sl = slice(part * size, (part + 1) * size)
        info = shards.write_shard(
            Path(dst_dir) / f"{prefix}-{part:03d}.h5", all_imgs[sl], all_masks[sl], shards.take_meta(all_meta, sl),
            {"dataset": STAGE, "version": key[:16], "split": params["split"], "shard_index": index,
             "n_shards": -1, "part": part, "n_parts": n_parts, "task_key": key},
        )
        results.append({"path": info.path, "sha256": info.sha256, "n_samples": info.n_samples})
    return results


def _read_parts(path: Path) -> int:
    return int(shards.read_attrs(path).get("n_parts", -1))


def parse_ints(values: list[str]) -> list[int]:
    return [int(p) for v in values for p in str(v).split(",") if p.strip()]


@user_errors
def command(
    shards_dir: Annotated[Path, typer.Argument(metavar="SHARDS", help="Shard folder (transfer, or ingest).")],
    out: Annotated[Path, typer.Option("--out", help="Output shard folder.")],
    patch: Annotated[list[str], typer.Option("--patch", help="Box side N (an N-pixel box); repeat for several.")] = ["32"],
    mirror: Annotated[bool, typer.Option("--mirror/--no-mirror", help="Mirror the box left-right before rotating.")] = True,
    rotations: Annotated[str, typer.Option(help="k values, rotation by k x 90 degrees counter-clockwise.")] = "0,1,2,3",
    clamp: Annotated[str, typer.Option(help="Box placement near borders: script (the original rule) or clip.")] = "script",
    keep_cut: Annotated[bool, typer.Option("--keep-cut/--drop-cut", help="Keep negatives whose box cuts a target.")] = True,
    split: Annotated[str, typer.Option(help="Which split to make negatives from.")] = "train",
    shard_size: Annotated[int, typer.Option(min=1, help="Most samples per output shard.")] = 1024,
    seed: Seed = 0,
    workers: Workers = None,
    scheduler: Scheduler = None,
    device: Device = "auto",
) -> None:
    """Make one negative per target per rotation (and per patch size) from a shard folder."""
    check_device(device)
    patches = parse_ints(patch)
    ks = parse_ints([rotations])
    if not patches or any(p < 2 for p in patches):
        raise typer.BadParameter(f"--patch {patch}: sizes of at least 2 pixels")
    if not ks or any(k not in (0, 1, 2, 3) for k in ks):
        raise typer.BadParameter(f"--rotations {rotations}: values from 0,1,2,3")
    if clamp not in CLAMPS:
        raise typer.BadParameter(f"--clamp {clamp}: use {' or '.join(CLAMPS)}")
    inputs = input_shards(shards_dir, split)
    params = {"patch": patches, "mirror": mirror, "rotations": ks, "clamp": clamp, "keep_cut": keep_cut,
              "split": split, "shard_size": shard_size}
    with staged_folder(out) as tmp:
        prefixes = {f"{split}-{i:05d}" for i in range(len(inputs))}
        for p in tmp.glob("*.h5"):
            if p.name[: len(split) + 6] not in prefixes:
                p.unlink()
        shards.remove_stale(tmp, [p.name for p in tmp.glob("*.h5")])
        tasks = [(str(p), sha, str(tmp), i, params, device) for i, (p, sha) in enumerate(inputs)]
        with open_client(workers, scheduler, device) as client:
            results = [r for rs in run_tasks(client, negatives_shard, tasks, "negatives", gpu=device != "cpu") for r in rs]
        records = [{"path": Path(r["path"]).name, "sha256": r["sha256"], "n_samples": r["n_samples"], "split": split}
                   for r in results]
        upstream = read_stage_record(shards_dir) or {}
        write_stage_record(tmp, STAGE, {**upstream.get("params", {}), STAGE: params}, upstream.get("inputs", {}), records)
    total = sum(r["n_samples"] for r in results)
    typer.echo(f"negatives: {total} samples (patch {','.join(map(str, patches))}, k {','.join(map(str, ks))}, "
               f"{'mirrored' if mirror else 'not mirrored'}) -> {out}")
