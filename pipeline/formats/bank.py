"""The noise-bank file (schema_version 1): its writer and its readers, in one place.

One HDF5 file, one row per (kept window, frame), so a shard's `noise_id` is a row index:
- `/patches`: uint8 `[R, w, w]`, gzip-1, chunks of up to 256 rows;
- `/sequence`, `/frame` (str): where each row was cut, sequence name and frame file name;
- `/frame_index`, `/entry`, `/t0`, `/y`, `/x` (int64): the frame's place in its sequence, the
  kept window the row belongs to (numbered across the bank), its first frame, the box corner;
- `/var`, `/mean` (float64): the box's statistics in this frame, and `/seq_var_of_var`,
  `/seq_var_of_mean`: the entry's variance of those across its frames;
- root attributes: `schema_version`, `producer`, `stage`, `version`, `frames_hash`,
  `n_sequences`, `n_frames` and the selection params (the noise-bank stage fills them in);
- `/model` (optional, `noise-bank --model`): the fitted sensor-noise model of each sequence that
  kept a window (`sirst5k.method.noise_model`), one entry per model along the first axis:
  `sequence` (str), `first_row`, `n_rows` (int64: the bank rows it was fitted from, with their
  provenance in `/sequence`, `/frame`), `n_windows`, `n_frames`, `frame_h`, `frame_w` (int64),
  `mean_level`, `sigma`, `sigma_temporal`, `sigma_fixed`, `sigma_row`, `sigma_col` (float64),
  `psd2d` `[S, w, w]`, `row_psd`, `col_psd` `[S, w]` (float64), and the hot/dead pixel table
  `defect_model`, `defect_y`, `defect_x` (int64), `defect_level`, `defect_fraction` (float64);
  attributes `fitted_by`, `defect_level`, `defect_sigmas`, `defect_fraction`, `window`. A bank
  without it is what every bank before was, byte for byte; readers that do not know `/model`
  ignore it, so the schema version stays 1. Model format 2 (the temporal fit, `noise_model.
  fit_temporal`, the default of `noise-bank --model`; `--model-fit flat` writes format 1 as
  before, byte for byte) adds `fit_window` (int64: the tile side each model was fitted on) and the
  attributes `model_format` (2), `fit` ("temporal"), `tile`, `average` and `min_tiles`; its
  spectra are `[S, tile, tile]` and `[S, tile]` (`window` stays the bank's box side). Model
  format 3 (`noise-bank --model --model-nlf`) is format 2 plus each model's noise-level function
  (`noise_model.fit_nlf`) as one table of bins: `nlf_model` (int64, the bin's model), `nlf_level`,
  `nlf_sigma` (float64), `nlf_count` (int64), and the attributes `nlf_bin`, `nlf_min_count`,
  `nlf_level_box`, `nlf_hp_box`; a bank without the table (formats 1, 2) reads as before and its
  models have no function (a flat level).

The stage writes one part file per sequence in its workers (`write_part`) and merges them into
the bank (`merge_parts`). Both files are built in memory and written with one plain file write:
HDF5's own writes report a full disk as a stream of "Exception ignored" messages from
destructors and can take the worker down with them, while a Python write fails once, cleanly,
with ENOSPC. The bank goes to a temporary name and is renamed when complete, so a failed run
never leaves a file under the final name. The bytes depend only on the content (no timestamps).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import h5py
import numpy as np

from sirst5k.errors import InputError, OutputError
from sirst5k.method import noise_model as nm

SCHEMA_VERSION = 1
_STR = h5py.string_dtype("utf-8")
# Per-row numeric columns, in the order the bank stores them, with their dtypes.
ROW_FIELDS: dict[str, type] = {
    "frame_index": np.int64,
    "entry": np.int64,
    "t0": np.int64,
    "y": np.int64,
    "x": np.int64,
    "var": np.float64,
    "mean": np.float64,
    "seq_var_of_var": np.float64,
    "seq_var_of_mean": np.float64,
}
TEXT_FIELDS = ("sequence", "frame")
MODEL_GROUP = "model"
MODEL_ARRAYS: tuple[str, ...] = (*nm.SCALARS, *nm.COUNTS, *nm.SPECTRA, *nm.DEFECT_FIELDS)
MODEL_FORMAT = 2  # of the temporal fit; a bank whose /model has no `model_format` is format 1
NLF_FORMAT = 3  # the temporal fit with its noise-level function
PATCH_CHUNK_ROWS = 256
_memory_names = itertools.count()


@dataclass(frozen=True)
class Part:
    """One sequence's part file, as the noise-bank task reports it: `kept` windows, `rows` rows."""

    sequence: str
    path: str
    kept: int
    rows: int


