"""`sirst5k noise-bank FRAMES --out FILE`: flat, temporally stable windows of real frames.

One dask task per sequence writes a part file; the parts are merged into one HDF5 bank:
`/patches` uint8 [R, w, w], one row per (kept window, frame), so `noise_id` is a row index,
with per-row provenance (`sequence`, `frame`, `frame_index`, `entry`, `t0`, `y`, `x`) and
statistics (`var`, `mean`, and the entry's `seq_var_of_var`, `seq_var_of_mean`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Annotated, Optional

import h5py
import numpy as np
import typer

from sirst5k import PRODUCER
from sirst5k.runner.cluster import open_client, run_tasks
from sirst5k.errors import InputError, OutputError
from sirst5k.formats.imageio import read_grey
from sirst5k.formats.layouts import list_sequences, sequence_shape
from sirst5k.method.noise_bank import extract_patches, select_windows, window_max, window_stats
from sirst5k.runner.outputs import hash_files, task_key

from sirst5k.stages.common import Device, Scheduler, Workers, user_errors, warn

STAGE = "noise-bank"
BANK_SCHEMA_VERSION = 1
_STR = h5py.string_dtype("utf-8")


def bank_sequence(name: str, paths: list[str], part: str, params: dict) -> dict:
    """Select the stable windows of one sequence and write them to a part file."""
    images, readable, skipped = [], [], []
    for p in paths:
        try:
            images.append(read_grey(p))
            readable.append(p)
        except InputError as err:
            if not params.get("skip_bad"):
                raise
            skipped.append(f"{err}; skipped")
    paths, n_bad = readable, len(skipped)
    if not images:
        return {"sequence": name, "frames": 0, "kept": 0, "rows": 0, "part": part, "bad": n_bad,
                "warnings": skipped + [f"sequence {name}: no readable frame; skipped"]}
    # The sequence's size is its most common one: a single odd first frame must not discard the rest.
    shape = sequence_shape(img.shape for img in images)
    frames, used = [], []
    for p, img in zip(paths, images):
        if img.shape != shape:
            skipped.append(f"{p}: frame is {img.shape[1]}x{img.shape[0]}, most frames of sequence {name} are "
                           f"{shape[1]}x{shape[0]}; skipped")
            continue
        frames.append(img)
        used.append(p)
    del images
    w, stride, temporal = params["window"], params["stride"], params["temporal"]
    result = {"sequence": name, "frames": len(used), "kept": 0, "rows": 0, "part": part, "bad": n_bad,
              "warnings": skipped}
    if len(frames) < 2:
        result["warnings"].append(f"sequence {name}: {len(frames)} usable frame(s), needs 2 to test stability; skipped")
        return result
    if temporal and temporal > len(frames):
        result["warnings"].append(f"sequence {name}: {len(frames)} frames < --temporal {temporal}; skipped")
        return result
    if min(frames[0].shape) < w:
        result["warnings"].append(f"sequence {name}: frames smaller than the {w}-pixel window; skipped")
        return result
    stack = np.stack(frames)
    var, mean = window_stats(stack, w, stride)
    var, mean = np.asarray(var, dtype=np.float64), np.asarray(mean, dtype=np.float64)
    max_peak = params.get("max_peak", 0)
    peak = window_max(stack, w, stride) - mean if max_peak else None
    kept = np.asarray(
        select_windows(var, mean, max_var=params["max_var"], min_mean=params["min_mean"],
                       max_seq_var=params["max_seq_var"], max_seq_mean=params["max_seq_mean"], temporal=temporal,
                       peak=peak, max_peak=max_peak)
    ).reshape(-1, 3)
    length = temporal or len(frames)
    k = len(kept)
    patches = np.asarray(extract_patches(stack, kept, w, stride, length), dtype=np.uint8).reshape(k, length, w, w)
    t = kept[:, :1] + np.arange(length)[None, :]  # [K, L] frame index of each row
    gy, gx = kept[:, 1:2], kept[:, 2:3]
    v = var[t, gy, gx]
    m = mean[t, gy, gx]
    try:
        _write_part(part, patches.reshape(k * length, w, w), kept, t, v, m, used, length, stride)
    except OSError as err:
        Path(part).unlink(missing_ok=True)
        raise OutputError(part, f"cannot write noise-bank part: {err.strerror or err}") from err
    result.update(kept=k, rows=k * length)
    return result


def _write_part(part: str, patches: np.ndarray, kept: np.ndarray, t: np.ndarray, v: np.ndarray, m: np.ndarray,
                used: list[str], length: int, stride: int) -> None:
    k = len(kept)
    with h5py.File(part, "w") as f:
        f["patches"] = patches
        f["frame_index"] = t.reshape(-1)
        f["entry"] = np.repeat(np.arange(k), length)
        f["t0"] = np.repeat(kept[:, 0], length)
        f["y"] = np.repeat(kept[:, 1] * stride, length)
        f["x"] = np.repeat(kept[:, 2] * stride, length)
        f["var"] = v.reshape(-1)
        f["mean"] = m.reshape(-1)
        f["seq_var_of_var"] = np.repeat(v.var(axis=1), length)
        f["seq_var_of_mean"] = np.repeat(m.var(axis=1), length)
        f["frame"] = np.array([Path(used[i]).name for i in t.reshape(-1)], dtype=object).astype(_STR)


_ROW_FIELDS = ("frame_index", "entry", "t0", "y", "x", "var", "mean", "seq_var_of_var", "seq_var_of_mean")


def merge_parts(results: list[dict], out: Path, attrs: dict) -> int:
    """Concatenate the parts in sequence order into the bank file (temporary name, then rename)."""
    parts = [r for r in results if r["rows"]]
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        cols: dict[str, list] = {k: [] for k in ("patches", "sequence", "frame", *_ROW_FIELDS)}
        entry_base = 0
        for r in parts:
            with h5py.File(r["part"], "r") as f:
                cols["patches"].append(f["patches"][()])
                for k in _ROW_FIELDS:
                    cols[k].append(f[k][()] + (entry_base if k == "entry" else 0))
                cols["frame"].append(f["frame"].asstr()[()].astype(object))
                cols["sequence"].append(np.full(r["rows"], r["sequence"], dtype=object))
                entry_base += r["kept"]
        rows = sum(r["rows"] for r in parts)
        w = attrs["window"]
        with h5py.File(tmp, "w", libver=("earliest", "v110")) as f:
            for key in sorted(attrs):
                f.attrs[key] = attrs[key]
            f.create_dataset("patches", data=np.concatenate(cols["patches"]) if rows else np.zeros((0, w, w), np.uint8),
                             chunks=(min(max(rows, 1), 256), w, w), track_times=False,
                             compression="gzip", compression_opts=1)
            for k in ("sequence", "frame"):
                f.create_dataset(k, data=np.concatenate(cols[k]) if rows else np.zeros(0, object), dtype=_STR,
                                 track_times=False)
            for k in _ROW_FIELDS:
                f.create_dataset(k, data=np.concatenate(cols[k]) if rows else np.zeros(0), track_times=False)
        os.replace(tmp, out)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(out, f"cannot write noise bank: {err.strerror or err}") from err
    finally:
        for r in results:
            Path(r["part"]).unlink(missing_ok=True)
    return rows


def print_table(results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="noise bank: windows kept per sequence")
    for col in ("sequence", "frames used", "windows kept", "patch rows"):
        table.add_column(col, justify="left" if col == "sequence" else "right")
    for r in results:
        table.add_row(r["sequence"], str(r["frames"]), str(r["kept"]), str(r["rows"]))
    table.add_row("total", str(sum(r["frames"] for r in results)), str(sum(r["kept"] for r in results)),
                  str(sum(r["rows"] for r in results)), style="bold")
    Console(stderr=False, width=100).print(table)


@user_errors
def command(
    frames: Annotated[Path, typer.Argument(help="Frame sequences: one folder per sequence, or NAME-<n>.png files.")],
    out: Annotated[Path, typer.Option("--out", help="Output bank file (.h5).")],
    window: Annotated[int, typer.Option(min=2, help="Window side in pixels.")] = 32,
    stride: Annotated[Optional[int], typer.Option(min=1, help="Grid step (default: the window).")] = None,
    max_var: Annotated[float, typer.Option(help="Keep windows whose variance is below this in every frame.")] = 50.0,
    min_mean: Annotated[float, typer.Option(help="... and whose mean is above this in every frame.")] = 0.0,
    max_seq_var: Annotated[float, typer.Option(help="Most variance of the window variances across frames.")] = 50.0,
    max_seq_mean: Annotated[float, typer.Option(help="Most variance of the window means across frames.")] = 50.0,
    temporal: Annotated[int, typer.Option(min=0, help="Frames per sliding temporal window; 0 = whole sequence.")] = 0,
    max_peak: Annotated[float, typer.Option(min=0, help="Reject a window whose brightest pixel rises this many grey "
                                            "levels above its mean in any frame (small targets, hot pixels); "
                                            "0 = no limit, as in the paper.")] = 0.0,
    skip_bad: Annotated[bool, typer.Option("--skip-bad/--no-skip-bad",
                                           help="Warn about unreadable frames and leave them out.")] = False,
    workers: Workers = None,
    scheduler: Scheduler = None,
    device: Device = "auto",
) -> None:
    """Build the noise bank from real (or synthetic) target-free frame sequences."""
    sequences = list_sequences(frames)
    params = {"window": window, "stride": stride or window, "max_var": max_var, "min_mean": min_mean,
              "max_seq_var": max_seq_var, "max_seq_mean": max_seq_mean, "temporal": temporal}
    # only when set: a bank built without these keeps the version it always had
    if max_peak:
        params["max_peak"] = max_peak
    if skip_bad:
        params["skip_bad"] = True
    out = Path(out)
    if out.exists() and out.is_dir():
        raise OutputError(out, "is a folder; --out names the bank file")
    parts_dir = out.parent / f".{out.name}.parts"
    try:
        parts_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(out, f"cannot write: {err.strerror or err}") from err
    try:
        tasks = [(name, [str(p) for p in paths], str(parts_dir / f"{i:05d}.h5"), params)
                 for i, (name, paths) in enumerate(sequences.items())]
        try:
            with open_client(workers, scheduler, device) as client:
                results = run_tasks(client, bank_sequence, tasks, "noise-bank")
        except OutputError as err:
            # a part file is scratch space the user never sees: name the bank instead
            raise OutputError(out, err.problem) from err
        for r in results:
            for w in r["warnings"]:
                warn(w)
        print_table(results)
        if not any(r["rows"] for r in results):
            hint = ("no window passed the thresholds: loosen --max-var / --max-seq-var / --max-seq-mean, lower "
                    "--min-mean")
            if temporal != 2:
                hint += ", or set --temporal 2 (real sequences are sparse and moving)"
            raise InputError(frames, f"empty noise bank: {hint}")
        all_frames = [p for paths in sequences.values() for p in paths]
        attrs = {"schema_version": BANK_SCHEMA_VERSION, "producer": PRODUCER, "stage": STAGE,
                 "frames_hash": hash_files(all_frames), "n_sequences": len(sequences), "n_frames": len(all_frames),
                 **params}
        attrs["version"] = task_key(attrs)[:16]
        rows = merge_parts(results, out, attrs)
    finally:
        # The parts folder is this stage's scratch space: nothing of it outlives the run.
        shutil.rmtree(parts_dir, ignore_errors=True)
    bad = sum(r["bad"] for r in results)
    typer.echo(f"noise-bank: {sum(r['kept'] for r in results)} windows, {rows} patches of {window}x{window} -> {out}"
               + (f"; {bad} unreadable frame(s) skipped" if skip_bad else ""))
