"""`sirst5k transfer SHARDS --noise-bank FILE --out DIR`: fuse bank noise into labelled images.

Options become a `TransferParams`; one task per input shard reads it, draws each sample's bank
rows (or noise model and seed) and fuses them (`sirst5k.method.transfer`: the one
implementation, which `sirst5k modes` and the tests call too) and writes one output shard. Masks
are unchanged. With `--noise-scale source` (the default; mosaic and model fields) each field is
built at the sample's original size, read from the shard's `orig_h`/`orig_w`. With `--field model
--noise-level image` the model's 2-D noise follows each image's local grey level through the
bank's noise-level function (`noise-bank --model --model-nlf`).

Shards may differ in size (one size each, e.g. `ingest --size native`): each shard's fields are
made at its own size, and a native sample (orig = shard size) gets its field at the bank's pitch
with no resampling. In a padded shard (`--keep-aspect`, meta `valid_h`/`valid_w`) the field
covers each image's valid region (resampled to it as ingest resized the image) and the padding
is left as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sirst5k.params import NoiseField, NoiseLevel, NoiseScale, TransferMode, TransferParams, parse_floats

from .common import Device, Overwrite, Scheduler, Seed, Workers, check_device, user_errors

STAGE = TransferParams.STEP
P = TransferParams


def valid_regions(meta: dict, size: tuple[int, int]):
    """[((h, w), rows)] of the samples by valid region, smallest first, when a shard records padded
    images (`valid_h`, `valid_w` > 0 and smaller than the image somewhere); None otherwise."""
    import numpy as np

    from sirst5k.formats import shards

    v = shards.valid_box(meta)
    if v is None:
        return None
    full = np.asarray(size, np.int64)[None, :]
    v = np.where(v > 0, np.minimum(v, full), full)
    if (v == full).all():
        return None
    keys = sorted({tuple(r) for r in v.tolist()})
    return [((int(h), int(w)), np.flatnonzero((v[:, 0] == h) & (v[:, 1] == w))) for h, w in keys]


def transfer_shard(src: str, src_sha: str, dst: str, index: int, n_shards: int, bank: dict, params: dict,
                   device: str):
    """One input shard -> its transferred samples (every mix of a sample together), one shard."""
    import numpy as np

    from sirst5k.formats import shards
    from sirst5k.formats.bank import load_bank, load_models
    from sirst5k.method.transfer import draw_transfer_params, transfer_images
    from sirst5k.runner.cluster import resolve_device_type
    from sirst5k.runner.outputs import task_key
    from sirst5k.runner.tasks import TaskResult, reuse_shard

    key = task_key(STAGE, params, src_sha, bank["version"])
    done = reuse_shard(dst, key)
    if done is not None:
        return done
    images, masks, meta = shards.read_shard(src)
    patches = load_bank(bank["path"], bank["version"])
    dev = resolve_device_type(device)  # "cpu": numpy, torch not imported
    mixes = params["mix"]
    n = len(images)
    field = params["field"]
    # the version holds noise_scale exactly when it is not "bank" for a field it applies to
    source = None
    if field != "resize" and params.get("noise_scale", "bank") == "source":
        source = np.stack([meta["orig_h"], meta["orig_w"]], axis=1).astype(np.int64)
    models = load_models(bank["path"], bank["version"]) if field == "model" else None
    level = params.get("noise_level", "flat")  # in the version only when not flat (model field only)
    valid = valid_regions(meta, images.shape[1:])
    if valid is None:  # the whole image (every shard but a padded --keep-aspect one): the bytes as before
        draws = draw_transfer_params(params["seed"], meta["sample_id"], len(patches), images.shape[1:],
                                     patches.shape[-1], field, source_sizes=source, n_models=len(models or ()))
        out_images = transfer_images(images, patches, draws, mixes, params["mode"], dev, models=models,
                                     noise_level=level)
        noise_id = draws.noise_id
    else:  # padded: the field covers each image's valid region, the padding stays as it is
        out_images = np.repeat(images, len(mixes), axis=0)
        noise_id = np.full(n, -1, np.int64)
        for (vh, vw), rows in valid:
            draws = draw_transfer_params(params["seed"], meta["sample_id"][rows], len(patches), (vh, vw),
                                         patches.shape[-1], field, source_sizes=None if source is None else source[rows],
                                         n_models=len(models or ()))
            sub = np.ascontiguousarray(images[rows, :vh, :vw])
            fused = transfer_images(sub, patches, draws, mixes, params["mode"], dev, models=models,
                                    noise_level=level)
            at = (rows[:, None] * len(mixes) + np.arange(len(mixes))[None, :]).reshape(-1)
            out_images[at, :vh, :vw] = fused
            noise_id[rows] = draws.noise_id
    rep = np.repeat(np.arange(n), len(mixes))
    out_meta = shards.take_meta(meta, rep)
    out_meta["mix"] = np.tile(np.asarray(mixes, dtype=np.float64), n)
    out_meta["kind"] = np.full(len(rep), "transfer", dtype=object)
    out_meta["sample_id"] = np.array([f"{meta['sample_id'][i]}_m{m:g}" for i, m in zip(rep, out_meta["mix"])],
                                     dtype=object)
    out_meta["noise_id"] = noise_id[rep]
    info = shards.write_shard(dst, out_images, masks[rep], out_meta,
                              {"dataset": STAGE, "version": key[:16], "split": params["split"], "shard_index": index,
                               "n_shards": n_shards, "task_key": key, **shards.carried_schema(src)})
    return TaskResult((info,), dev)


@user_errors
def command(
    shards_dir: Annotated[Path, typer.Argument(metavar="SHARDS", help="Shard folder (e.g. output/ingest).")],
    noise_bank: Annotated[Path, typer.Option("--noise-bank", help="Noise bank file from `noise-bank`.")],
    out: Annotated[Path, typer.Option("--out", help="Output shard folder.")],
    mix: Annotated[list[str], typer.Option("--mix", help=P.help("mix"))] = [f"{m:g}" for m in P.mix],
    mode: Annotated[TransferMode, typer.Option(help=P.help("mode"))] = P.mode,
    field: Annotated[NoiseField, typer.Option(help=P.help("field"))] = P.field,
    noise_scale: Annotated[NoiseScale, typer.Option(help=P.help("noise_scale"))] = P.noise_scale,
    noise_level: Annotated[NoiseLevel, typer.Option(help=P.help("noise_level"))] = P.noise_level,
    split: Annotated[str, typer.Option(help=P.help("split"))] = P.split,
    seed: Seed = P.seed,
    workers: Workers = None,
    scheduler: Scheduler = None,
    device: Device = "auto",
    overwrite: Overwrite = False,
) -> None:
    """Fuse noise-bank patches into every image of a shard folder's train split."""
    from sirst5k.errors import InputError
    from sirst5k.formats import shards
    from sirst5k.formats.bank import bank_info
    from sirst5k.runner.outputs import input_shards
    from sirst5k.runner.tasks import computed_on, shard_records, shard_stage, upstream_record

    check_device(device)
    params = TransferParams(mix=parse_floats("mix", mix), mode=mode, field=field, split=split, seed=seed,
                            noise_scale=noise_scale, noise_level=noise_level)
    bank = bank_info(noise_bank)
    if field == "model" and not bank["models"]:
        raise InputError(noise_bank, "noise bank holds no noise model (--field model): rebuild it with "
                                     "`sirst5k noise-bank --model`")
    if params.noise_level == "image" and not bank.get("nlf"):
        raise InputError(noise_bank, "noise bank's models hold no noise-level function (--noise-level image): "
                                     "rebuild it with `sirst5k noise-bank --model --model-nlf`")
    inputs = input_shards(shards_dir, split)
    version = params.version_dict()
    with shard_stage(out, STAGE, [shards_dir, noise_bank], workers=workers, scheduler=scheduler, device=device,
                     overwrite=overwrite) as run:
        names = [shards.shard_name(split, i) for i in range(len(inputs))]
        run.keep_only(names)
        tasks = [(str(p), sha, str(run.folder / name), i, len(inputs), bank, version, device)
                 for i, ((p, sha), name) in enumerate(zip(inputs, names))]
        results = run.run(transfer_shard, tasks, "transfer", gpu=True)
        upstream = upstream_record(shards_dir)
        run.record(STAGE, {**upstream.get("params", {}), STAGE: version},
                   {**upstream.get("inputs", {}), "frames": {"path": bank["path"], "noise_bank_version": bank["version"],
                                                            "content_hash": bank["frames_hash"]}},
                   shard_records(results, split))
    total = sum(info.n_samples for r in results for info in r.shards)
    scale = f", {params.effective_noise_scale} scale" if field != "resize" else ""
    typer.echo(f"transfer: {total} samples ({mode}, {field}{scale}, m={','.join(f'{m:g}' for m in params.mix)}) -> {out}"
               + computed_on(results))
