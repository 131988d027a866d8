"""Labelled infrared datasets and frame folders in the layouts they are published in.

Labelled layouts (`root` is the dataset folder):

- ``dnanet``: `images/<id>.png`, `masks/<id>.png`, `<split>/train.txt` and `<split>/test.txt`
  (DNANet's `50_50`; the folder named `50_50` wins when there are several).
- ``basicirstd``: `images/`, `masks/`, `img_idx/train_<NAME>.txt` and `img_idx/test_<NAME>.txt`
  (the NAME equal to the folder's name wins when there are several).
- ``sirst`` (SIRST v1 / NUAA-SIRST as published): `images/<id>.png`,
  `masks/<id>_pixels0.png`, `idx_427/trainval.txt` (train) and `idx_427/test.txt`.
- ``sirst-v2`` (github YimianDai/open-sirst-v2): `images/targets/` and `images/backgrounds/`,
  `annotations/masks/<id>_pixels0.png`, `splits/trainval_full.txt` (train) and
  `splits/test_full.txt` (test), the split the authors' DeepInfrared configs train on; when
  those are missing, the `*_v1fullv2target` and then the `mini_*` pair.
- ``folder``: `images/` and `masks/` with matching stems (or `<id>_pixels0`) and no split lists;
  split by a seeded draw (`pipeline.rng.generator(seed, "split", <folder name>)`).

In every layout a mask may be named `<id>` or `<id>_pixels0`, and images and masks may be any
of `IMAGE_EXTENSIONS`. Split lists may have CRLF endings, a BOM, blank lines, `#` comments and
entries with a file extension or folder.

Frame folders (`list_sequences`): one sub-folder per sequence, or flat files whose names end
in a frame number (`S1-161.png`, `seqA_0003.png`), grouped by the part before the number.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sirst5k.errors import InputError
from sirst5k.formats.imageio import (
    IMAGE_EXTENSIONS,
    image_size,
    is_image_file,
    read_grey,
    read_mask,
    resize_image,
    resize_mask,
)
from sirst5k.method.rng import generator

LAYOUTS: tuple[str, ...] = ("dnanet", "basicirstd", "sirst", "sirst-v2", "folder")
LAYOUT_CHOICES = "auto|" + "|".join(LAYOUTS)
SPLITS: tuple[str, ...] = ("train", "test")

#: Largest relative difference between a mask's and its image's width/height ratio that is
#: still taken as the same picture at another scale (SIRST's Misc_111: 592x400 vs 325x220).
ASPECT_TOLERANCE = 0.01

_SIRST_V2_SPLITS = (
    ("trainval_full", "test_full"),
    ("trainval_v1fullv2target", "test_v1fullv2target"),
    ("mini_trainval", "mini_test"),
)
_EXT_RANK = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}


@dataclass(frozen=True)
class SampleRef:
    """One labelled image on disk. `mask` None means a known target-free image."""

    id: str
    image: Path
    mask: Path | None
    split: str  # "train" | "test"


@dataclass
class LabelledSet:
    """The samples of one labelled dataset, train first, then test, each in list order."""

    layout: str
    root: Path
    samples: list[SampleRef]
    problems: list[str] = field(default_factory=list)
    split_files: dict[str, Path] = field(default_factory=dict)

    @property
    def train(self) -> list[SampleRef]:
        return [s for s in self.samples if s.split == "train"]

    @property
    def test(self) -> list[SampleRef]:
        return [s for s in self.samples if s.split == "test"]


@dataclass
class LoadedSample:
    """Pixels of one sample: image uint8 `[S, S]`, mask uint8 `[S, S]` in {0, 255}."""

    image: np.ndarray
    mask: np.ndarray
    orig_h: int
    orig_w: int
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- helpers


def natural_key(text: str) -> tuple:
    """Sort key that orders `a2` before `a10`."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", text) if t)


