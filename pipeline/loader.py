"""A torch Dataset over published shards, for training code in other repositories.

    from sirst5k.loader import ShardDataset
    ds = ShardDataset("output/sirst5k", split="train", channels=3)
    image, mask = ds[0]            # float32 [3, H, W] in [0, 1], float32 [1, H, W] in {0, 1}

Needs only numpy, h5py and torch. The index (shard, row) is built from sample counts up front;
HDF5 files are opened on first use in each process and kept open there. A handle opened before
a fork (DataLoader workers) is never used after it: HDF5 library state is per process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from sirst5k.errors import InputError
from sirst5k.formats.shards import concat_meta, read_meta, sha256_file
from sirst5k.sources import Source, open_source  # noqa: F401 - part of the loader's API

Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
DTYPES = ("float32", "uint8")


class _Shard:
    """One open shard in this process: dataset ids and file selections reused for every read.

    Every failure names the shard: a file that is missing, truncated or not HDF5, a checksum that
    differs from the record (`sha256`), a chunk that cannot be read (bit rot in a compressed mask).
    """

    def __init__(self, path: str, expected: int, sha256: str | None = None):
        self.path = path
        if sha256 is not None:
            check_checksum(path, sha256)
        try:
            self.file = h5py.File(path, "r")
        except (OSError, ValueError) as err:
            raise InputError(path, f"cannot open shard: {_one_line(err)}") from None
        try:
            images, masks = self.file["images"], self.file["masks"]
            shape = images.shape
            if images.ndim != 3 or images.shape[0] != expected or masks.shape != images.shape:
                raise InputError(path, f"shard holds {shape[0] if shape else 0} samples, the index expects {expected}"
                                 if images.ndim == 3 and masks.shape == images.shape else
                                 f"shard images {shape} / masks {masks.shape} are not two [N, H, W] of one shape")
            self.shape = images.shape[1:]
            # The low-level calls skip h5py's per-call selection parsing, a third of a row's cost.
            self.images, self.masks = images.id, masks.id
            self.image_space, self.mask_space = self.images.get_space(), self.masks.get_space()
        except InputError:
            self.file.close()
            raise
        except (KeyError, OSError, ValueError, TypeError) as err:
            self.file.close()
            raise InputError(path, f"not a readable sirst5k shard: {_one_line(err)}") from None
        self.row_space = h5py.h5s.create_simple((1, *self.shape))
        self.count = (1, *self.shape)

    def read(self, row: int, image: np.ndarray, mask: np.ndarray) -> None:
        """Fill uint8 buffers shaped [1, H, W] with one row's image and mask."""
        start = (row, 0, 0)
        try:
            self.image_space.select_hyperslab(start, self.count)
            self.images.read(self.row_space, self.image_space, image)
            self.mask_space.select_hyperslab(start, self.count)
            self.masks.read(self.row_space, self.mask_space, mask)
        except (OSError, ValueError, TypeError) as err:
            raise InputError(self.path, f"cannot read sample {int(row)} of the shard: {_one_line(err)}") from None


def check_checksum(path: str | Path, sha256: str) -> None:
    """InputError naming the shard when its bytes' sha256 is not the recorded one."""
    try:
        digest = sha256_file(path)
    except OSError as err:
        raise InputError(path, f"cannot read shard: {err.strerror or _one_line(err)}") from None
    if digest != sha256:
        raise InputError(path, f"sha256 {digest[:12]}... does not match the recorded {str(sha256)[:12]}... "
                               "(changed or damaged since it was written)")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


