"""`sirst5k verify MANIFEST`: recompute checksums and check schema, counts, masks and labels; warn
about train/test leakage (exact and near-duplicate images across the splits, shared sequences)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import Scheduler, fail, user_errors, warn


@user_errors
def command(
    manifest: Annotated[Path, typer.Argument(help="Manifest file, or a dataset folder holding manifest.json.")],
    labels: Annotated[bool, typer.Option("--labels/--no-labels", help="Recount targets in every mask.")] = True,
    leakage: Annotated[bool, typer.Option("--leakage/--no-leakage", help="Look for test images that (nearly) "
                                          "duplicate train images, and sequences in both splits: warnings, "
                                          "not errors.")] = True,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Check shards on this many local "
                                                   "worker processes (default: in this process).")] = None,
    scheduler: Scheduler = None,
) -> None:
    """Check a published dataset against its manifest; exit 1 naming every problem. Leakage
    between train and test is warned about (counts and pairs), exit 0."""
    from sirst5k.formats.manifest import find_manifest, load_manifest
    from sirst5k.runner.cluster import map_tasks, open_client
    from sirst5k.verify import verify_dataset

    path = find_manifest(manifest)
    if path is None:
        fail(f"{manifest}: no manifest file (expected a .json file or a folder holding manifest.json)")
    try:
        n = sum(len(v.get("shards", [])) for v in load_manifest(path)["splits"].values())
    except Exception:  # a broken manifest is reported by verify_manifest itself
        n = 0
    with open_client(workers, scheduler, "cpu") if workers or scheduler else nullcontext() as client:
        found = verify_dataset(path, labels=labels, leakage=leakage,
                               map_shards=lambda fn, jobs: map_tasks(fn, jobs, "verify", client))
    if found.problems:
        for p in found.problems:
            typer.echo(f"error: {p}", err=True)
        fail(f"{path}: {len(found.problems)} problem(s)", code=1)
    for line in found.warnings:
        warn(f"{path}: leakage: {line}")
    leak = found.leakage
    checked = ""
    if leak is not None:
        groups = leak["groups"]
        checked = (f"; leakage: {leak['exact']['test_images']} test image(s) with an exact duplicate in train, "
                   f"{leak['near']['test_images']} with a near duplicate"
                   + (f", {groups['in_both']} sequence(s) in both splits" if groups is not None else ""))
    elif leakage:
        checked = "; leakage not checked (needs a train and a test split)"
    typer.echo(f"verify: {path}: {n} shards OK{checked}")
