"""Frame folders: the infrared sequences the noise bank is cut from.

One sub-folder per sequence, or flat files whose names end in a frame number (`S1-161.png`,
`seqA_0003.png`), grouped by the part before the number. Frames are ordered by their number;
a sequence's frame shape is its most common one (`sequence_shape`), read from file headers
(`frame_sizes`) without decoding.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from sirst5k.errors import InputError
from sirst5k.formats.folders import check_root, describe, natural_key, visible
from sirst5k.formats.imageio import image_size, is_image_file

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
