"""Native-size frames through the recipe: ingest --size native, transfer, negatives, publish.

    .venv/bin/python benchmarks/native_sizes.py [--images 1024] [--shard-size 64] [--field resize]

Data: the 245 real SIRST-V2 background frames in $SIRST5K_DATA/sirst-v2-frames (640x512 to
1918x1080, ten sizes), each given 1-2 small synthetic targets (a Gaussian spot of sigma
0.6-1.6 px, 25-70 grey levels above the frame; mask = where the spot adds > 30% of its peak),
seeded by the image index, and replicated to `--images` images with distinct ids (frame
`i * 101 mod 245` for image i, so every part of the set mixes the sizes), written once
as a `folder` layout source under $SIRST5K_BENCH_DIR/native-<images>. The noise bank is made
from the same frames (`noise-bank`, its defaults). The recipe is params.yaml's: transfer blend,
resize field, m = 0.1 (`--field mosaic` for the field at each image's own pitch); negatives
32-px mirrored, k = 0..3; publish.

Each stage runs as `sirst5k <stage> ... --workers 1` in a subprocess with SIRST5K_CLUSTER=never,
so that process is the worker: its wall time, CPU time (user + sys) and peak RSS (ru_maxrss)
are measured through a wrapper process. samples/s: the stage's output samples over its wall
time; MB/s: the image bytes it reads (H x W per input sample, masks left out) over its wall
time. `--flat` also runs transfer and negatives on a quarter of the images: with one size per
shard and `--shard-size` samples a shard, a worker's peak should not grow with the dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _common as C

STEP = 101  # prime, coprime with 245: the frames are visited in a spread order, each once per 245
WRAP = ("import json, resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)\n"
        "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(json.dumps({'rc': r.returncode, 'out': r.stdout[-4000:], 'cpu': u.ru_utime + u.ru_stime, "
        "'rss_mib': u.ru_maxrss / 1024}))\n")


def build_source(n_images: int, root: Path) -> Path:
    """The labelled source folder (images/, masks/), made once per size of the set."""
    import numpy as np
    from PIL import Image

    src = root / f"native-{n_images}"
    if (src / "done").is_file():
        return src
    shutil.rmtree(src, ignore_errors=True)
    frames = sorted((C.data_root() / "sirst-v2-frames").glob("*/*.png"))
    if not frames:
        sys.exit("no SIRST-V2 frames in $SIRST5K_DATA/sirst-v2-frames")
    for d in ("images", "masks"):
        (src / d).mkdir(parents=True)
    cache = {}
    for i in range(n_images):
        path = frames[(i * STEP) % len(frames)]  # every size in any prefix of the set
        if path not in cache:
            with Image.open(path) as im:
                cache = {path: np.asarray(im.convert("L"), np.float64)}
        frame = cache[path]
        h, w = frame.shape
        rng = np.random.default_rng([18, i])
        image, mask = frame.copy(), np.zeros((h, w), np.uint8)
        yy, xx = np.mgrid[0:9, 0:9] - 4.0
        for _ in range(int(rng.integers(1, 3))):
            y, x = int(rng.integers(20, h - 20)), int(rng.integers(20, w - 20))
            sigma, amp = rng.uniform(0.6, 1.6), rng.uniform(25, 70)
            spot = amp * np.exp(-(yy**2 + xx**2) / (2 * sigma**2))
            image[y - 4:y + 5, x - 4:x + 5] += spot
            mask[y - 4:y + 5, x - 4:x + 5] |= (spot > 0.3 * amp).astype(np.uint8) * 255
        name = f"{i:05d}_{path.stem}.png"
        Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8)).save(src / "images" / name, compress_level=1)
        Image.fromarray(mask).save(src / "masks" / name, compress_level=1)
    (src / "done").write_text("ok\n")
    return src


def run_stage(args: list, env: dict) -> dict:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", WRAP, str(C.BIN / "sirst5k"), *map(str, args)],
                       stdout=subprocess.PIPE, text=True, env=env)
    wall = time.perf_counter() - t
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    if rec["rc"] != 0:
        sys.exit(f"sirst5k {' '.join(map(str, args[:1]))} failed:\n{rec['out']}")
    return {**rec, "wall": wall}


def folder_figures(folder: Path, split: str | None = None) -> tuple[int, float, dict]:
    """(samples, image MB, {HxW: samples}) of a shard folder."""
    from sirst5k.formats import shards

    n, mb, sizes = 0, 0.0, {}
    for p in shards.list_shards(folder, split):
        k, (h, w) = shards.n_samples(p), shards.image_shape(p)
        n += k
        mb += k * h * w / 1e6
        sizes[f"{h}x{w}"] = sizes.get(f"{h}x{w}", 0) + k
    return n, mb, sizes


def recipe(src: Path, bank: Path, work: Path, shard_size: int, field: str, env: dict,
           stages=("ingest", "transfer", "negatives", "publish")) -> list[list]:
    rows = []
    ing, tr, neg, pub = (work / s for s in ("ingest", "transfer", "negatives", "sirst5k"))
    plan = {
        "ingest": (["ingest", src, "--out", ing, "--layout", "folder", "--size", "native", "--shard-size", shard_size,
                    "--seed", 0], None),
        "transfer": (["transfer", ing, "--noise-bank", bank, "--out", tr, "--field", field, "--seed", 0,
                      "--device", "cpu"], (ing, "train")),
        "negatives": (["negatives", tr, "--out", neg, "--device", "cpu"], (tr, "train")),
        "publish": (["publish", "--ingest", ing, "--negatives", neg, "--out", pub, "--manifest", work / "m.json"],
                    None),
    }
    for stage in stages:
        args, reads = plan[stage]
        C.progress(f"{stage} ({src.name})")
        rec = run_stage([*args, "--workers", 1], env)
        out = {"ingest": ing, "transfer": tr, "negatives": neg, "publish": pub}[stage]
        n_out, mb_out, sizes = folder_figures(out)
        if stage == "ingest":
            n_in, mb_in = n_out, mb_out  # the PNGs decoded: the same pixels
        elif stage == "publish":
            n_in = n_out
            mb_in = folder_figures(ing)[1] + folder_figures(neg)[1]
        else:
            n_in, mb_in, _ = folder_figures(*reads)
        rows.append([stage, n_in, n_out, round(rec["wall"], 1), round(rec["cpu"], 1), round(n_out / rec["wall"], 1),
                     round(mb_in / rec["wall"], 1), round(rec["rss_mib"]), len(sizes)])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--shard-size", type=int, default=64, help="ingest --shard-size (samples a shard)")
    ap.add_argument("--field", default="resize", choices=("resize", "mosaic", "model"))
    ap.add_argument("--flat", action="store_true", help="also a quarter of the images (transfer, negatives)")
    ap.add_argument("--keep", action="store_true", help="keep the stage outputs")
    a = ap.parse_args()
    root = C.bench_dir()
    C.header(f"native sizes: {a.images} SIRST-V2 frames with planted targets through the recipe "
             f"(ingest --size native --shard-size {a.shard_size}, transfer {a.field}, negatives, publish)")
    C.progress("building the source")
    t = time.perf_counter()
    src = build_source(a.images, root)
    print(f"   source: {src} ({time.perf_counter() - t:.0f} s to build or find)")
    bank = root / "native-bank.h5"
    env = {**os.environ, "SIRST5K_CLUSTER": "never", "OMP_NUM_THREADS": "1"}
    if not bank.is_file():
        C.progress("noise bank")
        run_stage(["noise-bank", C.data_root() / "sirst-v2-frames", "--out", bank, "--workers", 1], env)
    headers = ["stage", "samples in", "samples out", "wall s", "CPU s", "samples/s", "MB/s (in)", "peak RSS MiB",
               "sizes"]
    sets = [(a.images, src)]
    if a.flat:
        sets.append((a.images // 4, build_source(a.images // 4, root)))
    for n, s in sets:
        work = root / f"native-run-{n}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        stages = ("ingest", "transfer", "negatives", "publish") if n == a.images else ("ingest", "transfer", "negatives")
        rows = recipe(s, bank, work, a.shard_size, a.field, env, stages)
        print(f"\n{n} images:")
        C.table(headers, rows)
        if n == a.images:
            _, _, sizes = folder_figures(work / "ingest")
            print("   sizes (HxW: samples): " + ", ".join(f"{k}: {v}" for k, v in sorted(sizes.items())))
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
