"""export_dataset: PNG folders for DNANet / BasicIRSTD, byte-exact, atomic, refusing to clobber."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

import sirst5k.export as export_mod
from sirst5k.errors import InputError
from sirst5k.export import export_dataset
from sirst5k.formats.manifest import write_json_atomic
from sirst5k.formats.shards import new_meta, write_shard
from sirst5k.stages.export import command

H, W = 9, 11


def build(root: Path, sizes: dict[str, list[int]], ids=None) -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
    """Shards + manifest.json under root; returns each split's images, masks and ids."""
    rng = np.random.default_rng(7)
    out, entries = {}, {}
    for split, counts in sizes.items():
        imgs, msks, names, shards = [], [], [], []
        for index, n in enumerate(counts):
            images = rng.integers(0, 256, (n, H, W), dtype=np.uint8)
            masks = (rng.random((n, H, W)) > 0.9).astype(np.uint8) * 255
            meta = new_meta(n)
            sid = [f"{split}{index}_{i:02d}" for i in range(n)] if ids is None else ids[split][index]
            meta["sample_id"][:] = sid
            meta["kind"][:] = "original"
            info = write_shard(root / f"{split}-{index:05d}.h5", images, masks, meta, {"split": split})
            shards.append({"path": Path(info.path).name, "sha256": info.sha256, "n_samples": n})
            imgs.append(images), msks.append(masks), names.extend(sid)
        out[split] = (np.concatenate(imgs), np.concatenate(msks), names)
        entries[split] = {"n_samples": sum(counts), "shards": shards}
    manifest = {"schema_version": 1, "name": "toy", "version": "v0", "producer": "test", "dataset_dir": ".",
                "params": {}, "inputs": {}, "splits": entries}
    write_json_atomic(root / "manifest.json", manifest)
    return out


@pytest.fixture
def toy(tmp_path):
    root = tmp_path / "toy"
    return root, build(root, {"train": [4, 3], "test": [2]})


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "L" and im.format == "PNG"
        return np.asarray(im)


def _check_round_trip(out: Path, arrays) -> None:
    all_ids = [i for _, _, ids in arrays.values() for i in ids]
    assert sorted(p.stem for p in (out / "images").iterdir()) == sorted(all_ids)
    assert sorted(p.stem for p in (out / "masks").iterdir()) == sorted(all_ids)
    for images, masks, ids in arrays.values():
        for image, mask, sample_id in zip(images, masks, ids):
            np.testing.assert_array_equal(_read_png(out / "images" / f"{sample_id}.png"), image)
            np.testing.assert_array_equal(_read_png(out / "masks" / f"{sample_id}.png"), mask)


def test_dnanet_round_trip(toy, tmp_path):
    root, arrays = toy
    out = tmp_path / "export" / "SIRST5K"
    result = export_dataset(root / "manifest.json", out, layout="dnanet")
    assert result["splits"] == {"train": 7, "test": 2} and result["samples"] == 9
    _check_round_trip(out, arrays)
    assert sorted(p.name for p in out.iterdir()) == ["50_50", "images", "masks"]
    for split in ("train", "test"):
        raw = (out / "50_50" / f"{split}.txt").read_bytes()
        assert raw == ("\n".join(arrays[split][2]) + "\n").encode()
    # Nothing but the finished folder is left beside it.
    assert [p.name for p in out.parent.iterdir()] == ["SIRST5K"]


def test_basicirstd_layout_from_shard_folder(toy, tmp_path):
    root, arrays = toy
    (root / "manifest.json").unlink()  # a bare shard folder works too
    out = tmp_path / "NUDT-5K"
    export_dataset(root, out, layout="basicirstd", name="NUDT-5K")
    _check_round_trip(out, arrays)
    assert sorted(p.name for p in (out / "img_idx").iterdir()) == ["test_NUDT-5K.txt", "train_NUDT-5K.txt"]
    lines = (out / "img_idx" / "train_NUDT-5K.txt").read_text().splitlines()
    assert lines == arrays["train"][2]
    # BasicIRSTD reads `dataset_dir + '/images/' + id + '.png'` for every listed id.
    assert all((out / "images" / f"{i}.png").is_file() for i in lines)


def test_refuses_non_empty_out_unless_overwrite(toy, tmp_path):
    root, arrays = toy
    out = tmp_path / "out"
    out.mkdir()
    export_dataset(root, out)  # an empty folder is fine
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        export_dataset(root, out, layout="basicirstd")
    assert (out / "keep.txt").read_text() == "mine"
    export_dataset(root, out, layout="basicirstd", overwrite=True)
    assert not (out / "keep.txt").exists() and not (out / "50_50").exists()
    _check_round_trip(out, arrays)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "toy"]


def test_failure_leaves_nothing(toy, tmp_path, monkeypatch):
    root, _ = toy
    calls = {"n": 0}
    real = export_mod._save_png

    def flaky(array, path, level):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        real(array, path, level)

    monkeypatch.setattr(export_mod, "_save_png", flaky)
    with pytest.raises(export_mod.OutputError, match="No space left"):
        export_dataset(root, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]


def test_bad_ids_are_refused_before_writing(tmp_path):
    root = tmp_path / "dup"
    build(root, {"train": [2], "test": [2]}, ids={"train": [["a", "b"]], "test": [["c", "a"]]})
    with pytest.raises(InputError, match="'a' also in split 'train'"):
        export_dataset(root, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="unknown layout"):
        export_dataset(root, tmp_path / "out", layout="voc")


def test_ids_that_cannot_be_file_names_are_exported_escaped(tmp_path):
    """Issue 13: never a failure at the end of a long pipeline: %XX per UTF-8 byte, reversibly."""
    from urllib.parse import unquote

    ids = ["ok", "../evil", "with space", "Ünïcödé", "50%", ".hidden", "tab\there", "a\\b"]
    root = tmp_path / "odd"
    arrays = build(root, {"train": [len(ids)]}, ids={"train": [ids]})
    out = tmp_path / "out"
    result = export_dataset(root, out)
    names = (out / "50_50" / "train.txt").read_text().splitlines()
    assert names == ["ok", "%2E.%2Fevil", "with%20space", "%C3%9Cn%C3%AFc%C3%B6d%C3%A9", "50%25", "%2Ehidden",
                     "tab%09here", "a%5Cb"]
    assert [unquote(n) for n in names] == ids
    assert result["escaped"] == len(ids) - 1
    for i, name in enumerate(names):
        np.testing.assert_array_equal(_read_png(out / "images" / f"{name}.png"), arrays["train"][0][i])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd", "out"], "nothing written outside OUT"


def test_command(toy, tmp_path):
    root, arrays = toy
    app = typer.Typer()
    app.command()(command)
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, [str(root / "manifest.json"), str(out), "--layout", "basicirstd", "--name", "X"])
    assert result.exit_code == 0, result.output
    assert (out / "img_idx" / "test_X.txt").read_text().splitlines() == arrays["test"][2]
    again = runner.invoke(app, [str(root), str(out)])
    assert again.exit_code == 2 and "not empty" in again.output and "Traceback" not in again.output
    bad = runner.invoke(app, [str(root), str(tmp_path / "x"), "--layout", "voc"])
    assert bad.exit_code == 2 and "--layout voc" in bad.output
