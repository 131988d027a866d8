"""`sirst5k negatives SHARDS --out DIR`: mirrored and rotated target patches, image and mask alike.

For every sample, every target (connected components of its mask), every patch size and every
k in --rotations: the patch around the target's centre is mirrored (unless --no-mirror), rotated
by k x 90 degrees and pasted back. The paper enumerates all of these, so nothing is random.
Options become a `NegativesParams`; one task per input shard plans, checks and builds its
negatives with `sirst5k.method.negatives` (the one implementation, which `sirst5k modes` and the
parity tests call too) and writes them as parts of at most --shard-size samples
(`train-<input>-<part>.h5`), so a worker's memory does not grow with the number of targets.
Shards may differ in size (one size each): boxes are clamped to each shard's images, every
--patch must fit every shard (checked before any work), and in a padded shard that records the
valid region (`valid_h`, `valid_w`) the boxes stay inside it. A part of images larger than
256 x 256 also holds at most 64 MiB of image pixels (`PART_PIXELS`), whatever --shard-size says.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sirst5k.params import Clamp, NegativesParams, parse_ints

from .common import Device, Overwrite, Scheduler, Seed, Workers, check_device, user_errors

if TYPE_CHECKING:
    import numpy as np

    from sirst5k.method.negatives import NegativeParams

P = NegativesParams
STAGE = P.STEP


def negative_meta(meta: dict[str, np.ndarray], plan: NegativeParams,
                  check: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Shard meta of the negatives `plan` (with their label checks `check`), made from samples `meta`."""
    import numpy as np

    from sirst5k.formats import shards

    m = shards.take_meta(meta, plan.source)
    m["kind"] = np.full(len(plan), "negative", dtype=object)
    m["sample_id"] = np.array([f"{sid}_p{p}_k{k}_j{j}" for sid, j, p, k in
                               zip(m["sample_id"], plan.target_index.tolist(), plan.patch.tolist(), plan.k.tolist())],
                              dtype=object)
    m["patch"], m["k"], m["flip"], m["target_index"] = plan.patch, plan.k, plan.flip.astype(np.int64), plan.target_index
    m["center_y"], m["center_x"] = plan.center[:, 0], plan.center[:, 1]
    m["n_targets"] = check["n_targets_after"]
    m["area"] = check["area_after"]
    m["source_n_targets"] = check["n_targets_before"]
    m["source_area"] = check["area_before"]
    m["cut"] = check["cut"].astype(np.int32)
    return m


