"""Named arms x seeds: train, select on a validation split, score on test, keep everything.

An **arm** is a training set: the originals of the dataset's train split plus the generated
samples (every sample whose kind is not `original`) of zero or more shard folders, e.g.
`originals+negatives=output/neg-orig` (`parse_arm`). Built in: `originals` (no extra folder) and
`published` (the dataset's own generated train samples, i.e. what publish wrote). `@SHARE` after
the folders sets how often a batch slot comes from the originals (e.g. `@0.5`); without it
every sample is drawn equally often.

Per seed s, every arm shares: the validation split (a seeded fraction of the originals, keyed
by s alone), the initial weights, the crops and symmetries, and the budget in steps (`--steps`,
or `--epochs` of the originals that remain for training, the same number for every arm).
Generated samples made from a validation or test image (their `source_id`) are dropped, so
nothing the selection or the score sees leaked into training.

Fa counts false alarms by `config.fa_rule` (`--fa-rule`: "basicirstd", by identity, the default;
"dnanet", the older area-keyed rule, for comparing with papers scored that way); it changes no
training or selection (that is by validation mIoU), only Fa, the false-alarm files and the key.

A run checkpoints every `eval_every` steps: validation and test metrics at threshold 0.5. The
model kept is the checkpoint with the best validation mIoU (the last when there is no
validation split); its test metrics are the run's result. It writes, under
`OUT/runs/<arm>/seed<s>/`: `result.json`, `model.pt` (selected weights) and `last.pt`,
`checkpoints.csv`, `loss.csv`, `per_image.csv`, `false_alarms.csv` and `pdfa.csv` (test).
A run whose `result.json` carries the same key (inputs' checksums, settings, seed, code) is
reused, not retrained.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import multiprocessing
import numpy as np

from sirst5k import PRODUCER
from sirst5k.errors import InputError, OutputError
from sirst5k.evaluate import scoring
from sirst5k.evaluate.data import SplitData, load_split
from sirst5k.method import rng
from sirst5k.method.metrics import METRIC_NAMES

STAGE = "evaluate"
BASELINE = "originals"
NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass(frozen=True)
class Arm:
    name: str
    dirs: tuple[str, ...] = ()
    share: float | None = None
    own: bool = False  # also the dataset's own generated train samples (`published`)

    def spec(self) -> str:
        body = ",".join(self.dirs if not self.own else ("DATASET", *self.dirs))
        return self.name + (f"={body}" if body else "") + (f"@{self.share:g}" if self.share is not None else "")


BUILTIN = {"originals": Arm("originals"), "published": Arm("published", own=True)}


def parse_arm(text: str) -> Arm:
    """`NAME`, `NAME=DIR[,DIR...]`, either with `@SHARE` (0..1): an Arm. NAME alone must be built in."""
    text = text.strip()
    share = None
    if "@" in text:
        text, _, raw = text.rpartition("@")
        try:
            share = float(raw)
        except ValueError:
            raise ValueError(f"arm {text!r}: share {raw!r} is not a number") from None
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"arm {text!r}: share must be in [0, 1], got {share:g}")
    name, eq, dirs = text.partition("=")
    if not NAME_RE.match(name):
        raise ValueError(f"arm name {name!r}: use letters, digits and _ . + -")
    if not eq:
        if name not in BUILTIN:
            raise ValueError(f"arm {name!r} is not built in ({', '.join(BUILTIN)}): write {name}=DIR[,DIR...]")
        return replace(BUILTIN[name], share=share)
    folders = tuple(d.strip() for d in dirs.split(",") if d.strip())
    if not folders:
        raise ValueError(f"arm {name!r}: no folder after '='")
    own = "DATASET" in folders
    return Arm(name, tuple(d for d in folders if d != "DATASET"), share, own)


@dataclass(frozen=True)
class Plan:
    dataset: str
    config: "TrainConfig"  # noqa: F821 - its seed is replaced per run
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    test: str | None = None
    steps: int | None = None  # None: from epochs
    epochs: float | None = None
    val_fraction: float = 0.15
    eval_every: int = 0  # 0: ten checkpoints per run
    thresholds: tuple[float, ...] = scoring.THRESHOLDS
    device: str = "cpu"
    threads: int | None = None
    log: bool = False  # one line per checkpoint on stderr

    def __post_init__(self):
        if not self.arms:
            raise ValueError("no arms")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names repeat: {names}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be given and distinct, got {list(self.seeds)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val fraction must be in [0, 1), got {self.val_fraction}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")


# --- data of one run -----------------------------------------------------------------------

_CACHE: dict[tuple[str, str], SplitData] = {}


def _split(path: str, split: str) -> SplitData:
    key = (str(Path(path).resolve()), split)
    if key not in _CACHE:
        _CACHE[key] = load_split(path, split)
    return _CACHE[key]


@dataclass
class RunData:
    train_originals: SplitData
    val: SplitData
    extras: SplitData | None
    test: SplitData
    dropped: int  # generated samples left out: made from a validation or test image
    inputs: list[tuple[str, str]] = field(default_factory=list)


def val_indices(seed: int, n: int, fraction: float) -> np.ndarray:
    """Sorted indices of the validation originals: a seeded `fraction` of range(n) (at least 1 if > 0)."""
    k = 0 if fraction <= 0 else min(max(1, round(fraction * n)), n - 1)
    return np.sort(rng.generator(seed, STAGE, "val").permutation(n)[:k])


def run_data(plan: Plan, arm: Arm, seed: int) -> RunData:
    train = _split(plan.dataset, "train")
    test = _split(plan.test or plan.dataset, "test")
    is_orig = train.kind == "original"
    originals = train.take(is_orig)
    if len(originals) < 2:
        raise InputError(plan.dataset, "the train split holds fewer than 2 samples of kind 'original'")
    if len(test) == 0:
        raise InputError(plan.test or plan.dataset, "the test split is empty")
    if not (test.masks != 0).any():
        raise InputError(plan.test or plan.dataset, "the test masks hold no targets: Pd is undefined")
    vi = val_indices(seed, len(originals), plan.val_fraction)
    keep = np.ones(len(originals), bool)
    keep[vi] = False
    val, train_orig = originals.take(vi), originals.take(keep)
    parts = []
    inputs = list(train.shards) + [s for s in test.shards if s not in train.shards]
    if arm.own:
        own = train.take(~is_orig)
        if len(own) == 0:
            raise InputError(plan.dataset, f"arm {arm.name}: the dataset's train split holds no generated samples "
                                           f"(give the published folder: --arm {arm.name}=DIR)")
        parts.append(own)
    for d in arm.dirs:
        extra = _split(d, "train")
        inputs += extra.shards
        gen = extra.take(extra.kind != "original")
        if len(gen) == 0:
            raise InputError(d, f"arm {arm.name}: no generated (non-original) train samples")
        parts.append(gen)
    extras, dropped = None, 0
    if parts:
        extras = SplitData(np.concatenate([p.images for p in parts]), np.concatenate([p.masks for p in parts]),
                           np.concatenate([p.sample_id for p in parts]), np.concatenate([p.source_id for p in parts]),
                           np.concatenate([p.kind for p in parts]), [])
        if extras.shape != originals.shape:
            raise InputError(arm.dirs[0] if arm.dirs else plan.dataset,
                             f"arm {arm.name}: samples of {extras.shape} do not match the originals' {originals.shape}")
        held_out = set(val.sample_id.tolist()) | set(test.sample_id.tolist()) | set(test.source_id.tolist())
        ok = ~np.isin(extras.source_id, list(held_out))
        dropped = int((~ok).sum())
        extras = extras.take(ok)
    return RunData(train_orig, val, extras, test, dropped, inputs)


# --- one run -------------------------------------------------------------------------------


# the modules a run's files depend on (summary.py and stats.py only combine finished runs)
RUN_CODE = ("acm.py", "unet.py", "train.py", "data.py", "experiment.py", "scoring.py")


def code_version() -> str:
    """A hash of the code a run's numbers depend on: the producer, RUN_CODE, metrics and rng."""
    here = Path(__file__).resolve().parent
    files = [here / f for f in RUN_CODE] + [here.parent / "method" / "metrics.py", here.parent / "method" / "rng.py"]
    h = hashlib.sha256(PRODUCER.encode())
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def budget(plan: Plan, n_train_originals: int) -> int:
    if plan.steps is not None:
        return int(plan.steps)
    if plan.epochs is not None:
        return max(1, math.ceil(plan.epochs * n_train_originals / plan.config.batch_size))
    return plan.config.steps


