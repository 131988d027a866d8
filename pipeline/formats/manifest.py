"""The JSON manifest of a published dataset (see DESIGN.md, "Manifest").

Fields: schema_version, name, version, producer, dataset_dir, params, inputs, splits.
`dataset_dir` is the dataset folder relative to the manifest's own folder (so
`manifests/sirst5k.json` says `../output/sirst5k`); shard paths inside `splits` are relative
to that folder. A copy named `manifest.json` sits inside the dataset folder with
`dataset_dir: "."`, so the folder alone (e.g. fetched with `dvc get`) is self-describing.

Schema versions (`MANIFEST_SCHEMA_VERSIONS`, readers refuse others): 1, every shard of the
dataset one image size; 2 (issue 18, `ingest --size native`), the shards differ in size, each
still one size: every shard entry also gives its `shape` [H, W] and every split its `sizes`
{"HxW": n_samples}. A one-size dataset is written as schema 1,
without those keys, exactly as before.

Written with sorted keys and fixed float formatting, so identical content gives identical bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from sirst5k.errors import InputError, OutputError

MANIFEST_SCHEMA_VERSION = 1  # one image size in the whole dataset
MIXED_SIZES_SCHEMA = 2  # shards of several sizes, each entry with its `shape`, each split its `sizes`
MANIFEST_SCHEMA_VERSIONS = (MANIFEST_SCHEMA_VERSION, MIXED_SIZES_SCHEMA)
REQUIRED = ("schema_version", "name", "version", "producer", "dataset_dir", "params", "inputs", "splits")
IN_DATASET_NAME = "manifest.json"


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (counts and params read back from HDF5) as the Python values they hold,
    so they write exactly as Python numbers do."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def canonical_json(data: Any) -> str:
    """Sorted keys, floats by repr (shortest round trip), no NaN: equal content, equal bytes."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False, default=_plain) + "\n"


def content_version(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (inputs, params, producer)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_plain).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def write_json_atomic(path: str | Path, data: Any) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(canonical_json(data), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(path, f"cannot write: {err.strerror or err}") from err


def load_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise InputError(path, "manifest not found") from err
    except IsADirectoryError as err:
        raise InputError(path, "is a folder, not a manifest file") from err
    except OSError as err:
        raise InputError(path, f"cannot read manifest: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise InputError(path, "not a manifest: not UTF-8 text (a binary file?)") from err
    except json.JSONDecodeError as err:
        raise InputError(path, f"not a manifest: invalid JSON ({err.msg} at line {err.lineno})") from err
    if not isinstance(data, dict):
        raise InputError(path, "manifest is not a JSON object")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise InputError(path, f"manifest lacks {', '.join(missing)}")
    version = data["schema_version"]
    if isinstance(version, bool) or version not in MANIFEST_SCHEMA_VERSIONS:
        known = " or ".join(map(str, MANIFEST_SCHEMA_VERSIONS))
        raise InputError(path, f"manifest schema_version {version!r} is not {known} (made by a newer sirst5k?)")
    return data


def size_key(shape) -> str:
    """"HxW" of an image shape (H, W): the keys of a schema-2 split's `sizes`."""
    h, w = (int(v) for v in shape)
    return f"{h}x{w}"


def size_counts(shapes_and_counts) -> dict[str, int]:
    """{"HxW": n_samples} of [(shape, n), ...], sizes ordered by (H, W): a split's `sizes`."""
    totals: dict[tuple[int, int], int] = {}
    for shape, n in shapes_and_counts:
        hw = (int(shape[0]), int(shape[1]))
        totals[hw] = totals.get(hw, 0) + int(n)
    return {size_key(hw): totals[hw] for hw in sorted(totals)}


def dataset_dir(manifest_path: str | Path, manifest: Mapping[str, Any]) -> Path:
    return (Path(manifest_path).parent / manifest["dataset_dir"]).resolve()


def split_shards(manifest_path: str | Path, manifest: Mapping[str, Any], split: str) -> list[dict[str, Any]]:
    """The split's shard entries with `path` made absolute."""
    if split not in manifest["splits"]:
        raise InputError(manifest_path, f"no split {split!r} (has {', '.join(sorted(manifest['splits']))})")
    root = dataset_dir(manifest_path, manifest)
    return [{**s, "path": str(root / s["path"])} for s in manifest["splits"][split]["shards"]]


def find_manifest(path: str | Path) -> Path | None:
    """A manifest file itself, or the `manifest.json` inside a dataset folder; None for a bare shard folder."""
    path = Path(path)
    if path.is_file():
        return path
    inside = path / IN_DATASET_NAME
    return inside if inside.is_file() else None
