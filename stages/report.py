"""`sirst5k report DATASET_DIR`: stats.json, plots, contact sheets and the dataset card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sirst5k.stages.common import Scheduler, Workers, user_errors


@user_errors
def command(
    dataset: Annotated[Path, typer.Argument(help="Published dataset folder (or its manifest, or a shard folder).")],
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Report folder (default: DATASET_DIR/report).")
    ] = None,
    workers: Workers = None,
    scheduler: Scheduler = None,
) -> None:
    """Write stats.json, plots, contact sheets and the dataset card of a dataset.

    With --workers or --scheduler the shards are summarised as dask tasks; otherwise here, one
    after another (a few seconds for 5,000 samples).
    """
    from sirst5k.runner.cluster import progress_bar
    from sirst5k.report.build import build_report, report_dir

    target = out if out is not None else report_dir(dataset)
    if workers or scheduler:
        from sirst5k.runner.cluster import open_client, run_tasks

        with open_client(workers, scheduler, device="cpu") as client:
            stats = build_report(dataset, target, map_fn=lambda fn, tasks: run_tasks(client, fn, tasks, "report"))
    else:

        def local(fn, tasks):
            results = []
            with progress_bar("report", len(tasks)) as advance:
                for args in tasks:
                    results.append(fn(*args))
                    advance()
            return results

        stats = build_report(dataset, target, map_fn=local)
    splits = ", ".join(f"{name} {s['samples']}" for name, s in stats["splits"].items())
    typer.echo(f"report: {stats['samples']} samples ({splits}), {stats['targets']} targets -> {target}")
