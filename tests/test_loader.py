"""ShardDataset over constructed shard folders and manifests."""

from __future__ import annotations

import json
import pickle
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sirst5k.errors import InputError
from sirst5k.loader import ShardDataset, open_source
from sirst5k.formats.manifest import write_json_atomic
from sirst5k.formats.shards import new_meta, write_shard

H, W = 12, 10


def _samples(split: str, start: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, H, W), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = 0, 255  # both ends of the range in every image
    masks = np.zeros((n, H, W), np.uint8)
    meta = new_meta(n)
    for i in range(n):
        y, x = 1 + i % (H - 3), 1 + (2 * i) % (W - 3)
        masks[i, y : y + 2, x : x + 2] = 255
        meta["sample_id"][i] = f"{split}_{start + i:03d}"
        meta["source_id"][i] = f"src_{start + i:03d}"
        meta["kind"][i] = "original" if i % 2 == 0 else "negative"
        meta["mix"][i] = 0.1 * (i % 3)
        meta["patch"][i] = 4 if i % 2 else -1
        meta["n_targets"][i] = 1
    return images, masks, meta


def build(root: Path, sizes: dict[str, list[int]], manifest: bool = True) -> dict[str, tuple]:
    """Shards `<split>-NNNNN.h5` under root (+ manifest.json); returns each split's concatenated arrays."""
    out, entries = {}, {}
    for split, counts in sizes.items():
        parts, shards, start = [], [], 0
        for index, n in enumerate(counts):
            images, masks, meta = _samples(split, start, n, seed=zlib.crc32(f"{split}{index}".encode()))
            info = write_shard(
                root / f"{split}-{index:05d}.h5",
                images,
                masks,
                meta,
                {"dataset": "toy", "version": "v0", "split": split, "shard_index": index, "n_shards": len(counts)},
            )
            shards.append({"path": Path(info.path).name, "sha256": info.sha256, "n_samples": n})
            parts.append((images, masks, meta))
            start += n
        out[split] = (
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            {k: np.concatenate([p[2][k] for p in parts]) for k in parts[0][2]},
        )
        entries[split] = {"n_samples": start, "shards": shards}
    if manifest:
        write_json_atomic(
            root / "manifest.json",
            {
                "schema_version": 1,
                "name": "toy",
                "version": "v0",
                "producer": "sirst5k test",
                "dataset_dir": ".",
                "params": {},
                "inputs": {},
                "splits": entries,
            },
        )
    return out


@pytest.fixture
def toy(tmp_path):
    root = tmp_path / "toy"
    return root, build(root, {"train": [5, 4], "test": [3]})


