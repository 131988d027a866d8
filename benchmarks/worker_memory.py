"""Peak memory (RSS) of a worker doing negatives, for 10k and 100k output samples.

    .venv/bin/python benchmarks/worker_memory.py [--samples 10000 100000]

A dask worker runs a stage's tasks one after another in one thread; this runs the negatives
task function (`stages.negatives.negatives_shard`) the same way, in a fresh process per
configuration, over as many input shards as it takes to make `--samples` negatives (the input
is the realistic 256-image transfer shard, given again under new names; each task's output is
deleted once written, so the disk does not fill), with glibc's defaults (a dask worker) and with
the command's setting (`sirst5k.__main__.reuse_freed_memory`: big arrays from the heap, freed
memory kept, as in the command's own lanes). Reported: RSS after imports, peak RSS
(`resource.getrusage` ru_maxrss) after the first task and at the end. Flat memory means the
peak does not grow with the number of samples; it depends on the input shard size (ingest
--shard-size) and the output part size (negatives --shard-size), not on the dataset.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C


def run_one(target: int, shard_size: int, input_rows: int, heap: int) -> dict:
    import psutil

    if heap:  # as the command's own lanes run (the entry point's malloc setting, inherited by the forks)
        from sirst5k.__main__ import reuse_freed_memory

        reuse_freed_memory()
    import torch

    torch.set_num_threads(1)
    from sirst5k.formats import shards
    from sirst5k.stages.negatives import negatives_shard

    src = shards.list_shards(C.transfer_shards(1), "train")[0]
    rss0 = psutil.Process().memory_info().rss / 2**20
    params = {"patch": [32], "mirror": True, "rotations": [0, 1, 2, 3], "clamp": "script", "keep_cut": True,
              "split": "train", "shard_size": shard_size}
    with tempfile.TemporaryDirectory(dir=C.bench_dir()) as tmp:
        if input_rows != shards.n_samples(src):  # a bigger input shard: the same images repeated
            import numpy as np

            images, masks, meta = shards.read_shard(src)
            idx = np.resize(np.arange(len(images)), input_rows)
            big = Path(tmp) / "input" / "train-00000.h5"
            shards.write_shard(big, images[idx], masks[idx], shards.take_meta(meta, idx),
                               {"dataset": "bench", "version": "x", "split": "train", "shard_index": 0, "n_shards": 1})
            del images, masks, meta
            src = big
        total = tasks = 0
        first_peak = None
        t = time.perf_counter()
        while total < target:
            out = Path(tmp) / f"out{tasks}"
            out.mkdir()
            res = negatives_shard(str(src), f"mem-{tasks}", str(out), tasks, params, "cpu")
            total += sum(info.n_samples for info in res.shards)
            tasks += 1
            shutil.rmtree(out)
            if first_peak is None:
                first_peak = C.peak_rss_mib()
        wall = time.perf_counter() - t
    return {"target": target, "samples": total, "tasks": tasks, "rss_after_import_mib": rss0,
            "peak_after_first_task_mib": first_peak, "peak_mib": C.peak_rss_mib(), "seconds": wall,
            "shard_size": shard_size, "input_rows": input_rows, "heap": bool(heap), "load": C.load()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--shard-size", type=int, default=1024, help="negatives --shard-size (output part size)")
    ap.add_argument("--input-rows", type=int, nargs="+", default=[256], help="images per input shard")
    ap.add_argument("--one", nargs=4, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one)))
        return
    C.header("worker peak memory, negatives task function run back to back in one process")
    rows = []
    for heap in (0, 1):  # a dask worker (glibc's defaults), the command's lanes (freed memory kept)
        for rows_in in args.input_rows:
            for n in args.samples:
                C.progress(f"negatives up to {n:,} samples, input shards of {rows_in} images, heap kept: {bool(heap)}")
                proc = subprocess.run([sys.executable, __file__, "--one", str(n), str(args.shard_size), str(rows_in),
                                       str(heap)], capture_output=True, text=True, cwd=Path(__file__).parent)
                if proc.returncode:
                    sys.exit(proc.stderr)
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append(["command's lanes" if r["heap"] else "dask worker", r["input_rows"], r["shard_size"],
                             r["samples"], r["tasks"], r["rss_after_import_mib"], r["peak_after_first_task_mib"],
                             r["peak_mib"], r["samples"] / r["seconds"], r["load"]])
    C.table(["malloc", "input shard images", "output part size", "samples", "tasks", "RSS after import MiB",
             "peak after 1st task MiB", "peak MiB", "samples/s", "load"], rows)


if __name__ == "__main__":
    main()
