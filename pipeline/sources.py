"""Where a dataset's shards are: a manifest, a dataset folder holding one, or a bare shard folder.

Manifests of schema 1 and 2 are read (`formats.manifest.load_manifest` refuses others); the shards
of one split may differ in image size (schema 2), each shard one size (`Source.shapes`).

Kept apart from the torch loader so that the stages that only read shards (report, export)
and their workers do not import torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sirst5k.errors import InputError
from sirst5k.formats.manifest import dataset_dir, find_manifest, load_manifest, split_shards
from sirst5k.formats.shards import SHARD_SUFFIX, list_shards, n_samples

SPLIT_ORDER = ("train", "test")


@dataclass
class Source:
    """Where a dataset's shards are: `splits` maps split -> [(shard path, n_samples), ...]."""

    root: Path
    manifest_path: Path | None = None
    manifest: dict[str, Any] | None = None
    splits: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    # shard path -> sha256 its record (the manifest, or a bare folder's stage.json) gives
    checksums: dict[str, str] = field(default_factory=dict)
    # where the checksums come from (a manifest or stage.json), None when nothing records them
    checksums_from: Path | None = None
    # shard path -> (H, W) where the record gives it (schema 2: every shard; else read the header)
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict)

    def shards(self, split: str) -> list[tuple[str, int]]:
        if split not in self.splits:
            where = self.manifest_path or self.root
            have = ", ".join(self.splits) or "none"
            raise InputError(where, f"no split {split!r} (has {have})")
        return self.splits[split]


_SHARD_NAME = re.compile(r"^(.+?)(?:-\d+)*$")


def open_source(path: str | Path) -> Source:
    """A manifest file, a dataset folder holding `manifest.json`, or a bare shard folder.

    A manifest gives the shard list and counts; a bare folder is globbed (`<split>-*.h5`) and each
    shard's count read once. Splits come back train first, then test, then the rest by name.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such manifest or shard folder")
    manifest_path = find_manifest(path)
    if manifest_path is not None:
        manifest = load_manifest(manifest_path)
        try:
            entries = {split: split_shards(manifest_path, manifest, split) for split in _ordered(manifest["splits"])}
            splits = {split: [(s["path"], int(s["n_samples"])) for s in shard_list]
                      for split, shard_list in entries.items()}
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InputError(manifest_path, f"malformed splits in the manifest ({type(err).__name__}: {err})") from None
        checksums = {s["path"]: s["sha256"] for shard_list in entries.values() for s in shard_list
                     if isinstance(s.get("sha256"), str)}
        shapes = {s["path"]: shape for shard_list in entries.values() for s in shard_list
                  if (shape := _shape(s.get("shape"))) is not None}
        return Source(dataset_dir(manifest_path, manifest), manifest_path, manifest, splits, checksums, manifest_path,
                      shapes)
    found: dict[str, list[tuple[str, int]]] = {}
    for p in list_shards(path):
        # `<split>-<index>.h5`, and negatives' parts `<split>-<index>-<part>.h5`
        split = _SHARD_NAME.match(p.name[: -len(SHARD_SUFFIX)]).group(1)
        found.setdefault(split, []).append((str(p), n_samples(p)))
    if not found:
        raise InputError(path, f"no manifest.json and no *{SHARD_SUFFIX} shards")
    by_name, record, shape_by_name = _recorded_checksums(path)
    checksums = {p: by_name[Path(p).name] for shard_list in found.values() for p, _ in shard_list
                 if Path(p).name in by_name}
    shapes = {p: shape_by_name[Path(p).name] for shard_list in found.values() for p, _ in shard_list
              if Path(p).name in shape_by_name}
    return Source(path.resolve(), None, None, {s: found[s] for s in _ordered(found)}, checksums, record, shapes)


def _recorded_checksums(folder: Path) -> tuple[dict[str, str], Path | None, dict[str, tuple[int, int]]]:
    """A stage's shard folder records each shard's sha256 in its stage.json: {file name: sha256};
    and, where the record gives them (several sizes), {file name: (H, W)}."""
    from sirst5k.runner.outputs import STAGE_RECORD, read_stage_record

    record = read_stage_record(folder)
    if not isinstance(record, dict) or not isinstance(record.get("shards"), list):
        return {}, None, {}
    entries = [s for s in record["shards"] if isinstance(s, dict) and isinstance(s.get("path"), str)]
    sums = {s["path"]: s["sha256"] for s in entries if isinstance(s.get("sha256"), str)}
    shapes = {s["path"]: shape for s in entries if (shape := _shape(s.get("shape"))) is not None}
    return sums, folder / STAGE_RECORD, shapes


def _shape(value) -> tuple[int, int] | None:
    """A record's `shape` [H, W] as a tuple; None when absent or not two positive ints."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and \
            all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return int(value[0]), int(value[1])
    return None


def _ordered(splits) -> list[str]:
    names = list(splits)
    return [s for s in SPLIT_ORDER if s in names] + sorted(s for s in names if s not in SPLIT_ORDER)
