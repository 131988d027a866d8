"""HDF5 shards: the on-disk unit of every stage (schema_version 1, see DESIGN.md).

A shard holds N samples: `/images` and `/masks` uint8 [N, H, W] (one chunk per image) and one
1-D dataset per metadata field under `/meta`. Shards are written to a temporary name in the
same folder and renamed when complete, and never changed after; the bytes depend only on the
content (no HDF5 timestamps), so the same samples always give the same sha256.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import h5py
import numpy as np

from sirst5k import PRODUCER
from sirst5k.errors import InputError, OutputError

SCHEMA_VERSION = 1
KINDS = ("original", "transfer", "negative")
SHARD_SUFFIX = ".h5"
PARTIAL_MARK = ".partial"

# Field -> (numpy dtype, fill value for "none"). The first twelve are DESIGN.md's; the rest
# carry issue #3's label checks and issue #8's original size, with the same "none" convention.
_STR = h5py.string_dtype("utf-8")
META_FIELDS: dict[str, tuple[object, object]] = {
    "sample_id": (_STR, ""),
    "source_id": (_STR, ""),
    "kind": (_STR, ""),
    "mix": (np.float64, np.nan),
    "noise_id": (np.int64, -1),
    "patch": (np.int32, -1),
    "k": (np.int32, -1),
    "flip": (np.int32, -1),
    "target_index": (np.int32, -1),
    "center_y": (np.int32, -1),
    "center_x": (np.int32, -1),
    "n_targets": (np.int32, -1),
    # label checks: this sample's mask area, and its source's target count and area
    "area": (np.int64, -1),
    "source_n_targets": (np.int32, -1),
    "source_area": (np.int64, -1),
    "cut": (np.int32, -1),
    # size of the image as it was read, before resizing to the shard size
    "orig_h": (np.int32, -1),
    "orig_w": (np.int32, -1),
}
ROOT_ATTRS = ("schema_version", "dataset", "version", "split", "shard_index", "n_shards", "producer")

# Per dataset, chosen from benchmarks/shard_codecs.py (README, "Chunking and compression"):
# images stay uncompressed: infrared images hold sensor noise, so lzf or gzip save at most half
# their bytes but cost 3x the write time and 8x the read time, and the stages write and the
# loader reads thousands of samples a second. Masks are almost all zero: gzip-1 shrinks them
# ~160x, which pays for itself in the sha256 every shard gets, and decompresses faster than lzf.
# Both ship with every HDF5 build (no plugin to read them).
DEFAULT_COMPRESSION: dict[str, dict[str, object]] = {
    "images": {},
    "masks": {"compression": "gzip", "compression_opts": 1},
}
DATASETS = ("images", "masks")


def dataset_codecs(compression: Mapping[str, object] | None = None) -> dict[str, dict[str, object]]:
    """h5py filter arguments per dataset: `compression` per dataset ({"images": {...}, "masks": {...}}),
    or one set of arguments for both (e.g. {"compression": "lzf"}); None = DEFAULT_COMPRESSION."""
    comp = DEFAULT_COMPRESSION if compression is None else compression
    if set(comp) <= set(DATASETS) and all(isinstance(v, Mapping) for v in comp.values()) and comp:
        return {name: dict(comp.get(name, {})) for name in DATASETS}
    return {name: dict(comp) for name in DATASETS}


@dataclass(frozen=True)
class ShardInfo:
    """A written shard: where, its checksum, how many samples. What tasks send back."""

    path: str
    sha256: str
    n_samples: int

    def record(self, split: str | None = None) -> dict[str, object]:
        """The `{path, sha256, n_samples[, split]}` entry of stage.json and the manifest (path: file name)."""
        entry: dict[str, object] = {"path": Path(self.path).name, "sha256": self.sha256, "n_samples": self.n_samples}
        if split is not None:
            entry["split"] = split
        return entry


def shard_info(path: str | Path) -> ShardInfo:
    """The record of a finished shard on disk (checksum recomputed from its bytes)."""
    return ShardInfo(str(path), sha256_file(path), n_samples(path))


def new_meta(n: int) -> dict[str, np.ndarray]:
    """Metadata arrays for n samples, every field at its "none" value."""
    meta: dict[str, np.ndarray] = {}
    for name, (dtype, fill) in META_FIELDS.items():
        if dtype is _STR:
            meta[name] = np.full(n, fill, dtype=object)
        else:
            meta[name] = np.full(n, fill, dtype=dtype)
    return meta


def concat_meta(parts: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = list(parts)
    if not parts:
        return new_meta(0)
    return {name: np.concatenate([np.asarray(p[name]) for p in parts]) for name in META_FIELDS}


def take_meta(meta: Mapping[str, np.ndarray], index) -> dict[str, np.ndarray]:
    return {name: np.asarray(meta[name])[index] for name in META_FIELDS}


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}{SHARD_SUFFIX}"


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{PARTIAL_MARK}-{os.getpid()}")


def write_shard(
    path: str | Path,
    images: np.ndarray,
    masks: np.ndarray,
    meta: Mapping[str, np.ndarray],
    attrs: Mapping[str, object],
    compression: Mapping[str, object] | None = None,
) -> ShardInfo:
    """Write one shard atomically and return its path, sha256 and sample count.

    images, masks: uint8 [N, H, W]; meta: every field of META_FIELDS, length N; attrs: the root
    attributes (ROOT_ATTRS, `producer` filled in if missing, plus any extra such as `task_key`).
    """
    images = np.ascontiguousarray(images, dtype=np.uint8)
    masks = np.ascontiguousarray(masks, dtype=np.uint8)
    n = images.shape[0]
    if images.ndim != 3 or masks.shape != images.shape:
        raise ValueError(f"images {images.shape} and masks {masks.shape} must both be [N, H, W]")
    _check_meta(meta, n)
    codecs = dataset_codecs(compression)
    h, w = images.shape[1:]

    def fill(f: h5py.File) -> None:
        for name, arr in (("images", images), ("masks", masks)):
            if n:
                f.create_dataset(name, data=arr, chunks=(1, h, w), track_times=False, **codecs[name])
            else:
                f.create_dataset(name, shape=(0, h, w), dtype=np.uint8, track_times=False)

    return _write_atomic(Path(path), n, meta, attrs, fill)


def copy_rows(
    path: str | Path,
    pieces: Iterable[tuple[str | Path, int, int]],
    meta: Mapping[str, np.ndarray],
    attrs: Mapping[str, object],
) -> ShardInfo:
    """Write one shard of the rows `pieces` = [(shard, start, stop), ...] of other shards, in that
    order, with `meta` and `attrs`: the bytes `write_shard` writes for those rows read back.

    Where a source stores /images and /masks as `write_shard` does (one chunk per image, the
    default codecs), each row's chunk is copied as stored, neither decoded nor encoded again
    (publish: ~4x faster than read + write). Otherwise the rows are read and written anew.
    A source that cannot be read is an InputError naming it.
    """
    pieces = [(str(p), int(a), int(b)) for p, a, b in pieces]
    if not pieces:
        raise ValueError("copy_rows needs at least one piece")
    n = sum(b - a for _, a, b in pieces)
    _check_meta(meta, n)
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(_open(p)) for p, _, _ in pieces]
        shape = _stored_as_written(sources) if n else None
        if shape is not None:
            h, w = shape
            codecs = dataset_codecs()

            def fill(f: h5py.File) -> None:
                for name in DATASETS:
                    ds = f.create_dataset(name, shape=(n, h, w), dtype=np.uint8, chunks=(1, h, w),
                                          track_times=False, **codecs[name])
                    row = 0
                    for (src_path, start, stop), src in zip(pieces, sources):
                        read = src[name].id.read_direct_chunk
                        for i in range(start, stop):
                            try:
                                mask, chunk = read((i, 0, 0))
                            except (OSError, KeyError, ValueError) as err:
                                raise InputError(src_path, f"cannot read shard: {_one_line(err)}") from None
                            if mask:  # a filter was skipped for this chunk: not stored as written
                                raise _NotAsWritten
                            ds.id.write_direct_chunk((row, 0, 0), chunk, 0)
                            row += 1

            try:
                return _write_atomic(Path(path), n, meta, attrs, fill)
            except _NotAsWritten:
                pass
        images, masks = [], []
        for (src_path, start, stop), src in zip(pieces, sources):
            try:
                images.append(src["images"][start:stop])
                masks.append(src["masks"][start:stop])
            except (OSError, KeyError, ValueError, TypeError) as err:
                raise InputError(src_path, f"cannot read shard: {_one_line(err)}") from None
    return write_shard(path, np.concatenate(images), np.concatenate(masks), meta, attrs)


class _NotAsWritten(Exception):
    """A source chunk is not stored as `write_shard` stores it: copy_rows decodes instead."""


def _stored_as_written(sources: list[h5py.File]) -> tuple[int, int] | None:
    """(H, W) when every source holds uint8 /images and /masks [N, H, W] of one size, chunked one
    image a chunk with exactly the filters `write_shard` gives each; else None."""
    size = None
    want = _default_filters()
    for f in sources:
        for name in DATASETS:
            ds = f.get(name)
            if not isinstance(ds, h5py.Dataset) or ds.dtype != np.uint8 or ds.ndim != 3:
                return None
            hw = tuple(int(v) for v in ds.shape[1:])
            if size is None:
                size = hw
            if hw != size or ds.chunks != (1, *hw) or _filters(ds) != want[name]:
                return None
    return size


def _filters(ds: h5py.Dataset) -> tuple:
    plist = ds.id.get_create_plist()
    return tuple(plist.get_filter(i)[:3] for i in range(plist.get_nfilters()))


@functools.lru_cache(maxsize=1)
def _default_filters() -> dict[str, tuple]:
    """The filter pipeline `write_shard` gives each dataset (read from a dataset made in memory)."""
    with h5py.File(f"filters-{os.getpid()}.h5", "w", driver="core", backing_store=False) as f:
        codecs = dataset_codecs()
        return {name: _filters(f.create_dataset(name, shape=(1, 8, 8), dtype=np.uint8, chunks=(1, 8, 8),
                                                **codecs[name])) for name in DATASETS}


def _check_meta(meta: Mapping[str, np.ndarray], n: int) -> None:
    missing = [f for f in META_FIELDS if f not in meta]
    if missing:
        raise ValueError(f"meta lacks fields {missing}")
    bad = [f for f in META_FIELDS if len(meta[f]) != n]
    if bad:
        raise ValueError(f"meta fields {bad} do not have length {n}")


def _write_atomic(path: Path, n: int, meta: Mapping[str, np.ndarray], attrs: Mapping[str, object],
                  fill) -> ShardInfo:
    """The shard file: root attributes, then `fill(f)` (/images, /masks), then /meta; fsync, sha256,
    rename. Any OSError is an OutputError naming `path`; nothing is left under the temporary name."""
    tmp = partial_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # No chunk cache: every chunk goes to the file while its dataset is written, so where
        # it lands does not depend on when the dataset object is closed (a profiler thread
        # holding frames delays that) and the bytes stay the same. Each chunk is written once
        # and whole, so a cache would only add a copy.
        with h5py.File(tmp, "w", libver=("earliest", "v110"), rdcc_nbytes=0) as f:
            root = {"schema_version": SCHEMA_VERSION, "producer": PRODUCER, **attrs}
            for key in sorted(root):
                f.attrs[key] = root[key]
            fill(f)
            group = f.create_group("meta", track_order=False)
            for name, (dtype, _) in META_FIELDS.items():
                values = np.asarray(meta[name])
                data = values.astype(str).astype(object) if dtype is _STR else values.astype(dtype)
                group.create_dataset(name, data=data, dtype=dtype, track_times=False)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # Read back from the page cache: measured no slower than hashing an in-memory image of the
        # file while writing it (HDF5 rewrites its headers at close, so a stream cannot be hashed).
        digest = sha256_file(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(path, f"cannot write shard: {err.strerror or err}") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ShardInfo(str(path), digest, n)


def read_attrs(path: str | Path) -> dict[str, object]:
    with _open(path) as f:
        return {k: _plain(v) for k, v in f.attrs.items()}


def read_meta(path: str | Path) -> dict[str, np.ndarray]:
    with _open(path) as f:
        return _meta_of(f, path)


def read_shard(path: str | Path, index=slice(None)) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Images, masks and meta of a shard (or of the samples picked by `index`)."""
    with _open(path) as f:
        meta = _meta_of(f, path)
        if isinstance(index, slice):
            images, masks = f["images"][index], f["masks"][index]
        else:
            index = np.asarray(index)
            images = _take_rows(f["images"], index)
            masks = _take_rows(f["masks"], index)
        return images, masks, take_meta(meta, index)


