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

from sirst5k.formats import shards
from sirst5k.runner.cluster import open_client, resolve_device, run_tasks
from sirst5k.method.negatives import label_check_boxes, negative_boxes, transform_boxes
from sirst5k.runner.outputs import input_shards, read_stage_record, staged_folder, task_key, write_stage_record
from sirst5k.method.targets import batch_target_table, mask_points

from sirst5k.stages.common import Device, Scheduler, Seed, Workers, check_device, computed_on, user_errors

STAGE = "negatives"
CLAMPS = ("script", "clip")


def plan_negatives(masks: np.ndarray, patches: list[int], rotations: list[int], mirror: bool, clamp: str) -> np.ndarray:
    """Rows (sample, target j, patch, k, flip, y0, x0, cy, cx) in sample, patch, target, k order."""
    h, w = masks.shape[1:]
    table = batch_target_table(masks)
    n_t, n_k = len(table["image"]), len(rotations)
    if n_t == 0 or not patches or n_k == 0:
        return np.zeros((0, 9), np.int64)
    parts = []
    for p in patches:
        corners = np.asarray(negative_boxes(table["center"], (h, w), p, clamp)).reshape(-1, 2)
        rows = np.empty((n_t, n_k, 9), np.int64)
        rows[..., 0] = table["image"][:, None]
        rows[..., 1] = table["index"][:, None]
        rows[..., 2] = p
        rows[..., 3] = np.asarray(rotations, np.int64)[None, :]
        rows[..., 4] = int(mirror)
        rows[..., 5:7] = corners[:, None, :]
        rows[..., 7:9] = table["center"][:, None, :]
        parts.append(rows.reshape(-1, 9))
    plan = np.concatenate(parts)
    # stable sort on (sample, patch): targets and k keep their order within
    order = np.lexsort((np.repeat(np.arange(len(patches)), n_t * n_k), plan[:, 0]))
    return plan[order]


def _box_where(samples: np.ndarray, rows: np.ndarray, patch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays [n, P, P] of the boxes of plan `rows` (one patch size) in arrays whose
    first axis is indexed by `samples` [n]."""
    idx = np.arange(int(patch))
    return samples[:, None, None], (rows[:, 5, None] + idx)[:, :, None], (rows[:, 6, None] + idx)[:, None, :]


def check_plan(masks: np.ndarray, plan: np.ndarray, device: torch.device) -> dict[str, np.ndarray]:
    """Label checks of every planned negative, from the masks' boxes alone (no full copies)."""
    points = mask_points(masks)
    out = {name: np.zeros(len(plan), np.int64) for name in ("n_targets_before", "n_targets_after", "area_before",
                                                             "area_after")}
    out.update(straddle=np.zeros(len(plan), bool), cut=np.zeros(len(plan), bool))
    for p in np.unique(plan[:, 2]):
        sel = np.flatnonzero(plan[:, 2] == p)
        rows = plan[sel]
        before = masks[_box_where(rows[:, 0], rows, p)]
        after = transform_boxes(torch.from_numpy(before).to(device), torch.from_numpy(rows[:, 3]).to(device),
                                torch.from_numpy(rows[:, 4]).to(device).bool()).cpu().numpy()
        check = label_check_boxes(points, len(masks), rows[:, 0], rows[:, 5], rows[:, 6], before != 0, after != 0)
        for name, values in check.items():
            out[name][sel] = values
    return out


def build_part(images: np.ndarray, masks: np.ndarray, rows: np.ndarray,
               device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Images and masks [n, H, W] uint8 of the negatives `rows` (plan rows), in row order."""
    src = rows[:, 0]
    out_images, out_masks = images[src], masks[src]  # one copy each; the boxes are pasted in place
    for p in np.unique(rows[:, 2]):
        sel = np.flatnonzero(rows[:, 2] == p)
        r = rows[sel]
        where = _box_where(sel, r, p)
        k = torch.from_numpy(r[:, 3]).to(device)
        flip = torch.from_numpy(r[:, 4]).to(device).bool()
        for arr in (out_images, out_masks):
            boxes = torch.from_numpy(np.ascontiguousarray(arr[where])).to(device)
            arr[where] = transform_boxes(boxes, k, flip).cpu().numpy()
    return out_images, out_masks


def negatives_shard(src: str, src_sha: str, dst_dir: str, index: int, params: dict, device: str) -> list[dict]:
    """Make the negatives of one input shard; write them as parts of at most shard_size samples.

    Memory stays within the input shard plus one output part: the label checks (which decide
    what --drop-cut keeps) need only the masks' boxes, so each part is built, written and
    dropped before the next.
    """
    key = task_key(STAGE, params, src_sha)
    prefix = f"{params['split']}-{index:05d}"
    done = sorted(Path(dst_dir).glob(f"{prefix}-*.h5"))
    if done and all(shards.is_complete(p, key) for p in done) and _read_parts(done[0]) == len(done):
        return [{"path": str(p), "sha256": shards.sha256_file(p), "n_samples": shards.n_samples(p)} for p in done]
    for p in done:
        p.unlink()
    images, masks, meta = shards.read_shard(src)
    dev = resolve_device(device)
    plan = plan_negatives(masks, params["patch"], params["rotations"], params["mirror"], params["clamp"])
    check = check_plan(masks, plan, dev)
    if not params["keep_cut"] and len(plan):
        keep = ~check["cut"]
        plan = plan[keep]
        check = {name: values[keep] for name, values in check.items()}
    size = params["shard_size"]
    n_parts = max(1, -(-len(plan) // size))
    results = []
    for part in range(n_parts):
        sl = slice(part * size, (part + 1) * size)
        rows = plan[sl]
        out_images, out_masks = build_part(images, masks, rows, dev)
        m = shards.take_meta(meta, rows[:, 0])
        m["kind"] = np.full(len(rows), "negative", dtype=object)
        m["sample_id"] = np.array([f"{sid}_p{p}_k{k}_j{j}" for sid, j, p, k in
                                   zip(m["sample_id"], rows[:, 1].tolist(), rows[:, 2].tolist(), rows[:, 3].tolist())],
                                  dtype=object)
        m["patch"], m["k"], m["flip"], m["target_index"] = rows[:, 2], rows[:, 3], rows[:, 4], rows[:, 1]
        m["center_y"], m["center_x"] = rows[:, 7], rows[:, 8]
        m["n_targets"] = check["n_targets_after"][sl]
        m["area"] = check["area_after"][sl]
        m["source_n_targets"] = check["n_targets_before"][sl]
        m["source_area"] = check["area_before"][sl]
        m["cut"] = check["cut"][sl].astype(np.int32)
        info = shards.write_shard(
            Path(dst_dir) / f"{prefix}-{part:03d}.h5", out_images, out_masks, m,
            {"dataset": STAGE, "version": key[:16], "split": params["split"], "shard_index": index,
             "n_shards": -1, "part": part, "n_parts": n_parts, "task_key": key},
        )
        del out_images, out_masks
        results.append({"path": info.path, "sha256": info.sha256, "n_samples": info.n_samples, "device": dev.type})
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
               f"{'mirrored' if mirror else 'not mirrored'}) -> {out}" + computed_on(results))
