"""`ShardDataset` random access on one core: samples/s of `dataset[i]` in random order.

    .venv/bin/python benchmarks/loader_random_access.py [--samples 4096] [--reads 8000]

Writes a shard folder of `--samples` noise-transferred SIRST images (4 shards, the pipeline's
default codec, and lzf for comparison), then reads `--reads` random items through
`pipeline.loader.ShardDataset` in this process with one torch thread, as one DataLoader worker
would. The files are in the page cache (warm), as during the second and later epochs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _common as C
import numpy as np


def make_folder(root: Path, n: int, compression) -> Path:
    from sirst5k.formats import shards

    images, masks, meta = shards.read_shard(shards.list_shards(C.transfer_shards(1), "train")[0])
    per = -(-n // 4)
    for s in range(4):
        idx = np.resize(np.arange(len(images)), per)
        shards.write_shard(root / shards.shard_name("train", s), images[idx], masks[idx], shards.take_meta(meta, idx),
                           {"dataset": "bench", "version": "x", "split": "train", "shard_index": s, "n_shards": 4},
                           compression=compression)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--reads", type=int, default=8000)
    args = ap.parse_args()
    import torch

    from sirst5k.formats import shards
    from sirst5k.loader import ShardDataset

    torch.set_num_threads(1)
    C.header(f"ShardDataset random access, one process, one thread, {args.reads:,} random reads of "
             f"{args.samples:,} samples (256x256)")
    rows = []
    order = np.random.default_rng(0).integers(0, args.samples, args.reads)
    codecs = {"default " + str(shards.DEFAULT_COMPRESSION): None, "none": {}, "lzf": {"compression": "lzf"}}
    with tempfile.TemporaryDirectory(dir=C.bench_dir()) as tmp:
        for name, comp in codecs.items():
            folder = make_folder(Path(tmp) / name.split()[0], args.samples, comp)
            for dtype, channels in (("float32", 1), ("float32", 3), ("uint8", 1)):
                ds = ShardDataset(folder, split="train", channels=channels, dtype=dtype)
                for i in order[:200]:  # open the files, fill the page cache
                    ds[int(i)]
                best = float("inf")
                for _ in range(3):
                    t = time.perf_counter()
                    for i in order:
                        ds[int(i)]
                    best = min(best, time.perf_counter() - t)
                rows.append([name, dtype, channels, args.reads / best, 1e6 * best / args.reads, C.load()])
                ds.close()
                C.progress(f"{name} {dtype} x{channels}: {args.reads / best:,.0f}/s")
    C.table(["codec", "dtype", "channels", "samples/s", "us/sample", "load"], rows)


if __name__ == "__main__":
    main()
