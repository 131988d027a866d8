"""`sirst5k evaluate`: arms, seeds, validation selection, statistics, kept outputs, on a tiny budget."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from sirst5k.evaluate import experiment, scoring, stats
from sirst5k.evaluate.train import TrainConfig
from sirst5k.formats import shards
from sirst5k.method.metrics import IRSTDMetrics, match_targets

SIZE = 32


def blobs(seed: int, n: int, size: int = SIZE):
    gen = np.random.default_rng(seed)
    images = gen.normal(80, 6, size=(n, size, size))
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        y, x = gen.integers(2, size - 5, size=2)
        images[i, y : y + 3, x : x + 3] += 90
        masks[i, y : y + 3, x : x + 3] = 255
    return images.clip(0, 255).astype(np.uint8), masks


def write(folder, name: str, split: str, images, masks, kinds, ids, sources=None) -> None:
    meta = shards.new_meta(len(images))
    meta["kind"][:] = kinds
    meta["sample_id"][:] = ids
    meta["source_id"][:] = sources if sources is not None else ids
    meta["n_targets"][:] = [int(m.any()) for m in masks]
    attrs = {"dataset": "t", "version": "0", "split": split, "shard_index": 0, "n_shards": 1}
    folder.mkdir(parents=True, exist_ok=True)
    shards.write_shard(folder / name, images, masks, meta, attrs)


@pytest.fixture
def sets(tmp_path):
    """An ingest-like folder (10 train originals, 5 test), negatives of every original, another test set."""
    ingest, negs, other = tmp_path / "ingest", tmp_path / "negs", tmp_path / "other"
    ti, tm = blobs(0, 10)
    ids = [f"img{i}" for i in range(10)]
    write(ingest, "train-00000.h5", "train", ti, tm, ["original"] * 10, ids)
    write(ingest, "test-00000.h5", "test", *blobs(1, 5), ["original"] * 5, [f"t{i}" for i in range(5)])
    ni, nm = np.rot90(ti, axes=(1, 2)).copy(), np.rot90(tm, axes=(1, 2)).copy()
    # a negatives-style part name, as `sirst5k negatives` writes them
    write(negs, "train-00000-000.h5", "train", ni, nm, ["negative"] * 10, [f"{s}_k1" for s in ids], ids)
    write(other, "test-00000.h5", "test", *blobs(2, 4), ["original"] * 4, [f"o{i}" for i in range(4)])
    return ingest, negs, other


def test_parse_arm():
    assert experiment.parse_arm("originals") == experiment.Arm("originals")
    assert experiment.parse_arm("published").own
    a = experiment.parse_arm("originals+negatives=a/b, c@0.5")
    assert (a.name, a.dirs, a.share, a.own) == ("originals+negatives", ("a/b", "c"), 0.5, False)
    assert experiment.parse_arm(a.spec()) == a
    for bad in ("mine", "x=", "x=d@2", "x=d@y", "bad name=d"):
        with pytest.raises(ValueError):
            experiment.parse_arm(bad)


def test_stats_mean_sd_and_paired_t():
    assert stats.mean_sd([1.0, 2.0, 3.0]) == {"mean": 2.0, "sd": 1.0, "n": 3}
    assert stats.mean_sd([1.0])["sd"] is None
    p = stats.paired([0.6, 0.7, 0.9], [0.5, 0.5, 0.6])
    d = np.array([0.1, 0.2, 0.3])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    assert p["mean"] == pytest.approx(0.2) and p["t"] == pytest.approx(t)
    from scipy.stats import t as student

    assert p["p"] == pytest.approx(2 * student.sf(t, 2))
    assert stats.paired([0.5], [0.4])["p"] is None
    s = stats.summarize({"originals": {0: {"m": 1.0}, 1: {"m": 2.0}}, "x": {0: {"m": 2.0}, 1: {"m": 2.5}}}, ["m"])
    assert s["x"]["m"]["vs_originals"]["diffs"] == [1.0, 0.5]
    assert "vs_originals" not in s["originals"]["m"]


def test_false_alarm_locations_agree_with_the_metrics():
    gen = np.random.default_rng(3)
    prob = gen.random((6, 24, 24)) ** 8  # sparse bright specks
    gt = np.zeros((6, 24, 24), np.uint8)
    gt[:, 5:7, 5:7] = 255
    prob[:, 5:7, 5:7] = 0.9
    fas = scoring.false_alarms(prob, gt)
    for i in range(6):
        m = match_targets(prob[i] > 0.5, gt[i] != 0)
        assert sum(f["area"] for f in fas if f["image"] == i) == m.false_alarm_pixels
    assert all(f["peak"] > 0.5 for f in fas)
    rows = scoring.per_image(prob, gt)
    assert sum(r["n_found"] for r in rows) == 6
    curve = scoring.pd_fa_curve(prob, gt, (0.1, 0.5, 0.95))
    acc = IRSTDMetrics(0.5)
    acc.update(prob, gt)
    assert curve[1]["Fa"] == acc.compute()["Fa"]
    assert curve[0]["Fa"] >= curve[1]["Fa"] >= curve[2]["Fa"]


def test_validation_split_is_seeded_and_generated_samples_of_it_are_dropped(sets):
    ingest, negs, _ = sets
    plan = experiment.Plan(dataset=str(ingest), config=TrainConfig(steps=2, size=SIZE, crop=SIZE),
                           arms=(experiment.parse_arm(f"neg={negs}"),), seeds=(0,), val_fraction=0.2)
    data = experiment.run_data(plan, plan.arms[0], 0)
    assert len(data.val) == 2 and len(data.train_originals) == 8
    assert len(data.extras) == 8 and data.dropped == 2
    assert not set(data.extras.source_id) & set(data.val.sample_id)
    np.testing.assert_array_equal(experiment.val_indices(0, 10, 0.2), experiment.val_indices(0, 10, 0.2))
    assert experiment.budget(replace_epochs(plan, 2.0), 8) == math.ceil(2 * 8 / plan.config.batch_size)


def replace_epochs(plan, epochs):
    from dataclasses import replace

    return replace(plan, epochs=epochs)


def _evaluate(args):
    from sirst5k.stages.cli import app

    return CliRunner().invoke(app, ["evaluate", *map(str, args)])


def test_stage_arms_seeds_outputs_and_reuse(sets, tmp_path):
    ingest, negs, other = sets
    out = tmp_path / "eval"
    args = [ingest, "--out", out, "--arm", "originals", "--arm", f"originals+negatives={negs}@0.5",
            "--seeds", 0, "--seeds", 1, "--steps", 4, "--eval-every", 2, "--batch-size", 4, "--size", SIZE,
            "--crop", 24, "--val-fraction", 0.2, "--device", "cpu", "--threads", 1, "--model", "acm"]
    result = _evaluate(args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.json").read_text())
    assert set(record["arms"]) == {"originals", "originals+negatives"}
    neg = record["arms"]["originals+negatives"]
    assert neg["seeds"] == [0, 1] and neg["mIoU"]["n"] == 2
    assert len(neg["mIoU"]["vs_originals"]["diffs"]) == 2
    assert record["train_samples"]["originals"] == {"originals": 8, "generated": 0, "dropped_for_leakage": 0}
    assert record["train_samples"]["originals+negatives"]["generated"] == 8
    assert record["settings"]["steps"] == 4 and record["settings"]["model"] == "acm"
    with open(out / "checkpoints.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["arm"], r["step"]) for r in rows] == [(a, s) for a in ("originals", "originals+negatives")
                                                     for s in ("2", "4")]
    run = out / "runs" / "originals+negatives" / "seed1"
    for name in ("result.json", "model.pt", "last.pt", "checkpoints.csv", "loss.csv", "per_image.csv",
                 "false_alarms.csv", "pdfa.csv"):
        assert (run / name).is_file(), name
    with open(run / "per_image.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 5
    with open(out / "pdfa.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 2 * len(scoring.THRESHOLDS)
    first = (out / "metrics.json").read_bytes()
    # a second call reuses every run and writes the same bytes
    again = _evaluate(args)
    assert again.exit_code == 0 and again.output.count("(reused)") == 4
    assert (out / "metrics.json").read_bytes() == first
    # a fresh folder retrains: same seed, same numbers
    out2 = tmp_path / "eval2"
    assert _evaluate([*args[:2], out2, *args[3:]]).exit_code == 0
    assert (out2 / "metrics.json").read_bytes() == first
    # another test set
    cross = _evaluate([ingest, "--out", tmp_path / "cross", "--arm", "originals", "--steps", 2, "--size", SIZE,
                       "--crop", SIZE, "--device", "cpu", "--threads", 1, "--test", other])
    assert cross.exit_code == 0, cross.output
    assert json.loads((tmp_path / "cross" / "metrics.json").read_text())["settings"]["n_test"] == 4


def test_stage_errors_are_one_line(sets, tmp_path):
    ingest, negs, _ = sets
    base = [ingest, "--out", tmp_path / "o", "--device", "cpu", "--size", SIZE, "--steps", 1]
    r = _evaluate([*base, "--epochs", 2])
    assert r.exit_code == 2 and "not both" in r.output
    r = _evaluate([*base, "--arm", "mine"])
    assert r.exit_code == 2 and "not built in" in r.output
    r = _evaluate([*base, "--arm", f"x={tmp_path / 'nowhere'}"])
    assert r.exit_code == 2 and "not found" in r.output
    r = _evaluate([*base, "--arm", "published"])  # an ingest folder has no generated samples
    assert r.exit_code == 2 and "no generated samples" in r.output
    r = _evaluate([tmp_path / "nowhere", "--out", tmp_path / "o", "--device", "cpu"])
    assert r.exit_code == 2 and "dataset not found" in r.output
    r = _evaluate([ingest, "--out", ingest / "inside", "--device", "cpu"])
    assert r.exit_code == 2 and "inside the input" in r.output
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_fa_rule_dnanet_scores_the_same_predictions_with_lower_or_equal_fa(sets, tmp_path):
    """`--fa-rule dnanet` trains and selects exactly as the default and only drops false alarms."""
    from sirst5k.method.metrics import FA_RULES
    from sirst5k.stages import evaluate as stage

    assert stage.FA_RULES == FA_RULES
    ingest, _, _ = sets
    # a test set of two equal bright squares an image, one labelled: a model that finds the targets
    # also finds the decoy, a false alarm as large as the matched target (dnanet drops it)
    test_dir = tmp_path / "decoys"
    images, masks = blobs(5, 6)
    for i, m in enumerate(masks):
        y, x = np.argwhere(m)[0]
        dy, dx = (y + 12) % (SIZE - 6) + 2, (x + 12) % (SIZE - 6) + 2
        images[i, dy : dy + 3, dx : dx + 3] = images[i, y : y + 3, x : x + 3]
    write(test_dir, "test-00000.h5", "test", images, masks, ["original"] * 6, [f"d{i}" for i in range(6)])
    base = [ingest, "--test", test_dir, "--arm", "originals", "--steps", 60, "--eval-every", 30, "--batch-size", 4,
            "--size", SIZE, "--crop", SIZE, "--val-fraction", 0.2, "--device", "cpu", "--threads", 1]
    outs = {}
    for rule in FA_RULES:
        outs[rule] = tmp_path / rule
        r = _evaluate([*base, "--out", outs[rule], "--fa-rule", rule])
        assert r.exit_code == 0, r.output
        assert f"Fa rule {rule}" in r.output
    records = {rule: json.loads((out / "metrics.json").read_text()) for rule, out in outs.items()}
    assert {rule: rec["settings"]["fa_rule"] for rule, rec in records.items()} == {r: r for r in FA_RULES}
    results = {rule: json.loads((out / "runs" / "originals" / "seed0" / "result.json").read_text())
               for rule, out in outs.items()}
    old, new = results["basicirstd"], results["dnanet"]
    assert (old["fa_rule"], new["fa_rule"]) == ("basicirstd", "dnanet") and old["key"] != new["key"]
    assert new["selected_step"] == old["selected_step"]
    assert {k: new["test"][k] for k in ("mIoU", "nIoU", "Pd")} == {k: old["test"][k] for k in ("mIoU", "nIoU", "Pd")}
    assert new["test"]["Fa"] <= old["test"]["Fa"]

    def rows(rule, name):
        with open(outs[rule] / "runs" / "originals" / "seed0" / name, newline="") as fh:
            return list(csv.DictReader(fh))

    curve = {rule: rows(rule, "pdfa.csv") for rule in FA_RULES}
    fewer = 0
    for a, b in zip(curve["basicirstd"], curve["dnanet"], strict=True):
        assert (a["threshold"], a["mIoU"], a["Pd"]) == (b["threshold"], b["mIoU"], b["Pd"])
        assert float(b["Fa"]) <= float(a["Fa"])
        fewer += float(b["Fa"]) < float(a["Fa"])
    assert fewer > 0  # these predictions have false alarms as large as a matched target: the rules differ
    # the false-alarm files follow the rule too
    for rule in FA_RULES:
        fa_pixels = sum(int(r["fa_pixels"]) for r in rows(rule, "per_image.csv"))
        assert sum(int(r["area"]) for r in rows(rule, "false_alarms.csv")) == fa_pixels
    bad = _evaluate([*base, "--out", tmp_path / "bad", "--fa-rule", "area"])
    assert bad.exit_code == 2 and "--fa-rule area: use basicirstd or dnanet" in bad.output


def test_runs_in_spawned_job_processes_give_the_numbers_of_runs_in_this_process(sets, tmp_path):
    """--jobs 2 trains each (arm, seed) in a process of its own (spawned, with the command's heap
    setting); the metrics are the bytes of one run after another here."""
    ingest, negs, _ = sets
    base = [ingest, "--arm", "originals", "--arm", f"originals+negatives={negs}", "--seeds", 0, "--steps", 2,
            "--batch-size", 4, "--size", SIZE, "--crop", SIZE, "--device", "cpu", "--threads", 1]
    here = _evaluate([*base, "--out", tmp_path / "here", "--jobs", 1])
    assert here.exit_code == 0, here.output
    spawned = _evaluate([*base, "--out", tmp_path / "spawned", "--jobs", 2])
    assert spawned.exit_code == 0, spawned.output
    assert (tmp_path / "spawned" / "metrics.json").read_bytes() == (tmp_path / "here" / "metrics.json").read_bytes()
