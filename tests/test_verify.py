"""`sirst5k verify`: a clean dataset passes; every kind of damage is caught, naming the file.

One small dataset is published per module (synth -> ingest -> negatives -> publish, through an
in-process dask cluster); each test damages its own copy of it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from sirst5k.formats.manifest import canonical_json
from sirst5k.formats.shards import sha256_file
from sirst5k.verify import verify_manifest
from sirst5k.stages.cli import app

pytestmark = pytest.mark.slow

runner = CliRunner()


def cli(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"sirst5k {' '.join(map(str, args))} failed:\n{result.output}"
    return result.output


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Iterator[Path]:
    """root/dataset (shards + manifest.json) and root/manifests/sirst5k.json."""
    from distributed import LocalCluster

    root = tmp_path_factory.mktemp("published")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        s = ["--scheduler", cluster.scheduler_address]
        cli("synth", root / "out", "--images", 24, "--sequences", 2, "--frames", 4, "--size", 128, *s)
        cli("ingest", root / "out" / "source", "--out", root / "ingest", "--size", 128, "--shard-size", 8, *s)
        # negatives straight from ingest: any shard folder will do
        cli("negatives", root / "ingest", "--out", root / "negatives", "--device", "cpu", *s)
        cli("publish", "--ingest", root / "ingest", "--negatives", root / "negatives", "--out", root / "dataset",
            "--manifest", root / "manifests" / "sirst5k.json", "--shard-size", 16, "--no-verify", *s)
    yield root


@pytest.fixture
def copy(published: Path, tmp_path: Path) -> Path:
    """A private copy of the dataset and its manifest, same relative layout; returns the manifest."""
    shutil.copytree(published / "dataset", tmp_path / "dataset")
    (tmp_path / "manifests").mkdir()
    shutil.copy(published / "manifests" / "sirst5k.json", tmp_path / "manifests" / "sirst5k.json")
    return tmp_path / "manifests" / "sirst5k.json"


def verify(target: Path):
    return runner.invoke(app, ["verify", str(target)])


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def edit(manifest: Path, change) -> None:
    doc = json.loads(manifest.read_text())
    change(doc)
    manifest.write_text(canonical_json(doc))


def shard(manifest: Path, split: str = "train", index: int = 0) -> Path:
    doc = json.loads(manifest.read_text())
    return (manifest.parent / doc["dataset_dir"] / doc["splits"][split]["shards"][index]["path"]).resolve()


def set_sha(manifest: Path, path: Path) -> None:
    """Recompute the checksum of a rewritten shard, as someone covering their tracks would."""
    def change(doc):
        for entry in doc["splits"].values():
            for s in entry["shards"]:
                if s["path"] == path.name:
                    s["sha256"] = sha256_file(path)
    edit(manifest, change)


def test_a_clean_dataset_passes(copy: Path) -> None:
    result = verify(copy)
    assert result.exit_code == 0, result.output
    assert "OK" in result.stdout and errors(result) == []
    # the dataset folder alone is self-describing: its manifest.json verifies too
    inside = verify(copy.parent.parent / "dataset")
    assert inside.exit_code == 0, inside.output


def test_a_flipped_byte_is_caught(copy: Path) -> None:
    victim = shard(copy, "test", 0)
    data = bytearray(victim.read_bytes())
    data[-100] ^= 0x01  # one bit near the end of the file
    victim.write_bytes(bytes(data))
    result = verify(copy)
    assert result.exit_code == 1
    assert any(victim.name in e and "sha256" in e for e in errors(result)), result.output


def test_a_deleted_shard_is_caught(copy: Path) -> None:
    victim = shard(copy, "train", 1)
    victim.unlink()
    result = verify(copy)
    assert result.exit_code == 1
    assert any(str(victim) in e and "missing" in e for e in errors(result)), result.output


@pytest.mark.parametrize("change, where, words", [
    (lambda d: d["params"]["negatives"].__setitem__("rotations", [0, 1]), "manifest", ["version", "edited"]),
    (lambda d: d["params"]["publish"].__setitem__("shard_size", 17), "manifest", ["version"]),
    (lambda d: d["splits"]["train"].__setitem__("n_samples", d["splits"]["train"]["n_samples"] + 1), "manifest",
     ["split train", "n_samples"]),
    (lambda d: d["splits"]["test"]["shards"][0].__setitem__("n_samples", 15), "shard", ["holds 12 samples", "says 15"]),
    (lambda d: d["splits"]["test"]["shards"][0].__setitem__("sha256", "0" * 64), "shard", ["sha256"]),
    (lambda d: d["splits"]["train"]["kinds"].__setitem__("negative", 1), "manifest", ["kinds"]),
])
def test_a_manifest_edited_by_hand_is_caught(copy: Path, change, where: str, words: list[str]) -> None:
    edit(copy, change)
    result = verify(copy)
    assert result.exit_code == 1
    named = str(copy) if where == "manifest" else shard(copy, "test", 0).name
    assert any(named in e and all(w in e for w in words) for e in errors(result)), result.output


def test_a_recomputed_version_still_disagrees_with_the_shards(copy: Path) -> None:
    """Edit a param and fix up the version hash: every shard still carries the old version."""
    from sirst5k.verify import manifest_version

    def change(doc):
        doc["params"]["negatives"]["rotations"] = [0, 1]
        doc["version"] = manifest_version(doc)
    edit(copy, change)
    result = verify(copy)
    assert result.exit_code == 1
    n_shards = sum(len(v["shards"]) for v in json.loads(copy.read_text())["splits"].values())
    assert sum("attribute version" in e for e in errors(result)) == n_shards, result.output


def test_a_mask_value_of_128_with_a_matching_checksum_is_caught(copy: Path) -> None:
    victim = shard(copy, "train", 0)
    with h5py.File(victim, "r+") as f:
        i = int(np.flatnonzero(f["meta/area"][()] > 0)[0])
        mask = f["masks"][i]
        y, x = np.argwhere(mask == 255)[0]
        mask[y, x] = 128  # a target pixel: the target count and area stay as they were
        f["masks"][i] = mask
    set_sha(copy, victim)
    result = verify(copy)
    assert result.exit_code == 1
    found = errors(result)
    assert not any("sha256" in e for e in found), "the checksum was recomputed: only the mask is wrong"
    assert any(victim.name in e and "other than 0 and 255" in e and "128" in e for e in found), result.output


@pytest.mark.parametrize("field, delta, words", [
    ("n_targets", 1, "target count differs from meta n_targets"),
    ("area", 5, "area differs from meta area"),
    ("source_area", 3, "source_area"),
    ("source_n_targets", 2, "source_n_targets"),
])
def test_label_checks_catch_edited_metadata(copy: Path, field: str, delta: int, words: str) -> None:
    victim = shard(copy, "test", 0)  # originals: their mask is their source's mask
    with h5py.File(victim, "r+") as f:
        values = f["meta"][field][()]
        values[2] += delta
        f["meta"][field][...] = values
    set_sha(copy, victim)
    result = verify(copy)
    assert result.exit_code == 1
    assert any(victim.name in e and words in e for e in errors(result)), result.output


def test_a_label_problem_names_the_sample_it_is_in(copy: Path) -> None:
    victim = shard(copy, "test", 0)
    with h5py.File(victim, "r+") as f:
        values = f["meta"]["area"][()]
        values[2] += 5
        f["meta"]["area"][...] = values
        sid = f["meta/sample_id"].asstr()[2]
        area = int(np.count_nonzero(f["masks"][2]))
    set_sha(copy, victim)
    result = verify(copy)
    assert any(f"e.g. {sid}: {area} != {area + 5}" in e for e in errors(result)), result.output


def test_a_negative_whose_mask_lost_a_pixel_is_caught_by_its_area(copy: Path) -> None:
    """A negative moves mask pixels inside its box: its area must stay the source's area."""
    victim = shard(copy, "train", 1)
    with h5py.File(victim, "r+") as f:
        kinds = f["meta/kind"].asstr()[()]
        i = int(np.flatnonzero(kinds == "negative")[0])
        mask = f["masks"][i]
        ys, xs = np.nonzero(mask)
        mask[ys[0], xs[0]] = 0
        f["masks"][i] = mask
    set_sha(copy, victim)
    result = verify(copy)
    assert result.exit_code == 1
    assert any(victim.name in e and "source_area" in e for e in errors(result)), result.output


