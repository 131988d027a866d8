"""`sirst5k ingest SOURCE --out DIR`: a labelled dataset on disk -> shards at one image size.

Options become an `IngestParams`; the layout registry lists the samples; one task per shard
reads, checks and resizes its samples (`sirst5k.formats.layouts.load_sample`) and writes them.

`--size native` keeps every image at its own size: each split's samples are grouped by size (read
from the file headers), sizes in (height, width) order, samples in list order within a size, and
each size cut into shards of `--shard-size` (`<split>-<index>.h5`, index over the whole split).
Where the sizes differ the output is schema 2 (each shard's `schema_version` attribute 2, each
stage.json shard record with its `shape` [H, W]); one size is schema 1, as a numeric `--size`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sirst5k.params import IngestParams, Layout

from .common import Overwrite, Scheduler, Seed, Workers, user_errors, warn

STAGE = IngestParams.STEP
P = IngestParams


def ingest_shard(path: str, refs: list, split: str, index: int, n_shards: int, size: int | None, skip_bad: bool,
                 key_parts: list, keep_aspect: bool = False, shape: tuple[int, int] | None = None,
                 schema: int | None = None):
    """Read, check and resize one shard's samples; write the shard. Its warnings travel back as `extra`.

    size None: every sample at its own size, which must be `shape` (the size its header gave when
    the shard was planned). schema: the shard's schema_version attribute when not the default."""
    import numpy as np

    from sirst5k.errors import InputError
    from sirst5k.formats import shards
    from sirst5k.formats.layouts import PAD_VALUE, load_sample
    from sirst5k.method.difficulty import target_difficulty
    from sirst5k.runner.cluster import thread_map
    from sirst5k.runner.outputs import hash_files, task_key
    from sirst5k.runner.tasks import TaskResult, reuse_shard

    files = [p for r in refs for p in (r.image, r.mask) if p is not None]
    key = task_key(key_parts, hash_files(files) if not skip_bad else _hash_existing(files))
    done = reuse_shard(path, key)
    if done is not None:
        meta = shards.read_meta(path)
        return TaskResult(done.shards, None, {**_read_warnings(path, key),
                                              "no_target": int((meta["n_targets"] == 0).sum())})
    def load(ref):
        # (sample, error): PNG decoding and PIL's resize release the GIL, so `thread_map` overlaps them
        try:
            loaded = load_sample(ref, size, keep_aspect)
            if shape is not None and loaded.image.shape != tuple(shape):
                h, w = loaded.image.shape
                raise InputError(ref.image, f"decodes to {w}x{h} pixels but its header says {shape[1]}x{shape[0]}")
        except InputError as err:
            return None, err
        return loaded, None

    warnings: list[str] = []
    images, masks, rows = [], [], []
    skipped = 0
    for ref, (loaded, err) in zip(refs, thread_map(load, refs)):  # the first bad one in order is the error
        if err is not None:
            if not skip_bad:
                raise err
            warnings.append(f"{err}; left out")
            skipped += 1
            continue
        warnings.extend(loaded.warnings)
        images.append(loaded.image)
        masks.append(loaded.mask)
        rows.append((ref.id, loaded.orig_h, loaded.orig_w, loaded.valid_h, loaded.valid_w))
    n = len(rows)
    empty = (0, *(shape if shape is not None else (size, size)))
    image_stack = np.stack(images) if n else np.zeros(empty, np.uint8)
    mask_stack = np.stack(masks) if n else np.zeros(empty, np.uint8)
    # the shard's per-target table, labelled once: it gives the counts here and is what
    # write_shard would compute from these pixels (passed on, not labelled again)
    table = target_difficulty(image_stack, mask_stack)
    counts = np.bincount(table["row"], minlength=n)
    areas = np.count_nonzero(mask_stack, axis=(1, 2))
    meta = shards.new_meta(n)
    for i, (sid, oh, ow, vh, vw) in enumerate(rows):
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
        meta["valid_h"][i] = vh
        meta["valid_w"][i] = vw
        meta["pad_value"][i] = PAD_VALUE if vh >= 0 else -1
    # before the shard: a shard on disk always has its warnings beside it
    _write_warnings(path, key, warnings, skipped)
    info = shards.write_shard(
        path,
        image_stack,
        mask_stack,
        meta,
        {"dataset": STAGE, "version": key[:16], "split": split, "shard_index": index, "n_shards": n_shards,
         "task_key": key, **({"schema_version": schema} if schema is not None else {})},
        targets=table,
    )
    return TaskResult((info,), "cpu", {"warnings": warnings, "skipped": skipped,
                                       "no_target": int((meta["n_targets"] == 0).sum())})


