"""Does the data help? Every arm of `sirst5k evaluate` on SIRST v1, several seeds (docs/evaluation.md).

    .venv/bin/python benchmarks/evaluate_sirst.py [--size 128] [--model acm] [--steps 1000]
        [--seeds 0 1 2] [--arms main candidates] [--jobs 2] [--out DIR]

Builds the shard folders with the CLI (benchmarks/evaluate_data.py: ingest --layout sirst at
--size, the SIRST-V2 noise bank with --temporal 2, transfers, negatives, publish), then runs
`sirst5k evaluate` on the published folder (its originals are the 341 train images minus the
seeded validation share; test = the 86 test images) with the arms below, and prints the table
(summary.md) with the wall time. Runs are kept in --out (default
$SIRST5K_BENCH_DIR/evaluate-sirst-<size>/eval-<model>-<steps>) and reused by a rerun.

arm sets:
  main        originals (augmented: flip, rot90, crop), originals+transfer (m = 0.1 blend),
              originals+negatives (32-px mirrored negatives of the originals), published (the
              README recipe: 32-px negatives of the m = 0.1 transfers, what publish wrote)
  candidates  originals+neg4 (4-px boxes), originals+neg32-bal (32-px negatives, half of every batch originals: @0.5),
              originals+add1 (additive mosaic noise at m = 1)
  noise       originals, originals+model (the README's recommended noise, issue 15: additive,
              fitted sensor-noise model at the source scale, m = 0.75 and 1), originals+model-bal
              (the same, half of every batch originals: @0.5)
  lead        originals, originals+neg32-bal: the one lead of the arms above, for more seeds
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import _common as C
import evaluate_data


def arms(folders: dict[str, Path], sets: list[str]) -> list[str]:
    out = []
    if "main" in sets:
        out += ["originals", f"originals+transfer={folders['transfer']}",
                f"originals+negatives={folders['neg-orig-32']}", "published"]
    if "candidates" in sets:
        out += [f"originals+neg4={folders['neg-orig-4']}", f"originals+neg32-bal={folders['neg-orig-32']}@0.5",
                f"originals+add1={folders['transfer-add1']}"]
    if "lead" in sets:
        out += [a for a in ("originals", f"originals+neg32-bal={folders['neg-orig-32']}@0.5") if a not in out]
    if "noise" in sets:
        out += [a for a in ("originals",) if a not in out]
        out += [f"originals+model={folders['transfer-model']}", f"originals+model-bal={folders['transfer-model']}@0.5"]
    return out or ["originals"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--model", default="acm")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=["main", "candidates"], choices=["main", "candidates", "noise", "lead"])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    folders = evaluate_data.build(args.size, 2)
    out = args.out or folders["ingest"].parent / f"eval-{args.model}-{args.steps}"
    cmd = ["evaluate", folders["published"], "--out", out, "--model", args.model, "--steps", args.steps,
           "--size", args.size, "--crop", args.crop, "--jobs", args.jobs, "--threads", 1, "--device", "cpu"]
    for s in args.seeds:
        cmd += ["--seeds", s]
    for a in arms(folders, args.arms):
        cmd += ["--arm", a]
    C.header(f"evaluate on SIRST v1 at {args.size} px: {args.model}, {args.steps} steps, seeds {args.seeds}")
    print(f"   command: sirst5k {' '.join(map(str, cmd))}", flush=True)
    t = time.perf_counter()
    # progress (one line per checkpoint and run) goes straight to stderr
    subprocess.run([sys.executable, "-m", "sirst5k.stages.cli", *map(str, cmd)], check=True, cwd=C.REPO,
                   stdout=subprocess.DEVNULL)
    print(f"   wall {time.perf_counter() - t:.0f} s (runs reused from {out} are not retrained)")
    print((out / "summary.md").read_text())


if __name__ == "__main__":
    main()
