"""Export a shard dataset as the PNG folders DNANet and BasicIRSTD train from unchanged.

dnanet:      OUT/images/<id>.png, OUT/masks/<id>.png, OUT/50_50/<split>.txt
basicirstd:  OUT/images/<id>.png, OUT/masks/<id>.png, OUT/img_idx/<split>_<name>.txt

Images are 8-bit grey, masks 0/255; index files list one id a line (LF), in shard order. Every
file is written into the hidden sibling `.OUT.partial/` (`staged_folder`, with the output's
lock), which is renamed to OUT when complete, so OUT is either absent, the old content, or the
whole export; a killed export's partial folder is discarded by the next one.

Sample ids become file names by `file_name_id`: ASCII letters, digits and `-_.+~,=@()` stay as
they are, every other character (space, `/`, `\\`, `%`, non-ASCII, control) becomes `%XX` per
UTF-8 byte, and a leading `.` becomes `%2E`. The same escaped id is written in the index files,
so both toolboxes (which read whitespace-free tokens and append `.png`) find every file; the
escaping is reversible (`urllib.parse.unquote`) and ids that are already safe are unchanged.
"""

from __future__ import annotations

import os
import string
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image

from sirst5k.runner.cluster import progress_bar
from sirst5k.errors import InputError, OutputError
from sirst5k.runner.outputs import staged_folder
from sirst5k.sources import open_source
from sirst5k.formats.shards import read_meta

LAYOUTS = ("dnanet", "basicirstd")
DNANET_SPLIT_DIR = "50_50"
BLOCK = 64  # rows read from a shard at once
SAFE_ID_CHARS = frozenset(string.ascii_letters + string.digits + "-_.+~,=@()")


def file_name_id(sample_id: str) -> str:
    """The id as it appears in file names and index files (see the module doc): safe ids unchanged."""
    out = []
    for i, c in enumerate(sample_id):
        if c in SAFE_ID_CHARS and not (i == 0 and c == "."):
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
    return "".join(out)


def index_path(layout: str, split: str, name: str) -> str:
    """Where a split's id list goes, relative to OUT."""
    if layout == "dnanet":
        return f"{DNANET_SPLIT_DIR}/{split}.txt"
    if layout == "basicirstd":
        return f"img_idx/{split}_{name}.txt"
    raise ValueError(f"unknown layout {layout!r}: use {' or '.join(LAYOUTS)}")


def export_dataset(
    source: str | Path,
    out: str | Path,
    layout: str = "dnanet",
    name: str = "SIRST5K",
    overwrite: bool = False,
    compress_level: int = 1,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Write every split of `source` (manifest, dataset folder or shard folder) to `out`.

    `out` may be absent or an empty folder; a non-empty one only with `overwrite`, and never the
    source, inside it or a folder holding it. Returns {"out", "layout", "splits": {split:
    n_samples}, "samples", "escaped": ids written under an escaped name}.
    """
    if layout not in LAYOUTS:
        raise InputError(None, f"unknown layout {layout!r}: use {' or '.join(LAYOUTS)}")
    if not name or any(c in name for c in "/\\\n\r\t ") or name.startswith("."):
        raise InputError(None, f"--name {name!r} cannot be part of a file name")
    out = Path(out)
    check_target(out, overwrite)
    src = open_source(source)
    plan, escaped = _plan(src.splits)
    total = sum(len(ids) for shards in plan.values() for _, ids in shards)
    inputs = [Path(source), src.root, *([src.manifest_path] if src.manifest_path else [])]
    # the policy on an existing OUT is check_target's; staged_folder refuses inputs, locks, stages
    with staged_folder(out, inputs=inputs, overwrite=overwrite, resume=False) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool, progress_bar(
            "export", total, show_progress
        ) as advance:
            for shards in plan.values():
                for path, ids in shards:
                    _write_shard_pngs(pool, path, ids, tmp, compress_level, advance)
        for split, shards in plan.items():
            ids = [i for _, shard_ids in shards for i in shard_ids]
            target = tmp / index_path(layout, split, name)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(("".join(f"{i}\n" for i in ids)).encode())
            except OSError as err:
                raise OutputError(target, f"cannot write: {err.strerror or err}") from err
    splits = {split: sum(len(ids) for _, ids in shards) for split, shards in plan.items()}
    return {"out": str(out), "layout": layout, "splits": splits, "samples": total, "escaped": escaped}


def _plan(splits: dict[str, list[tuple[str, int]]]) -> tuple[dict[str, list[tuple[str, list[str]]]], int]:
    """Each split's shards with their ids as file names (escaped), checked to be unique; and how
    many ids had to be escaped. Everything is known here, before a file is written."""
    plan: dict[str, list[tuple[str, list[str]]]] = {}
    seen: dict[str, str] = {}
    escaped = 0
    for split, shards in splits.items():
        plan[split] = []
        for path, _ in shards:
            ids = [str(i) for i in read_meta(path)["sample_id"]]
            names = []
            for sample_id in ids:
                if not sample_id:
                    raise InputError(path, "a sample has an empty sample_id: it cannot be a file name")
                if sample_id in seen:
                    raise InputError(path, f"sample_id {sample_id!r} also in split {seen[sample_id]!r}")
                seen[sample_id] = split
                names.append(file_name_id(sample_id))
                escaped += names[-1] != sample_id
            plan[split].append((path, names))
    return plan, escaped


def _write_shard_pngs(pool, path: str, ids: list[str], root: Path, level: int, advance) -> None:
    """Each sample of one shard as two PNGs; a shard that cannot be read is an InputError naming
    it, a PNG that cannot be written an OutputError naming the PNG."""
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise InputError(path, f"cannot open shard: {' '.join(str(err).split())}") from None
    with f:
        images, masks = f["images"], f["masks"]
        if images.shape[0] != len(ids):
            raise InputError(path, f"{int(images.shape[0])} images but {len(ids)} sample ids")
        for start in range(0, len(ids), BLOCK):
            stop = min(start + BLOCK, len(ids))
            try:
                block_images = images[start:stop]
                block_masks = np.where(masks[start:stop] > 0, 255, 0).astype(np.uint8)
            except OSError as err:
                raise InputError(path, f"cannot read samples {start}..{stop - 1}: {' '.join(str(err).split())}") \
                    from None
            jobs = []
            for j, sample_id in enumerate(ids[start:stop]):
                for kind, array in (("images", block_images[j]), ("masks", block_masks[j])):
                    target = root / kind / f"{sample_id}.png"
                    jobs.append((target, pool.submit(_save_png, array, target, level)))
            for k, (target, job) in enumerate(jobs):
                try:
                    job.result()
                except OSError as err:
                    raise OutputError(target, f"cannot write: {err.strerror or err}") from err
                if k % 2:
                    advance()


def _save_png(array: np.ndarray, path: Path, level: int) -> None:
    Image.fromarray(array, mode="L").save(path, format="PNG", compress_level=level)


def check_target(out: Path, overwrite: bool) -> None:
    """OUT may be absent or an empty folder; a non-empty folder only with overwrite."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InputError(out, "exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(out, "folder is not empty (use --overwrite to replace it)")