# A shard's warnings wait beside it (its scratch note) while the stage runs, so a rerun after a
# crash that reuses the shard still reports them; the note is gone once the stage completes.
def _write_warnings(path: str, key: str, warnings: list[str], skipped: int) -> None:
    from sirst5k.formats.manifest import write_json_atomic
    from sirst5k.runner.outputs import scratch_path

    if warnings or skipped:
        write_json_atomic(scratch_path(path), {"task_key": key, "warnings": warnings, "skipped": skipped})


def _read_warnings(path: str, key: str) -> dict:
    from sirst5k.runner.outputs import scratch_path

    try:
        said = json.loads(scratch_path(path).read_text(encoding="utf-8"))
        if said.get("task_key") == key:
            return {"warnings": list(said["warnings"]), "skipped": int(said["skipped"])}
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none written (a shard without warnings), or unreadable: nothing to repeat
    return {"warnings": [], "skipped": 0}


def _size_groups(samples: list, params: IngestParams, skip_bad: bool) -> tuple[dict[str, list], list[str]]:
    """Per split, [((h, w), refs), ...]: with --size native the samples grouped by the size their
    image header gives, sizes in (h, w) order, list order within a size; else one group of all the
    split's samples at (size, size). Also the problems of headers that cannot be read (with
    --skip-bad; without, the first is raised)."""
    from sirst5k.errors import InputError
    from sirst5k.formats.imageio import image_size

    problems: list[str] = []
    out: dict[str, list] = {}
    for split in ("train", "test"):
        refs = [r for r in samples if r.split == split]
        if not params.native:
            out[split] = [((params.size, params.size), refs)] if refs else []
            continue
        by_size: dict[tuple[int, int], list] = {}
        for ref in refs:
            try:
                shape = image_size(ref.image)
            except InputError as err:
                if not skip_bad:
                    raise
                problems.append(str(err))
                continue
            by_size.setdefault(shape, []).append(ref)
        out[split] = [(shape, by_size[shape]) for shape in sorted(by_size)]
    return out, problems


def _hw(shape) -> str:
    return f"{shape[0]}x{shape[1]}"


def _hash_existing(files: list[Path]) -> str:
    from sirst5k.runner.outputs import hash_files

    # With --skip-bad a missing file is a warning, not a reason to fail the hash.
    return hash_files([p for p in files if Path(p).is_file()])