def test_every_problem_is_named_not_just_the_first(copy: Path) -> None:
    flipped, deleted = shard(copy, "test", 0), shard(copy, "train", 2)
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    deleted.unlink()
    edit(copy, lambda d: d["params"]["publish"].__setitem__("name", "other"))
    extra = copy.parent.parent / "dataset" / "train-99999.h5"
    shutil.copy(shard(copy, "train", 0), extra)
    result = verify(copy)
    assert result.exit_code == 1
    found = errors(result)
    assert any(flipped.name in e and "sha256" in e for e in found)
    assert any(deleted.name in e and "missing" in e for e in found)
    assert any(str(copy) in e and "version" in e for e in found)
    assert any(extra.name in e and "not listed" in e for e in found)
    assert found[-1].endswith("problem(s)"), "the last line sums up"


@pytest.mark.parametrize("text", [
    "{ not json",
    "[]",
    json.dumps({"schema_version": 1}),
])
def test_an_unreadable_manifest_is_one_problem_not_a_traceback(copy: Path, text: str) -> None:
    copy.write_text(text)
    result = verify(copy)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert any(str(copy) in e for e in errors(result)), result.output


@pytest.mark.parametrize("change", [
    lambda d: d["splits"]["train"]["shards"][0].pop("sha256"),
    lambda d: d["splits"]["train"]["shards"][0].__setitem__("n_samples", "16"),
    lambda d: d["splits"]["train"]["shards"][0].__setitem__("path", "../../etc/passwd"),
    lambda d: d["splits"]["train"].__setitem__("shards", {}),
    lambda d: d.__setitem__("inputs", []),
])
def test_a_malformed_manifest_entry_is_a_problem_not_a_traceback(copy: Path, change) -> None:
    edit(copy, change)
    result = verify(copy)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert any(str(copy) in e for e in errors(result)), result.output


