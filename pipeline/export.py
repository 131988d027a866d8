"""Export a shard dataset as the PNG folders DNANet and BasicIRSTD train from unchanged.

dnanet:      OUT/images/<id>.png, OUT/masks/<id>.png, OUT/50_50/<split>.txt
basicirstd:  OUT/images/<id>.png, OUT/masks/<id>.png, OUT/img_idx/<split>_<name>.txt

Images are 8-bit grey, masks 0/255; index files list one id a line (LF), in shard order. Every
file is written into a hidden sibling folder that is renamed to OUT when complete, so OUT is
either absent, the old content, or the whole export.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image

from sirst5k.runner.cluster import progress_bar
from sirst5k.errors import InputError, OutputError
from sirst5k.sources import open_source
from sirst5k.formats.shards import read_meta

LAYOUTS = ("dnanet", "basicirstd")
DNANET_SPLIT_DIR = "50_50"
BLOCK = 64  # rows read from a shard at once


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

    Returns {"out", "layout", "splits": {split: n_samples}, "samples"}.
    """
    if layout not in LAYOUTS:
        raise InputError(None, f"unknown layout {layout!r}: use {' or '.join(LAYOUTS)}")
    if not name or any(c in name for c in "/\\\n\r\t ") or name.startswith("."):
        raise InputError(None, f"--name {name!r} cannot be part of a file name")
    out = Path(out)
    check_target(out, overwrite)
    src = open_source(source)
    plan = _plan(src.splits)
    total = sum(len(ids) for shards in plan.values() for _, ids in shards)
    tmp = staging_path(out)
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "images").mkdir(parents=True)
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
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(("".join(f"{i}\n" for i in ids)).encode())
        replace_folder(tmp, out, overwrite)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(out, f"cannot write export: {err.strerror or err}") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    splits = {split: sum(len(ids) for _, ids in shards) for split, shards in plan.items()}
    return {"out": str(out), "layout": layout, "splits": splits, "samples": total}


def _plan(splits: dict[str, list[tuple[str, int]]]) -> dict[str, list[tuple[str, list[str]]]]:
    """Each split's shards with their sample ids, checked to be usable, unique file names."""
    plan: dict[str, list[tuple[str, list[str]]]] = {}
    seen: dict[str, str] = {}
    for split, shards in splits.items():
        plan[split] = []
        for path, _ in shards:
            ids = [str(i) for i in read_meta(path)["sample_id"]]
            for sample_id in ids:
                if not _safe_id(sample_id):
                    raise InputError(path, f"sample_id {sample_id!r} cannot be a file name")
                if sample_id in seen:
                    raise InputError(path, f"sample_id {sample_id!r} also in split {seen[sample_id]!r}")
                seen[sample_id] = split
            plan[split].append((path, ids))
    return plan


def _safe_id(sample_id: str) -> bool:
    # Both toolboxes read ids as whitespace-free tokens and append ".png".
    if not sample_id or sample_id.startswith("."):
        return False
    return not any(c in "/\\" or c.isspace() or not c.isprintable() for c in sample_id)


def _write_shard_pngs(pool, path: str, ids: list[str], root: Path, level: int, advance) -> None:
    with h5py.File(path, "r") as f:
        images, masks = f["images"], f["masks"]
        if images.shape[0] != len(ids):
            raise InputError(path, f"{images.shape[0]} images but {len(ids)} sample ids")
        for start in range(0, len(ids), BLOCK):
            stop = min(start + BLOCK, len(ids))
            block_images = images[start:stop]
            block_masks = np.where(masks[start:stop] > 0, 255, 0).astype(np.uint8)
            jobs = []
            for j, sample_id in enumerate(ids[start:stop]):
                jobs.append(pool.submit(_save_png, block_images[j], root / "images" / f"{sample_id}.png", level))
                jobs.append(pool.submit(_save_png, block_masks[j], root / "masks" / f"{sample_id}.png", level))
            for k, job in enumerate(jobs):
                job.result()
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


def staging_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial-{os.getpid()}")


def replace_folder(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename a finished folder to OUT, replacing an empty OUT, or a full one when overwrite."""
    check_target(out, overwrite)
    if out.is_dir():
        if not any(out.iterdir()):
            out.rmdir()
        else:
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
            return
    os.replace(tmp, out)
