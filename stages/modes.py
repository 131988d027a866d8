"""`sirst5k modes IMAGE MASK --noise-bank FILE --out PNG`: what each mode does to one image.

Reads one labelled image the way `ingest` does (grey, resized to --size, mask nearest; `--size
native` keeps its own size and pixels, as `ingest --size native`), applies
every transfer and negative mode with the pipeline's own functions and writes one contact
sheet (see pipeline.mode_sheet). A look at the algorithms, not a pipeline stage: no shards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sirst5k.errors import InputError

from sirst5k.stages.common import Seed, user_errors, warn


def parse_size(text: str) -> int | None:
    """`--size`: "native" -> None (the image's own size), else a side of at least 32 px."""
    from sirst5k.params import ParamError

    if str(text).strip().lower() == "native":
        return None
    try:
        side = int(text)
    except ValueError:
        raise ParamError("size", text, "a side in pixels (>= 32) or `native`") from None
    if side < 32:
        raise ParamError("size", text, "a side in pixels (>= 32) or `native`")
    return side


@user_errors
def command(
    image: Annotated[Path, typer.Argument(metavar="IMAGE", help="One labelled image (any supported format).")],
    mask: Annotated[Path, typer.Argument(metavar="MASK", help="Its target mask.")],
    noise_bank: Annotated[Path, typer.Option("--noise-bank", help="Noise bank file from `noise-bank`.")],
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")],
    size: Annotated[str, typer.Option(
        metavar="N|native", help="Side the image is resized to, as `ingest --size`; `native`: its own size, "
                                 "no resampling.")] = "256",
    target: Annotated[int, typer.Option(min=0, help="Which target (label order) the negatives and zoom show.")] = 0,
    seed: Seed = 0,
) -> None:
    """Draw every transfer and negative mode applied to one image, as one contact sheet."""
    import numpy as np

    from sirst5k.formats.bank import read_patches
    from sirst5k.formats.imageio import write_png
    from sirst5k.formats.layouts import SampleRef, load_sample
    from sirst5k.report.modes import mode_sheet, mode_tiles

    side = parse_size(size)
    sample = load_sample(SampleRef(image.stem, image, mask, "train"), side)
    for w in sample.warnings:
        warn(w)
    patches = read_patches(noise_bank)
    try:
        tiles = mode_tiles(sample.image, sample.mask, patches, seed=seed, target=target, key=image.stem,
                           source_size=(sample.orig_h, sample.orig_w))
    except ValueError as err:
        raise InputError(mask, str(err)) from None
    h, w = sample.image.shape
    scale = "native size" if side is None else f"-> {w}x{h}"
    title = (f"{image.name} ({sample.orig_w}x{sample.orig_h} {scale}), seed {seed}, "
             f"bank row {tiles[1].params['noise_id']}: full image above, x4 zoom of the blue square below; "
             "mask outline red, negative box yellow")
    sheet = mode_sheet(tiles, title)
    write_png(out, np.asarray(sheet))
    typer.echo(f"modes: {len(tiles)} tiles -> {out}")
