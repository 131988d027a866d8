"""What a published dataset holds: the report folder, put together.

`build_report(dataset)` writes into `<dataset>/report/` (or `out`):
- `stats.json`: counts per split and kind, targets per image, target areas, intensity and
  noise per kind, label checks (a DVC metric), and the histogram CSVs `target_sizes.csv` and
  `targets_per_image.csv` for `dvc plots` (`report.stats`);
- `originals.png`, `transfers.png`, `negatives.png`: contact sheets, mask outlines in red
  and, on negatives, the rotated box in yellow (`report.drawing`);
- `README.md`: the dataset card (`report.card`), with each split's id list and shard checksums,
  the train/test leakage check and BasicIRSTD's normalisation values.

stats.json also holds `leakage` (exact and near-duplicate test images among the train images,
sequences in both splits: `method.duplicates`, the check `sirst5k verify` makes) and
`basicirstd_norm` (the train split's `img_norm_cfg`, `method.norm`).

The shards are summarised one task each (`stats.summarize_shard`) through `map_fn`, so a stage
can run them on a dask cluster; everything else runs here on the merged summaries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import hashlib

from sirst5k.errors import InputError
from sirst5k.formats.shards import read_meta
from sirst5k.method import duplicates
from sirst5k.report.card import dataset_card
from sirst5k.report.drawing import write_contact_sheets
from sirst5k.report.stats import basicirstd_norm, compute_stats, merge_summaries, summarize_shard, write_plots
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
    here, one after another, `runner.cluster.map_tasks`; a stage passes one that runs them on a
    dask cluster).
    """
    from sirst5k.runner.cluster import map_tasks
    from sirst5k.runner.outputs import staged_folder

    src = _open(source)
    out = Path(out) if out is not None else report_dir(src)
    near = _near_kinds(src)
    tasks = [(path, split, near[split]) for split, entries in src.splits.items() for path, _ in entries]
    if map_fn is None:
        summaries = map_tasks(summarize_shard, tasks, "report")
    else:
        summaries = map_fn(summarize_shard, tasks)
    merged = merge_summaries(summaries)
    _check_counts(src, merged)
    stats = compute_stats(merged)
    stats["leakage"] = _leakage(src, summaries)
    stats["basicirstd_norm"] = basicirstd_norm(s for s in summaries if s["split"] == "train")
    splits = split_records(src, summaries)
    # the shard files (not the dataset folder) are the inputs: the default report folder is inside it
    inputs = [p for entries in src.splits.values() for p, _ in entries]
    if src.manifest_path:
        inputs.append(src.manifest_path)
    # resume=False: a crashed run's files must not reappear in this report
    with staged_folder(out, stage="report", inputs=inputs, overwrite=overwrite, resume=False) as tmp:
        # Keys in reading order (histogram bins ascending), not sorted as text.
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        write_plots(merged, tmp)
        sheets = write_contact_sheets(src, tmp)
        (tmp / "README.md").write_text(dataset_card(src, stats, sheets, splits), encoding="utf-8")
    return stats


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
