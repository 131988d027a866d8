"""Check a published dataset against its manifest: checksums, schema, counts, masks, labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from .errors import InputError
from .manifest import content_version, dataset_dir, load_manifest
from .shards import KINDS, META_FIELDS, ROOT_ATTRS, SCHEMA_VERSION, sha256_file

BLOCK = 256  # images read at a time: bounded memory for any shard size


def manifest_version(manifest: dict[str, Any]) -> str:
    """The version a manifest must carry: a hash of what made it (name, inputs, params, producer).

    Input paths are left out: the same data built in another folder is the same version.
    """
    inputs = {k: ({f: v for f, v in d.items() if f != "path"} if isinstance(d, dict) else d)
              for k, d in manifest["inputs"].items()}
    return content_version(manifest["name"], inputs, manifest["params"], manifest["producer"])


def verify_manifest(path: str | Path, on_shard: Callable[[], None] | None = None, labels: bool = True) -> list[str]:
    """Every problem found, one line each naming the file; an empty list means the dataset is sound."""
    path = Path(path)
    try:
        manifest = load_manifest(path)
    except InputError as err:
        return [str(err)]
    problems: list[str] = []
    if manifest_version(manifest) != manifest["version"]:
        problems.append(f"{path}: version {manifest['version']} does not match its name/inputs/params/producer "
                        f"(edited by hand?)")
    root = dataset_dir(path, manifest)
    seen_ids: set[str] = set()
    for split, entry in sorted(manifest["splits"].items()):
        kinds = {k: 0 for k in KINDS}
        total = 0
        for i, s in enumerate(entry.get("shards", [])):
            shard = root / s["path"]
            problems += _check_shard(shard, s, manifest, split, i, len(entry["shards"]), kinds, seen_ids, labels)
            total += s.get("n_samples", 0)
            if on_shard:
                on_shard()
        if total != entry.get("n_samples"):
            problems.append(f"{path}: split {split} lists n_samples {entry.get('n_samples')} but its shards hold {total}")
        listed = {k: v for k, v in entry.get("kinds", {}).items() if v}
        found = {k: v for k, v in kinds.items() if v}
        if listed != found:
            problems.append(f"{path}: split {split} kinds {listed} but the shards hold {found}")
    return problems


def _check_shard(shard: Path, entry: dict, manifest: dict, split: str, index: int, n_shards: int,
                 kinds: dict[str, int], seen_ids: set[str], labels: bool) -> list[str]:
    if not shard.is_file():
        return [f"{shard}: shard listed in the manifest is missing"]
    problems = []
    digest = sha256_file(shard)
    if digest != entry.get("sha256"):
        problems.append(f"{shard}: sha256 {digest[:12]}... does not match the manifest's {str(entry.get('sha256'))[:12]}...")
    try:
        with h5py.File(shard, "r") as f:
            problems += _check_contents(f, shard, entry, manifest, split, index, n_shards, kinds, seen_ids, labels)
    except OSError as err:
        problems.append(f"{shard}: cannot open as HDF5 ({err})")
    return problems


def _check_contents(f: h5py.File, shard: Path, entry: dict, manifest: dict, split: str, index: int, n_shards: int,
                    kinds: dict[str, int], seen_ids: set[str], labels: bool) -> list[str]:
    problems = []
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    missing = [a for a in ROOT_ATTRS if a not in attrs]
    if missing:
        problems.append(f"{shard}: root attributes missing: {', '.join(missing)}")
    expect = {"schema_version": SCHEMA_VERSION, "dataset": manifest["name"], "version": manifest["version"],
              "split": split, "shard_index": index, "n_shards": n_shards}
    for k, v in expect.items():
        if k in attrs and attrs[k] != v:
            problems.append(f"{shard}: attribute {k} is {attrs[k]!r}, expected {v!r}")
    for name in ("images", "masks"):
        if name not in f:
            problems.append(f"{shard}: no /{name}")
    if problems and ("images" not in f or "masks" not in f):
        return problems
    images, masks = f["images"], f["masks"]
    n = images.shape[0]
    if images.dtype != np.uint8 or masks.dtype != np.uint8 or images.ndim != 3 or masks.shape != images.shape:
        problems.append(f"{shard}: images {images.dtype}{images.shape} / masks {masks.dtype}{masks.shape}: "
                        "need uint8 [N, H, W] of equal shape")
        return problems
    if n != entry.get("n_samples"):
        problems.append(f"{shard}: holds {n} samples, the manifest says {entry.get('n_samples')}")
    meta = {}
    for name in META_FIELDS:
        if "meta" not in f or name not in f["meta"]:
            problems.append(f"{shard}: no /meta/{name}")
            continue
        ds = f["meta"][name]
        meta[name] = ds.asstr()[()] if ds.dtype.kind == "O" else ds[()]
        if len(meta[name]) != n:
            problems.append(f"{shard}: /meta/{name} has {len(meta[name])} rows for {n} samples")
    if "kind" in meta:
        for kind, count in zip(*np.unique(meta["kind"], return_counts=True)):
            if kind not in kinds:
                problems.append(f"{shard}: unknown kind {kind!r}")
            else:
                kinds[kind] += int(count)
    if "sample_id" in meta:
        dup = seen_ids.intersection(meta["sample_id"])
        if dup or len(set(meta["sample_id"])) != n:
            problems.append(f"{shard}: duplicate sample ids, e.g. {sorted(dup)[:3]}")
        seen_ids.update(meta["sample_id"])
    bad_mask, bad_label = [], []
    if labels:
        from skimage.measure import label as cc_label
    for start in range(0, n, BLOCK):
        block = masks[start : start + BLOCK]
        values = np.unique(block)
        if not np.isin(values, (0, 255)).all():
            bad_mask.append(start)
        if labels and "n_targets" in meta:
            for j, m in enumerate(block):
                want = int(meta["n_targets"][start + j])
                got = int(cc_label(m > 0, connectivity=2).max())
                if want >= 0 and got != want:
                    bad_label.append((meta.get("sample_id", [""] * n)[start + j], want, got))
    if bad_mask:
        problems.append(f"{shard}: masks hold values other than 0 and 255")
    if bad_label:
        sid, want, got = bad_label[0]
        problems.append(f"{shard}: {len(bad_label)} sample(s) whose mask target count differs from meta "
                        f"n_targets, e.g. {sid}: {got} != {want}")
    return problems