# ---------------------------------------------------------------- writing


def part_rows(kept: np.ndarray, var: np.ndarray, mean: np.ndarray, length: int, stride: int,
              frame_names: Sequence[str]) -> dict[str, np.ndarray]:
    """The row columns of one sequence's kept windows, `length` rows per window, window-major.

    kept: `[K, 3]` `(t0, gy, gx)` from `select_windows`; var, mean: `[T, gy, gx]` per-frame box
    statistics from `window_stats`; frame_names: the file name of each of the T frames.
    Returns every ROW_FIELDS column and `frame`, each of length K * length.
    """
    kept = np.asarray(kept, dtype=np.int64).reshape(-1, 3)
    k = len(kept)
    t = kept[:, :1] + np.arange(length)[None, :]  # [K, L] frame index of each row
    v = np.asarray(var, dtype=np.float64)[t, kept[:, 1:2], kept[:, 2:3]]
    m = np.asarray(mean, dtype=np.float64)[t, kept[:, 1:2], kept[:, 2:3]]
    return {
        "frame_index": t.reshape(-1),
        "entry": np.repeat(np.arange(k), length),
        "t0": np.repeat(kept[:, 0], length),
        "y": np.repeat(kept[:, 1] * stride, length),
        "x": np.repeat(kept[:, 2] * stride, length),
        "var": v.reshape(-1),
        "mean": m.reshape(-1),
        "seq_var_of_var": np.repeat(v.var(axis=1), length),
        "seq_var_of_mean": np.repeat(m.var(axis=1), length),
        "frame": np.array([frame_names[i] for i in t.reshape(-1)], dtype=object),
    }


def write_part(path: str | Path, patches: np.ndarray, kept: np.ndarray, var: np.ndarray, mean: np.ndarray,
               frame_names: Sequence[str], stride: int, model: "nm.NoiseModel | None" = None) -> int:
    """Write one sequence's kept windows to a part file; returns its row count.

    patches: `[K, L, w, w]` uint8 from `extract_patches`; the rest as `part_rows` takes them;
    model: the sequence's fitted noise model (`noise_model.fit_sequence`), stored with it.
    A failed write leaves no file and raises OutputError naming the part.
    """
    patches = np.asarray(patches, dtype=np.uint8)
    k, length, w = patches.shape[0], patches.shape[1], patches.shape[-1]
    rows = part_rows(kept, var, mean, length, stride, frame_names)

    def fill(f: h5py.File) -> None:
        f["patches"] = patches.reshape(k * length, w, w)
        for name, dtype in ROW_FIELDS.items():
            f[name] = rows[name].astype(dtype, copy=False)
        f["frame"] = rows["frame"].astype(_STR)
        if model is not None:
            g = f.create_group(MODEL_GROUP)
            for name, value in nm.models_to_arrays([model]).items():
                g[name] = value

    _write_file(Path(path), fill, "cannot write noise-bank part", atomic=False)
    return k * length


