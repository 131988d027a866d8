"""Shard compression and chunking: write / read speed and size per codec, on real images.

    .venv/bin/python benchmarks/shard_codecs.py [--samples 1024] [--repeat 3]

Data: noise-transferred SIRST v1 images at 256x256 and their masks (see benchmarks/_common.py),
as the negatives stage writes them. For each codec it writes a shard of `--samples` samples the
way `pipeline.shards.write_shard` does (same layout and metadata; one chunk per image), then:
  - write/s: samples a second for writing the file, fsync and the sha256 the stage records;
  - seq read/s: samples a second reading the whole shard (what publish and the stages do);
  - random/s: samples a second reading single rows in random order on one core (what
    `ShardDataset` does);
  - bytes/sample: file size over samples.
Each figure is the best of `--repeat` runs (the machine is shared; the load is printed).
The codec the pipeline uses is `pipeline.shards.DEFAULT_COMPRESSION`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import _common as C
import h5py
import numpy as np

from sirst5k.formats import shards

CODECS: dict[str, dict] = {
    "none": {"images": {}, "masks": {}},
    "lzf": {"images": {"compression": "lzf"}, "masks": {"compression": "lzf"}},
    "gzip-1": {"images": {"compression": "gzip", "compression_opts": 1},
               "masks": {"compression": "gzip", "compression_opts": 1}},
    "gzip-4": {"images": {"compression": "gzip", "compression_opts": 4},
               "masks": {"compression": "gzip", "compression_opts": 4}},
    "images none, masks lzf": {"images": {}, "masks": {"compression": "lzf"}},
    "images none, masks gzip-1": {"images": {}, "masks": {"compression": "gzip", "compression_opts": 1}},
}


def load_samples(n: int) -> tuple[np.ndarray, np.ndarray, dict]:
    images, masks, meta = shards.read_shard(next(iter(shards.list_shards(C.transfer_shards(1), "train"))))
    reps = -(-n // len(images))
    idx = np.tile(np.arange(len(images)), reps)[:n]
    return images[idx], masks[idx], shards.take_meta(meta, idx)


def write(path: Path, images, masks, meta, codec: dict, chunk_rows: int | None) -> float:
    t = time.perf_counter()
    h, w = images.shape[1:]
    with h5py.File(path, "w", libver=("earliest", "v110")) as f:
        for name, arr in (("images", images), ("masks", masks)):
            chunks = (chunk_rows, h, w) if chunk_rows else None
            f.create_dataset(name, data=arr, chunks=chunks, track_times=False, **codec[name])
        g = f.create_group("meta")
        for name, (dtype, _) in shards.META_FIELDS.items():
            v = np.asarray(meta[name])
            g.create_dataset(name, data=v.astype(str).astype(object) if dtype is shards._STR else v.astype(dtype),
                             dtype=dtype, track_times=False)
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())
    shards.sha256_file(path)
    return time.perf_counter() - t


def read_all(path: Path) -> float:
    t = time.perf_counter()
    with h5py.File(path, "r") as f:
        f["images"][()]
        f["masks"][()]
    return time.perf_counter() - t


def read_random(path: Path, n: int) -> float:
    """Single rows in random order through the low-level calls `ShardDataset` uses."""
    order = np.random.default_rng(0).permutation(n)
    with h5py.File(path, "r") as f:
        ids = [f["images"].id, f["masks"].id]
        h, w = f["images"].shape[1:]
        spaces = [d.get_space() for d in ids]
        row = h5py.h5s.create_simple((1, h, w))
        buf = np.empty((1, h, w), np.uint8)
        t = time.perf_counter()
        for r in order:
            for d, s in zip(ids, spaces):
                s.select_hyperslab((int(r), 0, 0), (1, h, w))
                d.read(row, s, buf)
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    C.header(f"shard codecs: {args.samples} samples of 256x256 (noise-transferred SIRST), best of {args.repeat}")
    images, masks, meta = load_samples(args.samples)
    n = len(images)
    raw = images.nbytes + masks.nbytes
    rows = []
    configs = [(name, codec, 1) for name, codec in CODECS.items()]
    configs += [("lzf, 8 images a chunk (not schema)", CODECS["lzf"], 8),
                ("none, contiguous (not schema)", CODECS["none"], None)]
    with tempfile.TemporaryDirectory(dir=C.bench_dir()) as tmp:
        for name, codec, chunk_rows in configs:
            path = Path(tmp) / "shard.h5"
            tw = tr = trr = float("inf")
            for _ in range(args.repeat):
                path.unlink(missing_ok=True)
                tw = min(tw, write(path, images, masks, meta, codec, chunk_rows))
                tr = min(tr, read_all(path))
                trr = min(trr, read_random(path, n))
            size = path.stat().st_size
            rows.append([name, n / tw, n / tr, n / trr, size / n, raw / size, C.load()])
            C.progress(f"{name} done")
    C.table(["codec", "write+fsync+sha256 /s", "seq read /s", "random read /s", "bytes/sample", "ratio", "load"], rows)
    default = shards.DEFAULT_COMPRESSION
    print(f"   pipeline default (pipeline.shards.DEFAULT_COMPRESSION): {default}")


if __name__ == "__main__":
    main()
