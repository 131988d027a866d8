"""What a published dataset holds: the report folder, put together.

`build_report(dataset)` writes into `<dataset>/report/` (or `out`):
- `stats.json`: counts per split and kind, targets per image, target areas, intensity and
  noise per kind, label checks (a DVC metric), and the histogram CSVs `target_sizes.csv` and
  `targets_per_image.csv` for `dvc plots` (`report.stats`), and `sizes` (samples per image size
  per split and kind; the shards of one dataset may differ in size, one size per shard) with its
  CSV `image_sizes.csv`;
- `originals.png`, `transfers.png`, `negatives.png`: contact sheets, mask outlines in red
  and, on negatives, the rotated box in yellow (`report.drawing`);
- `README.md`: the dataset card (`report.card`), with each split's id list and shard checksums,
  the train/test leakage check and BasicIRSTD's normalisation values.

stats.json also holds `realism` (`report.realism`: high-pass std, estimate_sigma, row/column
profile spectra and the radially averaged PSD of the flat windows of the originals, each transfer
setting, the negatives and, where the dataset's provenance names its noise bank, the bank's
frames at the images' scale; each against the originals and the bank), drawn in `psd.png` and
listed in `realism.csv` (log10 PSD per group, for `dvc plots`).

stats.json also holds `leakage` (exact and near-duplicate test images among the train images,
sequences in both splits: `method.duplicates`, the check `sirst5k verify` makes) and
`basicirstd_norm` (the train split's `img_norm_cfg`, `method.norm`).

The shards are summarised one task each (`stats.summarize_shard`) through `map_fn`, so a stage
can run them on a dask cluster; everything else runs here on the merged summaries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

import hashlib

import numpy as np

from sirst5k.errors import InputError
from sirst5k.formats.shards import read_meta
from sirst5k.method import duplicates
from sirst5k.report.card import dataset_card
from sirst5k.report import realism
from sirst5k.report.drawing import write_contact_sheets
from sirst5k.report.stats import (basicirstd_norm, compute_stats, merge_summaries, summarize_shard, write_plots,
                                   write_size_plot)
from sirst5k.sources import Source, open_source

MapFn = Callable[[Callable[..., Any], list[tuple]], list[Any]]


def _open(source: Source | str | Path) -> Source:
    """A dataset already opened is used as it is: a command opens it once for both calls."""
    return source if isinstance(source, Source) else open_source(source)


def report_dir(source: Source | str | Path) -> Path:
    """Default report folder: `report/` inside the dataset folder."""
    return _open(source).root / "report"


def build_report(source: Source | str | Path, out: str | Path | None = None, map_fn: MapFn | None = None,
                 overwrite: bool = False) -> dict[str, Any]:
    """Write the report of a dataset (manifest, dataset folder, shard folder, or an opened
    Source); returns the stats.

    map_fn(fn, tasks) runs fn(*args) for each task and returns the results in order (default:
    here, a few at a time on threads, `runner.cluster.map_tasks`; a stage passes one that runs
    them on a dask cluster).
    """
    from sirst5k.runner.cluster import map_tasks
    from sirst5k.runner.outputs import staged_folder

    src = _open(source)
    out = Path(out) if out is not None else report_dir(src)
    near = _near_kinds(src)
    if map_fn is None:
        map_fn = lambda fn, tasks: map_tasks(fn, tasks, "report")  # noqa: E731
    provenance = _provenance(src)
    label = realism.transfer_label((provenance.get("params") or {}).get("transfer"))
    shards = [(path, split) for split, entries in src.splits.items() for path, _ in entries]
    # one batch of tasks: each shard's statistics, then each shard's realism part
    results = map_fn(_report_task, [("stats", path, split, near[split]) for path, split in shards]
                     + [("realism", path, label) for path, _ in shards])
    summaries, parts = results[: len(shards)], results[len(shards):]
    merged = merge_summaries(summaries)
    _check_counts(src, merged)
    stats = compute_stats(merged)
    bank = _find_bank(src, provenance)
    stats["realism"] = _realism(parts, bank, map_fn)
    stats["leakage"] = _leakage(src, summaries)
    stats["basicirstd_norm"] = basicirstd_norm(s for s in summaries if s["split"] == "train")
    splits = split_records(src, summaries)
    # the shard files (not the dataset folder) are the inputs: the default report folder is inside it
    inputs = [p for entries in src.splits.values() for p, _ in entries]
    if src.manifest_path:
        inputs.append(src.manifest_path)
    if bank and bank.get("file"):
        inputs.append(bank["file"])
    # resume=False: a crashed run's files must not reappear in this report
    with staged_folder(out, stage="report", inputs=inputs, overwrite=overwrite, resume=False) as tmp:
        # Keys in reading order (histogram bins ascending), not sorted as text.
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        write_plots(merged, tmp)
        write_size_plot(merged, tmp)
        if stats["realism"]["groups"]:
            realism.write_csv(stats["realism"], tmp / "realism.csv")
            realism.psd_plot(stats["realism"], tmp / "psd.png",
                             "radially averaged noise PSD of flat 32-px windows (log10), per group")
        sheets = write_contact_sheets(src, tmp)
        (tmp / "README.md").write_text(dataset_card(src, stats, sheets, splits), encoding="utf-8")
    return stats


def _report_task(what: str, *args: Any) -> Any:
    """One report task: a shard's statistics (`stats.summarize_shard`) or its realism part
    (`realism.shard_realism`)."""
    return summarize_shard(*args) if what == "stats" else realism.shard_realism(*args)


def _provenance(src: Source) -> dict[str, Any]:
    """What made the dataset: its manifest, or a bare shard folder's stage record ({} if none)."""
    if src.manifest:
        return src.manifest
    from sirst5k.runner.outputs import read_stage_record

    try:
        record = read_stage_record(src.root)
    except InputError:
        return {}
    return record if isinstance(record, dict) else {}


