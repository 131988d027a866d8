"""`sirst5k evaluate DATASET --out DIR`: does the generated data help a detector?

Trains the same small U-Net twice with the same seed and budget: (a) on the train split's
`original` samples only, (b) on the whole train split (originals plus negatives and any
transfers), and scores both on the test split with the IRSTD metrics (pipeline/metrics.py).
Writes DIR/metrics.json (a DVC metric: one row per run, plus the settings) and DIR/curves.csv
(step, run, loss: a DVC plot). Both are written to a temporary name and renamed.

This is a yardstick, not a reproduction of the paper's DNANet numbers: a ~120k-parameter net
trained for minutes. What it shows is the difference between the two rows.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from sirst5k.runner.cluster import progress_bar, resolve_device
from sirst5k.errors import InputError, OutputError
from sirst5k.loader import ShardDataset, open_source
from sirst5k.formats.manifest import write_json_atomic
from sirst5k.method.metrics import METRIC_NAMES
from sirst5k.evaluate.train import DEFAULT_STEPS, RunResult, TrainConfig, train_and_score

from sirst5k.stages.common import Device, Seed, check_device, fail, user_errors, warn

RUNS = ("original", "sirst5k")
# Decoded samples kept in memory between steps; a NUDT-sized SIRST-5K train split at 256 px
# (4,862 images and masks) takes ~640 MB.
CACHE_BYTES = 2 << 30


class _Cache:
    """Decoded samples of one split by dataset index, up to a byte budget; views share it."""

    def __init__(self, dataset: ShardDataset, budget: int):
        self.dataset, self.left = dataset, budget
        self.pairs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        pair = self.pairs.get(i)
        if pair is None:
            image, mask = self.dataset.read_uint8(i)
            pair = (image[0], mask[0])
            if self.left >= image.nbytes * 2:
                self.pairs[i] = pair
                self.left -= image.nbytes * 2
        return pair


class ShardSamples:
    """One split's samples as uint8 batches, cached in memory; `of_kind` gives a view of one kind.

    Reads through `pipeline.loader.ShardDataset`, the loader other repos use, so training here
    sees exactly what a user's DataLoader would.
    """

    def __init__(self, dataset: ShardDataset, cache_bytes: int = CACHE_BYTES):
        meta = dataset.meta
        self.all_kinds = np.asarray(meta["kind"]).astype(str)
        self.index = np.arange(len(dataset))
        self.n_targets = np.asarray(meta["n_targets"], np.int64)
        self._cache = _Cache(dataset, cache_bytes)
        self.shape = self._shape(dataset)

    def of_kind(self, kind: str) -> "ShardSamples":
        """The samples of one kind, sharing this view's cache and shape."""
        view = copy.copy(self)
        keep = self.all_kinds[self.index] == kind
        view.index, view.n_targets = self.index[keep], self.n_targets[keep]
        return view

    @staticmethod
    def _shape(dataset: ShardDataset) -> tuple[int, int]:
        shapes = {dataset.read_uint8(int(first))[0].shape[1:]
                  for first in dataset.offsets[:-1][np.diff(dataset.offsets) > 0]}
        if len(shapes) > 1:
            raise InputError(Path(dataset.paths[0]).parent,
                             f"samples differ in size {sorted(shapes)}; ingest at one --size")
        return tuple(int(s) for s in shapes.pop()) if shapes else (0, 0)

    def __len__(self) -> int:
        return len(self.index)

    def kind_counts(self) -> dict[str, int]:
        kinds, counts = np.unique(self.all_kinds[self.index], return_counts=True)
        return {str(k): int(c) for k, c in zip(kinds, counts)}

    def take(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """images, masks uint8 [N, H, W] (masks 0/255 as stored) of the given sample numbers."""
        pairs = [self._cache.get(int(self.index[i])) for i in np.asarray(indices, np.int64).tolist()]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def open_splits(dataset: Path) -> tuple[ShardDataset, ShardDataset, dict]:
    """Train and test splits of a published dataset folder, a manifest, or a bare shard folder."""
    if not dataset.exists():
        raise InputError(dataset, "dataset not found")
    source = open_source(dataset)
    for split in ("train", "test"):
        if not source.splits.get(split):
            raise InputError(dataset, f"no {split} shards (a dataset with train and test splits is needed)")
        for p, _ in source.splits[split]:
            if not Path(p).is_file():
                raise InputError(p, f"{split} shard is missing")
    if source.manifest is not None:
        info = {"name": source.manifest["name"], "version": source.manifest["version"]}
    else:
        info = {"name": dataset.name, "version": None}
    return ShardDataset(dataset, "train", dtype="uint8"), ShardDataset(dataset, "test", dtype="uint8"), info


def write_curves_atomic(path: Path, results: dict[str, RunResult]) -> None:
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    lines = ["step,run,loss"]
    for run, result in results.items():
        lines.extend(f"{step},{run},{loss:.6g}" for step, loss in enumerate(result.losses, start=1))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(path, f"cannot write: {err.strerror or err}") from err


def metrics_record(results: dict[str, RunResult], config: TrainConfig, device: str, dataset: dict,
                   train_kinds: dict[str, int]) -> dict:
    """The metrics.json content: only settings and scores, no timings, so a rerun writes the same bytes."""
    record: dict = {run: {name: r.metrics[name] for name in METRIC_NAMES} for run, r in results.items()}
    record.update(
        steps=config.steps,
        batch_size=config.batch_size,
        size=config.size,
        crop=config.crop,
        seed=config.seed,
        device=device,
        dataset=dataset,
        train_samples={run: r.n_train for run, r in results.items()},
        train_kinds=train_kinds,
        test_samples=next(iter(results.values())).n_test,
    )
    return record


@user_errors
def command(
    dataset: Annotated[Path, typer.Argument(metavar="DATASET",
                                            help="Published dataset folder, its manifest, or a folder of train-/test- shards.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json and curves.csv.")],
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps per run (the fixed budget).")] = DEFAULT_STEPS,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Samples per step.")] = 8,
    size: Annotated[int, typer.Option(min=8, help="Resample images so the longer side is SIZE (smaller is faster).")] = 256,
    crop: Annotated[int, typer.Option(min=8, help="Training window side; >= SIZE trains on whole images.")] = 128,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak Adam learning rate.")] = 2e-3,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads for torch (default: all cores of this process).")] = None,
    seed: Seed = 0,
    device: Device = "auto",
) -> None:
    """Train on the originals alone and on the whole train split; score both on the test split."""
    check_device(device)
    try:
        dev = resolve_device(device)
    except RuntimeError as err:
        fail(str(err))
    train_split, test_split, info = open_splits(dataset)
    everything = ShardSamples(train_split)
    originals = everything.of_kind("original")
    test = ShardSamples(test_split)
    if len(originals) == 0:
        raise InputError(dataset, "the train split holds no samples of kind 'original'")
    if len(test) == 0:
        raise InputError(dataset, "the test split is empty")
    if (test.n_targets >= 0).all() and test.n_targets.sum() == 0:
        raise InputError(dataset, "the test split holds no targets: Pd is undefined")
    if len(everything) == len(originals):
        warn("the train split holds only originals: both runs train on the same data")
    config = TrainConfig(steps=steps, batch_size=batch_size, size=size, crop=crop, lr=lr, seed=seed)
    results: dict[str, RunResult] = {}
    for run, samples in zip(RUNS, (originals, everything)):
        with progress_bar(f"train {run} ({len(samples)} samples)", steps) as advance:
            results[run] = train_and_score(samples, test, config, dev, threads, advance)
        r = results[run]
        if any(v != v for v in r.metrics.values()):  # NaN: n_targets in the meta said targets, the masks none
            raise InputError(dataset, "the test masks hold no targets: Pd is undefined")
        typer.echo(f"evaluate {run}: train {r.n_train} samples {r.train_seconds:.0f} s, score {r.n_test} "
                   f"{r.eval_seconds:.0f} s: " + ", ".join(f"{k} {_fmt(k, v)}" for k, v in r.metrics.items()),
                   err=True)
    record = metrics_record(results, config, dev.type, info, everything.kind_counts())
    write_json_atomic(out / "metrics.json", record)
    write_curves_atomic(out / "curves.csv", results)
    typer.echo(_table(results) + f"-> {out / 'metrics.json'}")


def _fmt(name: str, value: float) -> str:
    return f"{value:.3e}" if name == "Fa" else f"{value:.4f}"


def _table(results: dict[str, RunResult]) -> str:
    head = f"{'run':<10}" + "".join(f"{n:>12}" for n in METRIC_NAMES) + "\n"
    rows = "".join(
        f"{run:<10}" + "".join(f"{_fmt(n, r.metrics[n]):>12}" for n in METRIC_NAMES) + "\n" for run, r in results.items()
    )
    return head + rows
