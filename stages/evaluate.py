"""`sirst5k evaluate DATASET --out DIR`: does the generated data help a detector?

Trains one network (`--model unet|acm`) per named **arm** and **seed** with the same budget,
augmentation and initial weights, selects each run's checkpoint on a seeded validation split of
the originals, and scores it on the test split (DATASET's, or `--test DIR`'s). Arms (`--arm`,
repeatable; `sirst5k.evaluate.experiment` documents the grammar):

    originals                   the train split's originals (always run: the baseline)
    published                   the originals + DATASET's own generated train samples
    NAME=DIR[,DIR...][@SHARE]   the originals + the generated samples of those shard folders;
                                @SHARE: the fraction of each batch drawn from the originals

DIR is any stage's shard folder (e.g. `negatives` run on `ingest`); this command builds none.
Writes under --out: metrics.json (a DVC metric: mean ± sd over seeds per arm and metric, the
paired difference vs `originals` with its paired t-test), checkpoints.csv (test metrics at each
checkpoint, mean over seeds: a DVC plot of convergence), pdfa.csv (Pd and Fa over thresholds),
runs.csv, summary.md, and runs/<arm>/seed<s>/ (models, per-image scores, false-alarm
locations). A run already in --out with the same inputs, settings and code is reused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sirst5k.errors import InputError
from sirst5k.stages.common import Device, check_device, fail, user_errors

DEFAULT_ARMS = ["originals", "published"]
FA_RULES = ("basicirstd", "dnanet")  # sirst5k.method.metrics.FA_RULES (tests check they agree)


@user_errors
def command(
    dataset: Annotated[Path, typer.Argument(metavar="DATASET", help="Published dataset folder, its manifest, "
                                            "or an ingest shard folder (train originals; test split).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the metrics, curves, models and per-run files.")],
    arm: Annotated[Optional[list[str]], typer.Option("--arm", help="An arm: originals | published | "
                   "NAME=DIR[,DIR...][@SHARE]; repeatable (default: originals, published).")] = None,
    seeds: Annotated[Optional[list[int]], typer.Option("--seeds", help="Seeds, repeatable (default: --seed).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="The seed when --seeds is not given.")] = 0,
    model: Annotated[str, typer.Option("--model", help="unet (the 122k yardstick) or acm (ACM-U-Net, "
                                       "Dai et al. WACV 2021, SoftIoU loss).")] = "unet",
    steps: Annotated[Optional[int], typer.Option(min=1, help="Optimiser steps per run (default 2000 unless "
                                                 "--epochs).")] = None,
    epochs: Annotated[Optional[float], typer.Option(min=0.0, help="Budget as epochs of the training originals: "
                                                    "steps = ceil(E x originals / batch), the same for every arm.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Samples per step.")] = 8,
    size: Annotated[int, typer.Option(min=8, help="Resample images so the longer side is SIZE.")] = 256,
    crop: Annotated[int, typer.Option(min=8, help="Random training window side; >= SIZE trains on whole images.")] = 128,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Random flip and rot90 of every "
                                          "training window (crops apply whenever CROP < SIZE).")] = True,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak Adam learning rate.")] = 2e-3,
    val_fraction: Annotated[float, typer.Option("--val-fraction", min=0.0, max=0.9,
                                                help="Share of the train originals held out (seeded) to select "
                                                     "the checkpoint; 0: keep the last.")] = 0.15,
    eval_every: Annotated[int, typer.Option("--eval-every", min=0, help="Steps between checkpoints "
                                            "(0: ten per run).")] = 0,
    test: Annotated[Optional[Path], typer.Option("--test", help="Score on this set's test split instead "
                                                 "(another ingested or published set).")] = None,
    jobs: Annotated[int, typer.Option(min=1, help="Runs at a time (separate processes).")] = 1,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads per run (default: all cores).")] = None,
    fa_rule: Annotated[str, typer.Option("--fa-rule", help="Which unmatched predictions are false alarms: "
                       "basicirstd (by identity, BasicIRSTD since Jan 2024) or dnanet (the older area-keyed "
                       "rule of DNANet's PD_FA: lower Fa, for comparing with papers that used it).")] = "basicirstd",
    device: Device = "auto",
) -> None:
    """Train every arm on every seed; report mean ± sd and paired differences vs the originals."""
    check_device(device)
    if steps is not None and epochs is not None:
        fail("give --steps or --epochs, not both")
    if model not in ("unet", "acm"):
        fail(f"--model {model}: use unet or acm")
    if fa_rule not in FA_RULES:
        fail(f"--fa-rule {fa_rule}: use {' or '.join(FA_RULES)}")
    from sirst5k.evaluate import experiment, summary
    from sirst5k.runner.outputs import check_not_input

    try:
        arms = [experiment.parse_arm(a) for a in (arm or DEFAULT_ARMS)]
    except ValueError as err:
        fail(f"--arm: {err}")
    if not any(a.name == experiment.BASELINE for a in arms):
        arms.insert(0, experiment.BUILTIN[experiment.BASELINE])
    if not Path(dataset).exists():
        raise InputError(dataset, "dataset not found")
    for d in [test, *(d for a in arms for d in a.dirs)]:
        if d is not None and not Path(d).exists():
            raise InputError(d, "shard folder not found")
    check_not_input(out, [dataset, test, *(d for a in arms for d in a.dirs)])

    from sirst5k.evaluate.train import TrainConfig
    from sirst5k.runner.cluster import resolve_device

    try:
        dev = resolve_device(device)
    except RuntimeError as err:
        fail(str(err))
    config = TrainConfig(batch_size=batch_size, size=size, crop=crop, lr=lr, model=model, augment=augment,
                         fa_rule=fa_rule)
    try:
        plan = experiment.Plan(dataset=str(dataset), config=config, arms=tuple(arms),
                               seeds=tuple(seeds or [seed]), test=str(test) if test else None, steps=steps,
                               epochs=epochs, val_fraction=val_fraction, eval_every=eval_every, device=dev.type,
                               threads=threads, log=True)
    except ValueError as err:
        fail(str(err))

    def done(r: dict) -> None:
        t = r["test"]
        how = "reused" if r.get("reused") else f"{r['train_seconds']:.0f} s"
        typer.echo(f"evaluate {r['arm']} seed {r['seed']}: {r['steps']} steps ({how}), step {r['selected_step']} "
                   f"selected: mIoU {t['mIoU']:.4f} nIoU {t['nIoU']:.4f} Pd {t['Pd']:.4f} Fa {t['Fa']:.3e}", err=True)

    n = len(plan.arms) * len(plan.seeds)
    typer.echo(f"evaluate: {len(plan.arms)} arms x {len(plan.seeds)} seeds = {n} runs, model {model}, "
               f"Fa rule {fa_rule}, on {dev.type}", err=True)
    results = experiment.run_all(plan, out, jobs=jobs, on_done=done)
    record = summary.aggregate(plan, results, out)
    typer.echo(summary.summary_table(record, results) + f"-> {Path(out) / 'metrics.json'}")
