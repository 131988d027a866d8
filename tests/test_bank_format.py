"""The noise-bank file (sirst5k.formats.bank): parts, merge, readers and their one-line errors."""

from __future__ import annotations

import builtins
import errno
from pathlib import Path

import h5py
import numpy as np
import pytest

from sirst5k.errors import InputError, OutputError
from sirst5k.formats import bank

W = 8


def sequence(seed: int, n_frames: int = 3, grid: int = 2) -> dict:
    """One sequence's selection as the noise-bank task has it: frames, kept windows, statistics."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n_frames, grid * W, grid * W)).astype(np.uint8)
    var = rng.random((n_frames, grid, grid)) * 50
    mean = rng.random((n_frames, grid, grid)) * 200
    kept = np.array([[0, 0, 1], [0, 1, 0]] if seed % 2 else [[0, 1, 1]], np.int64)
    patches = np.stack([[frames[t0 + i, gy * W:(gy + 1) * W, gx * W:(gx + 1) * W] for i in range(n_frames)]
                        for t0, gy, gx in kept])
    return {"frames": frames, "var": var, "mean": mean, "kept": kept, "patches": patches,
            "names": [f"s{seed}-{i}.png" for i in range(n_frames)]}


ATTRS = {"schema_version": bank.SCHEMA_VERSION, "producer": "test", "stage": "noise-bank", "version": "abc123",
         "frames_hash": "f00d", "window": W, "n_sequences": 2, "n_frames": 6}


def write_bank(tmp_path: Path, seqs: dict[str, dict], attrs: dict = ATTRS) -> Path:
    parts = []
    for i, (name, s) in enumerate(seqs.items()):
        path = tmp_path / f"part-{i}.h5"
        rows = bank.write_part(path, s["patches"], s["kept"], s["var"], s["mean"], s["names"], stride=W)
        parts.append(bank.Part(name, str(path), len(s["kept"]), rows))
    out = tmp_path / "bank.h5"
    assert bank.merge_parts(parts, out, attrs) == sum(p.rows for p in parts)
    return out


def one_line(err: pytest.ExceptionInfo, path: Path) -> str:
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path}: "), text
    return text


def test_round_trip(tmp_path: Path) -> None:
    seqs = {"A": sequence(1), "B": sequence(2)}
    out = write_bank(tmp_path, seqs)
    patches, rows = bank.read_patches(out), bank.read_rows(out)
    want = np.concatenate([s["patches"].reshape(-1, W, W) for s in seqs.values()])
    np.testing.assert_array_equal(patches, want)
    assert patches.dtype == np.uint8
    assert list(rows["sequence"]) == ["A"] * 6 + ["B"] * 3
    assert list(rows["frame"]) == ["s1-0.png", "s1-1.png", "s1-2.png"] * 2 + ["s2-0.png", "s2-1.png", "s2-2.png"]
    # entries are numbered across the bank, each a window's consecutive frames
    assert list(rows["entry"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert list(rows["frame_index"]) == [0, 1, 2] * 3
    assert list(zip(rows["y"], rows["x"]))[::3] == [(0, W), (W, 0), (W, W)]
    a = seqs["A"]
    np.testing.assert_array_equal(rows["var"][:3], a["var"][:, 0, 1])
    np.testing.assert_array_equal(rows["mean"][3:6], a["mean"][:, 1, 0])
    np.testing.assert_array_equal(rows["seq_var_of_var"][:3], np.full(3, a["var"][:, 0, 1].var()))
    np.testing.assert_array_equal(rows["seq_var_of_mean"][6:], np.full(3, seqs["B"]["mean"][:, 1, 1].var()))
    # each row is the box its provenance names
    for r in range(len(patches)):
        s = seqs[rows["sequence"][r]]
        y, x, t = rows["y"][r], rows["x"][r], rows["frame_index"][r]
        np.testing.assert_array_equal(patches[r], s["frames"][t, y:y + W, x:x + W])
    assert bank.read_attrs(out) == ATTRS
    assert bank.bank_info(out) == {"path": str(out), "version": "abc123", "rows": 9, "window": W,
                                   "frames_hash": "f00d", "models": 0}


def test_layout_on_disk(tmp_path: Path) -> None:
    out = write_bank(tmp_path, {"A": sequence(1)})
    with h5py.File(out) as f:
        assert list(f.attrs) == sorted(ATTRS)
        assert f["patches"].chunks == (6, W, W) and f["patches"].compression == "gzip"
        assert f["patches"].compression_opts == 1
        assert {k: f[k].dtype for k in bank.ROW_FIELDS} == bank.ROW_FIELDS
        assert h5py.check_string_dtype(f["sequence"].dtype).encoding == "utf-8"


def test_same_content_same_bytes_as_hdf5_writes_them(tmp_path: Path) -> None:
    """The in-memory image is the file HDF5 itself would write: the bank's bytes did not change."""
    def fill(f: h5py.File) -> None:
        f.attrs["a"] = 1
        f.create_dataset("p", data=np.arange(4096, dtype=np.uint8).reshape(4, 32, 32), chunks=(2, 32, 32),
                         compression="gzip", compression_opts=1, track_times=False)
        f.create_dataset("s", data=np.array(["x", "yz"], object), dtype=h5py.string_dtype("utf-8"), track_times=False)

    with h5py.File(tmp_path / "direct.h5", "w", libver=("earliest", "v110")) as f:
        fill(f)
    assert bank._hdf5_image(fill) == (tmp_path / "direct.h5").read_bytes()


