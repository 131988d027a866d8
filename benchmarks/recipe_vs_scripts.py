"""The SIRST-5K recipe end to end: this pipeline vs the original scripts, in the same run.

    .venv/bin/python benchmarks/recipe_vs_scripts.py                   # SIRST v1 as it is (427 images)
    .venv/bin/python benchmarks/recipe_vs_scripts.py --real /path/to/SIRST-5K/codes/Mix_Rot --real-deps DIR
    .venv/bin/python benchmarks/recipe_vs_scripts.py --copies 10 --one-cluster   # 10 x SIRST (scale)

Input: the 427 real SIRST v1 images resized to 256x256, repeated `--copies` times with distinct
ids (copies = 1: SIRST as people have it, 341 train / 86 test). Recipe: noise transfer m = 0.1,
32-px mirrored negatives k = 0..3, masks.
  - pipeline: `sirst5k ingest --size 256 -> transfer --mix 0.1 -> negatives --patch 32 ->
    publish` (publish verifies every checksum and label at the end), each a CLI subprocess with
    `--workers 2`, as params.yaml runs them, and the same as one command (`sirst5k recipe`, whose
    published shards are checked to be the 4 commands'); the noise bank (not part of the scripts' work, they
    start from a ready noise patch) comes from the 245 real SIRST-V2 frames (--temporal 2) and is
    timed on its own. Runs with this working tree's code, and "before" with the code of git
    revision --before-rev (default HEAD: the commit a change sits on; `_common.code_env`), which
    ran every stage on a fresh LocalCluster (--no-before skips it). --one-cluster adds a run on
    one `dask scheduler` started once (`--scheduler`).
  - scripts: benchmarks/original_scripts.py (add_noise + rot_patch + rot_mask, re-implemented)
    on the same train images, in a fresh process; with --real, the original scripts themselves
    (see original_scripts.py). At --copies 3 and more their time comes from a model fitted to
    runs on `--script-images` images (their matching loop is ~cubic), and says so.
`--repeat N` alternates the runs N times and keeps the best of each (a shared machine's load
changes from minute to minute). samples/s = (transferred images + negatives) / wall seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import _common as C
import numpy as np
import original_scripts

RECIPE = ("ingest", "transfer", "negatives", "publish")


def run_pipeline(copies: int, workers: int, scheduler: str | None = None, env: dict | None = None,
                 one_command: bool = False) -> dict:
    src = C.sirst_set(copies)
    with tempfile.TemporaryDirectory(dir=C.bench_dir()) as tmp:
        out = Path(tmp)
        w = ["--scheduler", scheduler] if scheduler else ["--workers", workers]
        stages: dict[str, tuple[float, float]] = {}

        def stage(name: str, *args) -> str:
            C.progress(f"pipeline{' (before)' if env else ''}: {name}")
            dt, cpu, text = C.sirst5k_cpu(*args, *w, env=env)
            stages[name] = (dt, cpu)
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
        one = None
        if one_command:
            # the same recipe as one `sirst5k recipe` command (one start-up), on the bank just built
            C.progress("pipeline: the recipe as one command")
            dt, cpu, text = C.sirst5k_cpu("recipe", src, "--noise-bank", out / "bank.h5", "--out", out / "one",
                                          "--size", 256, "--mix", 0.1, "--patch", 32, *w, env=env, check=env is None)
            if (out / "one" / "sirst5k.json").is_file():  # a "before" without the command: none
                same = json.loads((out / "one" / "sirst5k.json").read_text())["splits"] == manifest["splits"]
                one = {"wall": dt, "cpu": cpu, "same": same}
    return {"one": one, "stages": stages, "transfer": C.parse_count(t_tr, "transfer"),
            "negatives": C.parse_count(t_neg, "negatives"),
            "recipe": sum(stages[s][0] for s in RECIPE), "recipe_cpu": sum(stages[s][1] for s in RECIPE),
            "bank": stages["noise-bank"][0], "bank_cpu": stages["noise-bank"][1],
            "train": manifest["splits"]["train"]["n_samples"], "test": manifest["splits"]["test"]["n_samples"],
            "bytes": size, "load": C.load()}


def best(runs: list[dict], key: str) -> dict:
    return min(runs, key=lambda r: r[key])


def stage_table(title: str, runs: dict[str, dict]) -> None:
    names = ["ingest", "noise-bank", "transfer", "negatives", "publish"]
    rows = [[n] + [v for r in runs.values() for v in r["stages"][n]] for n in names]
    rows.append(["recipe (ingest + transfer + negatives + publish)"]
                + [v for r in runs.values() for v in (r["recipe"], r["recipe_cpu"])])
    C.table([title] + [f"{label} {what}" for label in runs for what in ("wall s", "CPU s")], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="alternate the runs this often; keep the best of each")
    ap.add_argument("--no-before", action="store_true", help="skip the run with the code of --before-rev")
    ap.add_argument("--before-rev", default="HEAD", help="git revision whose code makes the 'before' figures")
    ap.add_argument("--one-cluster", action="store_true", help="also run every stage on one dask scheduler")
    ap.add_argument("--pipeline-only", action="store_true", help="time this pipeline only, not the scripts")
    ap.add_argument("--real", type=Path, help="folder of the original add_noise.py, rot_patch.py, rot_mask.py, misc.py "
                                              "(github luy0222/SIRST-5K codes/Mix_Rot): time them too")
    ap.add_argument("--real-deps", type=Path, help="folder put on PYTHONPATH for --real (opencv, einops)")
    ap.add_argument("--script-images", type=int, nargs="+", default=[427, 854],
                    help="--copies >= 3: images of the scripts' measured runs for the model")
    ap.add_argument("--loop-images", type=int, nargs="+", default=[427, 854, 1708],
                    help="--copies >= 3: set sizes at which the scripts' matching loop is timed alone")
    args = ap.parse_args()
    n_train = 341 * args.copies
    C.header(f"SIRST-5K recipe on {args.copies} x SIRST v1 ({427 * args.copies:,} images at 256x256, "
             f"{n_train:,} train), best of {args.repeat}")
    measure_scripts = not args.pipeline_only and args.copies <= 2
    runs: dict[str, list[dict]] = {"now": [], "before": [], "scripts": [], "real": []}
    for _ in range(args.repeat):
        runs["now"].append(run_pipeline(args.copies, args.workers, one_command=True))
        if not args.no_before:
            runs["before"].append(run_pipeline(args.copies, args.workers, env=C.code_env(args.before_rev),
                                               one_command=True))
        if measure_scripts:
            C.progress(f"original scripts (re-implemented) on {n_train} images")
            runs["scripts"].append(original_scripts.run(n_train, deps=args.real_deps))
            if args.real:
                C.progress(f"original scripts (real) on {n_train} images")
                runs["real"].append(original_scripts.run_real(n_train, args.real, args.real_deps))
    now = best(runs["now"], "recipe")
    shown = {"now": now}
    if runs["before"]:
        shown[f"before ({args.before_rev})"] = best(runs["before"], "recipe")
    stage_table("pipeline stage", shown)
    ones = [r["one"] for r in runs["now"]]
    one = min(ones, key=lambda r: r["wall"])
    print(f"   the recipe as one command (`sirst5k recipe`, one start-up): {one['wall']:.2f} s wall, {one['cpu']:.2f} s "
          f"CPU; its published shards {'are' if all(r['same'] for r in ones) else 'are NOT'} the 4 commands' "
          "(names, sha256, counts)")
    before_ones = [r["one"] for r in runs["before"] if r["one"]]
    if before_ones:
        b = min(before_ones, key=lambda r: r["wall"])
        print(f"   the same with the code of {args.before_rev}: {b['wall']:.2f} s wall, {b['cpu']:.2f} s CPU")
    rate = (now["transfer"] + now["negatives"]) / now["recipe"]
    print(f"   pipeline: {now['transfer']:,} transferred + {now['negatives']:,} negatives from {n_train:,} train images; "
          f"published train {now['train']:,} / test {now['test']:,} samples, {now['bytes'] / 2**20:,.0f} MiB; "
          f"recipe {now['recipe']:.2f} s = {rate:,.0f} samples/s; load {now['load']}")
    print(f"   noise-bank on the 245 SIRST-V2 frames: {now['bank']:.2f} s wall, {now['bank_cpu']:.2f} s CPU (goal < 3 s)"
          + "".join(f"; {label}: {r['bank']:.2f} s" for label, r in shown.items() if label != "now"))
    if args.one_cluster:
        with C.dask_cluster(args.workers) as (address, cluster_s):
            warm = run_pipeline(args.copies, args.workers, address)
        print(f"   on one dask scheduler started once ({cluster_s:.1f} s to start): recipe {warm['recipe']:.2f} s "
              f"+ start = {warm['recipe'] + cluster_s:.2f} s")
    if args.pipeline_only:
        return
    if measure_scripts:
        scripts = best(runs["scripts"], "t_total")
        original_scripts.print_results([scripts])
        rows = [[f"scripts, re-implemented (benchmarks/original_scripts.py, {scripts['writer']} PNG writer; "
                 "imports not timed)", scripts["t_total"], scripts["load_after"]]]
        ref, ref_name = scripts["t_total"], "the re-implemented scripts'"
        if runs["real"]:
            real = best(runs["real"], "t_total")
            original_scripts.print_real([real])
            rows.append(["scripts, the originals (each `python SCRIPT`, start-up included)", real["t_total"],
                         real["load_after"]])
            rows.append(["scripts, the originals less their start-ups", real["t_total"] - real["t_start"],
                         real["load_after"]])
            ref, ref_name = real["t_total"], "the original scripts'"
        table = [[name, t, t / now["recipe"], load] for name, t, load in rows]
        table.append(["pipeline now: the recipe end to end (4 commands, start-ups included)", now["recipe"], 1.0,
                      now["load"]])
        table.append(["pipeline now: the recipe as one command (`sirst5k recipe`)", one["wall"],
                      one["wall"] / now["recipe"], now["load"]])
        for label, r in shown.items():
            if label != "now":
                table.append([f"pipeline {label}", r["recipe"], r["recipe"] / now["recipe"], r["load"]])
        C.table(["run (same input, same run)", "wall s", "x the pipeline's time", "load"], table)
        print(f"   the pipeline's recipe takes 1/{ref / now['recipe']:.1f} of {ref_name} wall time in 4 commands, "
              f"1/{ref / one['wall']:.1f} as one command (goal: 1/8 or less)")
        return
    model_scripts(args, now, n_train)


def model_scripts(args, ours: dict, n_train: int) -> None:
    """--copies >= 3: the scripts' time on n_train images from measured parts.

    t(n) = add_noise per image * n + image work per negative * negatives(n) + 2 * L(n), L(n) the
    matching loop alone (measured, power law fitted: it is ~cubic), per-unit costs the best of the
    measured runs (favours the scripts). Two-point fits of the totals drown in the load noise.
    """
    scripts = []
    for n in args.script_images:
        C.progress(f"original scripts on {n} images")
        scripts.append(original_scripts.run(n))
    original_scripts.print_results(scripts)
    loops = {m: original_scripts.matching_loop_seconds(m) for m in args.loop_images}
    C.table(["images", "matching loop s (one script)", "load"], [[m, v, C.load()] for m, v in loops.items()])
    lm = np.array(sorted(loops), float)
    p, logc = np.polyfit(np.log(lm), np.log([loops[int(m)] for m in lm]), 1)
    loop = lambda m: float(np.exp(logc) * m**p)  # noqa: E731
    per_image = min(r["t_transfer"] / r["images"] for r in scripts)
    per_neg = min((r["t_rot_images"] + r["t_rot_masks"] - 2 * loop(r["images"])) / r["negatives"] for r in scripts)
    t_full = per_image * n_train + per_neg * ours["negatives"] + 2 * loop(n_train)
    ours_rate = (ours["transfer"] + ours["negatives"]) / ours["recipe"]
    full_rate = (ours["transfer"] + ours["negatives"]) / t_full
    rows = [[f"scripts, {r['images']} images (measured)", r["t_total"], (r["transfer"] + r["negatives"]) / r["t_total"]]
            for r in scripts]
    rows.append([f"scripts, {n_train:,} images (model)", t_full, full_rate])
    rows.append([f"pipeline, {n_train:,} train images (measured, the recipe)", ours["recipe"], ours_rate])
    C.table(["run", "wall s", "samples/s"], rows)
    print(f"   speed-up over the modelled scripts: {t_full / ours['recipe']:.1f}x; model: {per_image * 1e3:.1f} ms an "
          f"image (add_noise) + {per_neg * 1e3:.1f} ms a negative (rot_patch + rot_mask) + 2 x matching loop "
          f"L(n) = {np.exp(logc):.3g} n^{p:.2f} s (L({n_train:,}) = {loop(n_train):.0f} s); load now {C.load()}")


if __name__ == "__main__":
    main()