def negatives_shard(src: str, src_sha: str, dst_dir: str, index: int, params: dict, device: str):
    """Make the negatives of one input shard; write them as parts of at most shard_size samples.

    Memory stays within the input shard plus one output part: the label checks (which decide
    what --drop-cut keeps) need only the masks' boxes, so each part is built, written and
    dropped before the next.
    """
    from sirst5k.formats import shards
    from sirst5k.method import negatives as method  # numpy on the CPU; torch only for a CUDA device
    from sirst5k.runner.cluster import resolve_device_type
    from sirst5k.runner.outputs import task_key
    from sirst5k.runner.tasks import TaskResult, part_size, reuse_parts

    key = task_key(STAGE, params, src_sha)
    prefix = f"{params['split']}-{index:05d}"
    done = reuse_parts(dst_dir, prefix, key)
    if done is not None:
        return done
    images, masks, meta = shards.read_shard(src)
    schema = shards.carried_schema(src)  # schema 2 in, schema 2 out (a dataset of several sizes)
    dev = resolve_device_type(device)
    plan = method.plan_negatives(masks, params["patch"], rotations=params["rotations"], mirror=params["mirror"],
                                 clamp=params["clamp"], valid_sizes=shards.valid_box(meta))
    check = method.check_negatives(masks, plan, dev)
    if not params["keep_cut"] and len(plan):
        keep = ~check["cut"]
        plan = plan.take(keep)
        check = {name: values[keep] for name, values in check.items()}
    size = part_size(params["shard_size"], images.shape[1:])
    n_parts = max(1, -(-len(plan) // size))
    written = []
    for part in range(n_parts):
        sl = slice(part * size, (part + 1) * size)
        part_plan = plan.take(sl)
        out_images, out_masks = method.build_negatives(images, masks, part_plan, dev)
        m = negative_meta(meta, part_plan, {name: values[sl] for name, values in check.items()})
        written.append(shards.write_shard(
            Path(dst_dir) / f"{prefix}-{part:03d}.h5", out_images, out_masks, m,
            {"dataset": STAGE, "version": key[:16], "split": params["split"], "shard_index": index,
             "n_shards": -1, "part": part, "n_parts": n_parts, "task_key": key, **schema},
        ))
        del out_images, out_masks
    return TaskResult(tuple(written), dev)


@user_errors
def command(
    shards_dir: Annotated[Path, typer.Argument(metavar="SHARDS", help="Shard folder (transfer, or ingest).")],
    out: Annotated[Path, typer.Option("--out", help="Output shard folder.")],
    patch: Annotated[list[str], typer.Option("--patch", help=P.help("patch"))] = [str(p) for p in P.patch],
    mirror: Annotated[bool, typer.Option("--mirror/--no-mirror", help=P.help("mirror"))] = P.mirror,
    rotations: Annotated[list[str], typer.Option("--rotations", help=P.help("rotations"))] = [
        ",".join(map(str, P.rotations))],
    clamp: Annotated[Clamp, typer.Option(help=P.help("clamp"))] = P.clamp,
    keep_cut: Annotated[bool, typer.Option("--keep-cut/--drop-cut", help=P.help("keep_cut"))] = P.keep_cut,
    split: Annotated[str, typer.Option(help=P.help("split"))] = P.split,
    shard_size: Annotated[int, typer.Option(help=P.help("shard_size"))] = P.shard_size,
    seed: Seed = 0,
    workers: Workers = None,
    scheduler: Scheduler = None,
    device: Device = "auto",
    overwrite: Overwrite = False,
) -> None:
    """Make one negative per target per rotation (and per patch size) from a shard folder."""
    from sirst5k.formats import shards
    from sirst5k.runner.outputs import input_shards
    from sirst5k.runner.tasks import computed_on, shard_records, shard_stage, upstream_record

    check_device(device)
    params = NegativesParams(patch=parse_ints("patch", patch), mirror=mirror, rotations=parse_ints("rotations", rotations),
                             clamp=clamp, keep_cut=keep_cut, split=split, shard_size=shard_size)
    inputs = input_shards(shards_dir, split)
    for p, _ in inputs:  # before any work: every box must fit every image
        params.check_fits(*shards.image_shape(p), where=str(p))
    version = params.version_dict()
    with shard_stage(out, STAGE, [shards_dir], workers=workers, scheduler=scheduler, device=device,
                     overwrite=overwrite) as run:
        prefixes = {f"{split}-{i:05d}" for i in range(len(inputs))}
        for p in run.folder.glob("*.h5"):
            if p.name[: len(split) + 6] not in prefixes:
                p.unlink()
        run.keep_only([p.name for p in run.folder.glob("*.h5")])
        tasks = [(str(p), sha, str(run.folder), i, version, device) for i, (p, sha) in enumerate(inputs)]
        results = run.run(negatives_shard, tasks, "negatives", gpu=True)
        upstream = upstream_record(shards_dir)
        run.record(STAGE, {**upstream.get("params", {}), STAGE: version}, upstream.get("inputs", {}),
                   shard_records(results, split))
    total = sum(info.n_samples for r in results for info in r.shards)
    typer.echo(f"negatives: {total} samples (patch {','.join(map(str, params.patch))}, "
               f"k {','.join(map(str, params.rotations))}, {'mirrored' if mirror else 'not mirrored'}) -> {out}"
               + computed_on(results))
