"""`sirst5k noise-bank FRAMES --out FILE`: flat, temporally stable windows of real frames.

One task per sequence reads its frames, selects windows with `sirst5k.method.noise_bank` and
writes a part file (here, or on a dask cluster for big work: `sirst5k.runner.cluster.Runner`);
the parts are merged into one bank file. The file's layout, its writer
and its readers live in `sirst5k.formats.bank`; this module keeps the options, the plan (one
task per sequence) and what the run reports.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Annotated, Optional

import typer

from sirst5k.errors import InputError, OutputError
from sirst5k.params import NoiseBankParams

from .common import Device, Overwrite, Scheduler, Workers, user_errors, warn

P = NoiseBankParams
STAGE = P.STEP


def bank_sequence(name: str, paths: list[str], part: str, params: dict) -> dict:
    """Select the stable windows of one sequence and write them to a part file (runs in a worker)."""
    import numpy as np

    from sirst5k.formats import bank
    from sirst5k.formats.imageio import read_grey
    from sirst5k.formats.frames import sequence_shape
    from sirst5k.method.noise_bank import extract_patches, select_windows, window_max, window_min, window_stats

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
    max_peak = params.get("max_peak", 0)
    peak = window_max(stack, w, stride) - mean if max_peak else None
    max_dip = params.get("max_dip", 0)
    dip = mean - window_min(stack, w, stride) if max_dip else None
    kept = select_windows(var, mean, max_var=params["max_var"], min_mean=params["min_mean"],
                          max_seq_var=params["max_seq_var"], max_seq_mean=params["max_seq_mean"],
                          temporal=temporal, peak=peak, max_peak=max_peak, dip=dip, max_dip=max_dip)
    length = temporal or len(frames)
    patches = extract_patches(stack, kept, w, stride, length)
    model = None
    if params.get("model") and len(kept):
        from sirst5k.method.noise_model import fit_sequence

        model = fit_sequence(patches, stack)
    rows = bank.write_part(part, patches, kept, var, mean, [Path(p).name for p in used], stride, model=model)
    result.update(kept=len(kept), rows=rows)
    return result


def _file_size(path) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0  # a frame that cannot be read is the task's to report


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
    window: Annotated[int, typer.Option(help=P.help("window"))] = P.window,
    stride: Annotated[Optional[int], typer.Option(help=P.help("stride"))] = P.stride,
    max_var: Annotated[float, typer.Option(help=P.help("max_var"))] = P.max_var,
    min_mean: Annotated[float, typer.Option(help=P.help("min_mean"))] = P.min_mean,
    max_seq_var: Annotated[float, typer.Option(help=P.help("max_seq_var"))] = P.max_seq_var,
    max_seq_mean: Annotated[float, typer.Option(help=P.help("max_seq_mean"))] = P.max_seq_mean,
    temporal: Annotated[int, typer.Option(help=P.help("temporal"))] = P.temporal,
    max_peak: Annotated[float, typer.Option(help=P.help("max_peak"))] = P.max_peak,
    skip_bad: Annotated[bool, typer.Option("--skip-bad/--no-skip-bad", help=P.help("skip_bad"))] = P.skip_bad,
    max_dip: Annotated[float, typer.Option(help=P.help("max_dip"))] = P.max_dip,
    scene_corr: Annotated[float, typer.Option(help=P.help("scene_corr"))] = P.scene_corr,
    model: Annotated[bool, typer.Option("--model/--no-model", help=P.help("model"))] = P.model,
    test_set: Annotated[Optional[Path], typer.Option(
        "--test-set", help="The labelled set's test split (a shard folder such as output/ingest, an image folder or "
                           "an image): a frame that is one of its images is an error.")] = None,
    allow_overlap: Annotated[bool, typer.Option("--allow-overlap/--no-allow-overlap",
                                                help=P.help("allow_overlap"))] = P.allow_overlap,
    workers: Workers = None,
    scheduler: Scheduler = None,
    device: Device = "auto",
    overwrite: Overwrite = False,
) -> None:
    """Build the noise bank from real (or synthetic) target-free frame sequences."""
    from sirst5k import PRODUCER
    from sirst5k.formats import bank
    from sirst5k.formats.frames import list_sequences
    from sirst5k.runner.cluster import Runner
    from sirst5k.runner.outputs import check_output_file, hash_files, output_lock, task_key

    params = NoiseBankParams(window=window, stride=stride, max_var=max_var, min_mean=min_mean,
                             max_seq_var=max_seq_var, max_seq_mean=max_seq_mean, temporal=temporal,
                             max_peak=max_peak, skip_bad=skip_bad, max_dip=max_dip, scene_corr=scene_corr,
                             model=model, allow_overlap=allow_overlap)
    version = params.version_dict()
    out = Path(out)
    check_output_file(out, STAGE, [frames], overwrite)
    sequences = list_sequences(frames)
    if params.scene_corr:
        from sirst5k.formats.frames import split_scene_runs

        sequences = split_scene_runs(sequences, params.scene_corr, skip_bad=params.skip_bad)
    if test_set is not None:
        from sirst5k.formats.frames import check_test_overlap, evaluation_images

        for line in check_test_overlap([p for ps in sequences.values() for p in ps], evaluation_images(test_set),
                                       allow=params.allow_overlap, skip_bad=params.skip_bad):
            warn(line)
    parts_dir = out.parent / f".{out.name}.parts"
    with output_lock(out):
        try:
            parts_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(out, f"cannot write: {err.strerror or err}") from err
        try:
            # the tasks read the full params (max_peak and skip_bad decide what they do, also at
            # their defaults); the bank's attributes and version hold `version` alone
            task_params = {**version, "max_peak": params.max_peak, "skip_bad": params.skip_bad,
                           "max_dip": params.max_dip, "model": params.model}
            tasks = [(name, [str(p) for p in paths], str(parts_dir / f"{i:05d}.h5"), task_params)
                     for i, (name, paths) in enumerate(sequences.items())]
            try:
                # here, or on a cluster when the sequences are many and long (Runner.run decides)
                with contextlib.ExitStack() as stack:
                    # sequences differ in size: the bytes of their frames weigh the estimate of the work left
                    weights = [sum(_file_size(p) for p in paths) for paths in sequences.values()]
                    results = Runner(stack, workers, scheduler, device).run(bank_sequence, tasks, "noise-bank",
                                                                            weights=weights)
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
            attrs = {"schema_version": bank.SCHEMA_VERSION, "producer": PRODUCER, "stage": STAGE,
                     "frames_hash": hash_files(all_frames), "n_sequences": len(sequences),
                     "n_frames": len(all_frames), **version}
            attrs["version"] = task_key(attrs)[:16]
            parts = [bank.Part(r["sequence"], r["part"], r["kept"], r["rows"]) for r in results]
            rows = bank.merge_parts(parts, out, attrs)
        finally:
            # The parts folder is this stage's scratch space: nothing of it outlives the run.
            shutil.rmtree(parts_dir, ignore_errors=True)
    bad = sum(r["bad"] for r in results)
    typer.echo(f"noise-bank: {sum(r['kept'] for r in results)} windows, {rows} patches of {window}x{window} -> {out}"
               + (f"; {bad} unreadable frame(s) skipped" if skip_bad else ""))