def run_key(plan: Plan, arm: Arm, seed: int, data: RunData, steps: int) -> str:
    config = asdict(replace(plan.config, seed=seed, steps=steps))
    arm_inputs = {"own": arm.own, "dirs": sorted(sha for d in arm.dirs for _, sha in _split(d, "train").shards)}
    blob = json.dumps({"config": config, "share": arm.share, "inputs": sorted(sha for _, sha in data.inputs),
                       "arm": arm_inputs,
                       "val_fraction": plan.val_fraction, "every": plan.eval_every,
                       "thresholds": list(plan.thresholds), "code": code_version()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return Path(out) / "runs" / arm / f"seed{seed}"


def checkpoint_every(plan: Plan, steps: int) -> int:
    return plan.eval_every if plan.eval_every > 0 else max(1, steps // 10)


def run_one(plan: Plan, arm: Arm, seed: int, out: str | Path, progress: Callable[[], None] | None = None) -> dict:
    """Train, select and score one (arm, seed); write its folder; return its result record."""
    import torch

    from sirst5k.evaluate.train import (ArraySamples, compute_settings, draw_mixed_schedule, new_network,
                                        predict_all, score, state_copy, train_model)

    data = run_data(plan, arm, seed)
    steps = budget(plan, len(data.train_originals))
    key = run_key(plan, arm, seed, data, steps)
    folder = run_dir(Path(out), arm.name, seed)
    old = _read_json(folder / "result.json")
    if old is not None and old.get("key") == key:
        old["reused"] = True
        return old
    config = replace(plan.config, seed=seed, steps=steps)
    device = torch.device(plan.device)
    n_orig, n_extra = len(data.train_originals), len(data.extras) if data.extras is not None else 0
    images = data.train_originals.images if not n_extra else np.concatenate([data.train_originals.images,
                                                                              data.extras.images])
    masks = data.train_originals.masks if not n_extra else np.concatenate([data.train_originals.masks,
                                                                           data.extras.masks])
    train = ArraySamples(images, masks)
    val = ArraySamples(data.val.images, data.val.masks) if len(data.val) else None
    test = ArraySamples(data.test.images, data.test.masks)
    order = draw_mixed_schedule(seed, n_orig, n_extra, steps, config.batch_size, arm.share)
    every = checkpoint_every(plan, steps)
    history: list[dict] = []
    best: dict = {"score": -1.0, "state": None, "step": 0}
    losses: list[float] = []
    timing = {"eval": 0.0}

    def checkpoint(step: int, model) -> None:
        t = time.perf_counter()
        row: dict = {"step": step, "loss": float(np.mean(losses[-every:])) if losses else float("nan")}
        v = score(model, val, config, device) if val is not None else None
        te = score(model, test, config, device)
        row.update({f"val_{k}": (v[k] if v else float("nan")) for k in METRIC_NAMES})
        row.update({f"test_{k}": te[k] for k in METRIC_NAMES})
        history.append(row)
        if plan.log:
            print(f"  {arm.name} seed {seed} step {step}/{steps}: loss {row['loss']:.4f} val mIoU {row['val_mIoU']:.4f} "
                  f"test mIoU {te['mIoU']:.4f} Pd {te['Pd']:.4f} Fa {te['Fa']:.2e}", file=sys.stderr, flush=True)
        crit = v["mIoU"] if v is not None else float(step)
        if crit > best["score"] or best["state"] is None or v is None:
            best.update(score=crit, state=state_copy(model), step=step)
        timing["eval"] += time.perf_counter() - t

    with compute_settings(device, plan.threads):
        threads = torch.get_num_threads() if device.type == "cpu" else None
        t0 = time.perf_counter()
        model, trained = train_model(train, config, device, progress, order=order, checkpoint=checkpoint,
                                     every=every, losses=losses)
        wall = time.perf_counter() - t0
        last_state = state_copy(model)
        chosen = new_network(config).to(device)
        chosen.load_state_dict(best["state"])
        chosen.eval()
        t1 = time.perf_counter()
        prob = predict_all(chosen, test, config, device)
        timing["final"] = time.perf_counter() - t1
    selected = next(r for r in history if r["step"] == best["step"])
    record = {
        "arm": arm.name, "spec": arm.spec(), "seed": seed, "key": key, "model": config.model, "steps": steps,
        "checkpoint_every": every, "selected_step": best["step"], "fa_rule": config.fa_rule,
        "test": {k: selected[f"test_{k}"] for k in METRIC_NAMES},
        "test_last": {k: history[-1][f"test_{k}"] for k in METRIC_NAMES},
        "val": {k: selected[f"val_{k}"] for k in METRIC_NAMES} if val is not None else None,
        "n_train": {"originals": n_orig, "generated": n_extra, "dropped_for_leakage": data.dropped},
        "n_val": len(data.val), "n_test": len(data.test),
        "originals_epochs": round(steps * config.batch_size * _originals_share(arm.share, n_orig, n_extra) / n_orig, 3),
        "train_seconds": round(wall - timing["eval"], 2), "eval_seconds": round(timing["eval"] + timing["final"], 2),
        "threads": threads, "device": device.type,
        "config": asdict(config), "inputs": data.inputs, "reused": False,
    }
    _write_run(folder, record, history, trained, data, prob, plan, best["state"], last_state)
    return record


def _originals_share(share: float | None, n_orig: int, n_extra: int) -> float:
    """Expected fraction of batch slots that are originals."""
    if not n_extra:
        return 1.0
    return share if share is not None else n_orig / (n_orig + n_extra)


def _write_run(folder: Path, record: dict, history: list[dict], losses: list[float], data: RunData,
               prob: np.ndarray, plan: Plan, state: dict, last_state: dict) -> None:
    import torch

    tmp = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        meta = {"arm": record["arm"], "seed": record["seed"], "model": record["model"], "config": record["config"]}
        torch.save({**meta, "step": record["selected_step"], "state_dict": state}, tmp / "model.pt")
        torch.save({**meta, "step": record["steps"], "state_dict": last_state}, tmp / "last.pt")
        _write_csv(tmp / "checkpoints.csv", history)
        _write_csv(tmp / "loss.csv", [{"step": i, "loss": v} for i, v in enumerate(losses, start=1)])
        gt = data.test.masks
        rule = plan.config.fa_rule
        rows = scoring.per_image(prob, gt, plan.config.threshold, fa_rule=rule)
        _write_csv(tmp / "per_image.csv", [{"sample_id": s, **r} for s, r in zip(data.test.sample_id.tolist(), rows)])
        fas = scoring.false_alarms(prob, gt, plan.config.threshold, fa_rule=rule)
        _write_csv(tmp / "false_alarms.csv", [{"sample_id": str(data.test.sample_id[f["image"]]),
                                               **{k: f[k] for k in ("y", "x", "area", "peak")}} for f in fas],
                   header=["sample_id", "y", "x", "area", "peak"])
        _write_csv(tmp / "pdfa.csv", scoring.pd_fa_curve(prob, gt, plan.thresholds, fa_rule=rule))
        (tmp / "result.json").write_text(json.dumps(record, indent=1, sort_keys=True, allow_nan=True) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(folder, f"cannot write: {err.strerror or err}") from err


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.6g}"
    return str(v)


def csv_text(rows: Sequence[dict], header: Sequence[str] | None = None) -> str:
    header = list(header or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([_fmt(r.get(h, "")) for h in header])
    return buf.getvalue()


def _write_csv(path: Path, rows: Sequence[dict], header: Sequence[str] | None = None) -> None:
    path.write_text(csv_text(rows, header), encoding="utf-8")


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(path, f"cannot write: {err.strerror or err}") from err


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --- many runs -----------------------------------------------------------------------------


def _run_in_worker(args) -> dict:
    plan, arm, seed, out = args
    return run_one(plan, arm, seed, out)


def _start_job_process() -> None:
    """A spawned run's process keeps big tensors on the heap, as the command does
    (`sirst5k.__main__.reuse_freed_memory`): training allocates the same sizes every step, and as
    fresh mmaps the kernel faulted in and zeroed each one (a 100-step run on SIRST: 256 s with
    152 s of it in the kernel, against 154 s with 3 s)."""
    from sirst5k.__main__ import reuse_freed_memory

    reuse_freed_memory()


def run_all(plan: Plan, out: str | Path, jobs: int = 1, on_done: Callable[[dict], None] | None = None) -> list[dict]:
    """Every (arm, seed) of the plan, seeds outermost; `jobs` > 1 runs them in spawned processes."""
    tasks = [(plan, arm, seed, str(out)) for seed in plan.seeds for arm in plan.arms]
    results: list[dict] = []
    if jobs <= 1:
        for t in tasks:
            results.append(_run_in_worker(t))
            if on_done:
                on_done(results[-1])
        return results
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_job_process) as pool:
        for r in pool.map(_run_in_worker, tasks):
            results.append(r)
            if on_done:
                on_done(r)
    return results