@user_errors
def command(
    source: Annotated[Path, typer.Argument(help="Labelled dataset folder.")],
    out: Annotated[Path, typer.Option("--out", help="Output shard folder.")],
    layout: Annotated[Layout, typer.Option(help=P.help("layout"))] = P.layout,
    size: Annotated[str, typer.Option(help=P.help("size"), metavar="<int|native>")] = str(P.size),
    shard_size: Annotated[int, typer.Option(help=P.help("shard_size"))] = P.shard_size,
    split_ratio: Annotated[float, typer.Option(help=P.help("split_ratio"))] = P.split_ratio,
    skip_bad: Annotated[bool, typer.Option("--skip-bad/--no-skip-bad", help=P.help("skip_bad"))] = P.skip_bad,
    keep_aspect: Annotated[bool, typer.Option("--keep-aspect/--no-keep-aspect",
                                              help=P.help("keep_aspect"))] = P.keep_aspect,
    seed: Seed = P.seed,
    workers: Workers = None,
    scheduler: Scheduler = None,
    overwrite: Overwrite = False,
) -> None:
    """Read a labelled dataset (DNANet, BasicIRSTD, SIRST, SIRST-V2 or plain folder) into shards."""
    from sirst5k.errors import InputError
    from sirst5k.formats import shards
    from sirst5k.formats.layouts import list_labelled, unlisted_note
    from sirst5k.runner.outputs import task_key
    from sirst5k.runner.tasks import shard_stage

    params = IngestParams(layout=layout, size=size, shard_size=shard_size, split_ratio=split_ratio,
                          skip_bad=skip_bad, seed=seed, keep_aspect=keep_aspect)
    labelled = list_labelled(source, layout, split_ratio=split_ratio, seed=seed, skip_bad=skip_bad)
    for problem in labelled.problems:
        warn(f"{problem}; left out")
    note = unlisted_note(labelled)
    if note:
        warn(note)
    version = params.replace(layout=labelled.layout).version_dict()
    # per split: [(shape, refs)], sizes in (h, w) order; a numeric --size is one group in list order
    size_groups, unreadable = _size_groups(labelled.samples, params, skip_bad)
    for problem in unreadable:
        warn(f"{problem}; left out")
    shapes_used = sorted({shape for groups in size_groups.values() for shape, _ in groups})
    schema = shards.MIXED_SIZES_SCHEMA if len(shapes_used) > 1 else None
    with shard_stage(out, STAGE, [source], workers=workers, scheduler=scheduler, device="cpu",
                     overwrite=overwrite) as run:
        tasks, plan, splits, shapes = [], [], [], []
        for split in ("train", "test"):
            groups = [(shape, refs[i: i + shard_size]) for shape, refs in size_groups[split]
                      for i in range(0, len(refs), shard_size)]
            for i, (shape, group) in enumerate(groups):
                name = shards.shard_name(split, i)
                plan.append(name)
                splits.append(split)
                shapes.append(shape)
                # schema 2 enters the key (a shard of schema 1 is not one of 2); schema 1 keeps its key
                key_parts = [STAGE, version, [r.id for r in group]] + ([schema] if schema is not None else [])
                tasks.append((str(run.folder / name), group, split, i, len(groups),
                              None if params.native else params.size, skip_bad, key_parts, params.keep_aspect,
                              shape if params.native else None, schema))
        run.keep_only(plan)
        results = run.run(ingest_shard, tasks, "ingest")
        for r in results:
            for w in r.extra["warnings"]:
                warn(w)
        skipped = sum(r.extra["skipped"] for r in results) + len(labelled.problems) + len(unreadable)
        n_warnings = sum(len(r.extra["warnings"]) for r in results) - sum(r.extra["skipped"] for r in results) \
            + (note is not None)
        if not sum(info.n_samples for r in results for info in r.shards):
            raise InputError(source, f"no usable samples: all {skipped} listed file(s) were bad")
        records = [{**info.record(split), **({"shape": list(shape)} if schema is not None else {})}
                   for r, split, shape in zip(results, splits, shapes) for info in r.shards]
        inputs = {"source": {"path": str(source), "layout": labelled.layout,
                             "n_images": sum(r["n_samples"] for r in records),
                             "content_hash": task_key([r["sha256"] for r in records])}}
        run.record(STAGE, {STAGE: version}, inputs, records)
    counts = {s: sum(r["n_samples"] for r in records if r["split"] == s) for s in ("train", "test")}
    no_target = sum(r.extra["no_target"] for r in results)
    if params.native:
        at = f"at native size ({len(shapes_used)} size(s) HxW, " + (
            f"{_hw(shapes_used[0])} to {_hw(shapes_used[-1])})" if len(shapes_used) > 1 else f"{_hw(shapes_used[0])})")
    else:
        at = f"at {params.size}x{params.size}" + (" (aspect kept, zero-padded)" if params.keep_aspect else "")
    typer.echo(f"ingest: {labelled.layout} layout, {counts['train']} train / {counts['test']} test samples "
               f"{at} in {out}" + (f", {no_target} with no target" if no_target else "")
               + (f"; {skipped} bad file(s) skipped" if skip_bad else "")
               + (f"; {n_warnings} warning(s)" if n_warnings else ""))
