"""The SIRST-5K recipe end to end: this pipeline on 10 x SIRST v1 vs the original scripts.

    .venv/bin/python benchmarks/recipe_vs_scripts.py [--copies 10] [--script-images 427 854] [--workers 2]

Input: the 427 real SIRST v1 images resized to 256x256, repeated `--copies` times with distinct
ids (4,270 images: 3,410 train, 860 test). Recipe: noise transfer m = 0.1, 32-px mirrored
negatives k = 0..3, masks.
  - pipeline: `sirst5k ingest -> noise-bank -> transfer -> negatives -> publish` (publish
    verifies every checksum at the end), each a CLI subprocess with a LocalCluster of
    `--workers` processes; the noise bank comes from the real SIRST-V2 frames (--temporal 2).
    Then again with every stage on one `dask scheduler` + `--workers` workers started once
    (`--scheduler`; the cluster's start counted once).
  - scripts: benchmarks/original_scripts.py (add_noise + rot_patch + rot_mask) on the first
    `--script-images` train images. Their time per image grows with the set (the matching loop
    is ~cubic), so their time on all 3,410 train images comes from a model, and says so: the
    measured per-image and per-negative costs (best run) plus the matching loop, timed alone at
    `--loop-images` sizes and fitted with a power law.
samples/s = (noise-transferred images + negatives) / wall seconds, for both.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import _common as C
import numpy as np
import original_scripts


def run_pipeline(copies: int, workers: int, scheduler: str | None = None) -> dict:
    src = C.sirst_set(copies)
    with tempfile.TemporaryDirectory(dir=C.bench_dir()) as tmp:
        out = Path(tmp)
        w = ["--scheduler", scheduler] if scheduler else ["--workers", workers]
        stages = []

        def stage(name: str, *args) -> str:
            C.progress(f"pipeline: {name}")
            dt, text = C.sirst5k(*args, *w)
            stages.append([name, dt, C.load()])
            return text

        stage("ingest", "ingest", src, "--out", out / "ingest", "--size", 256)
        stage("noise-bank", "noise-bank", C.data_root() / "sirst-v2-frames", "--out", out / "bank.h5", "--temporal", 2)
        t_tr = stage("transfer", "transfer", out / "ingest", "--noise-bank", out / "bank.h5", "--out", out / "transfer",
                     "--mix", 0.1)
        t_neg = stage("negatives", "negatives", out / "transfer", "--out", out / "negatives", "--patch", 32)
        stage("publish", "publish", "--ingest", out / "ingest", "--negatives", out / "negatives",
              "--out", out / "sirst5k", "--manifest", out / "sirst5k.json")
        manifest = json.loads((out / "sirst5k.json").read_text())
        size = sum(p.stat().st_size for p in (out / "sirst5k").glob("*.h5"))
    return {"stages": stages, "transfer": C.parse_count(t_tr, "transfer"),
            "negatives": C.parse_count(t_neg, "negatives"), "total": sum(s[1] for s in stages),
            # the scripts' timed parts (add_noise, rot_patch, rot_mask) start from a ready noise patch
            "recipe": sum(s[1] for s in stages if s[0] != "noise-bank"),
            "train": manifest["splits"]["train"]["n_samples"], "test": manifest["splits"]["test"]["n_samples"],
            "bytes": size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--script-images", type=int, nargs="+", default=[427, 854])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--loop-images", type=int, nargs="+", default=[427, 854, 1708],
                    help="set sizes at which the scripts' matching loop is timed alone")
    ap.add_argument("--pipeline-only", action="store_true", help="time this pipeline only, not the scripts")
    args = ap.parse_args()
    C.header(f"SIRST-5K recipe on {args.copies} x SIRST v1 ({427 * args.copies} images at 256x256)")

    ours = run_pipeline(args.copies, args.workers)
    C.table(["pipeline stage", "wall s (incl. start-up)", "load"],
            ours["stages"] + [["total", ours["total"], C.load()],
                              ["total without noise-bank (what the scripts' time covers)", ours["recipe"], C.load()]])
    # The same stages on one running cluster (`--scheduler`): workers start, and import torch, once.
    with C.dask_cluster(args.workers) as (address, cluster_s):
        warm = run_pipeline(args.copies, args.workers, address)
    warm["recipe"] += cluster_s
    warm["total"] += cluster_s
    C.table(["pipeline stage, one cluster for all (--scheduler)", "wall s", "load"],
            [["start dask scheduler + workers (once)", cluster_s, C.load()]] + warm["stages"]
            + [["total", warm["total"], C.load()],
               ["total without noise-bank (what the scripts' time covers)", warm["recipe"], C.load()]])
    n_train = 341 * args.copies
    ours_rate = (ours["transfer"] + ours["negatives"]) / ours["recipe"]
    print(f"   pipeline: {ours['transfer']:,} transferred + {ours['negatives']:,} negatives from {n_train:,} train "
          f"images in {ours['recipe']:.1f} s without noise-bank = {ours_rate:,.0f} samples/s "
          f"({(ours['transfer'] + ours['negatives']) / ours['total']:,.0f}/s with it); published train {ours['train']:,} / "
          f"test {ours['test']:,} samples, {ours['bytes'] / 2**20:,.0f} MiB")
    if args.pipeline_only:
        return

    scripts = []
    for n in args.script_images:
        C.progress(f"original scripts on {n} images")
        scripts.append(original_scripts.run(n))
    original_scripts.print_results(scripts)

    # Model of the scripts at n_train images, from measured parts (two-point fits of the
    # totals drown in the load noise of a shared machine):
    #   t(n) = add_noise per image * n + image work per negative * negatives(n) + 2 * L(n),
    # L(n) the matching loop alone (measured, power law fitted: it is ~cubic), per-unit costs the
    # best of the measured runs (favours the scripts).
    loops = {m: original_scripts.matching_loop_seconds(m) for m in args.loop_images}
    C.table(["images", "matching loop s (one script)", "load"], [[m, v, C.load()] for m, v in loops.items()])
    lm = np.array(sorted(loops), float)
    p, logc = np.polyfit(np.log(lm), np.log([loops[int(m)] for m in lm]), 1)
    loop = lambda m: float(np.exp(logc) * m**p)  # noqa: E731
    per_image = min(r["t_transfer"] / r["images"] for r in scripts)
    per_neg = min((r["t_rot_images"] + r["t_rot_masks"] - 2 * loop(r["images"])) / r["negatives"] for r in scripts)
    t_full = per_image * n_train + per_neg * ours["negatives"] + 2 * loop(n_train)
    full_rate = (ours["transfer"] + ours["negatives"]) / t_full
    mem = np.polyfit([r["images"] for r in scripts], [r["peak_rss_mib"] for r in scripts], 1)
    rows = [[f"scripts, {r['images']} images (measured)", r["t_total"], (r["transfer"] + r["negatives"]) / r["t_total"],
             r["peak_rss_mib"], ours_rate / ((r["transfer"] + r["negatives"]) / r["t_total"])] for r in scripts]
    rows.append([f"scripts, {n_train:,} images (model)", t_full, full_rate, float(np.polyval(mem, n_train)),
                 ours_rate / full_rate])
    rows.append([f"pipeline, {n_train:,} train images (measured, without noise-bank)", ours["recipe"], ours_rate,
                 float("nan"), 1.0])
    warm_rate = (warm["transfer"] + warm["negatives"]) / warm["recipe"]
    rows.append([f"pipeline on one cluster, {n_train:,} train images (measured, without noise-bank)", warm["recipe"],
                 warm_rate, float("nan"), warm_rate / ours_rate])
    print(f"   speed-up over the modelled scripts on one cluster: {warm_rate / full_rate:.1f}x")
    with_bank = (ours["transfer"] + ours["negatives"]) / ours["total"]
    print(f"   with the noise-bank stage ({ours['total']:.1f} s) the speed-up over the modelled scripts is "
          f"{with_bank / full_rate:.1f}x")
    C.table(["run", "wall s", "samples/s", "peak RSS MiB", "pipeline speed-up"], rows)
    print(f"   model: {per_image * 1e3:.1f} ms an image (add_noise) + {per_neg * 1e3:.1f} ms a negative "
          f"(rot_patch + rot_mask) + 2 x matching loop L(n) = {np.exp(logc):.3g} n^{p:.2f} s "
          f"(L({n_train:,}) = {loop(n_train):.0f} s); load now {C.load()}")


if __name__ == "__main__":
    main()