def n_samples(path: str | Path) -> int:
    with _open(path) as f:
        return int(f["images"].shape[0])


def image_shape(path: str | Path) -> tuple[int, int]:
    """(H, W) of the images of a shard, read from its header alone."""
    with _open(path) as f:
        return int(f["images"].shape[1]), int(f["images"].shape[2])


def is_complete(path: str | Path, task_key: str) -> bool:
    """True when `path` is a finished shard written for exactly this task (same inputs and params)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            return _plain(f.attrs.get("task_key", "")) == task_key and "images" in f
    except OSError:
        return False


def list_shards(folder: str | Path, split: str | None = None) -> list[Path]:
    """Finished shards in a folder, optionally of one split, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "shard folder does not exist")
    pattern = f"{split}-*{SHARD_SUFFIX}" if split else f"*{SHARD_SUFFIX}"
    return sorted(p for p in folder.glob(pattern) if not p.name.startswith("."))


def remove_stale(folder: Path, keep: Iterable[str]) -> None:
    """Drop leftovers of a crash (partial files) and shards this run does not plan to write."""
    keep = set(keep)
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if PARTIAL_MARK in p.name or (p.suffix == SHARD_SUFFIX and p.name not in keep):
            p.unlink(missing_ok=True)


@contextlib.contextmanager
def _open(path: str | Path) -> Iterator[h5py.File]:
    """A shard open for reading; every failure, opening or reading, is one InputError naming it
    (a truncated file, a chunk that does not decompress, a missing dataset)."""
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot open shard: {_one_line(err)}") from None
    try:
        with f:
            yield f
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise InputError(path, f"cannot read shard: {_one_line(err)}") from None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _meta_of(f: h5py.File, path) -> dict[str, np.ndarray]:
    if "meta" not in f:
        raise InputError(path, "not a sirst5k shard (no /meta)")
    out = {}
    for name, (dtype, _) in META_FIELDS.items():
        if name not in f["meta"]:
            raise InputError(path, f"shard lacks /meta/{name}")
        ds = f["meta"][name]
        out[name] = ds.asstr()[()].astype(object) if dtype is _STR else ds[()]
    return out


def _take_rows(ds: h5py.Dataset, index: np.ndarray) -> np.ndarray:
    if index.dtype == bool:
        index = np.flatnonzero(index)
    out = np.empty((len(index),) + ds.shape[1:], dtype=ds.dtype)
    for i, row in enumerate(index):
        ds.read_direct(out, np.s_[int(row)], np.s_[i])
    return out


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
