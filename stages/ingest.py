"""`sirst5k ingest SOURCE --out DIR`: a labelled dataset on disk -> shards at one image size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from sirst5k.formats import shards
from sirst5k.runner.cluster import open_client, run_tasks
from sirst5k.errors import InputError
from sirst5k.formats.layouts import SampleRef, list_labelled, load_sample
from sirst5k.formats.manifest import write_json_atomic
from sirst5k.runner.outputs import hash_files, scratch_path, staged_folder, task_key, write_stage_record
from sirst5k.method.targets import batch_target_table

from sirst5k.stages.common import Scheduler, Seed, Workers, user_errors, warn

STAGE = "ingest"
LAYOUTS = ("auto", "dnanet", "basicirstd", "sirst", "sirst-v2", "folder")


def ingest_shard(
    path: str, refs: list[SampleRef], split: str, index: int, n_shards: int, size: int, skip_bad: bool, key_parts: list
) -> dict:
    """Read, check and resize one shard's samples; write the shard. Returns its record and warnings."""
    files = [p for r in refs for p in (r.image, r.mask) if p is not None]
    key = task_key(key_parts, hash_files(files) if not skip_bad else _hash_existing(files))
    if shards.is_complete(path, key):
        meta = shards.read_meta(path)
        said = _read_warnings(path, key)
        return {"path": path, "sha256": shards.sha256_file(path), "n_samples": len(meta["sample_id"]),
                "split": split, "warnings": said["warnings"], "skipped": said["skipped"],
                "no_target": int((meta["n_targets"] == 0).sum())}
    warnings: list[str] = []
    images, masks, rows = [], [], []
    skipped = 0
    for ref in refs:
        try:
            loaded = load_sample(ref, size)
        except InputError as err:
            if not skip_bad:
                raise
            warnings.append(f"{err}; left out")
            skipped += 1
            continue
        warnings.extend(loaded.warnings)
        images.append(loaded.image)
        masks.append(loaded.mask)
        rows.append((ref.id, loaded.orig_h, loaded.orig_w))
    n = len(rows)
    shape = (0, size, size)
    mask_stack = np.stack(masks) if n else np.zeros(shape, np.uint8)
    counts = batch_target_table(mask_stack)["count"]
    areas = np.count_nonzero(mask_stack, axis=(1, 2))
    meta = shards.new_meta(n)
    for i, (sid, oh, ow) in enumerate(rows):
        n_t, area = int(counts[i]), int(areas[i])
        meta["sample_id"][i] = sid
        meta["source_id"][i] = sid
        meta["kind"][i] = "original"
        meta["n_targets"][i] = n_t
        meta["source_n_targets"][i] = n_t
        meta["area"][i] = area
        meta["source_area"][i] = area
        meta["orig_h"][i] = oh
        meta["orig_w"][i] = ow
    # before the shard: a shard on disk always has its warnings beside it
    _write_warnings(path, key, warnings, skipped)
    info = shards.write_shard(
        path,
        np.stack(images) if n else np.zeros(shape, np.uint8),
        mask_stack,
        meta,
        {"dataset": STAGE, "version": key[:16], "split": split, "shard_index": index, "n_shards": n_shards,
         "task_key": key},
    )
    return {"path": info.path, "sha256": info.sha256, "n_samples": info.n_samples, "split": split,
            "warnings": warnings, "skipped": skipped, "no_target": int((meta["n_targets"] == 0).sum())}


# A shard's warnings wait beside it (its scratch note) while the stage runs, so a rerun after a
# crash that reuses the shard still reports them; the note is gone once the stage completes.
def _write_warnings(path: str, key: str, warnings: list[str], skipped: int) -> None:
    if warnings or skipped:
        write_json_atomic(scratch_path(path), {"task_key": key, "warnings": warnings, "skipped": skipped})


