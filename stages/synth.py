"""`sirst5k synth OUT`: the built-in synthetic infrared source, so `make repro` needs no data.

Writes OUT/source/ (a labelled set in the DNANet layout: images/, masks/, 50_50/train.txt,
test.txt) and OUT/frames/<sequence>/<frame>.png (target-free frame sequences for the noise bank).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Annotated

import typer

from sirst5k.params import SynthParams

from .common import Overwrite, Scheduler, Seed, Workers, user_errors

P = SynthParams
STAGE = P.STEP
CHUNK = 128  # images per task: enough to amortise dask's per-task cost
# zlib level and strategy of the synthetic PNGs; the pixels are the same at any. On these noisy
# 256-px images level 1 encodes 2.7x faster than PIL's default 6 (4.1 vs 10.9 ms an image, most of
# synth's time). Run-length matching (Z_RLE) instead of zlib's string search suits both noise
# (nothing long repeats) and masks (runs of zeros): images encode in 3.7 vs 5.2 ms and decode in
# 1.15 vs 1.38 ms (ingest reads them) at 12 % fewer bytes (38 vs 43 KiB), masks in 156 vs 391 bytes.
PNG_LEVEL = 1
PNG_STRATEGY = zlib.Z_RLE


def _write_image(folder: Path, seed: int, i: int, size: int) -> None:
    from sirst5k.formats.imageio import write_png
    from sirst5k.method.synth import make_labelled_sample

    image, mask = make_labelled_sample(seed, i, size)
    write_png(folder / "images" / f"{i + 1:06d}.png", image, PNG_LEVEL, PNG_STRATEGY)
    write_png(folder / "masks" / f"{i + 1:06d}.png", mask, PNG_LEVEL, PNG_STRATEGY)


def _write_images(folder: str, seed: int, indices: list[int], size: int) -> int:
    """Render and write images `indices`. In the command's process on threads (`task_threads`):
    numpy's random draws, FFTs and array math and PIL's PNG encoder release the GIL, so 2 threads
    take ~0.55x the time of one, without a cluster's start-up. Each file depends on its index
    alone and is written atomically, so the bytes do not depend on the thread count."""
    from sirst5k.runner.cluster import thread_map

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    thread_map(lambda i: _write_image(folder, seed, i, size), indices)
    return len(indices)


def _write_sequence(folder: str, seed: int, index: int, n_frames: int, size: int) -> int:
    from sirst5k.formats.imageio import write_png
    from sirst5k.method.synth import make_sequence

    frames = make_sequence(seed, index, n_frames, size)
    seq = Path(folder) / f"seq{index + 1:03d}"
    for t, frame in enumerate(frames):
        write_png(seq / f"{t:04d}.png", frame, PNG_LEVEL, PNG_STRATEGY)
    return len(frames)


def split_ids(n_images: int, seed: int) -> tuple[list[str], list[str]]:
    """A seeded 50/50 split: floor(n/2) train ids, the rest test (1,327 -> 663 / 664, as NUDT-SIRST)."""
    from sirst5k.method.rng import generator

    ids = [f"{i + 1:06d}" for i in range(n_images)]
    order = generator(seed, "synth", "split").permutation(n_images)
    train = sorted(ids[i] for i in order[: n_images // 2])
    test = sorted(ids[i] for i in order[n_images // 2:])
    return train, test


@user_errors
def command(
    out: Annotated[Path, typer.Argument(help="Folder that receives source/ and frames/.")],
    images: Annotated[int, typer.Option(help=P.help("images"))] = P.images,
    sequences: Annotated[int, typer.Option(help=P.help("sequences"))] = P.sequences,
    frames: Annotated[int, typer.Option(help=P.help("frames"))] = P.frames,
    size: Annotated[int, typer.Option(help=P.help("size"))] = P.size,
    seed: Seed = P.seed,
    workers: Workers = None,
    scheduler: Scheduler = None,
    overwrite: Overwrite = False,
) -> None:
    """Write the built-in synthetic infrared source (labelled set + frame sequences)."""
    from sirst5k.runner.tasks import shard_stage

    params = SynthParams(images=images, sequences=sequences, frames=frames, size=size, seed=seed)
    chunks = [list(range(s, min(s + CHUNK, images))) for s in range(0, images, CHUNK)]
    with shard_stage(out / "source", STAGE, workers=workers, scheduler=scheduler, overwrite=overwrite) as src, \
            shard_stage(out / "frames", STAGE, overwrite=overwrite) as frm:
        src.run(_write_images, [(str(src.folder), seed, c, size) for c in chunks], "synth images")
        src.run(_write_sequence, [(str(frm.folder), seed, s, frames, size) for s in range(sequences)], "synth frames")
        train, test = split_ids(images, seed)
        (src.folder / "50_50").mkdir(exist_ok=True)
        (src.folder / "50_50" / "train.txt").write_text("".join(f"{i}\n" for i in train))
        (src.folder / "50_50" / "test.txt").write_text("".join(f"{i}\n" for i in test))
    typer.echo(f"synth: {params.images} images ({len(train)} train / {len(test)} test) in {out / 'source'}, "
               f"{sequences} sequences x {frames} frames in {out / 'frames'}")