def _visible(folder: Path) -> list[Path]:
    try:
        return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: natural_key(p.name))
    except PermissionError:
        raise InputError(folder, "cannot list folder: permission denied") from None
    except OSError as err:
        raise InputError(folder, f"cannot list folder: {err.strerror or err}") from None


def _check_root(root: Path) -> list[Path]:
    if not root.exists():
        raise InputError(root, "no such folder")
    if not root.is_dir():
        raise InputError(root, "not a folder")
    entries = _visible(root)
    if not entries:
        raise InputError(root, "folder is empty")
    return entries


def _index_images(folders: Iterable[Path]) -> dict[str, list[Path]]:
    """stem -> image files with that stem, `.png` first."""
    index: dict[str, list[Path]] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in _visible(folder):
            if is_image_file(p) and p.is_file():
                index.setdefault(p.stem, []).append(p)
    for paths in index.values():
        paths.sort(key=lambda p: (_EXT_RANK.get(p.suffix.lower(), 99), str(p)))
    return index


def _uses_pixels0(mask_dir: Path) -> bool:
    stems = [p.stem for p in _visible(mask_dir) if is_image_file(p)] if mask_dir.is_dir() else []
    return bool(stems) and 2 * sum(s.endswith("_pixels0") for s in stems) > len(stems)


def _split_dirs(root: Path, first: str) -> list[Path]:
    """Sub-folders of `root` (not images/masks/img_idx) holding `<first>.txt` and `test.txt`."""
    return [
        d
        for d in _visible(root)
        if d.is_dir()
        and d.name not in ("images", "masks", "img_idx")
        and (d / f"{first}.txt").is_file()
        and (d / "test.txt").is_file()
    ]


def _basic_names(root: Path) -> list[str]:
    idx = root / "img_idx"
    if not idx.is_dir():
        return []
    names = [p.name[len("train_") : -len(".txt")] for p in _visible(idx) if re.fullmatch(r"train_.+\.txt", p.name)]
    return [n for n in names if (idx / f"test_{n}.txt").is_file()]


def _is_v2(root: Path) -> bool:
    return (root / "annotations" / "masks").is_dir() and any(
        (root / "images" / sub).is_dir() for sub in ("targets", "backgrounds")
    )


def _describe(entries: list[Path], limit: int = 12) -> str:
    names = [p.name + ("/" if p.is_dir() else "") for p in entries]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# ---------------------------------------------------------------------------- detection


def _signatures(root: Path) -> list[tuple[str, str]]:
    """(layout, evidence) for every layout whose marks `root` carries."""
    found: list[tuple[str, str]] = []
    if _is_v2(root):
        found.append(("sirst-v2", "images/targets|backgrounds/ + annotations/masks/"))
    if not ((root / "images").is_dir() and (root / "masks").is_dir()):
        return found
    names = _basic_names(root)
    if names:
        found.append(("basicirstd", ", ".join(f"img_idx/train_{n}.txt" for n in names)))
    pixels0 = _uses_pixels0(root / "masks")
    sirst = _split_dirs(root, "trainval") if pixels0 else []
    if sirst:
        found.append(("sirst", ", ".join(f"{d.name}/trainval.txt" for d in sirst) + " + masks/*_pixels0"))
    dnanet = [d for d in _split_dirs(root, "train") if d not in sirst]
    if dnanet:
        found.append(("dnanet", ", ".join(f"{d.name}/train.txt" for d in dnanet)))
    if not found:
        found.append(("folder", "images/ + masks/, no split lists"))
    return found


def detect_layout(root: str | Path) -> str:
    """Which of `LAYOUTS` the folder is in; InputError when none or several fit."""
    root = Path(root)
    entries = _check_root(root)
    found = _signatures(root)
    if len(found) == 1:
        return found[0][0]
    if found:
        what = "; ".join(f"{layout} ({evidence})" for layout, evidence in found)
        raise InputError(
            root, f"ambiguous dataset layout: looks like {what}; choose one with --layout {LAYOUT_CHOICES}"
        )
    raise InputError(
        root,
        f"unknown dataset layout: found {_describe(entries)}; expected images/ and masks/ "
        f"(dnanet, basicirstd, sirst, folder) or images/targets/ and annotations/masks/ (sirst-v2); "
        f"--layout {LAYOUT_CHOICES}",
    )