def test_merge_is_deterministic(tmp_path: Path) -> None:
    built = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        built.append(write_bank(tmp_path / name, {"A": sequence(1), "B": sequence(2)}).read_bytes())
    assert built[0] == built[1]
    # parts are read, not consumed; nothing else is left next to the bank
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["bank.h5", "part-0.h5", "part-1.h5"]


def test_not_a_bank_is_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    for read in (bank.bank_info, bank.read_patches, bank.read_rows, bank.read_attrs):
        with pytest.raises(InputError) as err:
            read(junk)
        assert one_line(err, junk) == f"{junk}: not a noise bank: not an HDF5 file"
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["images"] = np.zeros((2, 4, 4), np.uint8)
    with pytest.raises(InputError) as err:
        bank.bank_info(other)
    assert one_line(err, other) == f"{other}: not a noise bank: no /patches dataset"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        bank.read_patches(tmp_path / "nope.h5")
    assert one_line(err, tmp_path / "nope.h5").endswith("cannot read noise bank: no such file")


def test_empty_bank_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "bank.h5"
    with h5py.File(out, "w") as f:  # the stage never writes one; another tool or an old run may have
        f.attrs.update(ATTRS)
        f["patches"] = np.zeros((0, W, W), np.uint8)
    for read in (bank.bank_info, bank.read_patches, bank.read_rows):
        with pytest.raises(InputError) as err:
            read(out)
        assert one_line(err, out) == f"{out}: noise bank is empty"


def test_wrong_shape_and_schema(tmp_path: Path) -> None:
    flat = tmp_path / "flat.h5"
    with h5py.File(flat, "w") as f:
        f["patches"] = np.zeros((3, 8, 6), np.uint8)
    with pytest.raises(InputError) as err:
        bank.read_patches(flat)
    assert one_line(err, flat) == f"{flat}: noise bank /patches must be [R, w, w], got (3, 8, 6)"
    future = tmp_path / "future.h5"
    with h5py.File(future, "w") as f:
        f["patches"] = np.zeros((3, 8, 8), np.uint8)
        f.attrs["schema_version"] = 2
    with pytest.raises(InputError) as err:
        bank.bank_info(future)
    assert "schema_version 2" in one_line(err, future)


def test_a_bare_patches_file_still_reads(tmp_path: Path) -> None:
    """`sirst5k modes` takes any file with a /patches dataset (its tests write just that)."""
    bare = tmp_path / "bare.h5"
    with h5py.File(bare, "w") as f:
        f["patches"] = np.full((2, 8, 8), 7, np.uint8)
    np.testing.assert_array_equal(bank.read_patches(bare), np.full((2, 8, 8), 7, np.uint8))
    assert bank.bank_info(bare) == {"path": str(bare), "version": "", "rows": 2, "window": 0, "frames_hash": "",
                                    "models": 0}
    with pytest.raises(InputError) as err:
        bank.read_rows(bare)
    assert one_line(err, bare).startswith(f"{bare}: noise bank lacks row field(s) /sequence, /frame")


def test_load_bank_is_cached_by_version(tmp_path: Path) -> None:
    out = write_bank(tmp_path, {"A": sequence(1)})
    bank.load_bank.cache_clear()
    first = bank.load_bank(str(out), "v1")
    assert bank.load_bank(str(out), "v1") is first
    assert bank.load_bank(str(out), "v2") is not first
    # one array for every task of the process (run_here's lanes at once): none may write into it
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0, 0] = 1
    np.testing.assert_array_equal(first, bank.read_patches(out))