class ShardDataset(Dataset):
    """(image, mask[, meta]) samples of one split of a shard dataset.

    Args:
        path_or_manifest: a manifest JSON, a dataset folder (its `manifest.json` is used when
            present) or a bare folder of `<split>-NNNNN.h5` shards.
        split: which split to serve.
        channels: 1, or 3 to repeat the grey channel for RGB backbones.
        transform: `transform(image, mask) -> (image, mask)`, applied last.
        return_meta: also return the sample's metadata as a dict of plain Python values.
        dtype: "float32" (image in [0, 1], mask 0./1.) or "uint8" (image 0..255, mask 0/1).
        verify: checksum each shard (sha256) on its first open in each process against the
            manifest (or a bare folder's stage.json); a mismatch is an InputError naming the
            shard. Costs one extra read of the shard's bytes, ~0.9 s per GB from the page cache
            (the default 331 MB dataset: 0.3 s, against ~6 s for one pass over its train split
            here), at disk speed when cold; each DataLoader worker checks the shards it opens
            unless `verify_all()` did it once, up front, before the workers started.

    Returns per item: image [C, H, W], mask [1, H, W].
    """

    def __init__(
        self,
        path_or_manifest: str | Path,
        split: str = "train",
        channels: int = 1,
        transform: Transform | None = None,
        return_meta: bool = False,
        dtype: str | torch.dtype = "float32",
        verify: bool = False,
    ):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {channels}")
        dtype = str(dtype).removeprefix("torch.")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {dtype}")
        self.source = open_source(path_or_manifest)
        self.split = split
        self.channels = channels
        self.transform = transform
        self.return_meta = return_meta
        self.dtype = dtype
        entries = self.source.shards(split)
        self.paths = [p for p, _ in entries]
        self.verify = verify
        self._checksums: list[str | None] = [self.source.checksums.get(p) for p in self.paths]
        if verify and None in self._checksums:
            missing = self.paths[self._checksums.index(None)]
            raise InputError(missing, "verify=True needs each shard's sha256, and no manifest or stage.json "
                                      "records this shard's")
        # shards whose checksum passed: kept across fork and pickling, so workers skip them
        self._verified: set[int] = set()
        counts = np.array([n for _, n in entries], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        # Per-sample lookup tables: O(1) and tiny (two ints a sample), shared by forked workers.
        self._shard_of = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
        self._row_of = np.arange(int(self.offsets[-1]), dtype=np.int64) - np.repeat(self.offsets[:-1], counts)
        self._meta: dict[str, np.ndarray] | None = None
        self._meta_lists: dict[str, list] | None = None
        self._reset_handles()

    def _reset_handles(self) -> None:
        self._pid = os.getpid()
        self._open: dict[int, _Shard] = {}
        self._buffers: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Spawned workers get a copy without handles; they open their own.
        state = self.__dict__.copy()
        state["_open"], state["_buffers"], state["_pid"] = {}, {}, None
        return state

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __repr__(self) -> str:
        where = self.source.manifest_path or self.source.root
        return (
            f"ShardDataset({str(where)!r}, split={self.split!r}, n={len(self)}, "
            f"shards={len(self.paths)}, channels={self.channels}, dtype={self.dtype!r})"
        )

    @property
    def meta(self) -> dict[str, np.ndarray]:
        """The split's whole metadata table: field -> array of length len(self), in item order."""
        if self._meta is None:
            self._meta = concat_meta(read_meta(p) for p in self.paths)
            if len(self._meta["sample_id"]) != len(self):
                raise InputError(self.paths[0], "shard metadata does not match the sample count")
        return dict(self._meta)

    def sample_meta(self, index: int) -> dict[str, Any]:
        """One sample's metadata as plain Python values."""
        if self._meta_lists is None:
            self._meta_lists = {k: v.tolist() for k, v in self.meta.items()}
        i = self._check(index)
        return {k: v[i] for k, v in self._meta_lists.items()}

    def _check(self, index: int) -> int:
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        return i

    def _shard(self, s: int) -> _Shard:
        if self._pid != os.getpid():
            # Inherited across a fork: drop without touching them, open afresh in this process.
            self._reset_handles()
        shard = self._open.get(s)
        if shard is None:
            expected = int(self.offsets[s + 1] - self.offsets[s])
            sha = self._checksums[s] if self.verify and s not in self._verified else None
            shard = self._open[s] = _Shard(self.paths[s], expected, sha)
            if sha is not None:
                self._verified.add(s)
        return shard

    def verify_all(self) -> None:
        """Checksum every shard of the split now (InputError naming the first that differs)."""
        for s, (path, sha) in enumerate(zip(self.paths, self._checksums)):
            if s in self._verified:
                continue
            if sha is None:
                raise InputError(path, "no manifest or stage.json records this shard's sha256")
            check_checksum(path, sha)
            self._verified.add(s)

    def read_uint8(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw arrays of one sample: image and mask uint8 [1, H, W] (mask 0/255 as stored)."""
        i = self._check(index)
        shard = self._shard(int(self._shard_of[i]))
        image = np.empty((1, *shard.shape), np.uint8)
        mask = np.empty((1, *shard.shape), np.uint8)
        shard.read(int(self._row_of[i]), image, mask)
        return image, mask

    def __getitem__(self, index: int):
        i = self._check(index)
        if self.dtype == "uint8":
            # Fresh arrays: the tensors share their memory.
            image_np, mask_np = self.read_uint8(i)
            image = torch.from_numpy(image_np)
            mask = torch.from_numpy(mask_np).clamp_(max=1)
        else:
            shard = self._shard(int(self._shard_of[i]))
            image_np, mask_np = self._buffer(shard.shape)
            shard.read(int(self._row_of[i]), image_np, mask_np)
            # The conversions copy, so the buffers are free again for the next read.
            image = torch.from_numpy(image_np).to(torch.float32).div_(255.0)
            mask = torch.from_numpy(mask_np).to(torch.float32).clamp_(max=1.0)
        if self.channels == 3:
            image = image.repeat(3, 1, 1)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        if self.return_meta:
            return image, mask, self.sample_meta(i)
        return image, mask

    def _buffer(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        buf = self._buffers.get(shape)
        if buf is None:
            buf = self._buffers[shape] = (np.empty((1, *shape), np.uint8), np.empty((1, *shape), np.uint8))
        return buf

    def close(self) -> None:
        """Close this process's open shard files (they reopen on the next read)."""
        if self._pid == os.getpid():
            for shard in self._open.values():
                shard.file.close()
        self._reset_handles()

