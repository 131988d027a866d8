"""Export a shard dataset as the folders DNANet, BasicIRSTD, YOLO and COCO tools train from unchanged.

dnanet:      OUT/images/<id>.png, OUT/masks/<id>.png, OUT/50_50/<split>.txt, and the empty folders
             OUT/value_result/ and OUT/visulization_result/ that DNANet's test.py writes into
             (it crashes at its end without them). Train with `--root <parent of OUT>
             --dataset <OUT's name> --split_method 50_50`.
basicirstd:  OUT/images/<id>.png, OUT/masks/<id>.png, OUT/img_idx/<split>_<NAME>.txt, where NAME is
             OUT's folder name: BasicIRSTD opens `<dataset_dir>/<NAME>/img_idx/train_<NAME>.txt`,
             so any other name gives FileNotFoundError (a `--name` that differs from the folder's
             name is refused). Also OUT/img_norm_cfg.json: the normalisation BasicIRSTD would
             otherwise compute by a full pass at every start (its `get_img_norm_cfg`, for a name
             not in its table): the mean over images of each image's mean, and the mean over
             images of each image's standard deviation (population, float32, on the 0..255
             scale), here over the TRAIN split only, so no test statistics reach training. Pass
             them as `--img_norm_cfg_mean X --img_norm_cfg_std Y` (the file holds the line).
yolo:        OUT/images/<split>/<id>.png, OUT/labels/<split>/<id>.txt (one line `0 cx cy w h` per
             8-connected target, normalised to the image size, box = the target's pixel extent;
             an empty file for an image without targets) and OUT/data.yaml (path, train, val =
             the test split, test, names {0: target}), the Ultralytics/YOLOv5 layout.
coco:        OUT/images/<split>/<id>.png and OUT/annotations/instances_<split>.json: one image
             entry per sample and one annotation per 8-connected target, with its box [x, y, w, h]
             (pixel extent), area (pixels) and mask as compressed RLE (pycocotools' encoding,
             `pycocotools.mask.decode` gives the target's pixels back), category 1 "target".

Images are 8-bit grey, masks 0/255; index files list one id a line (LF), in shard order. Every
file is written into the hidden sibling `.OUT.partial/` (`staged_folder`, with the output's
lock), which is renamed to OUT when complete, so OUT is either absent, the old content, or the
whole export; a killed export's partial folder is discarded by the next one.

Sample ids become file names by `file_name_id`: ASCII letters, digits and `-_.+~,=@()` stay as
they are, every other character (space, `/`, `\\`, `%`, non-ASCII, control) becomes `%XX` per
UTF-8 byte, and a leading `.` becomes `%2E`. The same escaped id is written in the index files,
so the toolboxes (which read whitespace-free tokens and append `.png`) find every file; the
escaping is reversible (`urllib.parse.unquote`) and ids that are already safe are unchanged.
"""

from __future__ import annotations

import json
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
from sirst5k.method.norm import image_mean_std, norm_args, norm_cfg

LAYOUTS = ("dnanet", "basicirstd", "yolo", "coco")
DNANET_SPLIT_DIR = "50_50"
# DNANet's test.py appends its scores to value_result/<model>_best_IoU.log and its
# visualisation makes sub-folders of visulization_result/ (the toolbox's spelling)
DNANET_RESULT_DIRS = ("value_result", "visulization_result")
NORM_FILE = "img_norm_cfg.json"
NORM_SPLIT = "train"
YOLO_CLASS = 0
TARGET_NAME = "target"
COCO_CATEGORY_ID = 1
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
    """Where a split's id list goes, relative to OUT (dnanet and basicirstd)."""
    if layout == "dnanet":
        return f"{DNANET_SPLIT_DIR}/{split}.txt"
    if layout == "basicirstd":
        return f"img_idx/{split}_{name}.txt"
    raise ValueError(f"layout {layout!r} has no index files (dnanet and basicirstd do)")


def index_bytes(ids: list[str]) -> bytes:
    """The bytes of an index file listing `ids` (already escaped): one a line, LF."""
    return "".join(f"{i}\n" for i in ids).encode()


def dataset_name(out: str | Path, name: str | None = None) -> str:
    """BasicIRSTD's dataset name for an export to `out`: the folder's own name. A `name` that
    differs is refused: BasicIRSTD would look for img_idx/train_<name>.txt in a folder <name>."""
    folder = Path(os.path.abspath(out))
    if name is not None and name != folder.name:
        raise InputError(None, f"--name {name!r} differs from the export folder's name {folder.name!r}: BasicIRSTD "
                               f"reads <dataset_dir>/<name>/img_idx/train_<name>.txt, so export to "
                               f"{folder.parent / name} (or leave --name out)")
    if not folder.name or any(c in folder.name for c in "/\\\n\r\t ") or folder.name.startswith("."):
        raise InputError(folder, "this folder's name cannot be BasicIRSTD's dataset name (no spaces, no leading .)")
    return folder.name


