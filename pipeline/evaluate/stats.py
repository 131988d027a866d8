"""Mean +/- sd over seeds, and paired differences against a baseline arm with a paired t-test.

Runs of two arms with the same seed share initial weights, validation split, crops and
symmetries, so their difference is paired: the test is scipy's `ttest_rel` on the per-seed
differences (two-sided). With one seed the sd, t and p are None (not computable), not zero.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np


def _num(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def mean_sd(values: Sequence[float]) -> dict:
    """{"mean", "sd" (ddof 1), "n"}; sd None for fewer than two values."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": _num(v.mean()), "sd": _num(v.std(ddof=1)) if v.size > 1 else None, "n": int(v.size)}


def paired(values: Sequence[float], baseline: Sequence[float]) -> dict:
    """Differences values - baseline, seed by seed: mean, sd, per-seed list, t, p (two-sided)."""
    a, b = np.asarray(values, np.float64), np.asarray(baseline, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.shape} vs {b.shape}")
    d = a - b
    out = {"diffs": [float(x) for x in d], **mean_sd(d), "t": None, "p": None}
    if d.size > 1:
        if np.all(d == d[0]):
            out["p"] = 1.0 if d[0] == 0 else 0.0
        else:
            from scipy.stats import ttest_rel

            res = ttest_rel(a, b)
            out["t"], out["p"] = _num(res.statistic), _num(res.pvalue)
    return out


def summarize(per_arm: Mapping[str, Mapping[int, Mapping[str, float]]], metrics: Sequence[str],
              baseline: str = "originals") -> dict:
    """per_arm[arm][seed][metric] -> {arm: {metric: mean_sd | {**mean_sd, "vs_<baseline>": paired}}}.

    The paired comparison uses the seeds both arms ran."""
    out: dict = {}
    base = per_arm.get(baseline, {})
    for arm, runs in per_arm.items():
        seeds = sorted(runs)
        entry: dict = {"seeds": seeds}
        for m in metrics:
            entry[m] = mean_sd([runs[s][m] for s in seeds])
            common = [s for s in seeds if s in base]
            if arm != baseline and common:
                entry[m][f"vs_{baseline}"] = paired([runs[s][m] for s in common], [base[s][m] for s in common])
        out[arm] = entry
    return out
