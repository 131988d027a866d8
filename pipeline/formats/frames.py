"""Frame folders: the infrared sequences the noise bank is cut from.

One sub-folder per sequence, or flat files whose names end in a frame number (`S1-161.png`,
`seqA_0003.png`), grouped by the part before the number. Frames are ordered by their number;
a sequence's frame shape is its most common one (`sequence_shape`), read from file headers
(`frame_sizes`) without decoding.

Two checks a bank of real frames wants (`noise-bank --scene-corr`, `--allow-overlap`):

- **Scene runs** (`scene_runs`, `split_scene_runs`). A prefix group of a flat folder, or a
  folder of sparse samples, can be many scenes, and a "temporally stable" pair across a scene
  cut is not a time step. The similarity test: each frame squashed to a 32x32 grey thumbnail
  (PIL box average, aspect ignored), standardised to mean 0 and std 1; two consecutive frames are
  one scene when they have the same size and the correlation of their thumbnails (the mean of
  the product) is at least `min_corr` (two flat thumbnails count as one scene, one flat and one
  not as a cut), or their thumbnails differ by at most `SCENE_RMS` grey levels RMS (a featureless
  scene's thumbnails are noise and do not correlate, yet it is one scene). Frames of one scene a few video frames apart correlate above 0.95; the SIRST-V2
  folders, sparse views of a recording, mostly below 0.7.
- **No test image in the bank** (`check_test_overlap`). A frame is refused when its decoded grey
  pixels equal a test image's (sha256 of shape and pixels: a PNG re-saved as BMP is caught), or
  when it is a resized copy: thumbnails correlating at least `NEAR_CORR` and, with the larger of
  the two resized to the smaller's size by ingest's filter, a mean absolute difference of at most
  `NEAR_MAD` grey levels. The error names both files.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from sirst5k.errors import InputError
from sirst5k.formats.folders import check_root, describe, natural_key, visible
from sirst5k.formats.imageio import image_size, is_image_file, read_grey, resize_image

THUMB = 32  # thumbnail side of the similarity tests
SCENE_RMS = 2.0  # grey levels: thumbnails closer than this (RMS) are one scene whatever they correlate
NEAR_CORR = 0.95  # thumbnails at least this correlated are compared pixel by pixel ...
NEAR_MAD = 3.0  # ... and are one image when they differ by at most this many grey levels on average

_FRAME = re.compile(r"^(.*?)[-_. ]*(\d+)$")


def split_frame_name(stem: str) -> tuple[str, int | None]:
    """`"S1-161"` -> `("S1", 161)`, `"seqA_0003"` -> `("seqA", 3)`, `"still"` -> `("still", None)`."""
    m = _FRAME.match(stem)
    if m is None:
        return stem, None
    return m.group(1), int(m.group(2))


def _frame_key(path: Path) -> tuple:
    """Frames by number, those without one last, ties by name in natural order."""
    _, number = split_frame_name(path.stem)
    return (number is None, number if number is not None else 0, natural_key(path.name))


def list_sequences(root: str | Path) -> dict[str, list[Path]]:
    """Frame sequences under `root`, by name in natural order, frames by frame number.

    Each sub-folder holding images is one sequence (named after the folder). Image files
    directly in `root` are grouped by the name before their trailing frame number (a name
    that is only a number goes to a sequence named after `root`; one without a number is a
    sequence of its own). Callers drop sequences too short for their use.
    """
    root = Path(root)
    entries = check_root(root)
    sequences: dict[str, list[Path]] = {}
    for d in entries:
        if d.is_dir():
            frames = [p for p in visible(d) if is_image_file(p) and p.is_file()]
            if frames:
                sequences[d.name] = sorted(frames, key=_frame_key)
    flat: dict[str, list[Path]] = {}
    for p in entries:
        if p.is_file() and is_image_file(p):
            prefix, _ = split_frame_name(p.stem)
            flat.setdefault(prefix or root.resolve().name, []).append(p)
    for name, frames in flat.items():
        if name in sequences:
            raise InputError(root / name, f"sequence '{name}' is both a sub-folder and a file-name prefix")
        sequences[name] = sorted(frames, key=_frame_key)
    if not sequences:
        raise InputError(
            root,
            f"no frames found (found {describe(entries)}): expected one sub-folder per sequence "
            f"or files named <sequence>-<frame>.png",
        )
    return {name: sequences[name] for name in sorted(sequences, key=natural_key)}


def frame_sizes(frames: Iterable[Path]) -> list[tuple[int, int]]:
    """`(height, width)` of each frame from its header (no decoding)."""
    return [image_size(p) for p in frames]


def sequence_shape(shapes: Iterable[tuple[int, ...]]) -> tuple[int, ...] | None:
    """The frame shape a sequence is taken to have: the most common one, ties going to the one
    seen first (None for no frames).

    The first frame alone would let one odd frame at the start (a different camera mode, a
    rotated still) discard the rest of the sequence.
    """
    counts: dict[tuple[int, ...], int] = {}
    for s in shapes:
        counts[tuple(s)] = counts.get(tuple(s), 0) + 1
    # max() keeps the first of equal counts, and dicts keep first-seen order.
    return max(counts, key=counts.__getitem__) if counts else None


# ---------------------------------------------------------------- one scene, or a cut


def thumbnail(image: np.ndarray, side: int = THUMB, standardise: bool = True) -> np.ndarray:
    """A grey image `[H, W]` as a `[side, side]` float64 thumbnail (PIL box average, aspect ignored),
    standardised to mean 0 and std 1 (all 0 for a flat image); in grey levels with `standardise` off."""
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"image must be [H, W], got shape {img.shape}")
    if img.dtype == np.uint8:  # PIL's own L -> F conversion: the same float32 pixels, ~2x faster than numpy's
        pil = Image.fromarray(np.ascontiguousarray(img)).convert("F")
    else:
        pil = Image.fromarray(np.ascontiguousarray(img, np.float32))
    t = np.asarray(pil.resize((side, side), Image.Resampling.BOX), np.float64)
    return standardised(t) if standardise else t


def standardised(thumb: np.ndarray) -> np.ndarray:
    """A grey-level thumbnail (`thumbnail(..., standardise=False)`) standardised to mean 0 and std 1
    (all 0 for a flat one): `thumbnail(image)` is `standardised(thumbnail(image, standardise=False))`."""
    t = thumb - thumb.mean()
    sd = float(np.sqrt(np.mean(t * t)))
    return t / sd if sd > 1e-6 else np.zeros_like(t)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two standardised thumbnails; 1 for two flat ones, 0 for one flat one."""
    flat_a, flat_b = not a.any(), not b.any()
    if flat_a or flat_b:
        return 1.0 if flat_a and flat_b else 0.0
    return float(np.mean(a * b))