def yolo_lines(bboxes: np.ndarray, height: int, width: int) -> str:
    """YOLO label lines `0 cx cy w h` (normalised) for boxes [T, 4] (y0, x0, y1, x1), end excluded."""
    lines = []
    for y0, x0, y1, x1 in np.asarray(bboxes).tolist():
        lines.append(f"{YOLO_CLASS} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
                     f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}\n")
    return "".join(lines)


def _coco_encoder():
    try:
        from pycocotools import mask as coco_mask
    except ImportError:
        raise InputError(None, "--layout coco needs pycocotools for the RLE masks: pip install pycocotools") from None
    return coco_mask


def export_dataset(
    source: str | Path,
    out: str | Path,
    layout: str = "dnanet",
    name: str | None = None,
    overwrite: bool = False,
    compress_level: int = 1,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Write every split of `source` (manifest, dataset folder or shard folder) to `out`.

    `out` may be absent or an empty folder; a non-empty one only with `overwrite`, and never the
    source, inside it or a folder holding it. `name` is BasicIRSTD's dataset name and must be
    `out`'s folder name (None: taken from it); other layouts take no name. Returns {"out",
    "layout", "splits": {split: n_samples}, "samples", "escaped": ids written under an escaped
    name, "targets": boxes written (yolo, coco), "name" and "img_norm_cfg" (basicirstd; None
    without a train split)}.
    """
    if layout not in LAYOUTS:
        raise InputError(None, f"unknown layout {layout!r}: use {' or '.join(LAYOUTS)}")
    out = Path(out)
    if layout == "basicirstd":
        name = dataset_name(out, name)
    elif name is not None:
        raise InputError(None, f"--name is BasicIRSTD's dataset name: --layout {layout} takes none")
    coco = _coco_encoder() if layout == "coco" else None
    check_target(out, overwrite)
    src = open_source(source)
    plan, escaped = _plan(src.splits)
    total = sum(len(ids) for shards in plan.values() for _, ids in shards)
    inputs = [Path(source), src.root, *([src.manifest_path] if src.manifest_path else [])]
    norm: dict[str, list] | None = {"means": [], "stds": []} if layout == "basicirstd" else None
    coco_docs: dict[str, dict[str, Any]] = {}
    targets = 0
    # the policy on an existing OUT is check_target's; staged_folder refuses inputs, locks, stages
    with staged_folder(out, inputs=inputs, overwrite=overwrite, resume=False) as tmp:
        _make_dirs(tmp, layout, list(plan))
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool, progress_bar(
            "export", total, show_progress
        ) as advance:
            for split, shards in plan.items():
                doc = {"images": [], "annotations": []} if coco else None
                for path, ids in shards:
                    targets += _write_shard(pool, path, ids, tmp, layout, split, compress_level, advance,
                                            norm if split == NORM_SPLIT else None, doc, coco)
                if doc is not None:
                    coco_docs[split] = doc
        if layout in ("dnanet", "basicirstd"):
            for split, shards in plan.items():
                _write(tmp / index_path(layout, split, name),
                       index_bytes([i for _, shard_ids in shards for i in shard_ids]))
        cfg = None
        if norm is not None and norm["means"]:
            cfg = norm_cfg(norm["means"], norm["stds"])
            doc = {**cfg, "split": NORM_SPLIT, "n_images": len(norm["means"]), "scale": "0..255",
                   "how": "mean over the images of each image's float32 mean, and of each image's float32 "
                          "standard deviation (population), as BasicIRSTD's get_img_norm_cfg computes them",
                   "basicirstd_args": norm_args(cfg)}
            _write(tmp / NORM_FILE, (json.dumps(doc, indent=2) + "\n").encode())
        if layout == "yolo":
            _write(tmp / "data.yaml", _yolo_yaml(out, list(plan)).encode())
        for split, doc in coco_docs.items():
            full = {"info": {"description": f"{src.root.name} ({split}), exported by sirst5k",
                             "version": str((src.manifest or {}).get("version", ""))},
                    "images": doc["images"], "annotations": doc["annotations"],
                    "categories": [{"id": COCO_CATEGORY_ID, "name": TARGET_NAME, "supercategory": TARGET_NAME}]}
            _write(tmp / "annotations" / f"instances_{split}.json",
                   json.dumps(full, separators=(",", ":")).encode())
    splits = {split: sum(len(ids) for _, ids in shards) for split, shards in plan.items()}
    result = {"out": str(out), "layout": layout, "splits": splits, "samples": total, "escaped": escaped,
              "targets": targets}
    if layout == "basicirstd":
        result.update(name=name, img_norm_cfg=cfg)
    return result


def _make_dirs(tmp: Path, layout: str, splits: list[str]) -> None:
    if layout in ("dnanet", "basicirstd"):
        folders = ["images", "masks", *(DNANET_RESULT_DIRS if layout == "dnanet" else ())]
    elif layout == "yolo":
        folders = [f"{kind}/{split}" for kind in ("images", "labels") for split in splits]
    else:
        folders = [*(f"images/{split}" for split in splits), "annotations"]
    for folder in folders:
        (tmp / folder).mkdir(parents=True)


def _write(target: Path, data: bytes) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    except OSError as err:
        raise OutputError(target, f"cannot write: {err.strerror or err}") from err


def _yolo_yaml(out: Path, splits: list[str]) -> str:
    """data.yaml: `path` is OUT as an absolute path (Ultralytics resolves a relative one against
    its own datasets folder); edit it if the folder moves. `val` is the test split."""
    val = "test" if "test" in splits else ("val" if "val" in splits else splits[-1])
    lines = ["# YOLO (Ultralytics) dataset, exported by sirst5k: one box per 8-connected target, class 0",
             f"path: {json.dumps(os.path.abspath(out))}"]
    if "train" in splits:
        lines.append("train: images/train")
    lines.append(f"val: {json.dumps('images/' + val)}")
    if "test" in splits:
        lines.append("test: images/test")
    lines += ["nc: 1", "names:", f"  {YOLO_CLASS}: {TARGET_NAME}", ""]
    return "\n".join(lines)


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


def _write_shard(pool, path: str, ids: list[str], root: Path, layout: str, split: str, level: int, advance,
                 norm: dict[str, list] | None, coco_doc: dict[str, list] | None, coco) -> int:
    """Each sample of one shard as its layout's files; returns the targets labelled (yolo, coco).
    A shard that cannot be read is an InputError naming it, a file that cannot be written an
    OutputError naming the file."""
    from sirst5k.method.targets import batch_target_table, label_points, mask_points

    per_split = layout in ("yolo", "coco")
    image_dir = root / "images" / split if per_split else root / "images"
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise InputError(path, f"cannot open shard: {' '.join(str(err).split())}") from None
    targets = 0
    with f:
        images, masks = f["images"], f["masks"]
        if images.shape[0] != len(ids):
            raise InputError(path, f"{int(images.shape[0])} images but {len(ids)} sample ids")
        height, width = int(images.shape[1]), int(images.shape[2])
        for start in range(0, len(ids), BLOCK):
            stop = min(start + BLOCK, len(ids))
            try:
                block_images = images[start:stop]
                block_masks = np.where(masks[start:stop] > 0, 255, 0).astype(np.uint8)
            except OSError as err:
                raise InputError(path, f"cannot read samples {start}..{stop - 1}: {' '.join(str(err).split())}") \
                    from None
            table = batch_target_table(block_masks) if per_split else None
            if coco is not None:
                b, y, x = mask_points(block_masks)
                pixel_target, _ = label_points(b, y, x, stop - start)
            jobs = []
            for j, sample_id in enumerate(ids[start:stop]):
                files = [(image_dir / f"{sample_id}.png", block_images[j])]
                if not per_split:
                    files.append((root / "masks" / f"{sample_id}.png", block_masks[j]))
                jobs.append([(target, pool.submit(_save_png, array, target, level)) for target, array in files])
                if norm is not None:
                    mean, std = image_mean_std(block_images[j])
                    norm["means"].append(mean)
                    norm["stds"].append(std)
                if table is not None:
                    mine = table["image"] == j
                    bboxes = table["bbox"][mine]
                    targets += len(bboxes)
                    if layout == "yolo":
                        _write(root / "labels" / split / f"{sample_id}.txt", yolo_lines(bboxes, height, width).encode())
                    else:
                        on = b == j
                        _coco_entries(coco_doc, coco, f"{sample_id}.png", height, width, bboxes,
                                      table["area"][mine], y[on], x[on], pixel_target[on])
            for sample_jobs in jobs:
                for target, job in sample_jobs:
                    try:
                        job.result()
                    except OSError as err:
                        raise OutputError(target, f"cannot write: {err.strerror or err}") from err
                advance()
    return targets


def _coco_entries(doc: dict[str, list], coco, file_name: str, height: int, width: int, bboxes: np.ndarray,
                  areas: np.ndarray, ys: np.ndarray, xs: np.ndarray, labels: np.ndarray) -> None:
    """One image entry and an annotation per target (box, area, compressed RLE of its pixels)."""
    image_id = len(doc["images"]) + 1
    doc["images"].append({"id": image_id, "file_name": file_name, "height": height, "width": width})
    for t, ((y0, x0, y1, x1), area) in enumerate(zip(bboxes.tolist(), areas.tolist())):
        target = np.zeros((height, width), np.uint8, order="F")
        on = labels == t + 1
        target[ys[on], xs[on]] = 1
        rle = coco.encode(target)
        doc["annotations"].append({
            "id": len(doc["annotations"]) + 1, "image_id": image_id, "category_id": COCO_CATEGORY_ID,
            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(area), "iscrowd": 0,
            "segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
        })


def _save_png(array: np.ndarray, path: Path, level: int) -> None:
    Image.fromarray(array, mode="L").save(path, format="PNG", compress_level=level)


def check_target(out: Path, overwrite: bool) -> None:
    """OUT may be absent or an empty folder; a non-empty folder only with overwrite."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InputError(out, "exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(out, "folder is not empty (use --overwrite to replace it)")