def merge_parts(parts: Sequence[Part], out: str | Path, attrs: Mapping[str, object]) -> int:
    """Concatenate the parts, in the order given, into the bank file at `out`; returns its row count.

    attrs become the root attributes (sorted by name). Entries are renumbered across the bank.
    An empty bank is never written (ValueError: the caller says why nothing was kept).
    The file goes to a temporary name in `out`'s folder and is renamed when complete; on
    failure nothing is left under either name and OutputError names `out`. The parts are read,
    never removed (they live in the caller's scratch folder).
    """
    out = Path(out)
    parts = [p for p in parts if p.rows]
    if not parts:
        raise ValueError("merge_parts: no part holds a row")
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("patches", *TEXT_FIELDS, *ROW_FIELDS)}
    models: dict[str, list[np.ndarray]] = {k: [] for k in ("sequence", "first_row", "n_rows", *MODEL_ARRAYS)}
    entry_base = row_base = 0
    nlf_parts = 0  # parts whose models hold a noise-level function (format 3): all or none may
    for p in parts:
        try:
            with h5py.File(p.path, "r") as f:
                cols["patches"].append(f["patches"][()])
                for k in ROW_FIELDS:
                    cols[k].append(f[k][()] + (entry_base if k == "entry" else 0))
                cols["frame"].append(f["frame"].asstr()[()].astype(object))
                if MODEL_GROUP in f:
                    g = f[MODEL_GROUP]
                    for k in MODEL_ARRAYS:
                        models[k].append(g[k][()] + (len(models["sequence"]) if k == "defect_model" else 0))
                    for k in nm.TEMPORAL_FIELDS:
                        if k in g:
                            models.setdefault(k, []).append(g[k][()])
                    for k in nm.NLF_FIELDS:
                        if k in g:
                            models.setdefault(k, []).append(
                                g[k][()] + (len(models["sequence"]) if k == "nlf_model" else 0))
                    nlf_parts += nm.NLF_FIELDS[0] in g
                    models["sequence"].append(np.array([p.sequence], dtype=object))
                    models["first_row"].append(np.array([row_base], np.int64))
                    models["n_rows"].append(np.array([p.rows], np.int64))
        except (OSError, KeyError) as err:
            raise OutputError(out, f"cannot merge noise-bank part {p.path}: {_one_line(err)}") from err
        cols["sequence"].append(np.full(p.rows, p.sequence, dtype=object))
        entry_base += p.kept
        row_base += p.rows
    rows = sum(p.rows for p in parts)
    w = int(attrs["window"])

    def fill(f: h5py.File) -> None:
        for key in sorted(attrs):
            f.attrs[key] = attrs[key]
        f.create_dataset("patches", data=np.concatenate(cols["patches"]), chunks=(min(rows, PATCH_CHUNK_ROWS), w, w),
                         track_times=False, compression="gzip", compression_opts=1)
        for k in TEXT_FIELDS:
            f.create_dataset(k, data=np.concatenate(cols[k]), dtype=_STR, track_times=False)
        for k in ROW_FIELDS:
            f.create_dataset(k, data=np.concatenate(cols[k]), track_times=False)
        if models["sequence"]:
            g = f.create_group(MODEL_GROUP, track_order=False)
            tile = models.get("fit_window") and int(np.concatenate(models["psd2d"]).shape[-1])
            if "fit_window" in models and len(models["fit_window"]) != len(models["sequence"]):
                raise ValueError("merge_parts: the parts' models are of two formats")
            nlf = nlf_parts
            if nlf and nlf != len(models["sequence"]):
                raise ValueError("merge_parts: the parts' models are of two formats (a noise-level function or not)")
            for key, value in sorted(_model_attrs(w, tile or None, bool(nlf)).items()):
                g.attrs[key] = value
            for k in sorted(models):
                data = np.concatenate(models[k])
                g.create_dataset(k, data=data, dtype=_STR if k == "sequence" else None, track_times=False)

    _write_file(out, fill, "cannot write noise bank", atomic=True)
    return rows


def _model_attrs(window: int, tile: int | None = None, nlf: bool = False) -> dict[str, object]:
    """The /model group's attributes: format 1 (flat fit) as before; format 2 (tile given) adds its
    own; format 3 (with a noise-level function) the function's rule."""
    out = {"fitted_by": "sirst5k.method.noise_model.fit_sequence", "window": int(window),
           "defect_level": float(nm.DEFECT_LEVEL), "defect_sigmas": float(nm.DEFECT_SIGMAS),
           "defect_fraction": float(nm.DEFECT_FRACTION)}
    if tile:
        out.update(fitted_by="sirst5k.method.noise_model.fit_temporal", model_format=MODEL_FORMAT, fit="temporal",
                   tile=int(tile), average=nm.MODEL_AVERAGE, min_tiles=int(nm.MIN_TILES))
    if nlf:
        out.update(model_format=NLF_FORMAT, nlf_bin=float(nm.NLF_BIN), nlf_min_count=int(nm.NLF_MIN_COUNT),
                   nlf_level_box=int(nm.NLF_LEVEL_BOX), nlf_hp_box=int(nm.NLF_HP_BOX))
    return out


