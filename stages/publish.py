"""`sirst5k publish`: the final dataset: train = originals (+ transfers) + negatives, test = originals.

Reshards the inputs into `--shard-size` shards (one dask task each), writes the manifest
(`manifests/<name>.json`, and `manifest.json` inside the dataset folder), then verifies it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from sirst5k import PRODUCER
from sirst5k.formats import shards
from sirst5k.runner.cluster import open_client, run_tasks
from sirst5k.errors import InputError
from sirst5k.formats.manifest import IN_DATASET_NAME, MANIFEST_SCHEMA_VERSION, content_version, write_json_atomic
from sirst5k.runner.outputs import input_shards, check_can_create, read_stage_record, staged_folder, task_key
from sirst5k.verify import manifest_version, verify_manifest

from sirst5k.stages.common import Scheduler, Workers, fail, user_errors

STAGE = "publish"


def publish_shard(dst: str, pieces: list[tuple[str, int, int]], attrs: dict) -> dict:
    """Copy the listed row ranges of input shards into one final shard."""
    key = task_key(STAGE, attrs, pieces and [(Path(p).name, a, b) for p, a, b in pieces])
    if shards.is_complete(dst, key):
        return {"path": dst, "sha256": shards.sha256_file(dst), "n_samples": shards.n_samples(dst)}
    imgs, msks, metas = [], [], []
    for path, start, stop in pieces:
        i, m, meta = shards.read_shard(path, slice(start, stop))
        imgs.append(i)
        msks.append(m)
        metas.append(meta)
    info = shards.write_shard(dst, np.concatenate(imgs), np.concatenate(msks), shards.concat_meta(metas),
                              {**attrs, "task_key": key})
    return {"path": info.path, "sha256": info.sha256, "n_samples": info.n_samples}


def plan_split(sources: list[tuple[Path, int]], shard_size: int) -> list[list[tuple[str, int, int]]]:
    """Cut the concatenation of the sources into runs of shard_size rows: [[(path, start, stop), ...], ...]."""
    plans: list[list[tuple[str, int, int]]] = []
    current: list[tuple[str, int, int]] = []
    room = shard_size
    for path, n in sources:
        start = 0
        while start < n:
            take = min(room, n - start)
            current.append((str(path), start, start + take))
            start += take
            room -= take
            if room == 0:
                plans.append(current)
                current, room = [], shard_size
    if current:
        plans.append(current)
    return plans


def _kind_counts(paths: list[Path]) -> dict[str, int]:
    counts = {k: 0 for k in shards.KINDS}
    for p in paths:
        kinds, n = np.unique(shards.read_meta(p)["kind"], return_counts=True)
        for k, c in zip(kinds, n):
            counts[str(k)] += int(c)
    return counts


@user_errors
def command(
    ingest: Annotated[Path, typer.Option("--ingest", help="Shard folder from `ingest` (originals, both splits).")],
    negatives: Annotated[Path, typer.Option("--negatives", help="Shard folder from `negatives`.")],
    out: Annotated[Path, typer.Option("--out", help="Dataset folder to write (e.g. output/sirst5k).")],
    manifest: Annotated[Path, typer.Option("--manifest", help="Manifest file to write (e.g. manifests/sirst5k.json).")],
    transfer: Annotated[Optional[Path], typer.Option("--transfer", help="Also publish the noise-transferred images.")] = None,
    name: Annotated[str, typer.Option(help="Dataset name.")] = "sirst5k",
    shard_size: Annotated[int, typer.Option(min=1, help="Samples per final shard.")] = 1024,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Verify the result against its manifest.")] = True,
    workers: Workers = None,
    scheduler: Scheduler = None,
) -> None:
    """Assemble the final shards and the manifest."""
    # before any work: a dataset whose manifest cannot be written would be published undescribed
    check_can_create(manifest)
    train_sources = input_shards(ingest, "train")
    test_sources = input_shards(ingest, "test")
    neg_sources = [(p, sha) for p, sha in input_shards(negatives, "train")]
    tr_sources = input_shards(transfer, "train") if transfer else []
    splits = {"train": train_sources + tr_sources + neg_sources, "test": test_sources}
    records = [read_stage_record(f) or {} for f in (ingest, negatives, *( [transfer] if transfer else []))]
    params: dict = {}
    inputs: dict = {}
    for r in records:
        params.update(r.get("params", {}))
        inputs.update(r.get("inputs", {}))
    params[STAGE] = {"name": name, "shard_size": shard_size, "transfer": transfer is not None}
    inputs["shards_hash"] = content_version(sorted(sha for srcs in splits.values() for _, sha in srcs))
    doc = {"schema_version": MANIFEST_SCHEMA_VERSION, "name": name, "producer": PRODUCER, "params": params,
           "inputs": inputs}
    doc["version"] = manifest_version(doc)
    plans = {split: plan_split([(p, shards.n_samples(p)) for p, _ in srcs], shard_size) for split, srcs in splits.items()}
    # one cluster for the copy and the verification
    with open_client(workers, scheduler, "cpu") as client:
        with staged_folder(out) as tmp:
            names = [shards.shard_name(split, i) for split, pl in plans.items() for i in range(len(pl))]
            shards.remove_stale(tmp, names)
            tasks = [(str(tmp / shards.shard_name(split, i)), pieces,
                      {"dataset": name, "version": doc["version"], "split": split, "shard_index": i, "n_shards": len(pl)})
                     for split, pl in plans.items() for i, pieces in enumerate(pl)]
            results = run_tasks(client, publish_shard, tasks, "publish")
            by_split: dict[str, list[dict]] = {s: [] for s in plans}
            for (dst, _, attrs), r in zip(tasks, results):
                by_split[attrs["split"]].append({"path": Path(dst).name, "sha256": r["sha256"],
                                                 "n_samples": r["n_samples"]})
            doc["splits"] = {
                split: {"n_samples": sum(s["n_samples"] for s in entries),
                        "kinds": _kind_counts([p for p, _ in splits[split]]),
                        "shards": entries}
                for split, entries in by_split.items()
            }
            write_json_atomic(tmp / IN_DATASET_NAME, {**doc, "dataset_dir": "."})
        rel = os.path.relpath(out.resolve(), manifest.resolve().parent)
        write_json_atomic(manifest, {**doc, "dataset_dir": rel})
        counts = ", ".join(f"{s}: {v['n_samples']} ({', '.join(f'{k} {n}' for k, n in v['kinds'].items() if n)})"
                           for s, v in doc["splits"].items())
        typer.echo(f"publish: {name} {doc['version']} -> {out} [{counts}]; manifest {manifest}")
        if verify:
            n_shards = sum(len(v["shards"]) for v in doc["splits"].values())
            problems = verify_manifest(manifest, map_shards=lambda fn, jobs: run_tasks(client, fn, jobs, "verify"))
            if problems:
                for p in problems:
                    typer.echo(f"error: {p}", err=True)
                fail(f"{manifest}: {len(problems)} problem(s) found by verify")
            typer.echo(f"verify: {n_shards} shards OK")