# ---------------------------------------------------------------------------- listing


@dataclass
class _Plan:
    image_dirs: list[Path]
    mask_dir: Path
    mask_names: tuple[str, ...]  # format strings for a mask's stem, tried in order
    lists: dict[str, Path] | None  # split -> list file; None = seeded split


def _pick(root: Path, candidates: list[Path], preferred: str, what: str) -> Path:
    if not candidates:
        raise InputError(root, f"not a {what} dataset: no split lists found")
    for d in candidates:
        if d.name == preferred:
            return d
    if len(candidates) == 1:
        return candidates[0]
    names = ", ".join(d.name for d in candidates)
    raise InputError(root, f"several {what} split folders ({names}) and none named {preferred}; keep one")


def _plan(root: Path, layout: str) -> _Plan:
    images, masks = root / "images", root / "masks"
    if layout != "sirst-v2":
        for d in (images, masks):
            if not d.is_dir():
                raise InputError(d, f"no such folder (the {layout} layout needs images/ and masks/)")
    either = ("{}", "{}_pixels0")
    if layout == "folder":
        return _Plan([images], masks, either, None)
    if layout == "dnanet":
        d = _pick(root, _split_dirs(root, "train"), "50_50", "dnanet")
        return _Plan([images], masks, either, {"train": d / "train.txt", "test": d / "test.txt"})
    if layout == "sirst":
        d = _pick(root, _split_dirs(root, "trainval"), "idx_427", "sirst")
        return _Plan([images], masks, either[::-1], {"train": d / "trainval.txt", "test": d / "test.txt"})
    if layout == "basicirstd":
        names = _basic_names(root)
        if not names:
            raise InputError(root / "img_idx", "not a basicirstd dataset: no train_<NAME>.txt with test_<NAME>.txt")
        if root.resolve().name in names:
            name = root.resolve().name
        elif len(names) == 1:
            name = names[0]
        else:
            raise InputError(
                root / "img_idx", f"split lists for several datasets ({', '.join(names)}), none named after the folder"
            )
        idx = root / "img_idx"
        return _Plan([images], masks, either, {"train": idx / f"train_{name}.txt", "test": idx / f"test_{name}.txt"})
    if layout == "sirst-v2":
        dirs = [root / "images" / sub for sub in ("targets", "backgrounds") if (root / "images" / sub).is_dir()]
        if not dirs:
            raise InputError(root / "images", "not a sirst-v2 dataset: no images/targets/ or images/backgrounds/")
        mask_dir = root / "annotations" / "masks"
        if not mask_dir.is_dir():
            raise InputError(mask_dir, "no such folder (the sirst-v2 layout keeps masks there)")
        splits = root / "splits"
        for train, test in _SIRST_V2_SPLITS:
            if (splits / f"{train}.txt").is_file() and (splits / f"{test}.txt").is_file():
                lists = {"train": splits / f"{train}.txt", "test": splits / f"{test}.txt"}
                return _Plan(dirs, mask_dir, either[::-1], lists)
        raise InputError(splits, "no split lists: expected trainval_full.txt and test_full.txt")
    raise InputError(None, f"unknown layout '{layout}': use --layout {LAYOUT_CHOICES}")