def test_sources_agree(toy, tmp_path):
    root, arrays = toy
    bare = tmp_path / "bare"
    bare.mkdir()
    for p in root.glob("*.h5"):
        (bare / p.name).write_bytes(p.read_bytes())
    for source in (root, root / "manifest.json", bare):
        ds = ShardDataset(source, split="train", dtype="uint8")
        assert len(ds) == 9
        for i in range(len(ds)):
            image, mask = ds[i]
            assert torch.equal(image[0], torch.from_numpy(arrays["train"][0][i]))
            assert torch.equal(mask[0], torch.from_numpy(arrays["train"][1][i] // 255))
    assert list(open_source(bare).splits) == ["train", "test"]
    assert len(ShardDataset(bare, split="test")) == 3


def test_float_range_channels_and_masks(toy):
    root, arrays = toy
    images, masks, _ = arrays["test"]
    ds1 = ShardDataset(root, split="test")
    ds3 = ShardDataset(root, split="test", channels=3)
    for i in range(len(ds1)):
        image, mask = ds1[i]
        assert image.dtype == torch.float32 and image.shape == (1, H, W)
        assert mask.dtype == torch.float32 and mask.shape == (1, H, W)
        assert image.min() == 0.0 and image.max() == 1.0
        torch.testing.assert_close(image[0], torch.from_numpy(images[i]).float() / 255, rtol=0, atol=0)
        assert set(mask.unique().tolist()) == {0.0, 1.0}
        assert torch.equal(mask[0], torch.from_numpy(masks[i] > 0).float())
        image3, mask3 = ds3[i]
        assert image3.shape == (3, H, W)
        assert all(torch.equal(image3[c], image[0]) for c in range(3))
        assert torch.equal(mask3, mask)


def test_uint8_mode(toy):
    root, arrays = toy
    ds = ShardDataset(root, split="train", dtype="uint8", channels=3)
    image, mask = ds[-1]
    assert image.dtype == torch.uint8 and image.shape == (3, H, W)
    assert mask.dtype == torch.uint8 and set(mask.unique().tolist()) == {0, 1}
    assert torch.equal(image[2], torch.from_numpy(arrays["train"][0][-1]))
    # Items must not share a reused buffer.
    first, _ = ds[0]
    second, _ = ds[1]
    assert not torch.equal(first, second)
    assert torch.equal(first[0], torch.from_numpy(arrays["train"][0][0]))


def test_meta(toy):
    root, arrays = toy
    ds = ShardDataset(root, split="train", return_meta=True)
    table = ds.meta
    assert list(table["sample_id"]) == [f"train_{i:03d}" for i in range(9)]
    np.testing.assert_array_equal(table["kind"], arrays["train"][2]["kind"])
    _, _, meta = ds[6]
    assert meta["sample_id"] == "train_006" and meta["source_id"] == "src_006"
    assert type(meta["patch"]) is int and type(meta["mix"]) is float and type(meta["kind"]) is str
    assert meta["kind"] == arrays["train"][2]["kind"][6]
    assert meta["mix"] == pytest.approx(arrays["train"][2]["mix"][6])


def test_dataloader_workers_match(toy):
    root, _ = toy
    ds = ShardDataset(root, split="train", return_meta=True)
    ds[3]  # a handle opened in the parent before the fork must not be used by the workers
    runs = []
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=2, shuffle=False, num_workers=workers)
        runs.append(list(loader))
    assert len(runs[0]) == len(runs[1]) == 5
    for (i0, m0, meta0), (i1, m1, meta1) in zip(*runs):
        assert torch.equal(i0, i1) and torch.equal(m0, m1)
        assert meta0["sample_id"] == meta1["sample_id"]
        assert torch.equal(meta0["patch"], meta1["patch"])
    ids = [s for batch in runs[1] for s in batch[2]["sample_id"]]
    assert ids == [f"train_{i:03d}" for i in range(9)]


def test_transform_applied_last(toy):
    root, _ = toy
    seen = []

    def flip(image, mask):
        seen.append((image.shape, image.dtype))
        return image.flip(-1), mask.flip(-1)

    plain = ShardDataset(root, split="test", channels=3)
    flipped = ShardDataset(root, split="test", channels=3, transform=flip)
    image, mask = flipped[1]
    assert seen == [((3, H, W), torch.float32)]
    assert torch.equal(image, plain[1][0].flip(-1)) and torch.equal(mask, plain[1][1].flip(-1))


def test_pickled_copy_reads_alone(toy):
    root, _ = toy
    ds = ShardDataset(root, split="train")
    expected = ds[7]
    copy = pickle.loads(pickle.dumps(ds))
    assert all(torch.equal(a, b) for a, b in zip(copy[7], expected))
    ds.close()
    assert torch.equal(ds[7][0], expected[0])


def test_errors(toy, tmp_path):
    root, _ = toy
    with pytest.raises(InputError, match="no split 'val'"):
        ShardDataset(root, split="val")
    with pytest.raises(InputError, match="no such"):
        ShardDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no manifest.json"):
        ShardDataset(tmp_path / "empty")
    with pytest.raises(ValueError):
        ShardDataset(root, channels=2)
    with pytest.raises(ValueError):
        ShardDataset(root, dtype="float16")
    ds = ShardDataset(root, split="test")
    with pytest.raises(IndexError):
        ds[3]
    # A manifest whose counts disagree with the shard is caught at the first read.
    bad = tmp_path / "bad"
    build(bad, {"train": [4]})
    text = (bad / "manifest.json").read_text().replace('"n_samples": 4', '"n_samples": 6')
    (bad / "manifest.json").write_text(text)
    ds = ShardDataset(bad)
    assert len(ds) == 6
    with pytest.raises(InputError, match="holds 4 samples"):
        ds[0]


# ---------------------------------------------------------------------------------------------
# issue 13: every error names the shard; verify=True checks each shard's sha256 on first open


def test_truncated_shard_names_the_shard(toy):
    root, _ = toy
    shard = root / "train-00001.h5"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    ds = ShardDataset(root, split="train")
    assert ds[0][0].shape == (1, H, W)  # the intact shard still serves
    with pytest.raises(InputError) as err:
        ds[6]
    assert str(shard) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="train-00001.h5"):
        ds.meta


