"""Labelled infrared datasets in the layouts they are published in, as a small registry.

Each layout is one `Layout` of `REGISTRY`: its name, `detect(root)` (the evidence that `root`
is in that layout, or None) and `plan(root)` (where its images, masks and split lists are).
`LAYOUTS`, and `LAYOUT_CHOICES` with "auto", are the registry's names: the one place they are
written. `detect_layout` asks every layout; `list_labelled` lists the samples of one.

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
  split by a seeded draw (`sirst5k.method.rng.generator(seed, "split", <folder name>)`).

In every layout a mask may be named `<id>` or `<id>_pixels0`, and images and masks may be any
of `IMAGE_EXTENSIONS`. Split lists may have CRLF endings, a BOM, blank lines, `#` comments and
entries with a file extension or folder.

Frame folders (the sequences the noise bank is cut from) are `formats.frames`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sirst5k.errors import InputError
from sirst5k.formats.folders import check_root, describe, natural_key, visible
from sirst5k.formats.imageio import (
    IMAGE_EXTENSIONS,
    is_image_file,
    read_grey,
    read_mask,
    resize_image,
    resize_mask,
)
from sirst5k.method.rng import generator

from sirst5k.params import Layout as LayoutName, choices

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
_EITHER = ("{}", "{}_pixels0")  # a mask's stem: `<id>` or `<id>_pixels0`, tried in this order


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
    # ids of the images that no split list names (a layout with lists only): not samples
    unlisted: list[str] = field(default_factory=list)

    @property
    def train(self) -> list[SampleRef]:
        return [s for s in self.samples if s.split == "train"]

    @property
    def test(self) -> list[SampleRef]:
        return [s for s in self.samples if s.split == "test"]


@dataclass
class LoadedSample:
    """Pixels of one sample: image uint8 `[H, W]`, mask uint8 `[H, W]` in {0, 255}; with
    `keep_aspect` the valid (unpadded) box `valid_h` x `valid_w` at the top-left, -1 when not padded."""

    image: np.ndarray
    mask: np.ndarray
    orig_h: int
    orig_w: int
    warnings: list[str] = field(default_factory=list)
    valid_h: int = -1
    valid_w: int = -1


@dataclass
class _Plan:
    """Where one dataset's files are: what `list_labelled` reads, whatever the layout."""

    image_dirs: list[Path]
    mask_dir: Path
    mask_names: tuple[str, ...]  # format strings for a mask's stem, tried in order
    lists: dict[str, Path] | None  # split -> list file; None = seeded split


# ---------------------------------------------------------------------------- helpers


def _index_images(folders: Iterable[Path]) -> dict[str, list[Path]]:
    """stem -> image files with that stem, `.png` first."""
    index: dict[str, list[Path]] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in visible(folder):
            if is_image_file(p) and p.is_file():
                index.setdefault(p.stem, []).append(p)
    for paths in index.values():
        paths.sort(key=lambda p: (_EXT_RANK.get(p.suffix.lower(), 99), str(p)))
    return index


def _has_pair(root: Path) -> bool:
    return (root / "images").is_dir() and (root / "masks").is_dir()


def _pair(root: Path, layout: str) -> tuple[Path, Path]:
    """images/ and masks/ of a layout that needs them; InputError naming the missing one."""
    images, masks = root / "images", root / "masks"
    for d in (images, masks):
        if not d.is_dir():
            raise InputError(d, f"no such folder (the {layout} layout needs images/ and masks/)")
    return images, masks


def _uses_pixels0(mask_dir: Path) -> bool:
    stems = [p.stem for p in visible(mask_dir) if is_image_file(p)] if mask_dir.is_dir() else []
    return bool(stems) and 2 * sum(s.endswith("_pixels0") for s in stems) > len(stems)


def _split_dirs(root: Path, first: str) -> list[Path]:
    """Sub-folders of `root` (not images/masks/img_idx) holding `<first>.txt` and `test.txt`."""
    return [
        d
        for d in visible(root)
        if d.is_dir()
        and d.name not in ("images", "masks", "img_idx")
        and (d / f"{first}.txt").is_file()
        and (d / "test.txt").is_file()
    ]


def _sirst_dirs(root: Path) -> list[Path]:
    """Split folders with `trainval.txt`, when the masks are named `<id>_pixels0` (SIRST's marks)."""
    return _split_dirs(root, "trainval") if _uses_pixels0(root / "masks") else []


