"""`sirst5k export MANIFEST OUT --layout dnanet|basicirstd`: PNG folders for DNANet or BasicIRSTD."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sirst5k.stages.common import fail, user_errors


@user_errors
def command(
    manifest: Annotated[Path, typer.Argument(help="Manifest file, dataset folder or shard folder.")],
    out: Annotated[Path, typer.Argument(help="Folder to create (must be absent or empty, and not hold the dataset).")],
    layout: Annotated[str, typer.Option("--layout", help="dnanet or basicirstd.")] = "dnanet",
    name: Annotated[str, typer.Option("--name", help="Dataset name in BasicIRSTD's img_idx/<split>_<name>.txt.")] = "SIRST5K",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty OUT.")] = False,
) -> None:
    """Write the dataset as images/, masks/ and split lists that the toolbox trains from unchanged."""
    from sirst5k.export import LAYOUTS, export_dataset

    if layout not in LAYOUTS:
        fail(f"--layout {layout}: use {' or '.join(LAYOUTS)}")
    result = export_dataset(manifest, out, layout=layout, name=name, overwrite=overwrite)
    counts = ", ".join(f"{split} {n}" for split, n in result["splits"].items())
    escaped = (f"; {result['escaped']} id(s) that cannot be file names as they are written %XX-escaped "
               "(urllib.parse.unquote gives them back)" if result["escaped"] else "")
    typer.echo(f"export: {result['samples']} samples ({counts}) -> {out} [{layout}]{escaped}")
