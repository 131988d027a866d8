"""`sirst5k export MANIFEST OUT --layout dnanet|basicirstd|yolo|coco`: folders the toolboxes train from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sirst5k.stages.common import fail, user_errors

LAYOUT_NAMES = ("dnanet", "basicirstd", "yolo", "coco")  # sirst5k.export.LAYOUTS, kept light for --help


@user_errors
def command(
    manifest: Annotated[Path, typer.Argument(help="Manifest file, dataset folder or shard folder.")],
    out: Annotated[Path, typer.Argument(help="Folder to create (must be absent or empty, and not hold the dataset). "
                                             "For basicirstd its name is the dataset name.")],
    layout: Annotated[str, typer.Option("--layout", help=" | ".join(LAYOUT_NAMES) + ".")] = "dnanet",
    name: Annotated[Optional[str], typer.Option(
        "--name", help="basicirstd only: the dataset name in img_idx/<split>_<name>.txt; must be OUT's folder "
                       "name (the default), which is where BasicIRSTD looks.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty OUT.")] = False,
) -> None:
    """Write the dataset as the images, labels and split lists that the toolbox trains from unchanged."""
    from sirst5k.export import LAYOUTS, export_dataset
    from sirst5k.method.norm import norm_args

    if layout not in LAYOUTS:
        fail(f"--layout {layout}: use {' or '.join(LAYOUTS)}")
    result = export_dataset(manifest, out, layout=layout, name=name, overwrite=overwrite)
    counts = ", ".join(f"{split} {n}" for split, n in result["splits"].items())
    escaped = (f"; {result['escaped']} id(s) that cannot be file names as they are written %XX-escaped "
               "(urllib.parse.unquote gives them back)" if result["escaped"] else "")
    boxes = f", {result['targets']} targets labelled" if layout in ("yolo", "coco") else ""
    typer.echo(f"export: {result['samples']} samples ({counts}){boxes} -> {out} [{layout}]{escaped}")
    folder = Path(out).resolve()
    if layout == "dnanet":
        typer.echo(f"DNANet: --root {folder.parent} --dataset {folder.name} --split_method 50_50")
    elif layout == "basicirstd":
        cfg = result["img_norm_cfg"]
        norm = "" if cfg is None else " " + norm_args(cfg)
        typer.echo(f"BasicIRSTD: --dataset_dir {folder.parent} --dataset_names {result['name']}{norm}")
        if cfg is not None:
            typer.echo("  (normalisation of the train split, also in img_norm_cfg.json: without it BasicIRSTD "
                       "recomputes it over train and test at every start)")
    elif layout == "yolo":
        typer.echo(f"YOLO: data={folder / 'data.yaml'}")
    else:
        typer.echo(f"COCO: {folder / 'annotations'}/instances_<split>.json, images in {folder / 'images'}/<split>/")
