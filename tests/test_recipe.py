"""`sirst5k recipe`: the four stages in one command write what the four commands write, and refuse
an `--out` they could spoil before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sirst5k.stages.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def sirst5k(*args) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, f"sirst5k {' '.join(map(str, args))} failed:\n{result.output}"
    return result.output


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too) by its relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recipe-src")
    sirst5k("synth", root, "--images", 16, "--sequences", 2, "--frames", 4, "--size", 64, "--workers", 1)
    sirst5k("noise-bank", root / "frames", "--out", root / "bank.h5", "--workers", 1)
    return root


OPTIONS = ["--size", 64, "--mix", 0.1, "--mix", 0.5, "--patch", 16, "--seed", 3]


def test_one_command_writes_what_the_four_commands_write(source, tmp_path):
    four = tmp_path / "four"
    sirst5k("ingest", source / "source", "--out", four / "ingest", "--size", 64, "--seed", 3, "--workers", 2)
    sirst5k("transfer", four / "ingest", "--noise-bank", source / "bank.h5", "--out", four / "transfer",
            "--mix", 0.1, "--mix", 0.5, "--seed", 3, "--workers", 2)
    sirst5k("negatives", four / "transfer", "--out", four / "negatives", "--patch", 16, "--seed", 3, "--workers", 2)
    sirst5k("publish", "--ingest", four / "ingest", "--negatives", four / "negatives", "--out", four / "sirst5k",
            "--manifest", four / "sirst5k.json", "--workers", 2)

    one = tmp_path / "one"
    output = sirst5k("recipe", source / "source", "--noise-bank", source / "bank.h5", "--out", one, *OPTIONS,
                     "--workers", 2)
    for stage in ("ingest:", "transfer:", "negatives:", "publish:", "verify:"):
        assert stage in output
    for name in ("ingest", "transfer", "negatives", "sirst5k"):
        assert tree(one / name) == tree(four / name), name
    # the manifest names the same dataset folder relative to itself
    assert (one / "sirst5k.json").read_bytes() == (four / "sirst5k.json").read_bytes()

    # run again over its own output: allowed, and the same bytes
    sirst5k("recipe", source / "source", "--noise-bank", source / "bank.h5", "--out", one, *OPTIONS, "--workers", 1)
    assert tree(one / "sirst5k") == tree(four / "sirst5k")


def test_frames_build_the_bank_in_the_recipe_folder(source, tmp_path):
    out = tmp_path / "r"
    sirst5k("recipe", source / "source", "--frames", source / "frames", "--out", out, "--size", 64, "--patch", 16,
            "--with-transfer", "--workers", 1)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == \
        ["bank.h5", "ingest", "negatives", "sirst5k", "sirst5k.json", "transfer"]
    kinds = json.loads((out / "sirst5k.json").read_text())["splits"]["train"]["kinds"]
    assert kinds["original"] > 0 and kinds["negative"] > 0
    assert kinds["transfer"] == kinds["original"]  # --with-transfer: one per train image at the default m


@pytest.mark.parametrize("case", ["source", "inside-source", "holds-source", "foreign", "file"])
def test_an_out_the_recipe_could_spoil_is_refused_before_anything_is_written(source, tmp_path, case):
    src = tmp_path / "src"
    src.mkdir()
    (src / "keep.txt").write_text("user data")
    out = {"source": src, "inside-source": src / "out", "holds-source": tmp_path, "foreign": tmp_path / "mine",
           "file": tmp_path / "file"}[case]
    if case == "foreign":
        out.mkdir()
        (out / "notes.txt").write_text("user data")
    if case == "file":
        out.write_text("user data")
    before = tree(tmp_path)
    result = invoke("recipe", src, "--noise-bank", source / "bank.h5", "--out", out)
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and str(out) in line, line
    assert tree(tmp_path) == before  # nothing written, nothing removed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["src"] + (["mine"] if case == "foreign" else []) + (["file"] if case == "file" else []))


def test_one_noise_source_is_required(source, tmp_path):
    for extra, words in (([], "no noise: give --noise-bank FILE or --frames DIR"),
                         (["--noise-bank", source / "bank.h5", "--frames", source / "frames"],
                          "--frames and --noise-bank both given: give one")):
        result = invoke("recipe", source / "source", "--out", tmp_path / "r", *extra)
        assert result.exit_code == 2 and words in result.output.strip().splitlines()[-1], result.output
    assert not (tmp_path / "r").exists()


def test_a_bad_noise_bank_is_refused_before_any_stage_runs(source, tmp_path):
    result = invoke("recipe", source / "source", "--noise-bank", tmp_path / "missing.h5", "--out", tmp_path / "r",
                    "--size", 64, "--workers", 1)
    assert result.exit_code == 2
    assert "missing.h5" in result.output.strip().splitlines()[-1]
    assert not (tmp_path / "r").exists()  # checked before ingest ran


def test_a_stage_error_stops_the_recipe_with_that_stage_s_line(source, tmp_path):
    """A source with no labelled images: ingest's own one-line error, and nothing after it ran."""
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    result = invoke("recipe", empty, "--noise-bank", source / "bank.h5", "--out", tmp_path / "r", "--workers", 1)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith("error: ")
    assert not any((tmp_path / "r" / name).exists() for name in ("ingest", "transfer", "negatives", "sirst5k"))


@pytest.mark.parametrize("option", [["--patch", 0], ["--patch", 100], ["--mix", 2], ["--size", 8], ["--name", "a/b"]])
def test_a_bad_option_of_any_stage_is_refused_before_ingest_runs(source, tmp_path, option):
    result = invoke("recipe", source / "source", "--noise-bank", source / "bank.h5", "--out", tmp_path / "r",
                    "--size", 64, *option)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith("error: ")
    assert not (tmp_path / "r").exists()


def test_a_missing_or_wrong_source_or_frames_folder_is_one_line_before_any_work(source, tmp_path):
    not_a_folder = tmp_path / "file.png"
    not_a_folder.write_bytes(b"x")
    for args, words in (([tmp_path / "nope", "--noise-bank", source / "bank.h5"], "nope: no such folder"),
                        ([not_a_folder, "--noise-bank", source / "bank.h5"], "file.png: not a folder"),
                        ([source / "source", "--frames", tmp_path / "nope"], "nope: no such folder")):
        result = invoke("recipe", *args, "--out", tmp_path / "r")
        assert result.exit_code == 2 and result.output.strip().splitlines()[-1].endswith(words), result.output
    assert not (tmp_path / "r").exists()
