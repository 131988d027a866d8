"""`sirst5k report DATASET_DIR`: stats.json, plots, contact sheets, noise realism and the dataset card."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import Overwrite, Scheduler, Workers, user_errors


@user_errors
def command(
    dataset: Annotated[Path, typer.Argument(help="Published dataset folder (or its manifest, or a shard folder).")],
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Report folder (default: DATASET_DIR/report).")
    ] = None,
    workers: Workers = None,
    scheduler: Scheduler = None,
    overwrite: Overwrite = False,
) -> None:
    """Write stats.json, plots, contact sheets, the noise realism (psd.png, realism.csv) and the dataset card.

    With --workers or --scheduler the shards are summarised as dask tasks; otherwise here, min(4,
    cores) at a time on threads (a few seconds for 5,000 samples).
    """
    from sirst5k.report.build import build_report, report_dir
    from sirst5k.runner.cluster import map_tasks, open_client
    from sirst5k.sources import open_source

    source = open_source(dataset)
    target = out if out is not None else report_dir(source)
    with open_client(workers, scheduler, device="cpu") if workers or scheduler else nullcontext() as client:
        stats = build_report(source, target, map_fn=lambda fn, tasks: map_tasks(fn, tasks, "report", client),
                             overwrite=overwrite)
    splits = ", ".join(f"{name} {s['samples']}" for name, s in stats["splits"].items())
    typer.echo(f"report: {stats['samples']} samples ({splits}), {stats['targets']} targets -> {target}")