def _read_warnings(path: str, key: str) -> dict:
    try:
        said = json.loads(scratch_path(path).read_text(encoding="utf-8"))
        if said.get("task_key") == key:
            return {"warnings": list(said["warnings"]), "skipped": int(said["skipped"])}
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none written (a shard without warnings), or unreadable: nothing to repeat
    return {"warnings": [], "skipped": 0}


def _hash_existing(files: list[Path]) -> str:
    # With --skip-bad a missing file is a warning, not a reason to fail the hash.
    return hash_files([p for p in files if Path(p).is_file()])


@user_errors
def command(
    source: Annotated[Path, typer.Argument(help="Labelled dataset folder.")],
    out: Annotated[Path, typer.Option("--out", help="Output shard folder.")],
    layout: Annotated[str, typer.Option(help=f"One of {', '.join(LAYOUTS)}.")] = "auto",
    size: Annotated[int, typer.Option(min=16, help="Side of the square shard images (bilinear; masks nearest).")] = 256,
    shard_size: Annotated[int, typer.Option(min=1, help="Samples per shard (one dask task each).")] = 256,
    split_ratio: Annotated[float, typer.Option(min=0.0, max=1.0, help="Train fraction for the folder layout.")] = 0.5,
    skip_bad: Annotated[bool, typer.Option("--skip-bad/--no-skip-bad", help="Warn about bad files and leave them out.")] = False,
    seed: Seed = 0,
    workers: Workers = None,
    scheduler: Scheduler = None,
) -> None:
    """Read a labelled dataset (DNANet, BasicIRSTD, SIRST, SIRST-V2 or plain folder) into shards."""
    if layout not in LAYOUTS:
        raise typer.BadParameter(f"--layout {layout}: use one of {', '.join(LAYOUTS)}")
    labelled = list_labelled(source, layout, split_ratio=split_ratio, seed=seed, skip_bad=skip_bad)
    for problem in labelled.problems:
        warn(f"{problem}; left out")
    params = {"layout": labelled.layout, "size": size, "shard_size": shard_size, "split_ratio": split_ratio,
              "skip_bad": skip_bad, "seed": seed}
    with staged_folder(out) as tmp:
        tasks = []
        plan = []
        for split in ("train", "test"):
            refs = [r for r in labelled.samples if r.split == split]
            groups = [refs[i : i + shard_size] for i in range(0, len(refs), shard_size)]
            for i, group in enumerate(groups):
                name = shards.shard_name(split, i)
                plan.append(name)
                tasks.append((str(tmp / name), group, split, i, len(groups), size, skip_bad,
                              [STAGE, params, [r.id for r in group]]))
        shards.remove_stale(tmp, plan)
        with open_client(workers, scheduler, "cpu") as client:
            results = run_tasks(client, ingest_shard, tasks, "ingest")
        for r in results:
            for w in r["warnings"]:
                warn(w)
        skipped = sum(r["skipped"] for r in results) + len(labelled.problems)
        n_warnings = sum(len(r["warnings"]) for r in results) - sum(r["skipped"] for r in results)
        if not sum(r["n_samples"] for r in results):
            raise InputError(source, f"no usable samples: all {skipped} listed file(s) were bad")
        records = [{k: (Path(r["path"]).name if k == "path" else r[k]) for k in ("path", "sha256", "n_samples", "split")}
                   for r in results]
        inputs = {"source": {"path": str(source), "layout": labelled.layout, "n_images": sum(r["n_samples"] for r in results),
                             "content_hash": task_key([r["sha256"] for r in records])}}
        write_stage_record(tmp, STAGE, {STAGE: params}, inputs, records)
    counts = {s: sum(r["n_samples"] for r in results if r["split"] == s) for s in ("train", "test")}
    no_target = sum(r["no_target"] for r in results)
    typer.echo(f"ingest: {labelled.layout} layout, {counts['train']} train / {counts['test']} test samples "
               f"at {size}x{size} in {out}" + (f", {no_target} with no target" if no_target else "")
               + (f"; {skipped} bad file(s) skipped" if skip_bad else "")
               + (f"; {n_warnings} warning(s)" if n_warnings else ""))
