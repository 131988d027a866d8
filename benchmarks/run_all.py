"""Run the quick benchmarks and print every table (`make bench`).

    .venv/bin/python benchmarks/run_all.py          # quick: ~10 minutes on 2 cores
    .venv/bin/python benchmarks/run_all.py --full   # also 10 x SIRST (CLI stages, 1 vs 2 workers), 100k-sample
                                                    # memory, and every goal's "before" run (~40+ min)
    make bench BENCH_ARGS=--full

Needs the real data in $SIRST5K_DATA (default ../shared/data); scratch data goes to
$SIRST5K_BENCH_DIR (default /tmp/sirst5k-bench, ~10 GB with --full). Every table carries the
load average: on a shared machine, compare figures only at similar load.

Benchmarks (each runs alone too, see its docstring; docs/speed.md has the figures):
  cli_startup.py           `sirst5k --help` and `sirst5k COMMAND --help`: wall, CPU, what they import
  recipe_vs_scripts.py     the SIRST recipe end to end vs the original scripts in the same run, and
                           noise-bank on the 245 SIRST-V2 frames (--real DIR: the scripts themselves)
  repro_time.py            `make repro` after set-up, per stage, DVC's own share, outputs vs dvc.lock
  shard_codecs.py          write/read speed and size per compression and chunking
  stage_throughput.py      transfer and negatives: task functions, and the CLI stages (1 vs 2 workers)
  worker_memory.py         a negatives worker's peak RSS for 10k and 100k samples
  loader_random_access.py  ShardDataset random access on one core
  original_scripts.py      the original SIRST-5K scripts, re-implemented for timing (--real: vs the originals)
  bank_peaks.py            bright spots in a noise bank: what --max-peak rejects (run by hand:
                           it rewrites docs/bank_peaks.png)

On a machine with CUDA (not run from here):
  gpu_check.sh             the CUDA tests, cuda_parity.py, and stage_throughput.py --devices cpu cuda
  cuda_parity.py           CPU vs CUDA values of the resize + blend, F.interpolate and ours
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import _common as C

HERE = Path(__file__).resolve().parent

# "before" figures run the code of a git revision beside the working tree's (_common.code_env):
# 2365446 is the commit issue 16's changes sit on.
BEFORE = ["--before-rev", "2365446"]
QUICK = [
    ["cli_startup.py", "--repeat", "5", "--no-before"],
    ["recipe_vs_scripts.py", "--copies", "1", "--no-before"],
    ["repro_time.py"],
    ["shard_codecs.py", "--samples", "512", "--repeat", "2"],
    ["stage_throughput.py", "--tasks-only"],
    ["worker_memory.py", "--samples", "2000", "10000"],
    ["loader_random_access.py", "--samples", "2048", "--reads", "4000"],
]
FULL = [
    ["cli_startup.py", "--repeat", "5", *BEFORE],
    ["recipe_vs_scripts.py", "--copies", "1", "--repeat", "2", *BEFORE],
    ["repro_time.py", "--before", *BEFORE],
    ["shard_codecs.py"],
    ["stage_throughput.py", "--copies", "10", "--cli-repeat", "2"],
    ["worker_memory.py", "--samples", "10000", "100000"],
    ["loader_random_access.py"],
    ["recipe_vs_scripts.py", "--copies", "10", "--no-before", "--one-cluster", "--script-images", "427", "854"],
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true")
    args = ap.parse_args()
    print(f"sirst5k benchmarks ({'full' if args.full else 'quick'}); machine: {C.machine()}", flush=True)
    C.progress("preparing benchmark data (cached after the first run)")
    C.transfer_shards(1)
    failed = []
    for cmd in FULL if args.full else QUICK:
        t = time.perf_counter()
        rc = subprocess.call([sys.executable, str(HERE / cmd[0]), *cmd[1:]], cwd=HERE)
        C.progress(f"{cmd[0]} finished in {time.perf_counter() - t:.0f} s" + (f" (exit {rc})" if rc else ""))
        if rc:
            failed.append(cmd[0])
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
