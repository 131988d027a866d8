"""Build, with the `sirst5k` CLI, every shard folder the evaluation arms on SIRST v1 train from.

    .venv/bin/python benchmarks/evaluate_data.py [--size 128] [--workers 2]

Writes under $SIRST5K_BENCH_DIR/evaluate-sirst-<size>/ (default /tmp/sirst5k-bench) and prints
the folders as JSON. Cached: a folder whose `stage.json` exists is not rebuilt. Real data from
$SIRST5K_DATA (default ../shared/data): SIRST v1 (idx_427: 341 train / 86 test) and the SIRST-V2
background frames for the noise bank (--temporal 2, as the README's real-data recipe).

folders (all from the train split of `ingest`):
  ingest            SIRST v1 at --size (the originals; test split = the 86 test images)
  bank.h5           noise bank, window 32, --temporal 2
  transfer          blend m = 0.1, resize field (the paper)
  neg-transfer-32   32-px mirrored negatives of the transfers (the paper's recipe)
  published         publish of ingest + neg-transfer-32 (+ transfer): what the README recipe ships
  neg-orig-32       32-px mirrored negatives of the originals (no noise)
  neg-orig-4        4-px mirrored negatives of the originals (the scripts' "5" box)
  transfer-add1     additive noise at m = 1, mosaic field (the sensor's own noise, no dimming)
  bank-model.h5     noise bank with the fitted sensor-noise model (--temporal 2 --model, no scene
                    split: SIRST-V2's frames are sparse views; as benchmarks/noise_realism.py)
  transfer-model    the README's recommended noise (issue 15): additive, model field, source
                    scale, m = 0.75 and 1 (two transfers an image)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import _common as C


def build(size: int, workers: int) -> dict[str, Path]:
    root = C.bench_dir() / f"evaluate-sirst-{size}"
    root.mkdir(parents=True, exist_ok=True)
    w = ["--workers", workers]
    f = {name: root / name for name in ("ingest", "transfer", "neg-transfer-32", "published", "neg-orig-32",
                                         "neg-orig-4", "transfer-add1", "transfer-model")}
    f["bank"] = root / "bank.h5"
    f["bank-model"] = root / "bank-model.h5"

    def once(key: str, *args: object) -> None:
        done = f[key].is_file() if key.startswith("bank") else (f[key] / "stage.json").is_file()
        if not done:
            C.progress(f"building {key}")
            C.sirst5k(*args)

    once("ingest", "ingest", C.data_root() / "sirst", "--out", f["ingest"], "--layout", "sirst", "--size", size, *w)
    once("bank", "noise-bank", C.data_root() / "sirst-v2-frames", "--out", f["bank"], "--temporal", 2, *w)
    once("transfer", "transfer", f["ingest"], "--noise-bank", f["bank"], "--out", f["transfer"], "--mix", 0.1, *w)
    once("neg-transfer-32", "negatives", f["transfer"], "--out", f["neg-transfer-32"], "--patch", 32, *w)
    if not (f["published"] / "manifest.json").is_file():
        C.progress("building published")
        C.sirst5k("publish", "--ingest", f["ingest"], "--negatives", f["neg-transfer-32"], "--out", f["published"],
                  "--manifest", root / "published.json", "--name", "sirst5k-sirst", *w)
    once("neg-orig-32", "negatives", f["ingest"], "--out", f["neg-orig-32"], "--patch", 32, *w)
    once("neg-orig-4", "negatives", f["ingest"], "--out", f["neg-orig-4"], "--patch", 4, *w)
    once("transfer-add1", "transfer", f["ingest"], "--noise-bank", f["bank"], "--out", f["transfer-add1"],
         "--mix", 1, "--mode", "additive", "--field", "mosaic", *w)
    once("bank-model", "noise-bank", C.data_root() / "sirst-v2-frames", "--out", f["bank-model"], "--temporal", 2,
         "--model", "--scene-corr", 0, *w)
    once("transfer-model", "transfer", f["ingest"], "--noise-bank", f["bank-model"], "--out", f["transfer-model"],
         "--mix", 0.75, "--mix", 1, "--mode", "additive", "--field", "model", "--noise-scale", "source", *w)
    return f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    folders = build(args.size, args.workers)
    print(json.dumps({k: str(v) for k, v in folders.items()}, indent=1))


if __name__ == "__main__":
    main()
