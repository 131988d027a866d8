"""export_dataset: PNG folders for DNANet / BasicIRSTD, byte-exact, atomic, refusing to clobber."""

from __future__ import annotations

import json
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
    assert sorted(p.name for p in out.iterdir()) == ["50_50", "images", "masks", "value_result", "visulization_result"]
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
    out = tmp_path / "X"
    result = runner.invoke(app, [str(root / "manifest.json"), str(out), "--layout", "basicirstd", "--name", "X"])
    assert result.exit_code == 0, result.output
    assert (out / "img_idx" / "test_X.txt").read_text().splitlines() == arrays["test"][2]
    again = runner.invoke(app, [str(root), str(out)])
    assert again.exit_code == 2 and "not empty" in again.output and "Traceback" not in again.output
    bad = runner.invoke(app, [str(root), str(tmp_path / "x"), "--layout", "voc"])
    assert bad.exit_code == 2 and "--layout voc" in bad.output


# ------------------------------------------------------------------ issue 17: exports that train unchanged


def test_dnanet_export_has_the_folders_its_test_script_writes_into(toy, tmp_path):
    root, _ = toy
    out = tmp_path / "SIRST5K"
    export_dataset(root, out, layout="dnanet")
    for folder in ("value_result", "visulization_result"):
        assert (out / folder).is_dir() and not any((out / folder).iterdir())
    # DNANet's test.py appends to value_result/<model>_best_IoU.log: that must just work
    with open(out / "value_result" / "DNANet_best_IoU.log", "a") as fh:
        fh.write("ok\n")


def test_basicirstd_name_is_the_folder_name(toy, tmp_path):
    root, arrays = toy
    out = tmp_path / "datasets" / "MySet"
    result = export_dataset(root, out, layout="basicirstd")
    assert result["name"] == "MySet"
    # BasicIRSTD opens dataset_dir + '/' + name + '/img_idx/train_' + name + '.txt'
    dataset_dir, name = tmp_path / "datasets", "MySet"
    lines = Path(f"{dataset_dir}/{name}/img_idx/train_{name}.txt").read_text().splitlines()
    assert lines == arrays["train"][2]
    assert Path(f"{dataset_dir}/{name}/img_idx/test_{name}.txt").read_text().splitlines() == arrays["test"][2]


def test_basicirstd_refuses_a_name_that_is_not_the_folders(toy, tmp_path):
    root, _ = toy
    with pytest.raises(InputError, match=r"--name 'SIRST5K' differs from the export folder's name 'out'") as err:
        export_dataset(root, tmp_path / "out", layout="basicirstd", name="SIRST5K")
    assert "\n" not in str(err.value) and str(tmp_path / "SIRST5K") in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"], "nothing written"
    with pytest.raises(InputError, match="takes none"):
        export_dataset(root, tmp_path / "out", layout="dnanet", name="X")


def _png_stats(paths: list[Path]) -> tuple[float, float]:
    """Mean of per-image means and of per-image population stds, in float64 from the PNGs."""
    means, stds = [], []
    for p in paths:
        with Image.open(p) as im:
            x = np.asarray(im.convert("I"), dtype=np.float64)
        means.append(x.mean())
        stds.append(x.std())
    return float(np.mean(means)), float(np.mean(stds))


def test_basicirstd_normalisation_from_the_train_split_only(tmp_path):
    root = tmp_path / "toy"
    arrays = build(root, {"train": [4, 3], "test": [2]})
    out = tmp_path / "SIRST5K"
    app = typer.Typer()
    app.command()(command)
    result = CliRunner().invoke(app, [str(root / "manifest.json"), str(out), "--layout", "basicirstd"])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "img_norm_cfg.json").read_text())
    assert doc["split"] == "train" and doc["n_images"] == 7
    train_pngs = [out / "images" / f"{i}.png" for i in arrays["train"][2]]
    mean, std = _png_stats(train_pngs)
    assert doc["mean"] == pytest.approx(mean, rel=1e-6) and doc["std"] == pytest.approx(std, rel=1e-6)
    both = _png_stats(train_pngs + [out / "images" / f"{i}.png" for i in arrays["test"][2]])
    assert both[0] != pytest.approx(mean, rel=1e-9)
    # the exact options to pass are printed, and in the file
    line = next(x for x in result.output.splitlines() if x.startswith("BasicIRSTD:"))
    assert f"--dataset_dir {out.parent} --dataset_names SIRST5K" in line
    words = line.split()
    assert float(words[words.index("--img_norm_cfg_mean") + 1]) == doc["mean"]
    assert float(words[words.index("--img_norm_cfg_std") + 1]) == doc["std"]
    assert doc["basicirstd_args"] in line