def _basic_names(root: Path) -> list[str]:
    idx = root / "img_idx"
    if not idx.is_dir():
        return []
    names = [p.name[len("train_") : -len(".txt")] for p in visible(idx) if re.fullmatch(r"train_.+\.txt", p.name)]
    return [n for n in names if (idx / f"test_{n}.txt").is_file()]


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


# ---------------------------------------------------------------------------- the layouts


def _detect_dnanet(root: Path) -> str | None:
    if not _has_pair(root):
        return None
    sirst = _sirst_dirs(root)
    dirs = [d for d in _split_dirs(root, "train") if d not in sirst]
    return ", ".join(f"{d.name}/train.txt" for d in dirs) or None


def _plan_dnanet(root: Path) -> _Plan:
    images, masks = _pair(root, "dnanet")
    d = _pick(root, _split_dirs(root, "train"), "50_50", "dnanet")
    return _Plan([images], masks, _EITHER, {"train": d / "train.txt", "test": d / "test.txt"})


def _detect_basicirstd(root: Path) -> str | None:
    names = _basic_names(root) if _has_pair(root) else []
    return ", ".join(f"img_idx/train_{n}.txt" for n in names) or None


def _plan_basicirstd(root: Path) -> _Plan:
    images, masks = _pair(root, "basicirstd")
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
    return _Plan([images], masks, _EITHER, {"train": idx / f"train_{name}.txt", "test": idx / f"test_{name}.txt"})


def _detect_sirst(root: Path) -> str | None:
    dirs = _sirst_dirs(root) if _has_pair(root) else []
    return ", ".join(f"{d.name}/trainval.txt" for d in dirs) + " + masks/*_pixels0" if dirs else None


def _plan_sirst(root: Path) -> _Plan:
    images, masks = _pair(root, "sirst")
    d = _pick(root, _split_dirs(root, "trainval"), "idx_427", "sirst")
    return _Plan([images], masks, _EITHER[::-1], {"train": d / "trainval.txt", "test": d / "test.txt"})


def _detect_sirst_v2(root: Path) -> str | None:
    has_images = any((root / "images" / sub).is_dir() for sub in ("targets", "backgrounds"))
    if (root / "annotations" / "masks").is_dir() and has_images:
        return "images/targets|backgrounds/ + annotations/masks/"
    return None


def _plan_sirst_v2(root: Path) -> _Plan:
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
            return _Plan(dirs, mask_dir, _EITHER[::-1], lists)
    raise InputError(splits, "no split lists: expected trainval_full.txt and test_full.txt")


def _detect_folder(root: Path) -> str | None:
    return "images/ + masks/, no split lists" if _has_pair(root) else None


def _plan_folder(root: Path) -> _Plan:
    images, masks = _pair(root, "folder")
    return _Plan([images], masks, _EITHER, None)


@dataclass(frozen=True)
class Layout:
    """One published layout: `detect(root)` gives the evidence that `root` is in it (None when
    it is not), `plan(root)` where its files are (InputError naming what is missing)."""

    name: str
    detect: Callable[[Path], str | None]
    plan: Callable[[Path], _Plan]
    fallback: bool = False  # taken only when no other layout is detected


REGISTRY: tuple[Layout, ...] = (
    Layout("dnanet", _detect_dnanet, _plan_dnanet),
    Layout("basicirstd", _detect_basicirstd, _plan_basicirstd),
    Layout("sirst", _detect_sirst, _plan_sirst),
    Layout("sirst-v2", _detect_sirst_v2, _plan_sirst_v2),
    Layout("folder", _detect_folder, _plan_folder, fallback=True),
)
LAYOUTS: tuple[str, ...] = tuple(layout.name for layout in REGISTRY)
LAYOUT_CHOICES: tuple[str, ...] = ("auto", *LAYOUTS)  # what --layout accepts
# The command line's choices (`sirst5k.params.Layout`, which must stay light) name these entries.
if LAYOUT_CHOICES != choices(LayoutName):
    raise ImportError(f"sirst5k.params.Layout {choices(LayoutName)} does not name the layout registry {LAYOUT_CHOICES}")
_BY_NAME = {layout.name: layout for layout in REGISTRY}
_CHOICES = "|".join(LAYOUT_CHOICES)


# ---------------------------------------------------------------------------- detection