def test_missing_and_non_hdf5_shards_name_the_shard(toy):
    root, _ = toy
    (root / "train-00000.h5").write_bytes(b"not hdf5 at all" * 100)
    (root / "train-00001.h5").unlink()
    ds = ShardDataset(root / "manifest.json", split="train")
    with pytest.raises(InputError, match="train-00000.h5: cannot open shard"):
        ds[0]
    with pytest.raises(InputError, match="train-00001.h5: cannot open shard"):
        ds[8]


def _flip_in_chunk(path: Path, dataset: str, row: int) -> None:
    """Flip one byte inside the stored chunk of `row` of `/dataset` (images raw, masks gzip)."""
    import h5py

    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(row)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0xFF]))


def test_bit_flip_is_served_silently_without_verify_and_refused_with_it(toy):
    root, arrays = toy
    shard = root / "test-00000.h5"
    _flip_in_chunk(shard, "images", 1)
    plain = ShardDataset(root, split="test", dtype="uint8")
    assert not torch.equal(plain[1][0][0], torch.from_numpy(arrays["test"][0][1]))  # what verify is for
    checked = ShardDataset(root, split="test", verify=True)
    with pytest.raises(InputError) as err:
        checked[0]
    assert str(shard) in str(err.value) and "sha256" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="test-00000.h5"):
        ShardDataset(root / "manifest.json", split="test", verify=True).verify_all()
    # an intact split passes and serves the same samples
    train = ShardDataset(root, split="train", verify=True)
    train.verify_all()
    assert torch.equal(train[8][0], ShardDataset(root, split="train")[8][0])


def test_damaged_compressed_chunk_names_the_shard(toy):
    root, _ = toy
    shard = root / "test-00000.h5"
    _flip_in_chunk(shard, "masks", 2)
    ds = ShardDataset(root, split="test")
    with pytest.raises(InputError) as err:
        ds[2]
    assert str(shard) in str(err.value) and "sample 2" in str(err.value)


def test_verify_needs_a_record_and_uses_stage_json_in_a_bare_folder(toy, tmp_path):
    from sirst5k.runner.outputs import write_stage_record

    root, _ = toy
    bare = tmp_path / "bare"
    bare.mkdir()
    for p in root.glob("*.h5"):
        (bare / p.name).write_bytes(p.read_bytes())
    with pytest.raises(InputError, match="needs each shard's sha256"):
        ShardDataset(bare, split="train", verify=True)
    manifest = json.loads((root / "manifest.json").read_text())
    records = [s for split in manifest["splits"].values() for s in split["shards"]]
    write_stage_record(bare, "ingest", {}, {}, records)
    ShardDataset(bare, split="train", verify=True).verify_all()
    _flip_in_chunk(bare / "train-00000.h5", "images", 0)
    with pytest.raises(InputError, match="train-00000.h5: sha256"):
        ShardDataset(bare, split="train", verify=True)[0]


def test_verified_shards_are_not_hashed_again_in_workers(toy, monkeypatch):
    import sirst5k.loader as loader_mod

    root, _ = toy
    ds = ShardDataset(root, split="train", verify=True)
    ds.verify_all()
    calls = []
    monkeypatch.setattr(loader_mod, "sha256_file", lambda p: calls.append(p) or "x")
    copy = pickle.loads(pickle.dumps(ds))
    copy[0], copy[8]
    assert calls == []


def test_a_negatives_folder_reads_as_its_split(tmp_path: Path) -> None:
    # negatives write parts `train-<input>-<part>.h5`: the split is still `train`
    from sirst5k.formats import shards
    from sirst5k.sources import open_source

    for name in ("train-00000-000.h5", "train-00000-001.h5", "train-00001-000.h5"):
        meta = shards.new_meta(1)
        meta["sample_id"][:] = meta["source_id"][:] = [name]
        meta["kind"][:] = "negative"
        shards.write_shard(tmp_path / name, np.zeros((1, 8, 8), np.uint8), np.zeros((1, 8, 8), np.uint8), meta,
                           {"dataset": "negatives", "version": "0", "split": "train", "shard_index": 0,
                            "n_shards": -1})
    source = open_source(tmp_path)
    assert list(source.splits) == ["train"] and len(source.splits["train"]) == 3
    assert len(ShardDataset(tmp_path, split="train")) == 3