def _find_bank(src: Source, provenance: Mapping[str, Any]) -> dict[str, Any] | None:
    """The noise bank the provenance names (an input with a `noise_bank_version`): {"path" as
    recorded, "version", "file": where it is (None if not found or changed), "note"}; None when
    no bank is named. A relative path (the stage's working folder's) is looked for from the
    manifest's folder, the dataset folder and their parents, then from here: the first file of
    the recorded version is used, one of another version never."""
    from sirst5k.formats.bank import read_attrs

    inputs = provenance.get("inputs") if isinstance(provenance.get("inputs"), Mapping) else {}
    named = next((v for v in inputs.values() if isinstance(v, Mapping) and "noise_bank_version" in v
                  and isinstance(v.get("path"), str)), None)
    if named is None:
        return None
    recorded, version = named["path"], str(named["noise_bank_version"])
    p = Path(recorded)
    bases = []
    for anchor in ([src.manifest_path.parent] if src.manifest_path else []) + [src.root]:
        bases += [anchor.resolve(), *list(anchor.resolve().parents)[:3]]
    bases.append(Path.cwd())
    candidates = [p] if p.is_absolute() else list(dict.fromkeys(b / p for b in bases))
    out = {"path": recorded, "version": version, "file": None, "note": "not found"}
    for c in candidates:
        if not c.is_file():
            continue
        try:
            have = str(read_attrs(c).get("version", ""))
        except InputError as err:
            have = f"unreadable ({err})"
        if have == version:
            out.update(file=str(c), note=None)
            return out
        if out["note"] == "not found":  # the first one found says why
            out["note"] = f"{c.name} is version {have}, the dataset was made with {version}"
    return out


