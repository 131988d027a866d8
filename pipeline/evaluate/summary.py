"""What a set of finished runs says: mean ± sd over seeds, paired differences, curves, a table.

Reads the runs' records and files under OUT/runs/ (written by `experiment.run_one`) and writes
OUT/metrics.json (a DVC metric; no timings, so a rerun writes the same bytes), checkpoints.csv
and pdfa.csv (means over seeds per arm: DVC plots), runs.csv (one row per run, with timings)
and summary.md (the table docs/evaluation.md quotes).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Iterable

import numpy as np

from sirst5k.evaluate import stats
from sirst5k.evaluate.experiment import BASELINE, Plan, csv_text, run_dir, write_text_atomic
from sirst5k.method.metrics import METRIC_NAMES


def aggregate(plan: Plan, results: Iterable[dict], out: str | Path) -> dict:
    """Write OUT/metrics.json, checkpoints.csv, pdfa.csv, runs.csv and summary.md; return the metrics record."""
    out = Path(out)
    results = list(results)
    per_arm: dict[str, dict[int, dict]] = {}
    for r in results:
        per_arm.setdefault(r["arm"], {})[r["seed"]] = r["test"]
    summary = stats.summarize(per_arm, METRIC_NAMES, BASELINE)
    first = results[0]
    record = {
        "arms": summary,
        "specs": {a.name: a.spec() for a in plan.arms},
        "settings": {**{k: v for k, v in asdict(replace(plan.config, seed=0)).items() if k != "seed"},
                     "steps": first["steps"], "epochs": plan.epochs, "val_fraction": plan.val_fraction,
                     "n_val": first["n_val"], "n_test": first["n_test"], "seeds": list(plan.seeds),
                     "selection": "best validation mIoU" if plan.val_fraction > 0 else "last"},
        "train_samples": {r["arm"]: r["n_train"] for r in results if r["seed"] == plan.seeds[0]},
        "runs": {f"{r['arm']}/seed{r['seed']}": {"selected_step": r["selected_step"], **r["test"]} for r in results},
    }
    write_text_atomic(out / "metrics.json", json.dumps(record, indent=1, sort_keys=True, allow_nan=True) + "\n")
    curves, pdfa = [], []
    for arm in plan.arms:
        runs = [r for r in results if r["arm"] == arm.name]
        hist = [_read_csv(run_dir(out, arm.name, r["seed"]) / "checkpoints.csv") for r in runs]
        for i, row in enumerate(hist[0]):
            curves.append({"arm": arm.name, "step": int(row["step"]),
                           **{m: float(np.mean([float(h[i][f"test_{m}"]) for h in hist])) for m in METRIC_NAMES},
                           "val_mIoU": float(np.mean([float(h[i]["val_mIoU"]) for h in hist])),
                           "loss": float(np.mean([float(h[i]["loss"]) for h in hist]))})
        pd = [_read_csv(run_dir(out, arm.name, r["seed"]) / "pdfa.csv") for r in runs]
        for i, row in enumerate(pd[0]):
            pdfa.append({"arm": arm.name, "threshold": float(row["threshold"]),
                         **{m: float(np.mean([float(p[i][m]) for p in pd])) for m in METRIC_NAMES}})
    write_text_atomic(out / "checkpoints.csv", csv_text(curves))
    write_text_atomic(out / "pdfa.csv", csv_text(pdfa))
    run_rows = [{"arm": r["arm"], "seed": r["seed"], "steps": r["steps"], "selected_step": r["selected_step"],
                 **{m: r["test"][m] for m in METRIC_NAMES}, **{f"last_{m}": r["test_last"][m] for m in METRIC_NAMES},
                 "train_seconds": r["train_seconds"], "eval_seconds": r["eval_seconds"]} for r in results]
    write_text_atomic(out / "runs.csv", csv_text(run_rows))
    write_text_atomic(out / "summary.md", summary_table(record, results))
    return record


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _pm(entry: dict, scale: float, digits: int) -> str:
    if entry["mean"] is None:
        return "-"
    sd = f" ± {entry['sd'] * scale:.{digits}f}" if entry.get("sd") is not None else ""
    return f"{entry['mean'] * scale:.{digits}f}{sd}"


def _diff(entry: dict, scale: float, digits: int) -> str:
    p = entry.get(f"vs_{BASELINE}")
    if not p or p["mean"] is None:
        return ""
    sd = f" ± {p['sd'] * scale:.{digits}f}" if p.get("sd") is not None else ""
    pv = f", p {p['p']:.2g}" if p.get("p") is not None else ""
    return f" ({p['mean'] * scale:+.{digits}f}{sd}{pv})"


def summary_table(record: dict, results: list[dict]) -> str:
    """Markdown: per arm mean ± sd over seeds (and the paired difference vs originals, p of the t-test)."""
    lines = ["| arm | train samples | mIoU % | nIoU % | Pd % | Fa x1e-6 | s / run |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for arm, entry in record["arms"].items():
        n = record["train_samples"].get(arm, {})
        secs = [r["train_seconds"] + r["eval_seconds"] for r in results if r["arm"] == arm]
        lines.append(f"| {arm} | {n.get('originals', 0) + n.get('generated', 0):,} | "
                     f"{_pm(entry['mIoU'], 100, 2)}{_diff(entry['mIoU'], 100, 2)} | "
                     f"{_pm(entry['nIoU'], 100, 2)}{_diff(entry['nIoU'], 100, 2)} | "
                     f"{_pm(entry['Pd'], 100, 1)}{_diff(entry['Pd'], 100, 1)} | "
                     f"{_pm(entry['Fa'], 1e6, 1)}{_diff(entry['Fa'], 1e6, 1)} | {np.mean(secs):.0f} |")
    s = record["settings"]
    lines.append("")
    lines.append(f"model {s['model']}, {s['steps']} steps x batch {s['batch_size']}, size {s['size']}, crop {s['crop']}, "
                 f"seeds {s['seeds']}, selection: {s['selection']} ({s['n_val']} val / {s['n_test']} test images), "
                 f"Fa rule {s.get('fa_rule', 'basicirstd')}. "
                 f"Mean ± sd over seeds; in brackets the paired difference vs {BASELINE} and its paired t-test p.")
    return "\n".join(lines) + "\n"
