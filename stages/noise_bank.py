"""`sirst5k noise-bank FRAMES --out FILE`: flat, temporally stable windows of real frames.

One task per sequence decodes its frames once (on `task_threads()` threads in the command's
process), splits them at scene cuts (`--scene-corr`), selects each run's windows with
`sirst5k.method.noise_bank` and writes a part file per run (here, or on a dask cluster for big
work: `sirst5k.runner.cluster.Runner`); the parts are merged into one bank file. The file's layout, its writer
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


def bank_sequence(name: str, paths: list[str], part: str, params: dict) -> list[dict]:
    """One sequence's frames, decoded once, split at its scene cuts (`--scene-corr`; the
    thumbnails come from the same decode) and each run's stable windows written to a part file
    `<part>-<k>.h5` (runs in the command's process or a worker). Returns one result per run, in
    run order (a sequence of one run keeps its name; runs are `<name>-run<k>`)."""
    from sirst5k.formats.frames import run_names, scene_run_index, thumbnail
    from sirst5k.formats.imageio import read_grey
    from sirst5k.runner.cluster import thread_map

    scene_corr = params.get("scene_corr")

    def read(p: str):
        # (pixels, their scene thumbnail, error): PNG decoding and PIL's resize release the GIL
        try:
            img = read_grey(p)
        except InputError as err:
            return None, None, err
        return img, thumbnail(img, standardise=False) if scene_corr else None, None

    decoded = thread_map(read, paths)
    images, thumbs, errors = [], [], []
    for img, thumb, err in decoded:  # the first unreadable frame in frame order is the error
        if err is not None and not params.get("skip_bad"):
            raise err
        images.append(img)
        thumbs.append(thumb)
        errors.append(None if err is None else f"{err}; skipped")
    del decoded
    runs = [(name, list(range(len(paths))))]
    if scene_corr:
        runs = run_names(name, scene_run_index(images, scene_corr, thumbs))
    results = [_bank_run(run, [paths[i] for i in idx], [images[i] for i in idx], [errors[i] for i in idx],
                         f"{part}-{k:04d}.h5", params)
               for k, (run, idx) in enumerate(runs)]
    single = [r for r in results if r.pop("too_few", False)]
    if len(runs) > 1 and single:
        # one line for the sequence, not one per run: a folder of sparse views (SIRST-V2) is cut
        # at most frames, and a warning per one-frame run would bury the others
        for r in single:
            r["warnings"] = [w for w in r["warnings"] if "usable frame(s), needs 2" not in w]
        single[0]["warnings"].append(
            f"sequence {name}: {len(single)} of its {len(runs)} scene runs hold one usable frame; skipped "
            f"(--scene-corr {scene_corr} cuts at a frame unlike the one before; --scene-corr 0 keeps "
            f"consecutive frames together)")
    return results


def _bank_run(name: str, paths: list[str], decoded: list, errors: list, part: str, params: dict) -> dict:
    """Select the stable windows of one scene run (frames decoded, None where unreadable) and
    write them to a part file."""
    import numpy as np

    from sirst5k.formats import bank
    from sirst5k.formats.frames import sequence_shape
    from sirst5k.method.noise_bank import (extract_patches, select_windows, spot_test_boxes, window_max, window_min,
                                           window_spots, window_stats)

    images = [img for img in decoded if img is not None]
    skipped = [e for e in errors if e is not None]
    paths = [p for p, img in zip(paths, decoded) if img is not None]
    n_bad = len(skipped)
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
        result["too_few"] = True
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
    rule = dict(max_var=params["max_var"], min_mean=params["min_mean"], max_seq_var=params["max_seq_var"],
                max_seq_mean=params["max_seq_mean"], temporal=temporal, peak=peak, max_peak=max_peak, dip=dip,
                max_dip=max_dip)
    kept = select_windows(var, mean, **rule)
    length = temporal or len(frames)
    spot_sigmas = params.get("spot_sigmas", 0)
    spot_rejected = 0
    if spot_sigmas and len(kept):  # the clean-bank default: how many windows it takes out is reported and versioned
        # only the boxes of windows every other test kept can change what is kept
        spots = window_spots(stack, w, stride, spot_sigmas, params.get("spot_floor", 0),
                             where=spot_test_boxes(kept, var.shape, length))
        clean = select_windows(var, mean, **rule, spots=spots)
        spot_rejected, kept = len(kept) - len(clean), clean
    patches = extract_patches(stack, kept, w, stride, length)
    model = None
    if params.get("model") and len(kept):
        from sirst5k.method.noise_model import fit_sequence, fit_temporal

        if params.get("model_fit", "flat") == "temporal":
            model = fit_temporal(stack, kept, length, w, stride=stride, tile=params["model_tile"],
                                 nlf=bool(params.get("model_nlf", False)))
            if model is None:
                result["warnings"].append(f"sequence {name}: no pair of frames with a stable {w}-px window; no "
                                          f"noise model")
        else:
            model = fit_sequence(patches, stack)
    rows = bank.write_part(part, patches, kept, var, mean, [Path(p).name for p in used], stride, model=model)
    result.update(kept=len(kept), rows=rows, spot_rejected=spot_rejected)
    return result


def _file_size(path) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0  # a frame that cannot be read is the task's to report


_TABLE_TITLE = "noise bank: windows kept per sequence"
_TABLE_COLUMNS = ("sequence", "frames used", "windows kept", "patch rows")
_TABLE_WIDTH = 100  # the console width the table is laid out for


def _table_cells(results: list[dict]) -> list[list[str]]:
    cells = [[r["sequence"], str(r["frames"]), str(r["kept"]), str(r["rows"])] for r in results]
    cells.append(["total", str(sum(r["frames"] for r in results)), str(sum(r["kept"] for r in results)),
                  str(sum(r["rows"] for r in results))])
    return cells


def table_text(results: list[dict]) -> str | None:
    """The per-run table as rich lays it out without a terminal (heavy head, the first column
    left, the others right), or None where rich would have to fold it (wider than the console):
    rich takes ~1.5 ms a row to render, 0.35 s for the 223 scene runs of SIRST-V2."""
    cells = _table_cells(results)
    widths = [max(len(c) for c in col) for col in zip(_TABLE_COLUMNS, *cells)]
    width = sum(widths) + 3 * len(widths) + 1
    if width > _TABLE_WIDTH or any(not c.isprintable() or not c.isascii() for row in cells for c in row):
        return None

    def line(left: str, fill: str, sep: str, right: str) -> str:
        return left + sep.join(fill * (w + 2) for w in widths) + right

    def row(values, bar: str) -> str:
        texts = [v.ljust(w) if k == 0 else v.rjust(w) for k, (v, w) in enumerate(zip(values, widths))]
        return bar + bar.join(f" {t} " for t in texts) + bar

    pad = width - len(_TABLE_TITLE)
    title = " " * (pad // 2) + _TABLE_TITLE + " " * (pad - pad // 2)
    out = [title, line("┏", "━", "┳", "┓"), row(_TABLE_COLUMNS, "┃"), line("┡", "━", "╇", "┩")]
    out += [row(values, "│") for values in cells]
    out.append(line("└", "─", "┴", "┘"))
    return "\n".join(out)


def print_table(results: list[dict]) -> None:
    text = table_text(results)
    if text is not None:
        typer.echo(text)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=_TABLE_TITLE)
    for col in _TABLE_COLUMNS:
        table.add_column(col, justify="left" if col == "sequence" else "right")
    cells = _table_cells(results)
    for values in cells[:-1]:
        table.add_row(*values)
    table.add_row(*cells[-1], style="bold")
    Console(stderr=False, width=_TABLE_WIDTH).print(table)


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
    spot_sigmas: Annotated[float, typer.Option(help=P.help("spot_sigmas"))] = P.spot_sigmas,
    spot_floor: Annotated[float, typer.Option(help=P.help("spot_floor"))] = P.spot_floor,
    model_fit: Annotated[str, typer.Option(help=P.help("model_fit"))] = P.model_fit,
    model_tile: Annotated[int, typer.Option(help=P.help("model_tile"))] = P.model_tile,
    model_nlf: Annotated[bool, typer.Option("--model-nlf/--no-model-nlf", help=P.help("model_nlf"))] = P.model_nlf,
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
                             model=model, allow_overlap=allow_overlap, spot_sigmas=spot_sigmas,
                             spot_floor=spot_floor, model_fit=model_fit, model_tile=model_tile, model_nlf=model_nlf)
    version = params.version_dict()
    out = Path(out)
    check_output_file(out, STAGE, [frames], overwrite)
    sequences = list_sequences(frames)
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
                           "max_dip": params.max_dip, "model": params.model, "spot_sigmas": params.spot_sigmas,
                           "spot_floor": params.spot_floor, "model_fit": params.model_fit,
                           "model_tile": params.tile, "scene_corr": params.scene_corr,
                           "model_nlf": params.model_nlf}
            # one task a sequence: it decodes the frames once, splits them at scene cuts and banks each run
            tasks = [(name, [str(p) for p in paths], str(parts_dir / f"{i:05d}"), task_params)
                     for i, (name, paths) in enumerate(sequences.items())]
            try:
                # here, or on a cluster when the sequences are many and long (Runner.run decides)
                with contextlib.ExitStack() as stack:
                    # sequences differ in size: the bytes of their frames weigh the estimate of the work left
                    weights = [sum(_file_size(p) for p in paths) for paths in sequences.values()]
                    per_sequence = Runner(stack, workers, scheduler, device).run(bank_sequence, tasks, "noise-bank",
                                                                                 weights=weights)
            except OutputError as err:
                # a part file is scratch space the user never sees: name the bank instead
                raise OutputError(out, err.problem) from err
            results = [r for runs in per_sequence for r in runs]  # one a scene run
            split = any(len(runs) > 1 for runs in per_sequence)
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
            spotted = sum(r.get("spot_rejected", 0) for r in results)
            if split or spotted:
                typer.echo(f"noise-bank: clean-bank defaults: {len(results)} scene runs"
                           + (f" (--scene-corr {params.scene_corr:g} cut {len(sequences)} sequences)" if split else "")
                           + f"; {spotted} window(s) with a spot rejected (--spot-sigmas {params.spot_sigmas:g}, "
                             f"--spot-floor {params.spot_floor:g})")
            version = params.applied_version(split, bool(spotted))
            attrs = {"schema_version": bank.SCHEMA_VERSION, "producer": PRODUCER, "stage": STAGE,
                     "frames_hash": hash_files(all_frames), "n_sequences": len(results),
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
