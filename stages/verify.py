"""`sirst5k verify MANIFEST`: recompute checksums and check schema, counts, masks and labels."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import Scheduler, fail, user_errors


@user_errors
def command(
    manifest: Annotated[Path, typer.Argument(help="Manifest file, or a dataset folder holding manifest.json.")],
    labels: Annotated[bool, typer.Option("--labels/--no-labels", help="Recount targets in every mask.")] = True,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Check shards on this many local "
                                                   "worker processes (default: in this process).")] = None,
    scheduler: Scheduler = None,
) -> None:
    """Check a published dataset against its manifest; exit 1 naming every problem."""
    from sirst5k.formats.manifest import find_manifest, load_manifest
    from sirst5k.runner.cluster import map_tasks, open_client
    from sirst5k.verify import verify_manifest

    path = find_manifest(manifest)
    if path is None:
        fail(f"{manifest}: no manifest file (expected a .json file or a folder holding manifest.json)")
    try:
        n = sum(len(v.get("shards", [])) for v in load_manifest(path)["splits"].values())
    except Exception:  # a broken manifest is reported by verify_manifest itself
        n = 0
    with open_client(workers, scheduler, "cpu") if workers or scheduler else nullcontext() as client:
        problems = verify_manifest(path, labels=labels,
                                   map_shards=lambda fn, jobs: map_tasks(fn, jobs, "verify", client))
    if problems:
        for p in problems:
            typer.echo(f"error: {p}", err=True)
        fail(f"{path}: {len(problems)} problem(s)", code=1)
    typer.echo(f"verify: {path}: {n} shards OK")
