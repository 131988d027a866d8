"""HDF5 shards: the on-disk unit of every stage (schema_version 1, see DESIGN.md).

A shard holds N samples: `/images` and `/masks` uint8 [N, H, W] (one chunk per image) and one
1-D dataset per metadata field under `/meta`. Shards are written to a temporary name in the
same folder and renamed when complete, and never changed after; the bytes depend only on the
content (no HDF5 timestamps), so the same samples always give the same sha256.

Difficulty tags (issue 17, `sirst5k.method.difficulty`): every shard written here also holds
`/targets`, one 1-D dataset per column of its per-target table (T = targets of the shard:
`row` = sample row, `label`, `area`, `y`, `x`, `target_mean`, `ring_mean`, `ring_std`,
`ring_pixels`, `contrast`, `scr`, `size_bin`, `scr_bin`; attribute `definition`: the JSON of
the ring and bin parameters), and the per-sample DIFFICULTY_FIELDS in `/meta` (its hardest
target's `min_target_area`, `min_contrast`, `min_scr`, `size_bin`, `scr_bin`). The writer
computes both from the images and masks it writes, whatever the caller passed, so they always
agree with the pixels. The addition is backward compatible and schema_version stays 1: a shard
written before has neither, and reads with the fields at their "none" values (`read_meta`), or
computed from its pixels on request (`read_meta(compute_missing=True)`, `read_targets`).

Image sizes (issue 18): each shard holds images of one size [N, H, W], but the shards of one
dataset may differ in size (`ingest --size native`). A dataset whose shards differ in size is
schema 2 (`MIXED_SIZES_SCHEMA`: the manifest's `schema_version` and each shard's attribute,
which the writer takes from `attrs` when given); a one-size dataset stays schema 1, written byte
for byte as before. Readers accept `SCHEMA_VERSIONS`. `--keep-aspect` pads images to one square
size and records each image's valid box (top-left, `valid_h` x `valid_w`) and the padding's grey
level (`pad_value`, 0) in the PADDING_FIELDS;
those are written only in a shard where some sample is padded (-1 = not padded), and a shard
without them reads them as -1, so shards without padding keep their bytes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import h5py
import numpy as np

from sirst5k import PRODUCER
from sirst5k.errors import InputError, OutputError
from sirst5k.method import difficulty as _difficulty

SCHEMA_VERSION = 1  # what the writer stamps unless `attrs` say otherwise
MIXED_SIZES_SCHEMA = 2  # a dataset whose shards differ in image size
SCHEMA_VERSIONS = (SCHEMA_VERSION, MIXED_SIZES_SCHEMA)  # what readers accept
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
# difficulty tags of the sample's hardest target: computed by the writer (never the caller's),
# absent from shards written before issue 17 (read as their "none" values)
DIFFICULTY_FIELDS = tuple(_difficulty.SAMPLE_FIELDS)
META_FIELDS.update({name: (_STR if dtype is str else dtype, fill)
                    for name, (dtype, fill) in _difficulty.SAMPLE_FIELDS.items()})
# --keep-aspect's valid box of a padded image (rows, cols from the top-left); -1 = not padded.
# Optional: written only in a shard with a padded sample (see the module's docstring).
VALID_BOX = ("valid_h", "valid_w")
PADDING_FIELDS = (*VALID_BOX, "pad_value")  # and the grey level of the padding
META_FIELDS.update({name: (np.int32, -1) for name in PADDING_FIELDS})
# fields a caller's meta and a stored shard may lack (read as their "none" values)
OPTIONAL_FIELDS = DIFFICULTY_FIELDS + PADDING_FIELDS
TARGETS_GROUP = "targets"
TARGET_COLUMNS = {name: (_STR if dtype is str else dtype, fill)
                  for name, (dtype, fill) in _difficulty.TARGET_COLUMNS.items()}
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
    parts = [_with_fill(p) for p in parts]
    if not parts:
        return new_meta(0)
    return {name: np.concatenate([np.asarray(p[name]) for p in parts]) for name in META_FIELDS}


def take_meta(meta: Mapping[str, np.ndarray], index) -> dict[str, np.ndarray]:
    meta = _with_fill(meta)
    return {name: np.asarray(meta[name])[index] for name in META_FIELDS}


def _with_fill(meta: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """`meta` with any missing OPTIONAL_FIELDS at their "none" values (a caller's own meta)."""
    missing = [f for f in OPTIONAL_FIELDS if f not in meta]
    if not missing:
        return meta
    n = len(next(iter(meta.values()))) if meta else 0
    fill = new_meta(n)
    return {**meta, **{f: fill[f] for f in missing}}


def valid_box(meta: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """[N, 2] (valid_h, valid_w) of a shard's samples, -1 where a sample is not padded; None when
    no sample is (or the meta has no box): the whole image is valid."""
    if not all(f in meta for f in VALID_BOX):
        return None
    box = np.stack([np.asarray(meta[f], np.int64) for f in VALID_BOX], axis=1)
    return box if (box > 0).any() else None


def carried_schema(src: str | Path) -> dict[str, int]:
    """The root attribute a stage's output shard takes from its input shard: {"schema_version": 2}
    when the input belongs to a dataset of several sizes (MIXED_SIZES_SCHEMA), else {} (the
    writer's default, schema 1)."""
    schema = int(read_attrs(src).get("schema_version", SCHEMA_VERSION))
    return {"schema_version": schema} if schema == MIXED_SIZES_SCHEMA else {}


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
    targets: Mapping[str, np.ndarray] | None = None,
) -> ShardInfo:
    """Write one shard atomically and return its path, sha256 and sample count.

    images, masks: uint8 [N, H, W]; meta: every field of META_FIELDS but the DIFFICULTY_FIELDS,
    length N (those are computed here, from images and masks; values passed are replaced);
    attrs: the root attributes (ROOT_ATTRS, `producer` filled in if missing, plus any extra such
    as `task_key`). targets: the per-target table of exactly these images and masks when the
    caller has it (`copy_rows`); None = computed here.
    """
    images = np.ascontiguousarray(images, dtype=np.uint8)
    masks = np.ascontiguousarray(masks, dtype=np.uint8)
    n = images.shape[0]
    if images.ndim != 3 or masks.shape != images.shape:
        raise ValueError(f"images {images.shape} and masks {masks.shape} must both be [N, H, W]")
    _check_meta(meta, n)
    table = _difficulty.target_difficulty(images, masks) if targets is None else targets
    codecs = dataset_codecs(compression)
    h, w = images.shape[1:]

    def fill(f: h5py.File) -> None:
        for name, arr in (("images", images), ("masks", masks)):
            if n:
                f.create_dataset(name, data=arr, chunks=(1, h, w), track_times=False, **codecs[name])
            else:
                f.create_dataset(name, shape=(0, h, w), dtype=np.uint8, track_times=False)

    return _write_atomic(Path(path), n, meta, attrs, fill, table)


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
    The difficulty tags are the sources' stored per-target rows (renumbered), or computed from
    the rows' pixels for a source that has none (written before issue 17): the bytes are the same.
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

            table = _difficulty.concat_tables(_piece_tables(pieces, sources))
            try:
                return _write_atomic(Path(path), n, meta, attrs, fill, table)
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


def _piece_tables(pieces, sources: list[h5py.File]):
    """(per-target table, row offset) of each piece: stored rows where the source has tags of the
    current definition, else computed from the piece's pixels."""
    offset = 0
    for (src_path, start, stop), src in zip(pieces, sources):
        try:
            table = _stored_targets(src)
            if table is None:
                table = _difficulty.target_difficulty(src["images"][start:stop], src["masks"][start:stop])
            else:
                table = _difficulty.take_table(table, np.arange(start, stop))
        except (OSError, KeyError, ValueError, TypeError) as err:
            raise InputError(src_path, f"cannot read shard: {_one_line(err)}") from None
        yield table, offset
        offset += stop - start


def _current_targets(f: h5py.File) -> bool:
    """True when an open shard holds a /targets table of the current definition."""
    group = f.get(TARGETS_GROUP)
    return isinstance(group, h5py.Group) and \
        _plain(group.attrs.get("definition", "")) == _difficulty.definition_json() and \
        all(name in group for name in TARGET_COLUMNS)


def _stored_targets(f: h5py.File) -> dict[str, np.ndarray] | None:
    """The stored per-target table of an open shard, or None without one of the current definition."""
    if not _current_targets(f):
        return None
    group = f[TARGETS_GROUP]
    return {name: (group[name].asstr()[()].astype(object) if dtype is _STR else group[name][()])
            for name, (dtype, _) in TARGET_COLUMNS.items()}


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
    # One name per thread: the stage's lanes (`run_here`) can make the first call at once, and
    # HDF5 refuses to create a file of a name it holds open ("unable to truncate a file which is
    # already open"), in memory too; lru_cache does not hold the second caller back.
    name = f"filters-{os.getpid()}-{threading.get_ident()}.h5"
    with h5py.File(name, "w", driver="core", backing_store=False) as f:
        codecs = dataset_codecs()
        return {name: _filters(f.create_dataset(name, shape=(1, 8, 8), dtype=np.uint8, chunks=(1, 8, 8),
                                                **codecs[name])) for name in DATASETS}


def _check_meta(meta: Mapping[str, np.ndarray], n: int) -> None:
    given = [f for f in META_FIELDS if f not in OPTIONAL_FIELDS]
    missing = [f for f in given if f not in meta]
    if missing:
        raise ValueError(f"meta lacks fields {missing}")
    bad = [f for f in given if len(meta[f]) != n]
    if bad:
        raise ValueError(f"meta fields {bad} do not have length {n}")


def _write_atomic(path: Path, n: int, meta: Mapping[str, np.ndarray], attrs: Mapping[str, object],
                  fill, table: Mapping[str, np.ndarray]) -> ShardInfo:
    """The shard file: root attributes, then `fill(f)` (/images, /masks), then /meta (the
    difficulty fields from `table`), then /targets (`table`); fsync, sha256, rename. Any OSError
    is an OutputError naming `path`; nothing is left under the temporary name."""
    meta = {**meta, **_difficulty.sample_difficulty(table, n)}
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
            for name, (dtype, fill) in META_FIELDS.items():
                if name in PADDING_FIELDS and (name not in meta or np.all(np.asarray(meta[name]) == fill)):
                    continue  # no padded sample: not written (the bytes of a shard without padding)
                values = np.asarray(meta[name])
                data = values.astype(str).astype(object) if dtype is _STR else values.astype(dtype)
                group.create_dataset(name, data=data, dtype=dtype, track_times=False)
            group = f.create_group(TARGETS_GROUP, track_order=False)
            group.attrs["definition"] = _difficulty.definition_json()
            for name, (dtype, _) in TARGET_COLUMNS.items():
                values = np.asarray(table[name])
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


def read_meta(path: str | Path, compute_missing: bool = False) -> dict[str, np.ndarray]:
    """Every META_FIELDS array of a shard. A shard written before the difficulty tags has them at
    their "none" values, or with `compute_missing` computed from its pixels (a pass over them)."""
    with _open(path) as f:
        meta = _meta_of(f, path)
        if compute_missing and not _current_targets(f):
            meta.update(_difficulty.sample_difficulty(_computed_targets(f), int(f["images"].shape[0])))
        return meta


def has_targets(path: str | Path) -> bool:
    """True when the shard stores its difficulty tags (`/targets`, of the current definition)."""
    with _open(path) as f:
        return _current_targets(f)


def read_targets(path: str | Path, compute_missing: bool = True) -> dict[str, np.ndarray] | None:
    """The per-target table of a shard (`sirst5k.method.difficulty.TARGET_COLUMNS`, each [T]):
    as stored, or for a shard without one (written before the tags, or by another definition)
    computed from its pixels, or None when `compute_missing` is False."""
    with _open(path) as f:
        table = _stored_targets(f)
        if table is None and compute_missing:
            table = _computed_targets(f)
        return table


def _computed_targets(f: h5py.File, block: int = 256) -> dict[str, np.ndarray]:
    images, masks = f["images"], f["masks"]
    n = int(images.shape[0])
    return _difficulty.concat_tables((_difficulty.target_difficulty(images[a:a + block], masks[a:a + block]), a)
                                     for a in range(0, n, block))


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
            # a shard without the current difficulty tags was not written by this code: redo it
            return _plain(f.attrs.get("task_key", "")) == task_key and "images" in f and \
                _current_targets(f)
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
    group = f.get("meta")
    if not isinstance(group, h5py.Group):
        raise InputError(path, "not a sirst5k shard (no /meta)")
    # one lookup of the group and its names: per-field `f["meta"][name]` path lookups were ~16 ms
    # a shard, which a dataset of hundreds of small (one-size) shards pays hundreds of times
    names = set(group.keys())
    out = {}
    n = None
    for name, (dtype, fill) in META_FIELDS.items():
        if name not in names:
            if name not in OPTIONAL_FIELDS:
                raise InputError(path, f"shard lacks /meta/{name}")
            if n is None:
                n = int(f["images"].shape[0]) if "images" in f else len(next(iter(out.values()), []))
            out[name] = np.full(n, fill, dtype=object if dtype is _STR else dtype)
            continue
        ds = group[name]
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
