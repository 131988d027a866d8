"""The pipeline on real infrared data: SIRST v1 labelled images, SIRST-V2 background frames.

ingest (SIRST v1, 427 images) -> noise-bank (SIRST-V2 frames, --temporal 2) -> transfer ->
negatives -> publish -> verify, all through the command line, on one dask cluster shared by
the module. Skips without the data (fails under CI=true, see conftest.require_data).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from sirst5k.stages.cli import app

pytestmark = pytest.mark.slow

runner = CliRunner()

# Windows kept per SIRST-V2 background sequence with --temporal 2 (default thresholds, 32-px
# windows): every sequence with a pair of same-size frames, i.e. all but S5 (a single frame).
PAPER_RULE = ("--spot-sigmas", 0, "--scene-corr", 0)  # no spot rejection, no scene split
TEMPORAL_2 = {"211_HD": 56, "20210725-S1": 12562, "20210725-S2": 3976, "20210725-S3": 384, "20210725-S4": 1474,
              "20210725-S5": 2367, "S1": 270, "S2": 741, "S3": 126, "S4": 1001, "S6": 39, "S7": 1664, "TH": 1859,
              "TH0517": 312}


def sirst5k(*args) -> CliRunner:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"sirst5k {' '.join(map(str, args))} failed:\n{result.output}"
    return result


@pytest.fixture(scope="module")
def scheduler() -> str:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": ":0"}, silence_logs=logging.ERROR,
                      env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def built(tmp_path_factory, scheduler: str) -> dict:
    # conftest's `sirst_dir` / `sirst_v2_frames` are per-test fixtures; the pipeline runs once per module.
    from conftest import require_data

    sirst_dir, frames = require_data("sirst"), require_data("sirst-v2-frames")
    root = tmp_path_factory.mktemp("real")
    s = ["--scheduler", scheduler]
    runs = {
        "ingest": sirst5k("ingest", sirst_dir, "--out", root / "ingest", *s),
        # the paper's rule (clean-bank defaults off), which the counts below are of
        "bank": sirst5k("noise-bank", frames, "--out", root / "noise_bank.h5", "--temporal", 2, *PAPER_RULE, *s),
    }
    sirst5k("transfer", root / "ingest", "--noise-bank", root / "noise_bank.h5", "--out", root / "transfer",
            "--device", "cpu", *s)
    sirst5k("negatives", root / "transfer", "--out", root / "negatives", "--device", "cpu", *s)
    manifest = root / "manifests" / "sirst5k.json"
    runs["publish"] = sirst5k("publish", "--ingest", root / "ingest", "--negatives", root / "negatives",
                              "--out", root / "sirst5k", "--manifest", manifest, *s)
    return {"root": root, "manifest": manifest, "runs": runs}


def train_targets(ingest: Path) -> int:
    total = 0
    for p in sorted(ingest.glob("train-*.h5")):
        with h5py.File(p) as f:
            total += int(f["meta/n_targets"][()].sum())
    return total


def windows_per_sequence(bank: Path) -> dict[str, int]:
    with h5py.File(bank) as f:
        seq, entry = f["sequence"].asstr()[()], f["entry"][()]
    return {str(name): len(np.unique(entry[seq == name])) for name in np.unique(seq)}


def test_sirst_ingest(built: dict, sirst_dir: Path) -> None:
    run = built["runs"]["ingest"]
    out = built["root"] / "ingest"
    assert run.stdout.strip() == f"ingest: sirst layout, 341 train / 86 test samples at 256x256 in {out}; 1 warning(s)"
    # SIRST's one mask at another scale of its image
    assert run.stderr.splitlines() == [
        f"warning: {sirst_dir / 'masks' / 'Misc_111_pixels0.png'}: mask is 592x400 but image is 325x220; "
        "resized to the image (nearest)"]
    with h5py.File(out / "test-00000.h5") as f:
        assert f["images"].shape == (86, 256, 256) and (f["meta/n_targets"][()] > 0).all()
    assert train_targets(out) == 424  # at 256x256 nearest resizing loses no SIRST target


def test_sirst_published_counts_and_verify(built: dict) -> None:
    doc = json.loads(built["manifest"].read_text())
    train, test = doc["splits"]["train"], doc["splits"]["test"]
    n_targets = train_targets(built["root"] / "ingest")
    assert train["kinds"] == {"original": 341, "transfer": 0, "negative": 4 * n_targets}
    assert train["n_samples"] == 341 + 4 * n_targets
    assert test["kinds"] == {"original": 86, "transfer": 0, "negative": 0} and test["n_samples"] == 86
    assert doc["inputs"]["source"]["layout"] == "sirst" and doc["inputs"]["source"]["n_images"] == 427
    result = runner.invoke(app, ["verify", str(built["manifest"])])
    assert result.exit_code == 0 and "OK" in result.stdout, result.output


def test_sirst_v2_frames_temporal_two(built: dict, sirst_v2_frames: Path) -> None:
    windows = windows_per_sequence(built["root"] / "noise_bank.h5")
    assert windows == TEMPORAL_2 and sum(windows.values()) == 26_831
    run = built["runs"]["bank"]
    warnings = run.stderr.splitlines()
    assert "warning: sequence S5: 1 usable frame(s), needs 2 to test stability; skipped" in warnings
    # 211_HD: two 640x640 frames, three 1280x720; the sequence takes the common size
    odd = [w for w in warnings if "211_HD" in w]
    assert len(odd) == 2 and all("frame is 640x640, most frames of sequence 211_HD are 1280x720" in w for w in odd)
    assert len(warnings) == 6  # + S2_52 (500x512), TH_3 (512x640), TH0517_12 (1280x1024)
    assert f"noise-bank: {sum(windows.values())} windows, {2 * sum(windows.values())} patches" in run.stdout


def test_sirst_v2_frames_whole_sequences_find_nothing_in_long_ones(tmp_path: Path, scheduler: str,
                                                                    sirst_v2_frames: Path) -> None:
    # A few sequences (links, not copies) keep this run short: four long ones and the short ones.
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("S1", "S3", "TH", "TH0517", "S5", "S6", "211_HD"):
        (frames / name).symlink_to(sirst_v2_frames / name, target_is_directory=True)
    out = tmp_path / "bank.h5"
    result = sirst5k("noise-bank", frames, "--out", out, "--temporal", 0, *PAPER_RULE, "--scheduler", scheduler)
    windows = windows_per_sequence(out)
    # The paper's rule over whole sequences: nothing in sequences of 10+ frames, 211_HD's three
    # 1280x720 frames included; one window in S6's four frames.
    assert windows == {"S6": 1}
    assert "sequence S5: 1 usable frame(s)" in result.stderr