def _write_file(path: Path, fill: Callable[[h5py.File], None], what: str, *, atomic: bool) -> None:
    """Build an HDF5 file in memory with `fill`, then write its bytes to `path` in one go."""
    try:
        image = _hdf5_image(fill)
    except OSError as err:  # HDF5 out of memory and the like: nothing was written yet
        raise OutputError(path, f"{what}: {_one_line(err)}") from err
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}") if atomic else path
    try:
        if not path.parent.exists():  # (a file in the way fails below as "Not a directory")
            path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(image)
        if atomic:
            os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        raise OutputError(path, f"{what}: {_one_line(err)}") from err
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    """Remove a half-written file if there is one (its folder may be what failed)."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _hdf5_image(fill: Callable[[h5py.File], None]) -> bytes:
    """The bytes of the HDF5 file `fill` builds, the same as HDF5 writes for it on disk."""
    name = f"sirst5k-bank-{os.getpid()}-{next(_memory_names)}.h5"
    with h5py.File(name, "w", driver="core", backing_store=False, libver=("earliest", "v110")) as f:
        fill(f)
        f.flush()
        return f.id.get_file_image()


# ---------------------------------------------------------------- reading


@contextlib.contextmanager
def _open(path: str | Path) -> Iterator[h5py.File]:
    """The bank file open for reading, its `/patches` checked; one-line InputError otherwise."""
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise InputError(path, "cannot read noise bank: no such file") from None
    except IsADirectoryError:
        raise InputError(path, "cannot read noise bank: is a folder") from None
    except OSError as err:
        # h5py's own words for a file of another kind are "file signature not found"
        why = "not an HDF5 file" if "signature not found" in str(err) else _one_line(err)
        raise InputError(path, f"not a noise bank: {why}") from None
    with f:
        patches = f.get("patches")
        if not isinstance(patches, h5py.Dataset):
            raise InputError(path, "not a noise bank: no /patches dataset")
        shape = patches.shape
        if len(shape) != 3 or shape[1] != shape[2] or shape[1] == 0:
            raise InputError(path, f"noise bank /patches must be [R, w, w], got {shape}")
        if shape[0] == 0:
            raise InputError(path, "noise bank is empty")
        version = f.attrs.get("schema_version")
        if version is not None and _plain(version) != SCHEMA_VERSION:
            raise InputError(path, f"noise bank schema_version {_plain(version)}; this sirst5k reads "
                                   f"{SCHEMA_VERSION}: rebuild it with `sirst5k noise-bank`")
        yield f


def read_attrs(path: str | Path) -> dict[str, object]:
    """The bank's root attributes as plain Python values."""
    with _open(path) as f:
        return {k: _plain(v) for k, v in f.attrs.items()}


def bank_info(path: str | Path) -> dict:
    """What a consumer of the bank records and passes to its tasks (small; no patches):
    `{path, version, rows, window, frames_hash, models}` (models: how many noise models), plus
    `nlf: True` where the models hold a noise-level function (model format 3; the key is absent
    otherwise, so what a task key holds of a bank without one is as before)."""
    with _open(path) as f:
        attrs = {k: _plain(v) for k, v in f.attrs.items()}
        rows = int(f["patches"].shape[0])
        g = f.get(MODEL_GROUP)
        n_models = int(g["sigma"].shape[0]) if isinstance(g, h5py.Group) and "sigma" in g else 0
        nlf = bool(n_models) and nm.NLF_FIELDS[0] in g
    info = {"path": str(path), "version": str(attrs.get("version", "")), "rows": rows,
            "window": int(attrs.get("window", 0)), "frames_hash": str(attrs.get("frames_hash", "")),
            "models": n_models}
    if nlf:
        info["nlf"] = True
    return info


def read_patches(path: str | Path) -> np.ndarray:
    """The bank's `/patches`, uint8 `[R, w, w]`."""
    with _open(path) as f:
        try:
            patches = f["patches"][()]
        except OSError as err:
            raise InputError(path, f"cannot read noise bank: {_one_line(err)}") from None
    return np.asarray(patches, np.uint8)