def test_norm_cfg_is_float32_as_numpy_computes_it():
    from sirst5k.method.norm import image_mean_std, norm_cfg

    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (13, 17), dtype=np.uint8) for _ in range(5)]
    stats = [image_mean_std(i) for i in images]
    assert all(m.dtype == np.float32 and s.dtype == np.float32 for m, s in stats)
    cfg = norm_cfg([m for m, _ in stats], [s for _, s in stats])
    exact = np.mean([i.astype(np.float64).mean() for i in images]), np.mean([i.astype(np.float64).std() for i in images])
    assert cfg["mean"] == pytest.approx(exact[0], rel=1e-6) and cfg["std"] == pytest.approx(exact[1], rel=1e-6)
    assert cfg["mean"] == float(np.float32(cfg["mean"]))  # a float32 value, printed exactly


def _targets_toy(root: Path) -> dict[str, list]:
    """Two splits with known targets: a 2x3 box, an 8-connected diagonal, a single pixel, none."""
    masks = np.zeros((3, 16, 20), np.uint8)
    masks[0, 2:4, 5:8] = 255  # box rows 2-3, cols 5-7
    masks[0, 10, 10] = masks[0, 11, 11] = masks[0, 12, 12] = 255  # one diagonal target
    masks[1, 15, 19] = 255  # bottom-right corner pixel
    images = np.arange(3 * 16 * 20, dtype=np.int64).reshape(3, 16, 20).astype(np.uint8)
    entries = {}
    for split, rows, ids in (("train", [0, 2], ["a", "c"]), ("test", [1], ["b b"])):
        meta = new_meta(len(rows))
        meta["sample_id"][:] = ids
        meta["kind"][:] = "original"
        info = write_shard(root / f"{split}-00000.h5", images[rows], masks[rows], meta, {"split": split})
        entries[split] = {"n_samples": len(rows), "shards": [{"path": Path(info.path).name, "sha256": info.sha256,
                                                              "n_samples": len(rows)}]}
    write_json_atomic(root / "manifest.json", {"schema_version": 1, "name": "t", "version": "v0", "producer": "test",
                                               "dataset_dir": ".", "params": {}, "inputs": {}, "splits": entries})
    return {"images": images, "masks": masks}


def test_yolo_layout(tmp_path):
    import yaml

    root = tmp_path / "toy"
    arrays = _targets_toy(root)
    out = tmp_path / "yolo"
    app = typer.Typer()
    app.command()(command)
    result = CliRunner().invoke(app, [str(root), str(out), "--layout", "yolo"])
    assert result.exit_code == 0, result.output
    assert "3 targets labelled" in result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "data.yaml", "images/test/b%20b.png", "images/train/a.png", "images/train/c.png",
        "labels/test/b%20b.txt", "labels/train/a.txt", "labels/train/c.txt"]
    a = (out / "labels" / "train" / "a.txt").read_text().splitlines()
    # box: cols 5..7 -> x 5..8, rows 2..3 -> y 2..4 (pixel edges); diagonal 10..12 -> 10..13
    assert a == [f"0 {6.5 / 20:.6f} {3 / 16:.6f} {3 / 20:.6f} {2 / 16:.6f}",
                 f"0 {11.5 / 20:.6f} {11.5 / 16:.6f} {3 / 20:.6f} {3 / 16:.6f}"]
    assert (out / "labels" / "test" / "b%20b.txt").read_text() == f"0 {19.5 / 20:.6f} {15.5 / 16:.6f} 0.050000 0.062500\n"
    assert (out / "labels" / "train" / "c.txt").read_bytes() == b""  # background image: empty label file
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["path"] == str(out.resolve())
    assert (data["train"], data["val"], data["test"]) == ("images/train", "images/test", "images/test")
    assert data["names"] == {0: "target"} and data["nc"] == 1
    np.testing.assert_array_equal(_read_png(out / "images" / "train" / "c.png"), arrays["images"][2])
    # Ultralytics finds a label by replacing /images/ with /labels/ and the suffix with .txt
    for img in (out / "images").rglob("*.png"):
        assert Path(str(img).replace("/images/", "/labels/")).with_suffix(".txt").is_file()


