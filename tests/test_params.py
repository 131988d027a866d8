"""Typed params: defaults and checks written once, the version rule, and bad options as one line."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from sirst5k.formats import shards
from sirst5k.params import (STEPS, IngestParams, NegativesParams, NoiseBankParams, ParamError, PublishParams,
                            TransferParams, parse_floats, parse_ints)
from sirst5k.stages.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_default_versions_are_the_dicts_published_datasets_were_made_with() -> None:
    # these dicts are in every published shard's task key and in manifests/sirst5k.json: changing
    # one silently changes every dataset's version
    assert TransferParams().version_dict() == {"mix": [0.1], "mode": "blend", "field": "resize", "split": "train",
                                               "seed": 0}
    assert NegativesParams().version_dict() == {"patch": [32], "mirror": True, "rotations": [0, 1, 2, 3],
                                                "clamp": "script", "keep_cut": True, "split": "train",
                                                "shard_size": 1024}
    assert NoiseBankParams().version_dict() == {"window": 32, "stride": 32, "max_var": 50.0, "min_mean": 0.0,
                                                "max_seq_var": 50.0, "max_seq_mean": 50.0, "temporal": 0}
    assert IngestParams(layout="dnanet").version_dict() == {"layout": "dnanet", "size": 256, "shard_size": 128,
                                                            "split_ratio": 0.5, "skip_bad": False, "seed": 0}
    assert PublishParams().version_dict() == {"name": "sirst5k", "shard_size": 1024, "transfer": False}


def test_the_manifest_records_the_same_params_the_objects_give() -> None:
    manifest = ROOT / "manifests" / "sirst5k.json"
    params = yaml.safe_load(manifest.read_text())["params"]
    assert params["negatives"] == NegativesParams().version_dict()
    assert params["transfer"] == TransferParams().version_dict()


def test_if_changed_fields_enter_the_version_only_when_set() -> None:
    assert "max_peak" not in NoiseBankParams().version_dict()
    assert NoiseBankParams(max_peak=20).version_dict()["max_peak"] == 20.0
    assert NoiseBankParams(skip_bad=True).version_dict()["skip_bad"] is True
    rules = {f.name: f.metadata["version"] for f in dataclasses.fields(NoiseBankParams)}
    assert rules["max_peak"] == rules["skip_bad"] == "if_changed" and rules["max_var"] == "always"


def test_every_field_has_a_help_text_and_a_rule() -> None:
    for cls in STEPS:
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
            assert f.metadata.get("version") in ("always", "if_changed")


@pytest.mark.parametrize("build, line", [
    (lambda: TransferParams(mix=(0.1, 1.5)), "--mix 0.1,1.5: values in [0, 1]"),
    (lambda: TransferParams(mix=(0.1, 0.1)), "--mix 0.1,0.1: 0.1 is given twice"),
    (lambda: TransferParams(mode="sum"), "--mode sum: use blend or additive"),
    (lambda: NegativesParams(rotations=(1, 1)), "--rotations 1,1: 1 is given twice"),
    (lambda: NegativesParams(rotations=(4,)), "--rotations 4: values from 0,1,2,3"),
    (lambda: NegativesParams(patch=(32, 3, 32)), "--patch 32,3,32: 32 is given twice"),
    (lambda: NegativesParams(patch=(1,)), "--patch 1: sizes of at least 2 pixels"),
    (lambda: NegativesParams(clamp="wrap"), "--clamp wrap: use script or clip"),
    (lambda: IngestParams(size=8), "--size 8: must be at least 16"),
    (lambda: IngestParams(layout="voc"), "--layout voc: use auto, dnanet, basicirstd, sirst, sirst-v2 or folder"),
    (lambda: PublishParams(name="../x"), "--name ../x: a plain name (no slashes, not hidden)"),
    (lambda: parse_ints("patch", ["3,x"]), "--patch 3,x: whole numbers, repeated or comma-separated"),
    (lambda: parse_floats("mix", ["a"]), "--mix a: numbers, repeated or comma-separated"),
])
def test_bad_values_are_one_line_naming_the_option(build, line) -> None:
    with pytest.raises(ParamError) as err:
        build()
    assert str(err.value) == line


def test_repeated_and_comma_separated_values_are_the_same() -> None:
    assert parse_ints("patch", ["3", "32"]) == parse_ints("patch", ["3,32"]) == (3, 32)


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("params") / "ing"
    images = np.zeros((2, 16, 24), np.uint8)
    masks = np.zeros_like(images)
    masks[:, 8, 8] = 255
    meta = shards.new_meta(2)
    meta["sample_id"][:] = meta["source_id"][:] = ["a", "b"]
    meta["kind"][:] = "original"
    info = shards.write_shard(folder / "train-00000.h5", images, masks, meta,
                              {"dataset": "ingest", "version": "0", "split": "train", "shard_index": 0,
                               "n_shards": 1})
    from sirst5k.runner.outputs import write_stage_record

    write_stage_record(folder, "ingest", {}, {}, [info.record("train")])
    return folder


@pytest.mark.parametrize("args, line", [
    (["--patch", "32"], "--patch 32: a 32-pixel box does not fit the 16x24 images of {src}"),
    (["--rotations", "0,1,1"], "--rotations 0,1,1: 1 is given twice"),
    (["--patch", "3", "--patch", "3"], "--patch 3,3: 3 is given twice"),
])
def test_negatives_refuses_bad_options_before_any_work(small_shards, tmp_path, args, line) -> None:
    out = tmp_path / "neg"
    result = runner.invoke(app, ["negatives", str(small_shards), "--out", str(out), "--workers", "1", *args])
    assert result.exit_code == 2
    src = small_shards / "train-00000.h5"
    assert result.stderr.splitlines() == [f"error: {line.format(src=src)}"]
    assert not out.exists() and not list(tmp_path.glob(".neg*"))


def test_dvc_yaml_quotes_the_user_paths_it_passes() -> None:
    # a source or frames path with a space must reach the command as one argument
    text = (ROOT / "dvc.yaml").read_text()
    for var in ("source.path", "frames.path"):
        uses = re.findall(r'(\S*\$\{' + re.escape(var) + r'\}\S*)', "\n".join(
            line for line in text.splitlines() if not line.strip().startswith("-")))
        assert uses and all(u.startswith('"') and u.endswith('"') for u in uses), uses


def test_model_tile_is_checked_only_where_it_is_used_and_follows_the_window():
    from sirst5k.params import NoiseBankParams

    assert NoiseBankParams(window=24).window == 24  # no --model: no tile to check
    assert NoiseBankParams(window=24, model=True).tile == 240  # 0 = the largest multiple up to 256
    assert NoiseBankParams(model=True).tile == 256
    assert NoiseBankParams(window=24, model=True).version_dict()["model_tile"] == 240
    with pytest.raises(ParamError, match="model_tile|model-tile"):
        NoiseBankParams(window=24, model=True, model_tile=100)


def test_a_switch_in_an_error_reads_as_typed():
    """A bad switch is named as the user typed it, not as a Python bool ("--keep-aspect True")."""
    from sirst5k.params import IngestParams, ParamError

    with pytest.raises(ParamError) as err:
        IngestParams(size="native", keep_aspect=True)
    assert str(err.value).startswith("--keep-aspect: needs a numeric --size"), str(err.value)
    assert str(ParamError("mirror", False, "x")) == "--no-mirror: x"
    assert str(ParamError("mix", (0.5, 2.0), "x")) == "--mix 0.5,2: x"