def read_split_list(path: Path) -> list[tuple[int, str]]:
    """(line number, id) for each entry of a split list.

    CRLF/CR endings, a UTF-8 BOM, blank lines and `#` comments are accepted; an entry written
    as a path or with an image extension is reduced to its stem.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(path, "cannot read split list: not UTF-8 text") from None
    except IsADirectoryError:
        raise InputError(path, "cannot read split list: is a directory") from None
    except OSError as err:
        raise InputError(path, f"cannot read split list: {err.strerror or err}") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        entry = entry.replace("\\", "/").rsplit("/", 1)[-1]
        if entry.lower().endswith(IMAGE_EXTENSIONS):
            entry = entry[: entry.rfind(".")]
        entries.append((number, entry))
    return entries


def seeded_split(ids: list[str], ratio: float, seed: int, key: str) -> dict[str, str]:
    """id -> "train" | "test", `round(ratio * n)` train ids drawn by (seed, "split", key).

    With at least two ids and 0 < ratio < 1 both splits get at least one id. The draw is over
    the ids in natural order, so it depends only on the set of ids, the seed and the key.
    """
    if not 0.0 <= ratio <= 1.0:
        raise InputError(None, f"split ratio must be between 0 and 1, got {ratio}")
    ordered = sorted(ids, key=natural_key)
    n = len(ordered)
    n_train = int(round(ratio * n))
    if n >= 2 and 0.0 < ratio < 1.0:
        n_train = min(max(n_train, 1), n - 1)
    order = generator(seed, "split", key).permutation(n)
    train = {ordered[i] for i in order[:n_train]}
    return {i: ("train" if i in train else "test") for i in ordered}


def list_labelled(
    root: str | Path,
    layout: str = "auto",
    *,
    split_ratio: float = 0.5,
    seed: int = 0,
    skip_bad: bool = False,
) -> LabelledSet:
    """List a labelled dataset's samples without reading any pixels.

    Per-file problems (a listed id with no image, an image with no mask, an id twice, two
    image files for one id, an empty split list) raise InputError naming the file, or with
    `skip_bad` are recorded in `LabelledSet.problems` and the sample left out (of a duplicate,
    the later occurrence; an id in both splits stays in train).
    """
    root = Path(root)
    _check_root(root)
    if layout == "auto":
        layout = detect_layout(root)
    elif layout not in LAYOUTS:
        raise InputError(None, f"unknown layout '{layout}': use --layout {LAYOUT_CHOICES}")
    plan = _plan(root, layout)

    problems: list[str] = []

    def bad(err: InputError) -> None:
        if not skip_bad:
            raise err
        problems.append(str(err))

    images = _index_images(plan.image_dirs)
    if not images:
        where = ", ".join(f"{d.relative_to(root)}/" for d in plan.image_dirs)
        where_err = plan.image_dirs[0] if len(plan.image_dirs) == 1 else root
        raise InputError(where_err, f"no images ({'/'.join(IMAGE_EXTENSIONS)}) in {where}")
    masks = _index_images([plan.mask_dir])

    def resolve(sample_id: str, split: str, where: Path, line: int | None) -> SampleRef | None:
        found = images.get(sample_id)
        if not found:
            at = f"line {line}: " if line is not None else ""
            dirs = ", ".join(f"{d.relative_to(root)}/" for d in plan.image_dirs)
            bad(InputError(where, f"{at}'{sample_id}' has no image in {dirs}"))
            return None
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            bad(InputError(found[0].parent / sample_id, f"several image files for one id: {names}"))
            return None
        mask = next((masks[n.format(sample_id)][0] for n in plan.mask_names if n.format(sample_id) in masks), None)
        if mask is None:
            expected = " or ".join(n.format(sample_id) + ".png" for n in plan.mask_names)
            bad(InputError(found[0], f"no mask: expected {plan.mask_dir.relative_to(root)}/{expected}"))
            return None
        return SampleRef(sample_id, found[0], mask, split)

    samples: list[SampleRef] = []
    if plan.lists is None:
        assignment = seeded_split(list(images), split_ratio, seed, root.resolve().name)
        for split in SPLITS:
            for sample_id in (i for i, s in assignment.items() if s == split):
                ref = resolve(sample_id, split, plan.image_dirs[0], None)
                if ref is not None:
                    samples.append(ref)
    else:
        seen: dict[str, tuple[str, Path, int]] = {}
        for split in SPLITS:
            list_file = plan.lists[split]
            entries = read_split_list(list_file)
            if not entries:
                bad(InputError(list_file, "split list is empty"))
            for line, sample_id in entries:
                if sample_id in seen:
                    first_split, first_file, first_line = seen[sample_id]
                    if first_split == split:
                        problem = f"line {line}: id '{sample_id}' listed twice (first on line {first_line})"
                        bad(InputError(list_file, problem))
                    else:
                        first = f"{first_file.name} line {first_line}"
                        bad(InputError(list_file, f"line {line}: id '{sample_id}' is in both {first_split} ({first}) and {split}"))
                    continue
                seen[sample_id] = (split, list_file, line)
                ref = resolve(sample_id, split, list_file, line)
                if ref is not None:
                    samples.append(ref)

    if not samples:
        detail = f": {len(problems)} problems, first: {problems[0]}" if problems else ""
        raise InputError(root, f"no usable samples{detail}")
    return LabelledSet(layout, root, samples, problems, dict(plan.lists or {}))


# ---------------------------------------------------------------------------- loading


def load_sample(ref: SampleRef, size: int | tuple[int, int] | None) -> LoadedSample:
    """Read one sample's image and mask and bring both to `size` (None = the image's own).

    A mask at another scale of the same picture (aspect ratio within `ASPECT_TOLERANCE`) is
    resized to its image (nearest) with a warning; any other size mismatch is an InputError
    naming the mask. Images resize bilinear, masks nearest. No target is fine; a mask whose
    every target the resize erases gives a warning naming it.
    """
    image = read_grey(ref.image)
    h, w = image.shape
    warnings: list[str] = []
    if ref.mask is None:
        mask = np.zeros_like(image)
    else:
        mask, found = read_mask(ref.mask)
        warnings.extend(found)
    had_target = bool(mask.any())
    mh, mw = mask.shape
    if (mh, mw) != (h, w):
        if abs(mw * h - w * mh) > ASPECT_TOLERANCE * w * mh:
            raise InputError(ref.mask, f"mask is {mw}x{mh} but image is {w}x{h} (aspect ratio differs)")
        mask = resize_mask(mask, (h, w))
        warnings.append(f"{ref.mask}: mask is {mw}x{mh} but image is {w}x{h}; resized to the image (nearest)")
    if size is not None:
        image = resize_image(image, size)
        mask = resize_mask(mask, size)
    if had_target and not mask.any():
        # Nearest-neighbour sampling steps over a target smaller than the resize step. The
        # sample stays, as an image with no target, but the user should know its label is gone.
        sh, sw = mask.shape
        warnings.append(f"{ref.mask}: resizing the {mw}x{mh} mask to {sw}x{sh} erased every target "
                        f"(smaller than the resize step); kept as an image with no target")
    return LoadedSample(image, mask, h, w, warnings)


# ---------------------------------------------------------------------------- sequences

_FRAME = re.compile(r"^(.*?)[-_. ]*(\d+)$")


def split_frame_name(stem: str) -> tuple[str, int | None]:
    """`"S1-161"` -> `("S1", 161)`, `"seqA_0003"` -> `("seqA", 3)`, `"still"` -> `("still", None)`."""
    m = _FRAME.match(stem)
    if m is None:
        return stem, None
    return m.group(1), int(m.group(2))


def _frame_key(path: Path) -> tuple:
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
    entries = _check_root(root)
    sequences: dict[str, list[Path]] = {}
    for d in entries:
        if d.is_dir():
            frames = [p for p in _visible(d) if is_image_file(p) and p.is_file()]
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
            f"no frames found (found {_describe(entries)}): expected one sub-folder per sequence "
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

