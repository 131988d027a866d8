"""Throughput of `transfer` and `negatives`, shard writes included: per task, and per CLI stage.

    .venv/bin/python benchmarks/stage_throughput.py [--copies 10] [--repeat 3] [--workers 1 2] [--cli-repeat 2] [--threads]
    .venv/bin/python benchmarks/stage_throughput.py --tasks-only     # the quick part
    python benchmarks/stage_throughput.py --devices cpu cuda --workers 1 4 8   # on a GPU machine

Data: SIRST v1 at 256x256 (427 images, 341 train, 1.3 targets an image), repeated `--copies`
times with distinct ids (benchmarks/_common.py); the noise bank is made from the real SIRST-V2
frames. The recipe is SIRST-5K's: m = 0.1, 32-px mirrored negatives, k = 0..3.

1. Task functions, called directly in this process on one realistic shard (256 images; no
   cluster, one thread): steady-state samples/s of each stage's work, read + compute + write +
   fsync + sha256. "CPU" columns divide by this process's CPU time instead of wall time, which
   other users of a shared machine disturb less.
2. The CLI stages (`sirst5k transfer` / `negatives` in a subprocess) on `--copies` x SIRST:
   `--workers 1` in the command's own process (SIRST5K_CLUSTER=never), more workers on a
   LocalCluster of that many processes (SIRST5K_CLUSTER=always); wall time including interpreter
   and cluster start-up, and the same minus the start-up (measured as the wall time of the stage
   on a one-image input); each the best of `--cli-repeat` runs. Goals: >= 5,000 samples/s
   excluding start-up on 2 workers at 10 x SIRST, and 2 workers >= 1.8x one.
The combined figure is (transfer + negatives samples) / (transfer + negatives seconds).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import _common as C


def task_rates(repeat: int, devices: list[str]) -> list[list]:
    import torch

    torch.set_num_threads(1)
    from sirst5k.formats import shards
    from sirst5k.formats.bank import bank_info
    from sirst5k.stages.negatives import negatives_shard
    from sirst5k.stages.transfer import transfer_shard

    ingest = shards.list_shards(C.ingest_shards(1), "train")[0]
    transfer = shards.list_shards(C.transfer_shards(1), "train")[0]
    bank = bank_info(C.noise_bank())
    tparams = {"mix": [0.1], "mode": "blend", "field": "resize", "split": "train", "seed": 0}
    nparams = {"patch": [32], "mirror": True, "rotations": [0, 1, 2, 3], "clamp": "script", "keep_cut": True,
               "split": "train", "shard_size": 1024}
    rows = []
    with tempfile.TemporaryDirectory(dir=C.bench_dir()) as tmp:
        for dev in devices:
            for name, run in (
                ("transfer",
                 lambda i: [transfer_shard(str(ingest), f"bench-{i}", f"{tmp}/t.h5", 0, 1, bank, tparams, dev)]),
                ("negatives", lambda i: negatives_shard(str(transfer), f"bench-{i}", tmp, 0, nparams, dev)),
            ):
                run(-1)  # warm: imports, first-touch allocations, CUDA context
                best_wall = best_cpu = float("inf")
                for i in range(repeat):
                    w, c = time.perf_counter(), time.process_time()
                    out = run(i)
                    best_wall = min(best_wall, time.perf_counter() - w)
                    best_cpu = min(best_cpu, time.process_time() - c)
                n = sum(info.n_samples for info in out.shards) if hasattr(out, "shards") else \
                    sum(info.n_samples for r in out for info in r.shards)
                rows.append([name, dev, n, best_wall, n / best_wall, n / best_cpu, C.load()])
                C.progress(f"task {name} on {dev}: {n / best_wall:,.0f} samples/s")
    return rows


def where(w: int, here: str | None = None) -> tuple[str, dict]:
    """How `w` workers run: 1 in the command's own process (what --workers 1 does), more on a
    LocalCluster of w (SIRST5K_CLUSTER=always, so that the tiny run's start-up is the cluster's),
    or in the command's process, w tasks at a time (SIRST5K_CLUSTER=never) in `here` lanes:
    "forked" (children of the command, what `auto` uses on Linux) or "threads" (SIRST5K_LANES)."""
    if w == 1:
        return "here", {"SIRST5K_CLUSTER": "never"}
    if here == "forked":
        return "here, forked lanes", {"SIRST5K_CLUSTER": "never", "SIRST5K_LANES": None}
    if here == "threads":
        return "here, threads", {"SIRST5K_CLUSTER": "never", "SIRST5K_LANES": "threads"}
    return "LocalCluster", {"SIRST5K_CLUSTER": "always"}


def cli_rates(copies: int, workers: list[int], repeat: int, device: str = "cpu",
              threads: bool = False) -> tuple[list[list], dict]:
    ingest = C.ingest_shards(copies)
    bank = C.noise_bank()
    tiny = _tiny_input()
    rows = []
    combined: dict[int, float] = {}
    with tempfile.TemporaryDirectory(dir=C.bench_dir()) as tmp:
        runs = [(w, None) for w in workers] + [(w, kind) for w in workers if threads and w > 1
                                                for kind in ("forked", "threads")]
        for w, kind in runs:
            place, env = where(w, kind)
            common = ["--workers", w, "--device", device]
            best = {"start_t": float("inf"), "start_n": float("inf"), "tt": float("inf"), "tn": float("inf")}
            for _ in range(repeat):
                for d in ("tiny-t", "tiny-n", "t", "n"):
                    shutil.rmtree(f"{tmp}/{d}", ignore_errors=True)
                start_t, _ = C.sirst5k("transfer", tiny, "--noise-bank", bank, "--out", f"{tmp}/tiny-t", *common, env=env)
                start_n, _ = C.sirst5k("negatives", f"{tmp}/tiny-t", "--out", f"{tmp}/tiny-n", *common, env=env)
                tt, out_t = C.sirst5k("transfer", ingest, "--noise-bank", bank, "--out", f"{tmp}/t", *common, env=env)
                tn, out_n = C.sirst5k("negatives", f"{tmp}/t", "--out", f"{tmp}/n", *common, env=env)
                nt, nn = C.parse_count(out_t, "transfer"), C.parse_count(out_n, "negatives")
                for key, value in (("start_t", start_t), ("start_n", start_n), ("tt", tt), ("tn", tn)):
                    best[key] = min(best[key], value)
                C.progress(f"CLI on {device}, {w} worker(s): transfer {nt / tt:,.0f}/s, negatives {nn / tn:,.0f}/s")
            tt, tn, start_t, start_n = best["tt"], best["tn"], best["start_t"], best["start_n"]
            rows.append(["transfer", device, f"{w} ({place})", nt, tt, nt / tt, start_t, nt / max(tt - start_t, 1e-9),
                         C.load()])
            rows.append(["negatives", device, f"{w} ({place})", nn, tn, nn / tn, start_n, nn / max(tn - start_n, 1e-9),
                         C.load()])
            combined[w, place] = (nt + nn) / ((tt - start_t) + (tn - start_n))
            rows.append(["transfer + negatives", device, f"{w} ({place})", nt + nn, tt + tn, (nt + nn) / (tt + tn),
                         start_t + start_n, combined[w, place], C.load()])
    return rows, combined


def _tiny_input() -> Path:
    """A one-image shard folder: running a stage on it measures start-up and teardown alone."""
    from sirst5k.formats import shards

    out = C.bench_dir() / "tiny-ingest"
    if not (out / "train-00000.h5").is_file():
        images, masks, meta = shards.read_shard(shards.list_shards(C.ingest_shards(1), "train")[0], slice(0, 1))
        shards.write_shard(out / "train-00000.h5", images, masks, meta,
                           {"dataset": "ingest", "version": "tiny", "split": "train", "shard_index": 0, "n_shards": 1})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cli-repeat", type=int, default=1, help="runs of each CLI stage; the best is kept")
    ap.add_argument("--tasks-only", action="store_true")
    ap.add_argument("--threads", action="store_true",
                    help="also run each --workers > 1 in the command's process, that many tasks at a time, "
                         "in forked lanes and on threads")
    ap.add_argument("--devices", nargs="+", default=["cpu"], help="cpu and/or cuda")
    args = ap.parse_args()
    C.header("stage throughput, task functions on one shard (one process, one thread), best of "
             f"{args.repeat}")
    C.table(["stage", "device", "samples", "best s", "samples/s", "samples/CPU-s", "load"],
            task_rates(args.repeat, args.devices))
    if args.tasks_only:
        return
    C.header(f"stage throughput, CLI on {args.copies} x SIRST v1 ({427 * args.copies} images) at 256x256, "
             f"best of {args.cli_repeat}")
    rows, combined = [], {}
    for device in args.devices:
        r, c = cli_rates(args.copies, args.workers, args.cli_repeat, device, args.threads)
        rows += r
        combined.update({(device, w, place): v for (w, place), v in c.items()})
    C.table(["stage", "device", "workers", "samples", "wall s", "samples/s", "start-up s", "samples/s excl. start-up", "load"],
            rows)
    for (device, w, place), rate in sorted(combined.items()):
        if w != 1 and (device, 1, "here") in combined:
            print(f"   {device}: {w} workers ({place}) / 1 worker (transfer + negatives, excl. start-up): "
                  f"{rate / combined[device, 1, 'here']:.2f}x")


if __name__ == "__main__":
    main()