def _signatures(root: Path) -> list[tuple[str, str]]:
    """(layout, evidence) for every layout whose marks `root` carries; a fallback layout only
    when no other is found."""
    for fallback in (False, True):
        found = [(lay.name, ev) for lay in REGISTRY if lay.fallback == fallback and (ev := lay.detect(root))]
        if found:
            return found
    return []


def detect_layout(root: str | Path) -> str:
    """Which of `LAYOUTS` the folder is in; InputError when none or several fit."""
    root = Path(root)
    entries = check_root(root)
    found = _signatures(root)
    if len(found) == 1:
        return found[0][0]
    if found:
        what = "; ".join(f"{layout} ({evidence})" for layout, evidence in found)
        raise InputError(root, f"ambiguous dataset layout: looks like {what}; choose one with --layout {_CHOICES}")
    raise InputError(
        root,
        f"unknown dataset layout: found {describe(entries)}; expected images/ and masks/ "
        f"(dnanet, basicirstd, sirst, folder) or images/targets/ and annotations/masks/ (sirst-v2); "
        f"--layout {_CHOICES}",
    )


# ---------------------------------------------------------------------------- listing


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
    check_root(root)
    if layout == "auto":
        layout = detect_layout(root)
    elif layout not in _BY_NAME:
        raise InputError(None, f"unknown layout '{layout}': use --layout {_CHOICES}")
    plan = _BY_NAME[layout].plan(root)

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
    # e.g. SIRST read as dnanet: its val.txt's 85 images are in neither train.txt nor test.txt
    unlisted = [] if plan.lists is None else [i for i in images if i not in seen]
    return LabelledSet(layout, root, samples, problems, dict(plan.lists or {}), unlisted)


def unlisted_note(labelled: LabelledSet, shown: int = 3) -> str | None:
    """One line on the images no split list names (None if every image is listed): how many,
    a few ids, and the lists that were read."""
    ids = labelled.unlisted
    if not ids:
        return None
    lists = " nor ".join(str(p.relative_to(labelled.root)) if p.is_relative_to(labelled.root) else str(p)
                         for p in labelled.split_files.values())
    more = ", ..." if len(ids) > shown else ""
    return (f"{labelled.root}: {len(ids)} image(s) are in neither {lists} ({', '.join(ids[:shown])}{more}); "
            f"not ingested (another --layout may list them)")


# ---------------------------------------------------------------------------- loading


def fit_long_side(h: int, w: int, size: int) -> tuple[int, int]:
    """(height, width) of an h x w image whose long side is resized to `size`, aspect kept
    (the short side rounded, at least 1 px)."""
    if h >= w:
        return int(size), max(1, int(round(w * size / h)))
    return max(1, int(round(h * size / w))), int(size)


def load_sample(ref: SampleRef, size: int | tuple[int, int] | None, keep_aspect: bool = False) -> LoadedSample:
    """Read one sample's image and mask and bring both to `size` (None = the image's own).

    With `keep_aspect` (an int `size`) the long side is resized to `size` (image bilinear, mask
    nearest) and the rest zero-padded to `size` x `size`, the image at the top-left; the valid
    box is recorded (`valid_h`, `valid_w`; -1 when there is no padding).

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
    valid = (-1, -1)
    if size is not None and keep_aspect:
        side = int(size)
        fit = fit_long_side(h, w, side)
        image, mask = _pad_square(resize_image(image, fit), side), _pad_square(resize_mask(mask, fit), side)
        if fit != (side, side):
            valid = fit
    elif size is not None:
        image = resize_image(image, size)
        mask = resize_mask(mask, size)
    if had_target and not mask.any():
        # Nearest-neighbour sampling steps over a target smaller than the resize step. The
        # sample stays, as an image with no target, but the user should know its label is gone.
        sh, sw = mask.shape
        warnings.append(f"{ref.mask}: resizing the {mw}x{mh} mask to {sw}x{sh} erased every target "
                        f"(smaller than the resize step); kept as an image with no target")
    return LoadedSample(image, mask, h, w, warnings, *valid)


PAD_VALUE = 0  # what --keep-aspect pads images and masks with (recorded per sample: `pad_value`)


def _pad_square(array: np.ndarray, side: int) -> np.ndarray:
    """`array` [h, w] at the top-left of a `side` x `side` array of PAD_VALUE."""
    out = np.full((side, side), PAD_VALUE, np.uint8)
    out[: array.shape[0], : array.shape[1]] = array
    return out