def scene_runs(images: Sequence[np.ndarray], min_corr: float,
               thumbs: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Which run of one scene each frame is in: (run index `[T]` int64, from 0, and the
    correlation of each frame with the one before `[T - 1]`, NaN where the sizes differ).
    thumbs: each image's `thumbnail(image, standardise=False)`, when the caller has them already."""
    raw = [thumbnail(im, standardise=False) for im in images] if thumbs is None else list(thumbs)
    if len(raw) != len(images):
        raise ValueError(f"{len(raw)} thumbnails for {len(images)} images")
    thumbs = [standardised(t) for t in raw]  # one resize a frame
    corr = np.full(max(0, len(thumbs) - 1), np.nan)
    run = np.zeros(len(thumbs), np.int64)
    for i in range(1, len(thumbs)):
        same_size = np.shape(images[i]) == np.shape(images[i - 1])
        close = False
        if same_size:
            corr[i - 1] = similarity(thumbs[i - 1], thumbs[i])
            close = float(np.sqrt(np.mean((raw[i] - raw[i - 1]) ** 2))) <= SCENE_RMS
        run[i] = run[i - 1] + (0 if same_size and (corr[i - 1] >= min_corr or close) else 1)
    return run, corr


def scene_run_index(images: Sequence[np.ndarray | None], min_corr: float,
                    thumbs: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
    """The scene run (`scene_runs`) of each of a sequence's frames, decoded already: `[T]` int64, from 0.

    images: each frame's grey pixels, None for one that could not be read. An unreadable frame, and
    one of another size than most of the sequence's (the noise-bank task skips it, saying so), is no
    cut: it stays in the run of the frame before it (run 0 at the start). thumbs: each image's
    `thumbnail(image, standardise=False)` (None where the image is), when the caller has them.
    """
    where = [i for i, im in enumerate(images) if im is not None]
    common = sequence_shape(np.shape(images[i]) for i in where)
    where = [i for i in where if np.shape(images[i]) == common]
    run_of_readable, _ = scene_runs([images[i] for i in where], min_corr,
                                    None if thumbs is None else [thumbs[i] for i in where])
    readable_run = dict(zip(where, run_of_readable.tolist()))
    run = np.zeros(len(images), np.int64)
    last = 0
    for i in range(len(images)):
        last = readable_run.get(i, last)
        run[i] = last
    return run


def run_names(name: str, run: np.ndarray) -> list[tuple[str, list[int]]]:
    """The runs of one sequence from `scene_run_index`: `(run name, frame indices)` in run order; a
    sequence of one run keeps its name, runs of a cut one are `<name>-run<k>` (k from 1)."""
    n_runs = int(run.max()) + 1 if len(run) else 0
    if n_runs <= 1:
        return [(name, list(range(len(run))))]
    return [(f"{name}-run{k + 1}", np.flatnonzero(run == k).tolist()) for k in range(n_runs)]


def split_scene_runs(sequences: dict[str, list[Path]], min_corr: float, *, skip_bad: bool = False,
                     read: Callable[[Path], np.ndarray] = read_grey) -> dict[str, list[Path]]:
    """Each sequence split at its scene cuts (`scene_runs`); a sequence of one run keeps its
    name, runs of a cut one are named `<name>-run<k>` (k from 1), in frame order.

    Frames are decoded to test them. An unreadable frame raises InputError, or with
    `skip_bad` stays in the run it is in (the noise-bank task then reports it); so does a frame
    of another size than most of its sequence's (the task skips it, saying so). (The noise-bank
    stage splits in its tasks, from the frames it decodes once: `scene_run_index`, `run_names`.)
    """
    out: dict[str, list[Path]] = {}
    for name, paths in sequences.items():
        images: list[np.ndarray | None] = []
        for p in paths:
            try:
                images.append(read(p))
            except InputError:
                if not skip_bad:
                    raise
                images.append(None)
        for run_name, idx in run_names(name, scene_run_index(images, min_corr)):
            out[run_name] = [paths[i] for i in idx]
    return out


# ---------------------------------------------------------------- no test image in the bank


def pixel_hash(image: np.ndarray) -> str:
    """sha256 of a decoded image's shape and pixels (the file's encoding does not enter)."""
    img = np.ascontiguousarray(image)
    return hashlib.sha256(f"{img.shape}{img.dtype.str}".encode() + img.tobytes()).hexdigest()


def evaluation_images(source: str | Path | Sequence[str | Path], split: str = "test") -> Iterator[tuple[str, np.ndarray]]:
    """(name, grey image) of each image of the labelled set's test split.

    source: a shard folder (its `split` shards; names `<shard>:<sample_id>`), a folder of
    images (every image in it, sorted), or a list of image files.
    """
    from sirst5k.formats import shards

    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.exists():
            raise InputError(folder, "test set not found")
        if folder.is_dir():
            found = shards.list_shards(folder, split)
            if found:
                for path in found:
                    images, _, meta = shards.read_shard(path)
                    for sid, img in zip(meta["sample_id"].astype(str), images):
                        yield f"{path}:{sid}", img
                return
            files = sorted((p for p in visible(folder) if p.is_file() and is_image_file(p)),
                           key=lambda p: natural_key(p.name))
            if not files:
                raise InputError(folder, f"no {split} shard and no image in the test set folder")
        else:
            files = [folder]
    else:
        files = [Path(p) for p in source]
    for p in files:
        yield str(p), read_grey(p)


def _near(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two grey images, the larger resized to the smaller's size."""
    if a.size < b.size:
        a, b = b, a
    small = resize_image(np.asarray(a, np.uint8), b.shape)
    return float(np.mean(np.abs(small.astype(np.float64) - b.astype(np.float64))))


def check_test_overlap(frames: Iterable[str | Path], test: Iterable[tuple[str, np.ndarray]], *,
                       allow: bool = False, skip_bad: bool = False, read: Callable[[Path], np.ndarray] = read_grey,
                       near_corr: float = NEAR_CORR, near_mad: float = NEAR_MAD) -> list[str]:
    """Refuse bank frames that are test images (see the module text).

    frames: the bank's frame files; test: (name, image) pairs, as `evaluation_images` gives them.
    Raises InputError naming the first such frame and its test image, unless `allow`; then
    returns one warning line per overlapping frame (an empty list when none overlaps). An
    unreadable frame raises its InputError, or with `skip_bad` is passed over (the noise-bank
    task reports it).
    """
    tests = list(test)
    if not tests:
        return []
    hashes: dict[str, str] = {}
    for name, img in tests:
        hashes.setdefault(pixel_hash(img), name)
    thumbs = np.stack([thumbnail(img).reshape(-1) for _, img in tests])  # [N, THUMB^2]
    n_px = thumbs.shape[1]
    lines = []
    for p in frames:
        p = Path(p)
        try:
            frame = read(p)
        except InputError:
            if skip_bad:
                continue
            raise
        hit = None
        if pixel_hash(frame) in hashes:
            hit = (hashes[pixel_hash(frame)], "the same pixels")
        else:
            corr = thumbs @ thumbnail(frame).reshape(-1) / n_px
            for j in np.flatnonzero(corr >= near_corr):
                mad = _near(frame, tests[j][1])
                if mad <= near_mad:
                    hit = (tests[j][0], f"a resized copy: thumbnails correlate {corr[j]:.3f}, mean difference "
                                        f"{mad:.2f} grey levels at the smaller size")
                    break
        if hit is None:
            continue
        line = f"is test image {hit[0]} ({hit[1]})"
        if not allow:
            raise InputError(p, f"{line}: a bank frame must not be an image the detector is evaluated on; "
                                "remove it or pass --allow-overlap")
        lines.append(f"{p}: {line}; kept (--allow-overlap)")
    return lines