def test_coco_layout_round_trips_every_target_mask(tmp_path):
    from pycocotools import mask as coco_mask
    from skimage.measure import label

    root = tmp_path / "toy"
    arrays = _targets_toy(root)
    out = tmp_path / "coco"
    result = export_dataset(root, out, layout="coco")
    assert result["targets"] == 3
    for split, rows in (("train", [0, 2]), ("test", [1])):
        doc = json.loads((out / "annotations" / f"instances_{split}.json").read_text())
        assert doc["categories"] == [{"id": 1, "name": "target", "supercategory": "target"}]
        assert [im["id"] for im in doc["images"]] == list(range(1, len(rows) + 1))
        for image, row in zip(doc["images"], rows):
            assert (image["height"], image["width"]) == (16, 20)
            np.testing.assert_array_equal(_read_png(out / "images" / split / image["file_name"]), arrays["images"][row])
            anns = [a for a in doc["annotations"] if a["image_id"] == image["id"]]
            labels = label(arrays["masks"][row] > 0, connectivity=2)
            assert len(anns) == labels.max()
            union = np.zeros((16, 20), bool)
            for t, ann in enumerate(anns, start=1):
                decoded = coco_mask.decode(ann["segmentation"]).astype(bool)
                np.testing.assert_array_equal(decoded, labels == t)  # the target's own pixels, nothing else
                assert ann["area"] == int(decoded.sum()) == int(coco_mask.area(ann["segmentation"]))
                ys, xs = np.nonzero(decoded)
                assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                assert ann["category_id"] == 1 and ann["iscrowd"] == 0
                union |= decoded
            np.testing.assert_array_equal(union, arrays["masks"][row] > 0)
        ids = [a["id"] for a in doc["annotations"]]
        assert len(set(ids)) == len(ids)


def test_coco_layout_without_pycocotools_is_one_line(toy, tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_coco(name, *args, **kwargs):
        if name.startswith("pycocotools"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_coco)
    with pytest.raises(InputError, match="pip install pycocotools"):
        export_dataset(toy[0], tmp_path / "c", layout="coco")
    assert not (tmp_path / "c").exists()


def test_two_exports_into_one_folder_fail_and_the_documented_ones_work(toy, tmp_path):
    """The old README exported dnanet and basicirstd into one folder: the second one fails.
    docs/toolboxes.md's export lines run one after another against a toy dataset."""
    root, _ = toy
    app = typer.Typer()
    app.command()(command)
    runner = CliRunner()
    same = tmp_path / "same" / "SIRST5K"
    assert runner.invoke(app, [str(root), str(same), "--layout", "dnanet"]).exit_code == 0
    second = runner.invoke(app, [str(root), str(same), "--layout", "basicirstd"])
    assert second.exit_code == 2 and "not empty" in second.output
    doc = (Path(__file__).resolve().parents[1] / "docs" / "toolboxes.md").read_text()
    lines = [ln.split("#")[0].split() for ln in doc.splitlines() if ln.startswith("sirst5k export ")]
    assert len(lines) >= 4 and {ln[ln.index("--layout") + 1] for ln in lines} == set(export_mod.LAYOUTS)
    outs = [ln[3] for ln in lines]
    assert len(set(outs)) == len(outs), "every documented export has its own folder"
    for ln in lines:
        args = [str(root), str(tmp_path / "docs" / ln[3].lstrip("/")), *ln[4:]]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"{' '.join(ln)}: {result.output}"


def test_stage_layout_names_are_the_libraries():
    from sirst5k.stages.export import LAYOUT_NAMES

    assert LAYOUT_NAMES == export_mod.LAYOUTS
