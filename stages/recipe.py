"""`sirst5k recipe`: the SIRST-5K recipe on one labelled set, in one command.

ingest -> (noise-bank) -> transfer -> negatives -> publish, each stage exactly as its own command
runs it (its own checks, staging folder, lock, task keys and bytes), but in one process: at the
sizes people have (a few hundred to a few thousand images) a stage's work is about a second, and
the start of a command (the interpreter, numpy, h5py, typer: ~0.4 s) is paid once instead of four
or five times. What it writes, all under `--out DIR`:

    DIR/ingest/  DIR/bank.h5 (with --frames)  DIR/transfer/  DIR/negatives/  DIR/NAME/  DIR/NAME.json

the same as the stage commands with the same options would write there. Every option not listed
here is the stage's default; for anything else run the stages one by one (or `dvc repro`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sirst5k.errors import InputError, OutputError
from sirst5k.params import (IngestParams, Layout, NegativesParams, NoiseField, PublishParams, TransferMode, TransferParams,
                            parse_floats, parse_ints)

from .common import Device, Overwrite, Scheduler, Workers, check_device, user_errors

STEPS = ("ingest", "transfer", "negatives")  # DIR's sub-folders; NAME/, NAME.json and bank.h5 besides
BANK = "bank.h5"


def recipe_paths(out: Path, name: str) -> dict[str, Path]:
    """Where each stage's output goes under the recipe's folder."""
    return {**{step: out / step for step in STEPS}, "bank": out / BANK, "dataset": out / name,
            "manifest": out / f"{name}.json"}


def check_recipe_folder(out: Path, source: Path, name: str) -> None:
    """Refuse, before anything is written, a `--out` the recipe could spoil: a file, the source or a
    folder inside it, or a non-empty folder holding anything but what a recipe writes there (the
    recipe adds sub-folders; it never clears `--out`, so a typo such as `--out ~` must not scatter
    them among a user's files)."""
    from sirst5k.runner.outputs import check_output_folder

    check_output_folder(out, inputs=[source])  # an input, inside or above one, a file, a dangling link
    if not out.is_dir():
        return
    ours = set(STEPS) | {BANK, name, f"{name}.json"}
    try:
        foreign = sorted(p.name for p in out.iterdir() if p.name not in ours and not p.name.startswith("."))
    except OSError as err:
        raise OutputError(out, f"cannot read folder: {err.strerror or err}") from err
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(out, f"holds files the recipe did not write ({shown}); give an empty or new folder")


@user_errors
def command(
    source: Annotated[Path, typer.Argument(help="Labelled dataset folder (as `ingest` reads it).")],
    out: Annotated[Path, typer.Option("--out", help="Folder of the recipe's outputs (new, empty, or an earlier "
                                                    "recipe's).")],
    noise_bank: Annotated[Optional[Path], typer.Option("--noise-bank", help="Noise bank file from `noise-bank`.")] = None,
    frames: Annotated[Optional[Path], typer.Option(
        "--frames", help="Or: frame sequences to build the bank from (`noise-bank` defaults, the test split "
                         "checked against them), written to DIR/bank.h5.")] = None,
    layout: Annotated[Layout, typer.Option(help=IngestParams.help("layout"))] = IngestParams.layout,
    size: Annotated[str, typer.Option(help=IngestParams.help("size"), metavar="<int|native>")] = str(IngestParams.size),
    mix: Annotated[list[str], typer.Option("--mix", help=TransferParams.help("mix"))] = [
        f"{m:g}" for m in TransferParams.mix],
    mode: Annotated[TransferMode, typer.Option(help=TransferParams.help("mode"))] = TransferParams.mode,
    field: Annotated[NoiseField, typer.Option(help=TransferParams.help("field"))] = TransferParams.field,
    patch: Annotated[list[str], typer.Option("--patch", help=NegativesParams.help("patch"))] = [
        str(p) for p in NegativesParams.patch],
    mirror: Annotated[bool, typer.Option("--mirror/--no-mirror", help=NegativesParams.help("mirror"))] = NegativesParams.mirror,
    name: Annotated[str, typer.Option(help=PublishParams.help("name"))] = PublishParams.name,
    with_transfer: Annotated[bool, typer.Option("--with-transfer/--without-transfer", help=PublishParams.help(
        "transfer"))] = PublishParams.transfer,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of every stage that draws (default: each "
                                                               "stage's own).")] = None,
    workers: Workers = None,
    scheduler: Scheduler = None,
    device: Device = "auto",
    overwrite: Overwrite = False,
) -> None:
    """Run the SIRST-5K recipe on a labelled set in one command: ingest, transfer, negatives, publish."""
    from sirst5k.runner.outputs import output_lock

    from . import ingest as ingest_stage
    from . import negatives as negatives_stage
    from . import publish as publish_stage
    from . import transfer as transfer_stage

    check_device(device)
    if noise_bank is not None and frames is not None:
        raise InputError(frames, "--frames and --noise-bank both given: give one (a bank, or frames to build it from)")
    if noise_bank is None and frames is None:
        raise InputError(source, "no noise: give --noise-bank FILE or --frames DIR")
    # every stage's options are checked before any stage runs (a bad --patch must not cost an ingest)
    seeded = {} if seed is None else {"seed": seed}
    ingest_params = IngestParams(layout=layout, size=size, **seeded)
    TransferParams(mix=parse_floats("mix", mix), mode=mode, field=field)
    negatives_params = NegativesParams(patch=parse_ints("patch", patch), mirror=mirror)
    if not ingest_params.native:
        negatives_params.check_fits(ingest_params.size, ingest_params.size, where=f"--size {size}")
    PublishParams(name=name)
    # the inputs are checked (as the stages check them) before any work, the noise source not after ingest
    from sirst5k.formats.folders import check_root

    check_root(Path(source))
    if noise_bank is not None:
        from sirst5k.formats.bank import bank_info

        bank_info(noise_bank)
    else:
        check_root(Path(frames))
    out = Path(out)
    check_recipe_folder(out, Path(source), name)
    paths = recipe_paths(out, name)
    run = {"workers": workers, "scheduler": scheduler, "overwrite": overwrite}
    with output_lock(out):  # one recipe per folder at a time; each stage also locks its own output
        out.mkdir(exist_ok=True)
        ingest_stage.command(source, paths["ingest"], layout=layout, size=size, **seeded, **run)
        if frames is not None:
            from . import noise_bank as bank_stage

            bank_stage.command(frames, paths["bank"], test_set=paths["ingest"], device=device, **run)
            noise_bank = paths["bank"]
        transfer_stage.command(paths["ingest"], noise_bank, paths["transfer"], mix=mix, mode=mode, field=field,
                               device=device, **seeded, **run)
        negatives_stage.command(paths["transfer"], paths["negatives"], patch=patch, mirror=mirror, device=device,
                                **seeded, **run)
        publish_stage.command(paths["ingest"], paths["negatives"], paths["dataset"], paths["manifest"],
                              transfer=paths["transfer"] if with_transfer else None, name=name, **run)