def _realism(parts: list[dict], bank: dict[str, Any] | None, map_fn: MapFn) -> dict[str, Any]:
    """stats.json's `realism`: the shards' parts merged per group (in shard order), the bank's
    frames measured at the images' scale (one more task), the figures (`realism.realism_stats`)."""
    pooled: dict[str, list] = {}
    samples: dict[str, int] = {}
    mix: dict[str, float] = {}
    for part in parts:
        for name, summary in part["groups"].items():
            pooled.setdefault(name, []).append(summary)
            samples[name] = samples.get(name, 0) + part["samples"][name]
            mix.setdefault(name, part["mix"][name])
    names = sorted(pooled, key=lambda n: realism.group_order(n, mix[n]))
    groups = {n: realism.merge(pooled[n]) for n in names}
    scale = realism.images_scale(np.concatenate([p["scales"] for p in parts]) if parts else np.zeros((0, 2)))
    bank_out = None
    if bank is not None:
        bank_out = {"path": bank["path"], "version": bank["version"], "used": bank["file"] is not None,
                    "scale": [round(scale[0], 6), round(scale[1], 6)], "measured": None, "note": bank["note"]}
        if bank["file"] is not None:
            (groups[realism.BANK],) = map_fn(realism.bank_realism, [(bank["file"], scale)])
            bank_out["measured"] = ("its patches put back where they were cut in their frames, resampled to the "
                                    "images' scale (the bank records its frames' names, not their folder)")
    figures = realism.realism_stats(groups, reference="original" if "original" in groups else None,
                                    sensor=realism.BANK if realism.BANK in groups else None, samples=samples)
    return {"window": figures["window"] or realism.WINDOW,
            "frequencies": figures["frequencies"] or [round(float(f), 5) for f in realism.frequencies()],
            "sampling": {"images_per_group_and_shard": realism.SHARD_IMAGES,
                         "windows_per_group_and_shard": realism.SHARD_WINDOWS,
                         "bank_frames": realism.BANK_FRAMES, "bank_windows": realism.BANK_WINDOWS,
                         "max_var": realism.MAX_VAR},
            "bank": bank_out, "groups": figures["groups"]}


def _near_kinds(src: Source) -> dict[str, str | None]:
    """Per split, the kind of train samples compared for near duplicates (`duplicates.near_kind`),
    from the manifest's counts or, for a bare shard folder, the shards' kinds."""
    out = {}
    for split, entries in src.splits.items():
        listed = ((src.manifest or {}).get("splits", {}).get(split) or {}).get("kinds")
        if not isinstance(listed, dict):
            listed = {}
            for path, _ in entries:
                for kind in read_meta(path)["kind"]:
                    listed[str(kind)] = listed.get(str(kind), 0) + 1
        out[split] = duplicates.near_kind(listed)
    return out


def _leakage(src: Source, summaries: list[dict]) -> dict[str, Any] | None:
    """`duplicates.find_leakage` of the train and test splits (None without both), pairs as lists."""
    prints = {split: [s["fingerprint"] for s in summaries if s["split"] == split] for split in ("train", "test")}
    if not prints["train"] or not prints["test"]:
        return None
    return duplicates.find_leakage(duplicates.concat_fingerprints(prints["train"]),
                                   duplicates.concat_fingerprints(prints["test"]), duplicates.source_layout(src.manifest))


def split_records(src: Source, summaries: list[dict]) -> dict[str, dict[str, Any]]:
    """Per split: its samples, the sha256 of its id list as the DNANet and BasicIRSTD exports write
    it (`50_50/<split>.txt`, `img_idx/<split>_<NAME>.txt`: one escaped id a line, LF, shard
    order), and its shard files with the sha256 the manifest (or stage record) gives, None if none."""
    from sirst5k.export import file_name_id, index_bytes

    out = {}
    for split, entries in src.splits.items():
        ids = [i for s in summaries if s["split"] == split for i in s["fingerprint"]["ids"]]
        shards = [(_relative(src, path), src.checksums.get(path)) for path, _ in entries]
        out[split] = {"samples": len(ids),
                      "ids_sha256": hashlib.sha256(index_bytes([file_name_id(i) for i in ids])).hexdigest(),
                      "shards": shards, "recorded_in": _relative(src, src.checksums_from) if src.checksums_from else None}
    return out


def _relative(src: Source, path) -> str:
    p = Path(path)
    try:
        return p.resolve().relative_to(src.root.resolve()).as_posix()
    except ValueError:
        return p.name


def _check_counts(src: Source, merged: dict[str, dict[str, dict]]) -> None:
    """The shards hold as many samples per split as the dataset lists: a report of a partial
    dataset would pass its numbers off as the whole."""
    expected = {split: sum(n for _, n in entries) for split, entries in src.splits.items()}
    got = {split: sum(a["samples"] for a in kinds.values()) for split, kinds in merged.items()}
    for split, n in expected.items():
        if got.get(split, 0) != n:
            raise InputError(src.manifest_path or src.root, f"split {split}: {got.get(split, 0)} samples in shards, {n} listed")
