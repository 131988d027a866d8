"""What a published dataset holds: the report folder, put together.

`build_report(dataset)` writes into `<dataset>/report/` (or `out`):
- `stats.json`: counts per split and kind, targets per image, target areas, intensity and
  noise per kind, label checks (a DVC metric), and the histogram CSVs `target_sizes.csv` and
  `targets_per_image.csv` for `dvc plots` (`report.stats`);
- `originals.png`, `transfers.png`, `negatives.png`: contact sheets, mask outlines in red
  and, on negatives, the rotated box in yellow (`report.drawing`);
- `README.md`: the dataset card (`report.card`).

The shards are summarised one task each (`stats.summarize_shard`) through `map_fn`, so a stage
can run them on a dask cluster; everything else runs here on the merged summaries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from sirst5k.errors import InputError
from sirst5k.report.card import dataset_card
from sirst5k.report.drawing import write_contact_sheets
from sirst5k.report.stats import compute_stats, merge_summaries, summarize_shard, write_plots
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
    tasks = [(path, split) for split, entries in src.splits.items() for path, _ in entries]
    if map_fn is None:
        summaries = map_tasks(summarize_shard, tasks, "report")
    else:
        summaries = map_fn(summarize_shard, tasks)
    merged = merge_summaries(summaries)
    _check_counts(src, merged)
    stats = compute_stats(merged)
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
        (tmp / "README.md").write_text(dataset_card(src, stats, sheets), encoding="utf-8")
    return stats


def _check_counts(src: Source, merged: dict[str, dict[str, dict]]) -> None:
    """The shards hold as many samples per split as the dataset lists: a report of a partial
    dataset would pass its numbers off as the whole."""
    expected = {split: sum(n for _, n in entries) for split, entries in src.splits.items()}
    got = {split: sum(a["samples"] for a in kinds.values()) for split, kinds in merged.items()}
    for split, n in expected.items():
        if got.get(split, 0) != n:
            raise InputError(src.manifest_path or src.root, f"split {split}: {got.get(split, 0)} samples in shards, {n} listed")
