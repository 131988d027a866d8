"""A torch Dataset over published shards, for training code in other repositories.

    from sirst5k.loader import ShardDataset
    ds = ShardDataset("output/sirst5k", split="train", channels=3)
    image, mask = ds[0]            # float32 [3, H, W] in [0, 1], float32 [1, H, W] in {0, 1}
    hard = ShardDataset("output/sirst5k", split="test", select={"size_bin": ["tiny"], "scr_bin": ["low"]})

Shards of one split may differ in image size (schema 2, `ingest --size native`): items come at
their shard's size (`image_size(i)`); batch them with `sirst5k.batching` (`pad_collate`, or
`RandomCrops` to one size).

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
from sirst5k.formats.shards import META_FIELDS, concat_meta, read_meta, sha256_file, take_meta
from sirst5k.sources import Source, open_source  # noqa: F401 - part of the loader's API

Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
DTYPES = ("float32", "uint8")


class _Shard:
    """One open shard in this process: dataset ids and file selections reused for every read.

    Every failure names the shard: a file that is missing, truncated or not HDF5, a checksum that
    differs from the record (`sha256`), a chunk that cannot be read (bit rot in a compressed mask).
    """

    def __init__(self, path: str, expected: int, sha256: str | None = None, recorded: tuple[int, int] | None = None):
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
            if recorded is not None and tuple(self.shape) != tuple(recorded):
                raise InputError(path, f"shard images are {self.shape[0]}x{self.shape[1]} (HxW), the record says "
                                       f"{recorded[0]}x{recorded[1]}")
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


def check_select(select: dict[str, Any]) -> None:
    """ValueError (one line) for a selection `ShardDataset` cannot apply."""
    for name, spec in select.items():
        if name not in META_FIELDS:
            raise ValueError(f"select: {name!r} is not a meta field (one of {', '.join(META_FIELDS)})")
        if isinstance(spec, dict) and (not spec or set(spec) - {"min", "max"}):
            raise ValueError(f"select: {name}: a range is {{'min': a, 'max': b}} (either may be left out), "
                             f"not {spec!r}")


def select_mask(meta: dict[str, np.ndarray], select: dict[str, Any]) -> np.ndarray:
    """bool [N]: the samples of `meta` (field -> [N]) that match every entry of `select`
    (see `ShardDataset`'s `select`)."""
    check_select(select)
    n = len(meta["sample_id"])
    keep = np.ones(n, bool)
    for name, spec in select.items():
        values = np.asarray(meta[name])
        if isinstance(spec, dict):
            v = values.astype(np.float64)
            ok = ~np.isnan(v)
            if spec.get("min") is not None:
                ok &= v >= float(spec["min"])
            if spec.get("max") is not None:
                ok &= v <= float(spec["max"])
        elif isinstance(spec, (list, tuple, set, frozenset, np.ndarray)):
            allowed = list(spec)
            ok = np.isin(values.astype(str) if values.dtype == object else values,
                         np.asarray(allowed, dtype=str) if values.dtype == object else np.asarray(allowed))
        else:
            ok = (values.astype(str) == str(spec)) if values.dtype == object else (values == spec)
        keep &= ok
    return keep


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
        select: keep only the samples whose metadata match, e.g. a tiny, low-SCR subset:
            `{"size_bin": ["tiny"], "scr_bin": ["low"]}`, or by value ranges:
            `{"min_scr": {"max": 3.0}, "min_target_area": {"min": 1, "max": 9}}`. Keys are
            per-sample meta fields (META_FIELDS: the difficulty tags `size_bin`, `scr_bin`,
            `min_target_area`, `min_contrast`, `min_scr`, and any other, e.g. `kind`,
            `n_targets`); a value is a list/tuple/set of allowed values, a dict with `min` and/or
            `max` (inclusive; NaN is in no range), or one value (equality). All keys must
            match. The per-sample tags are those of the sample's hardest target (smallest area,
            lowest SCR), so `size_bin: ["tiny"]` keeps every sample with at least one target of
            9 px or less, `scr_bin: ["low"]` every sample with at least one target of SCR < 3
            (bins: `sirst5k.method.difficulty`). Samples without targets have bin "" and match
            no bin but "". Shards written before the tags have them computed from their pixels
            (one pass over those shards, here). Item i is then the i-th selected sample, in
            split order; `indices` holds their positions in the whole split.

        crop: train on random `crop` x `crop` windows, BasicIRSTD's way (`sirst5k.batching`):
            an image smaller than the crop is zero-padded at the bottom and right; with
            probability `crop_pos_prob` the window holds a target pixel drawn from all of them.
            Each item's window depends only on (`seed`, epoch, item index): the same in any
            DataLoader worker and shuffle order; call `set_epoch(e)` before each epoch.
        pad_to: zero-pad each item at the bottom and right to a multiple of `pad_to` (32 for
            BasicIRSTD's test-time padding); `image_size(i)` gives the unpadded size. Mixed sizes
            in one batch: `collate_fn=sirst5k.batching.pad_collate` instead.

    Returns per item: image [C, H, W], mask [1, H, W] (with `crop`: [C, crop, crop]).
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
        select: dict[str, Any] | None = None,
        crop: int | None = None,
        crop_pos_prob: float = 0.5,
        seed: int = 0,
        pad_to: int | None = None,
    ):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {channels}")
        if crop is not None and int(crop) < 1:
            raise ValueError(f"crop must be >= 1, not {crop}")
        if not 0.0 <= float(crop_pos_prob) <= 1.0:
            raise ValueError(f"crop_pos_prob must be in [0, 1], not {crop_pos_prob}")
        if pad_to is not None and int(pad_to) < 1:
            raise ValueError(f"pad_to must be >= 1, not {pad_to}")
        self.crop = None if crop is None else int(crop)
        self.crop_pos_prob = float(crop_pos_prob)
        self.seed = int(seed)
        self.pad_to = None if pad_to is None else int(pad_to)
        self.epoch = 0
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
        # (H, W) per shard where the manifest records it (schema 2: shards differ in size)
        self._shapes: list[tuple[int, int] | None] = [self.source.shapes.get(p) for p in self.paths]
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
        self.select = dict(select) if select else None
        self.indices = np.arange(int(self.offsets[-1]), dtype=np.int64)
        if self.select:
            check_select(self.select)
            full = concat_meta(read_meta(p, compute_missing=True) for p in self.paths)
            if len(full["sample_id"]) != int(self.offsets[-1]):
                raise InputError(self.paths[0], "shard metadata does not match the sample count")
            keep = select_mask(full, self.select)
            self.indices = np.flatnonzero(keep)
            self._shard_of, self._row_of = self._shard_of[keep], self._row_of[keep]
            self._meta = take_meta(full, keep)
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
        return int(self._shard_of.size)

    def __repr__(self) -> str:
        where = self.source.manifest_path or self.source.root
        return (
            f"ShardDataset({str(where)!r}, split={self.split!r}, n={len(self)}, "
            f"shards={len(self.paths)}, channels={self.channels}, dtype={self.dtype!r}"
            + (f", select={self.select!r})" if self.select else ")")
        )

    @property
    def meta(self) -> dict[str, np.ndarray]:
        """The split's whole metadata table (the selected samples' with `select`): field -> array of
        length len(self), in item order. Without `select`, shards written before the difficulty
        tags show them at their "none" values (-1, NaN, "")."""
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
            shard = self._open[s] = _Shard(self.paths[s], expected, sha, self._shapes[s])
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

    def image_size(self, index: int) -> tuple[int, int]:
        """(H, W) of item `index` (shards may differ in size: `ingest --size native`), from the
        manifest's record where it has one, else from the shard's header; no pixels are read."""
        s = int(self._shard_of[self._check(index)])
        if self._shapes[s] is None:
            self._shapes[s] = tuple(int(v) for v in self._shard(s).shape)
        return self._shapes[s]

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
        if self.crop is not None:
            from sirst5k.batching import crop_tensor, item_crop

            box = item_crop(mask, self.crop, self.crop_pos_prob, self.seed, self.epoch, i)
            image, mask = crop_tensor(image, box), crop_tensor(mask, box)
        if self.pad_to is not None:
            from sirst5k.method.crop import padded_size

            h, w = padded_size(*image.shape[-2:], self.pad_to)
            pad = (0, w - image.shape[-1], 0, h - image.shape[-2])
            image, mask = torch.nn.functional.pad(image, pad), torch.nn.functional.pad(mask, pad)
        if self.channels == 3:
            image = image.repeat(3, 1, 1)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        if self.return_meta:
            return image, mask, self.sample_meta(i)
        return image, mask

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose crops `crop` draws (call before each epoch's DataLoader pass)."""
        self.epoch = int(epoch)

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