class _FullDisk:
    """`open` that lets a write start, then fails as a full disk does, for paths with `marker`."""

    def __init__(self, marker: str) -> None:
        self.marker, self.real = marker, builtins.open

    def __call__(self, path, mode="r", *args, **kwargs):
        fh = self.real(path, mode, *args, **kwargs)
        if self.marker not in str(path) or "w" not in mode:
            return fh

        class Handle:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                fh.close()

            def write(self, data):
                fh.write(data[: len(data) // 2])
                fh.flush()
                raise OSError(errno.ENOSPC, "No space left on device")

        return Handle()


def test_disk_full_during_merge_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = sequence(1)
    part = tmp_path / "part.h5"
    rows = bank.write_part(part, s["patches"], s["kept"], s["var"], s["mean"], s["names"], stride=W)
    out = tmp_path / "bank.h5"
    monkeypatch.setattr(bank, "open", _FullDisk(".partial-"), raising=False)
    with pytest.raises(OutputError) as err:
        bank.merge_parts([bank.Part("A", str(part), 2, rows)], out, ATTRS)
    assert one_line(err, out) == f"{out}: cannot write noise bank: No space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.h5"]


def test_disk_full_during_a_part_leaves_no_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = sequence(1)
    part = tmp_path / "part.h5"
    monkeypatch.setattr(bank, "open", _FullDisk("part.h5"), raising=False)
    with pytest.raises(OutputError) as err:
        bank.write_part(part, s["patches"], s["kept"], s["var"], s["mean"], s["names"], stride=W)
    assert one_line(err, part) == f"{part}: cannot write noise-bank part: No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder(tmp_path: Path) -> None:
    s = sequence(1)
    part = tmp_path / "part.h5"
    rows = bank.write_part(part, s["patches"], s["kept"], s["var"], s["mean"], s["names"], stride=W)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "bank.h5"
    with pytest.raises(OutputError) as err:
        bank.merge_parts([bank.Part("A", str(part), 2, rows)], out, ATTRS)
    assert one_line(err, out) == f"{out}: cannot write noise bank: Not a directory"


def test_nothing_to_merge_is_a_caller_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        bank.merge_parts([bank.Part("A", str(tmp_path / "never-written.h5"), 0, 0)], tmp_path / "bank.h5", ATTRS)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the fitted noise model in the bank


def _model(seed: int):
    from sirst5k.method.noise_model import fit_sequence

    rng = np.random.default_rng(seed)
    frames = 100 + rng.normal(0, 2 + seed, (2, 4 * W, 4 * W))
    frames[:, 3, 5] += 80
    boxes = frames.reshape(2, 4, W, 4, W).transpose(1, 3, 0, 2, 4).reshape(16, 2, W, W)
    return fit_sequence(boxes, frames)


def write_model_bank(tmp_path: Path, models: dict) -> Path:
    parts = []
    for i, (name, s) in enumerate({"A": sequence(1), "B": sequence(2), "C": sequence(3)}.items()):
        path = tmp_path / f"mpart-{i}.h5"
        rows = bank.write_part(path, s["patches"], s["kept"], s["var"], s["mean"], s["names"], stride=W,
                               model=models.get(name))
        parts.append(bank.Part(name, str(path), len(s["kept"]), rows))
    out = tmp_path / "model-bank.h5"
    bank.merge_parts(parts, out, ATTRS)
    return out


def test_model_round_trip_with_provenance(tmp_path: Path) -> None:
    models = {"A": _model(0), "C": _model(1)}  # B kept a window but has no model
    out = write_model_bank(tmp_path, models)
    got = bank.read_models(out)
    assert got.sequence == ("A", "C")
    rows = bank.read_rows(out)
    # each model names the bank rows it was fitted from
    for name, first, n in zip(got.sequence, got.first_row, got.n_rows):
        assert set(rows["sequence"][first:first + n]) == {name}
        assert n == (rows["sequence"] == name).sum()
    for want, have in zip(models.values(), got.models):
        assert have.sigma == want.sigma and have.sigma_temporal == want.sigma_temporal
        np.testing.assert_array_equal(have.psd2d, want.psd2d)
        np.testing.assert_array_equal(have.defects, want.defects)
    assert got.models[1].defects.tolist() == [[3, 5]]
    assert got.attrs["fitted_by"] == "sirst5k.method.noise_model.fit_sequence" and got.attrs["window"] == W
    assert bank.bank_info(out)["models"] == 2
    bank.load_models.cache_clear()
    assert bank.load_models(str(out), "v")[0].sigma == models["A"].sigma
    # the rest of the bank is what it is without a model
    np.testing.assert_array_equal(bank.read_patches(out), bank.read_patches(write_bank(tmp_path, {
        "A": sequence(1), "B": sequence(2), "C": sequence(3)})))


def test_a_bank_without_model_is_byte_identical_and_says_so(tmp_path: Path) -> None:
    seqs = {"A": sequence(1), "B": sequence(2)}
    first = write_bank(tmp_path, seqs).read_bytes()
    again = tmp_path / "again"
    again.mkdir()
    assert write_bank(again, seqs).read_bytes() == first  # the same bytes, run after run
    plain = write_bank(tmp_path, seqs)
    with h5py.File(plain) as f:
        assert bank.MODEL_GROUP not in f
    with pytest.raises(InputError) as err:
        bank.read_models(plain)
    assert "holds no noise model" in one_line(err, plain) and "--model" in str(err.value)


def test_a_damaged_model_is_one_line(tmp_path: Path) -> None:
    out = write_model_bank(tmp_path, {"A": _model(0)})
    with h5py.File(out, "a") as f:
        del f["model/psd2d"]
    with pytest.raises(InputError) as err:
        bank.read_models(out)
    assert "lacks psd2d" in one_line(err, out)
