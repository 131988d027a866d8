"""The samples an evaluation reads: one split of a dataset, a manifest or any stage's shard folder.

Small enough for memory on the sets this targets (SIRST v1 at 256 px: 427 images, 56 MB with
masks; a NUDT-sized SIRST-5K train split: ~640 MB), so a split is read once into arrays. Every
shard's sha256 is taken as it is read: the run keys in `experiment` name the exact bytes.

A bare folder is globbed as `<split>-*.h5` (negatives names its parts `train-00000-001.h5`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sirst5k.errors import InputError
from sirst5k.formats.manifest import find_manifest
from sirst5k.formats.shards import list_shards, read_shard, sha256_file
from sirst5k.sources import open_source


@dataclass
class SplitData:
    """One split's samples in memory: images, masks uint8 [N, H, W] (masks 0/255) and ids."""

    images: np.ndarray
    masks: np.ndarray
    sample_id: np.ndarray  # str [N]
    source_id: np.ndarray  # str [N]: the original image a generated sample was made from
    kind: np.ndarray  # str [N]: original | transfer | negative
    shards: list[tuple[str, str]]  # (path, sha256) in read order

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.images.shape[1]), int(self.images.shape[2]))

    def take(self, keep: np.ndarray) -> "SplitData":
        """The samples where `keep` (bool [N] or indices) selects."""
        return SplitData(self.images[keep], self.masks[keep], self.sample_id[keep], self.source_id[keep],
                         self.kind[keep], self.shards)


def shard_paths(path: str | Path, split: str) -> list[Path]:
    """The shards of `split` in a manifest, a dataset folder holding one, or a bare shard folder."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "dataset not found")
    if find_manifest(path) is not None:
        source = open_source(path)
        if not source.splits.get(split):
            raise InputError(path, f"no {split} shards")
        return [Path(p) for p, _ in source.splits[split]]
    if not path.is_dir():
        raise InputError(path, "not a manifest or a shard folder")
    found = list_shards(path, split)
    if not found:
        raise InputError(path, f"no {split} shards")
    return found


def load_split(path: str | Path, split: str) -> SplitData:
    """Every sample of one split, in shard order. All samples must share one size."""
    images, masks, sid, src, kind, record = [], [], [], [], [], []
    for p in shard_paths(path, split):
        if not p.is_file():
            raise InputError(p, f"{split} shard is missing")
        im, ma, meta = read_shard(p)
        images.append(im)
        masks.append(ma)
        sid.append(np.asarray(meta["sample_id"]).astype(str))
        src.append(np.asarray(meta["source_id"]).astype(str))
        kind.append(np.asarray(meta["kind"]).astype(str))
        record.append((str(p), sha256_file(p)))
    shapes = sorted({tuple(a.shape[1:]) for a in images if len(a)})
    if len(shapes) > 1:
        raise InputError(path, f"{split} samples differ in size {shapes}; ingest at one --size")
    return SplitData(np.concatenate(images), np.concatenate(masks), np.concatenate(sid), np.concatenate(src),
                     np.concatenate(kind), record)