def test_a_truncated_shard_is_a_problem_not_a_traceback(copy: Path) -> None:
    victim = shard(copy, "train", 0)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    set_sha(copy, victim)
    problems = verify_manifest(copy)
    assert problems and all(isinstance(p, str) for p in problems)
    assert any(victim.name in p and ("cannot" in p or "HDF5" in p) for p in problems), problems


def test_a_missing_manifest_exits_2(tmp_path: Path) -> None:
    result = verify(tmp_path / "nothing.json")
    assert result.exit_code == 2
    assert len(errors(result)) == 1 and "nothing.json" in errors(result)[0]


def test_checking_shards_on_a_cluster_finds_the_same_problems(copy: Path) -> None:
    """`verify --scheduler/--workers` (and publish) check shards as dask tasks; the merge of their
    reports must find what the in-process check finds, cross-shard problems included."""
    from distributed import LocalCluster

    flipped = shard(copy, "test", 0)
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    shard(copy, "train", 1).unlink()
    # one shard listed twice: its sample ids repeat across "shards"
    edit(copy, lambda d: d["splits"]["train"]["shards"].append(dict(d["splits"]["train"]["shards"][0])))
    in_process = verify_manifest(copy)
    assert any("listed twice" in p for p in in_process) and any("duplicate sample ids" in p for p in in_process)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        result = runner.invoke(app, ["verify", str(copy), "--scheduler", cluster.scheduler_address])
    assert result.exit_code == 1
    assert [e.removeprefix("error: ") for e in errors(result)[:-1]] == in_process


def test_a_schema_1_dataset_with_a_shard_of_another_size_is_refused_in_one_line(copy: Path) -> None:
    """Schema 1 holds one image size: a shard rewritten at another size (checksum fixed up) is one problem."""
    from sirst5k.formats import shards

    victim = shard(copy, "test", 0)
    images, masks, meta = shards.read_shard(victim)
    attrs = {k: v for k, v in shards.read_attrs(victim).items() if k != "task_key"}
    victim.unlink()
    shards.write_shard(victim, images[:, :64, :96], masks[:, :64, :96], meta, attrs)
    set_sha(copy, victim)
    result = verify(copy)
    assert result.exit_code == 1
    found = [e for e in errors(result) if "image size" in e]
    assert len(found) == 1 and "schema_version 1" in found[0] and "64x96" in found[0], result.output


def test_a_schema_2_manifest_needs_shapes_and_sizes(copy: Path) -> None:
    """Marked schema 2 by hand: each shard entry must give its shape, each split its sizes."""
    edit(copy, lambda d: d.__setitem__("schema_version", 2))
    result = verify(copy)
    assert result.exit_code == 1
    assert any("shape None is not [height, width]" in e for e in errors(result)), result.output
    def add_shapes(doc):
        for entry in doc["splits"].values():
            for s in entry["shards"]:
                s["shape"] = [128, 128]
    edit(copy, add_shapes)
    found = errors(verify(copy))
    assert any("split test sizes None" in e for e in found), found
    # and the shards' own schema_version attribute (1) disagrees with the manifest's 2
    assert any("attribute schema_version is 1, expected 2" in e for e in found), found


def test_what_is_not_a_manifest_says_why_in_one_line(tmp_path: Path) -> None:
    from sirst5k.errors import InputError
    from sirst5k.formats.manifest import load_manifest

    binary, broken, folder = tmp_path / "bank.h5", tmp_path / "broken.json", tmp_path / "folder"
    binary.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)))
    broken.write_text('{"splits": ,}')
    folder.mkdir()
    for path, words in ((binary, "not a manifest: not UTF-8 text (a binary file?)"),
                        (broken, "not a manifest: invalid JSON (Expecting value at line 1)"),
                        (folder, "is a folder, not a manifest file"),
                        (tmp_path / "none.json", "manifest not found")):
        with pytest.raises(InputError) as err:
            load_manifest(path)
        assert str(err.value) == f"{path}: {words}"
