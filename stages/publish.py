"""`sirst5k publish`: the final dataset: train = originals (+ transfers) + negatives, test = originals.

Reshards the inputs into `--shard-size` shards (one task each, here or on a cluster:
`Runner.run`; the rows' stored chunks are copied, not decoded again) in a staging folder, writes
`manifest.json` there and verifies the staged dataset; only a dataset that passed is swapped in,
with its manifest (`manifests/<name>.json`). On any failure the previous dataset folder and
manifest stay as they were, byte for byte.

Inputs of several image sizes (`ingest --size native`) are merged per size, never mixed in one
output shard: each split's input shards are grouped by image size, sizes in (height, width)
order, inputs in their order within a size, and each size cut into `--shard-size` shards
(`<split>-<index>.h5`, index over the whole split). Such a dataset is schema 2: each shard's
`schema_version` attribute 2, the manifest's 2, each shard entry with its `shape` [H, W], each
split with its `sizes` {"HxW": n}. One size is schema 1, written exactly as before.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from sirst5k import PRODUCER
from sirst5k.errors import InputError, OutputError
from sirst5k.params import PublishParams

from .common import Overwrite, Scheduler, Workers, user_errors

# numpy, h5py (shards, verify), dask and the manifest writer are imported where used: `--help` stays light
P = PublishParams
STAGE = P.STEP
IN_DATASET_NAME = "manifest.json"  # sirst5k.formats.manifest.IN_DATASET_NAME


def publish_shard(dst: str, pieces: list[tuple[str, int, int]], attrs: dict):
    """Copy the listed row ranges of input shards into one final shard."""
    from sirst5k.formats import shards
    from sirst5k.runner.outputs import task_key
    from sirst5k.runner.tasks import TaskResult, reuse_shard

    key = task_key(STAGE, attrs, pieces and [(Path(p).name, a, b) for p, a, b in pieces])
    done = reuse_shard(dst, key)
    if done is not None:
        return done
    # the rows' stored chunks are copied as they are, not decoded and encoded again (same bytes)
    meta = shards.concat_meta(shards.take_meta(shards.read_meta(path), slice(start, stop))
                              for path, start, stop in pieces)
    info = shards.copy_rows(dst, pieces, meta, {**attrs, "task_key": key})
    return TaskResult((info,), "cpu")


def plan_sizes(sources: list[tuple[Path, int, tuple[int, int]]], shard_size: int
               ) -> list[tuple[tuple[int, int], list[tuple[str, int, int]]]]:
    """`plan_split` per image size: [(shape, pieces), ...], sizes in (h, w) order, the sources of
    one size in their order; no output shard mixes sizes. One size: `plan_split` itself."""
    by_shape: dict[tuple[int, int], list[tuple[Path, int]]] = {}
    for path, n, shape in sources:
        by_shape.setdefault(tuple(shape), []).append((path, n))
    from sirst5k.runner.tasks import part_size

    # large images: at most PART_PIXELS of image pixels a shard, so publish's memory stays that of
    # the default at any size (256 x 256 and smaller: --shard-size alone, as before)
    return [(shape, pieces) for shape in sorted(by_shape)
            for pieces in plan_split(by_shape[shape], part_size(shard_size, shape))]


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
    import numpy as np

    from sirst5k.formats import shards

    counts = {k: 0 for k in shards.KINDS}
    for p in paths:
        kinds, n = np.unique(_read_kinds(p), return_counts=True)
        for k, c in zip(kinds, n):
            counts[str(k)] += int(c)
    return counts


def _read_kinds(path: Path):
    """A shard's /meta/kind alone (`read_meta` reads every field: a cost per shard that counts when
    a native-size dataset has hundreds of small shards)."""
    import h5py

    from sirst5k.formats import shards

    try:
        with h5py.File(path, "r") as f:
            return f["meta/kind"].asstr()[()]
    except (OSError, KeyError, ValueError, TypeError):
        return shards.read_meta(path)["kind"]  # the one-line InputError naming the shard


@user_errors
def command(
    ingest: Annotated[Path, typer.Option("--ingest", help="Shard folder from `ingest` (originals, both splits).")],
    negatives: Annotated[Path, typer.Option("--negatives", help="Shard folder from `negatives`.")],
    out: Annotated[Path, typer.Option("--out", help="Dataset folder to write (e.g. output/sirst5k).")],
    manifest: Annotated[Path, typer.Option("--manifest", help="Manifest file to write (e.g. manifests/sirst5k.json).")],
    transfer: Annotated[Optional[Path], typer.Option("--transfer", help="Also publish the noise-transferred images.")] = None,
    name: Annotated[str, typer.Option(help=P.help("name"))] = P.name,
    shard_size: Annotated[int, typer.Option(help=P.help("shard_size"))] = P.shard_size,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Verify the staged dataset before it is "
                                         "swapped in.")] = True,
    overwrite: Overwrite = False,
    workers: Workers = None,
    scheduler: Scheduler = None,
) -> None:
    """Assemble the final shards and the manifest; swap them in only once they verify."""
    from sirst5k.formats import shards
    from sirst5k.formats.manifest import MANIFEST_SCHEMA_VERSION, MIXED_SIZES_SCHEMA, content_version, write_json_atomic
    from sirst5k.runner.cluster import Runner
    from sirst5k.runner.outputs import (check_output_file, check_output_folder, input_shards, read_stage_record,
                                        staged_folder)
    from sirst5k.verify import manifest_version

    publish = PublishParams(name=name, shard_size=shard_size, transfer=transfer is not None)
    sources = [ingest, negatives, *([transfer] if transfer else [])]
    # before any work: where the dataset and its manifest go (a dataset whose manifest cannot be
    # written would be published undescribed)
    check_output_folder(out, STAGE, sources, overwrite)
    check_output_file(manifest, STAGE, sources, overwrite)
    _check_manifest_place(manifest, out)
    train_sources = input_shards(ingest, "train")
    test_sources = input_shards(ingest, "test")
    neg_sources = input_shards(negatives, "train")
    tr_sources = input_shards(transfer, "train") if transfer else []
    splits = {"train": train_sources + tr_sources + neg_sources, "test": test_sources}
    records = [read_stage_record(f) or {} for f in sources]
    params: dict = {}
    inputs: dict = {}
    for r in records:
        params.update(r.get("params", {}))
        inputs.update(r.get("inputs", {}))
    params[STAGE] = publish.version_dict()
    # from the bytes input_shards read, not from the upstream records
    inputs["shards_hash"] = content_version(sorted(sha for srcs in splits.values() for _, sha in srcs))
    plans = {split: plan_sizes([(p, shards.n_samples(p), shards.image_shape(p)) for p, _ in srcs], shard_size)
             for split, srcs in splits.items()}
    mixed = len({shape for plan in plans.values() for shape, _ in plan}) > 1
    doc = {"schema_version": MIXED_SIZES_SCHEMA if mixed else MANIFEST_SCHEMA_VERSION, "name": name,
           "producer": PRODUCER, "params": params, "inputs": inputs}
    doc["version"] = manifest_version(doc)
    rel = os.path.relpath(out.resolve(), manifest.resolve().parent)
    staged_manifest: Path | None = None
    try:
        # the copy and the verification run here, or on one cluster (Runner.run decides); a given
        # scheduler is connected before anything is created, so one that does not answer leaves no trace
        with contextlib.ExitStack() as stack:
            runner = Runner(stack, workers, scheduler, "cpu").connect()
            with staged_folder(out, STAGE, sources, overwrite) as tmp:
                doc["splits"] = _build(runner, tmp, plans, splits, doc, name)
                write_json_atomic(tmp / IN_DATASET_NAME, {**doc, "dataset_dir": "."})
                if verify:
                    _verify_staged(runner, tmp, out, manifest)
                staged_manifest = _stage_manifest(manifest, {**doc, "dataset_dir": rel})
        # the folder is in place: the manifest follows (a rename, which cannot run out of space)
        try:
            os.replace(staged_manifest, manifest)
        except OSError as err:
            raise OutputError(manifest, f"cannot write: {err.strerror or err}") from err
        staged_manifest = None
    finally:
        if staged_manifest is not None:
            staged_manifest.unlink(missing_ok=True)
    counts = ", ".join(f"{s}: {v['n_samples']} ({', '.join(f'{k} {n}' for k, n in v['kinds'].items() if n)})"
                       for s, v in doc["splits"].items())
    typer.echo(f"publish: {name} {doc['version']} -> {out} [{counts}]; manifest {manifest}")
    if verify:
        n_shards = sum(len(v["shards"]) for v in doc["splits"].values())
        typer.echo(f"verify: {n_shards} shards OK")


def _check_manifest_place(manifest: Path, out: Path) -> None:
    """The manifest must survive the swap of `out`: not inside it (its own manifest.json aside)."""
    m, o = Path(os.path.abspath(manifest)), Path(os.path.abspath(out))
    if (o in m.parents or manifest.resolve().is_relative_to(out.resolve())) and \
            manifest.resolve() != (out / IN_DATASET_NAME).resolve():
        raise OutputError(manifest, f"is inside the dataset folder {out}, which publish replaces; "
                                    "put the manifest elsewhere (e.g. manifests/NAME.json)")


def _build(runner, tmp: Path, plans: dict, splits: dict, doc: dict, name: str) -> dict:
    """Write the final shards into the staging folder; the manifest's `splits` (schema 2: with
    each shard's `shape` and each split's `sizes`)."""
    from sirst5k.formats import shards
    from sirst5k.formats.manifest import MIXED_SIZES_SCHEMA, size_counts

    mixed = doc["schema_version"] == MIXED_SIZES_SCHEMA
    names = [shards.shard_name(split, i) for split, pl in plans.items() for i in range(len(pl))]
    shards.remove_stale(tmp, names)
    tasks = [(str(tmp / shards.shard_name(split, i)), pieces,
              {"dataset": name, "version": doc["version"], "split": split, "shard_index": i, "n_shards": len(pl),
               **({"schema_version": MIXED_SIZES_SCHEMA} if mixed else {})})
             for split, pl in plans.items() for i, (_, pieces) in enumerate(pl)]
    shapes = [shape for pl in plans.values() for shape, _ in pl]
    results = runner.run(publish_shard, tasks, "publish")
    by_split: dict[str, list[dict]] = {s: [] for s in plans}
    for (_, _, attrs), shape, r in zip(tasks, shapes, results):
        by_split[attrs["split"]].extend({**info.record(), **({"shape": list(shape)} if mixed else {})}
                                        for info in r.shards)
    out = {
        split: {"n_samples": sum(s["n_samples"] for s in entries),
                "kinds": _kind_counts([p for p, _ in splits[split]]),
                "shards": entries}
        for split, entries in by_split.items()
    }
    if mixed:
        for entry in out.values():
            entry["sizes"] = size_counts((s["shape"], s["n_samples"]) for s in entry["shards"])
    return out


def _verify_staged(runner, tmp: Path, out: Path, manifest: Path) -> None:
    """Verify the staged dataset; on a problem, name each and refuse the swap (InputError)."""
    from sirst5k.verify import verify_manifest

    problems = verify_manifest(tmp / IN_DATASET_NAME, map_shards=lambda fn, jobs: runner.run(fn, jobs, "verify"))
    if not problems:
        return
    for p in problems:
        # the staging folder is about to go: name the files as they would have been
        typer.echo(f"error: {p.replace(str(tmp), str(out))}", err=True)
    raise InputError(out, f"the new build failed verify ({len(problems)} problem(s) above); "
                          f"the previous dataset and {manifest} are left as they were")


def _stage_manifest(manifest: Path, doc: dict) -> Path:
    """The manifest under a temporary name beside its place, to be renamed once the folder is in."""
    from sirst5k.formats.manifest import canonical_json

    tmp = manifest.with_name(f".{manifest.name}.partial-{os.getpid()}")
    try:
        manifest.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(canonical_json(doc), encoding="utf-8")
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(manifest, f"cannot write: {err.strerror or err}") from err
    return tmp