@functools.lru_cache(maxsize=2)
def load_bank(path: str, version: str) -> np.ndarray:
    """The bank's patches, read once per worker process (version in the key: a rebuilt bank is reloaded).
    Read-only: every task of the process (the lanes of `run_here` at once) gets this one array."""
    patches = read_patches(path)
    patches.setflags(write=False)
    return patches


def read_rows(path: str | Path) -> dict[str, np.ndarray]:
    """Each row's provenance and statistics: `sequence`, `frame` (str) and every ROW_FIELDS column."""
    with _open(path) as f:
        n = f["patches"].shape[0]
        missing = [k for k in (*TEXT_FIELDS, *ROW_FIELDS) if not isinstance(f.get(k), h5py.Dataset)]
        if missing:
            raise InputError(path, f"noise bank lacks row field(s) {', '.join('/' + k for k in missing)}")
        rows = {k: f[k].asstr()[()] for k in TEXT_FIELDS}
        rows.update({k: f[k][()] for k in ROW_FIELDS})
    short = [k for k, v in rows.items() if v.shape != (n,)]
    if short:
        raise InputError(path, f"noise bank row field(s) {', '.join('/' + k for k in short)} do not have "
                               f"length {n} like /patches")
    return rows


@dataclass(frozen=True)
class BankModels:
    """The bank's noise models: `models[i]` fitted from the rows `first_row[i]` ... `+ n_rows[i]`
    of sequence `sequence[i]`; `attrs` the fit's settings and provenance."""

    sequence: tuple[str, ...]
    models: tuple["nm.NoiseModel", ...]
    first_row: np.ndarray
    n_rows: np.ndarray
    attrs: dict


def read_models(path: str | Path) -> BankModels:
    """The bank's `/model` group; InputError naming the bank when it has none or it is damaged."""
    with _open(path) as f:
        g = f.get(MODEL_GROUP)
        if not isinstance(g, h5py.Group):
            raise InputError(path, "noise bank holds no noise model: rebuild it with `sirst5k noise-bank --model`")
        missing = [k for k in ("sequence", "first_row", "n_rows", *MODEL_ARRAYS) if not isinstance(g.get(k), h5py.Dataset)]
        if missing:
            raise InputError(path, f"noise bank's /model lacks {', '.join(missing)}")
        try:
            optional = (*nm.TEMPORAL_FIELDS, *nm.NLF_FIELDS)
            arrays = {k: g[k][()] for k in (*MODEL_ARRAYS, *(k for k in optional if k in g))}
            sequence = tuple(g["sequence"].asstr()[()])
            first_row, n_rows = g["first_row"][()], g["n_rows"][()]
        except OSError as err:
            raise InputError(path, f"cannot read noise model: {_one_line(err)}") from None
        attrs = {k: _plain(v) for k, v in g.attrs.items()}
    n = len(sequence)
    bad = [k for k in (*nm.SCALARS, *nm.COUNTS, *nm.SPECTRA) if len(arrays[k]) != n]
    if bad or len(first_row) != n or len(n_rows) != n or n == 0:
        raise InputError(path, f"noise bank's /model fields do not have one entry per model ({n})")
    have = [k for k in nm.NLF_FIELDS if k in arrays]
    if have and (len(have) != len(nm.NLF_FIELDS) or len({len(arrays[k]) for k in have}) != 1):
        raise InputError(path, f"noise bank's /model noise-level function is incomplete: it has "
                               f"{', '.join(have)}")
    return BankModels(sequence, tuple(nm.models_from_arrays(arrays)), np.asarray(first_row, np.int64),
                      np.asarray(n_rows, np.int64), attrs)


@functools.lru_cache(maxsize=2)
def load_models(path: str, version: str) -> tuple["nm.NoiseModel", ...]:
    """The bank's noise models, read once per worker process (version in the key). Their arrays
    are read-only: every task of the process (the lanes of `run_here` at once) shares them."""
    models = read_models(path).models
    for model in models:
        for value in vars(model).values():
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
    return models


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def _one_line(err: BaseException) -> str:
    """An OSError's reason as one line (h5py's messages can span lines)."""
    text = getattr(err, "strerror", None) or str(err)
    return " ".join(str(text).split())
