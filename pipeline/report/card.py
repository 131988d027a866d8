"""The dataset card (the report's README.md): what a dataset holds, where it came from, how to
load it, and what to cite.

Numbers come from the report's statistics; provenance and parameters from the manifest. The
source data's citation is recognised from an input's path or layout (`KNOWN_SOURCES`), or left
as a placeholder to fill in.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from sirst5k import PRODUCER
from sirst5k.formats.shards import KINDS, SCHEMA_VERSION
from sirst5k.method.duplicates import RULE as LEAKAGE_RULE
from sirst5k.sources import Source

PAIRS_SHOWN = 20  # leakage pairs the card lists (stats.json lists up to duplicates.LIST_LIMIT)

CITATION = (
    'Y. Lu, Y. Lin, H. Wu, X. Xian, Y. Shi and L. Lin, "SIRST-5K: Exploring Massive Negatives Synthesis '
    'with Self-supervised Learning for Robust Infrared Small Target Detection", IEEE Transactions on '
    "Geoscience and Remote Sensing, 2024. arXiv:2403.05416."
)
BIBTEX = """@article{lu2024sirst5k,
  title   = {{SIRST-5K}: Exploring Massive Negatives Synthesis with Self-supervised Learning
             for Robust Infrared Small Target Detection},
  author  = {Lu, Yahao and Lin, Yupei and Wu, Han and Xian, Xiaoyu and Shi, Yukai and Lin, Liang},
  journal = {IEEE Transactions on Geoscience and Remote Sensing},
  year    = {2024},
  eprint  = {2403.05416},
  archivePrefix = {arXiv}
}"""
# Recognised from an input's path or layout; anything else gets a placeholder to fill in.
KNOWN_SOURCES = (
    ("nudt", 'B. Li et al., "Dense Nested Attention Network for Infrared Small Target Detection", IEEE TIP 2023 (NUDT-SIRST).'),
    ("irstd-1k", 'M. Zhang et al., "ISNet: Shape Matters for Infrared Small Target Detection", CVPR 2022 (IRSTD-1k).'),
    ("sirst-v2", 'Y. Dai et al., "One-Stage Cascade Refinement Networks for Infrared Small Target Detection", IEEE TGRS 2023 (SIRST-V2).'),
    ("sirst", 'Y. Dai et al., "Asymmetric Contextual Modulation for Infrared Small Target Detection", WACV 2021 (SIRST / NUAA-SIRST).'),
)


def _source_citation(inputs: Mapping[str, Any]) -> list[str]:
    """One line per input: its own citation, a recognised one to check, or a placeholder."""
    lines = []
    for key, value in inputs.items():
        if not isinstance(value, Mapping):
            continue
        if value.get("citation"):
            lines.append(f"- {key}: {value['citation']}")
            continue
        text = f"{value.get('path', '')} {value.get('layout', '')}".lower()
        known = next((cite for tag, cite in KNOWN_SOURCES if tag in text), None)
        if known:
            lines.append(f"- {key} (recognised from `{value.get('path', '')}`; check): {known}")
        else:
            lines.append(f"- {key} (`{value.get('path', '?')}`): _add the citation of this dataset here_")
    return lines or ["- _add the citation of the source dataset here_"]


def dataset_card(source: Source, stats: Mapping[str, Any], sheets: Mapping[str, str],
                 splits: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """README.md text of a dataset's report; `sheets` maps kind -> contact sheet file name;
    `splits` (`build.split_records`): each split's id-list hash and shard checksums."""
    manifest = source.manifest or {}
    inputs = manifest.get("inputs", {})
    lines = (
        _header(manifest, source.root.name)
        + _contents(stats, sheets)
        + _splits(splits or {}, stats.get("leakage"), stats.get("basicirstd_norm"))
        + _provenance(inputs, manifest.get("params", {}))
        + _FORMAT_AND_LOADING
        + _citation(inputs)
    )
    return "\n".join(lines)


def _header(manifest: Mapping[str, Any], default_name: str) -> list[str]:
    """Title, what the data is, and the versions that made it and this report."""
    return [
        f"# {manifest.get('name', default_name)}",
        "",
        "Infrared small-target detection data made with the SIRST-5K method (Lu et al., IEEE TGRS 2024):",
        "noise transfer from real sensor sequences and rotated negatives around each target.",
        "",
        f"- version: `{manifest.get('version', 'unknown (no manifest)')}`",
        f"- producer: `{manifest.get('producer', 'unknown')}`",
        f"- report made by: `{PRODUCER}`",
        "",
    ]


def _contents(stats: Mapping[str, Any], sheets: Mapping[str, str]) -> list[str]:
    """Counts per split and kind, figures per kind, label checks, and where the figures are."""
    out = [
        "## Contents",
        "",
        "| split | samples | " + " | ".join(KINDS) + " | targets | no target |",
        "| --- | ---: | " + " | ".join("---:" for _ in KINDS) + " | ---: | ---: |",
    ]
    for split, s in stats["splits"].items():
        out.append(
            f"| {split} | {s['samples']} | " + " | ".join(str(s[k]) for k in KINDS) + f" | {s['targets']} | {s['no_target']} |"
        )
    out += ["", "| kind | intensity mean | intensity std | noise rms | targets / image | mean target area |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for kind, k in stats["kinds"].items():
        out.append(
            f"| {kind} | {k['intensity_mean']:.2f} | {k['intensity_std']:.2f} | {k['noise_rms']:.3f} | "
            f"{k['targets_per_image_mean']:.3f} | {k['target_area_mean']:.1f} |"
        )
    checks = stats["label_checks"]
    return out + [
        "",
        f"Label checks: {checks['cut']} samples whose negative box cuts a target (meta `cut`), "
        f"{checks['area_mismatch']} whose stored mask area disagrees with the mask, "
        f"{checks['n_targets_mismatch']} whose stored target count disagrees with the mask.",
        "",
        "Figures: " + ", ".join(f"[{f}]({f})" for f in sheets.values()) + ("; " if sheets else "")
        + "histograms in `target_sizes.csv` and `targets_per_image.csv`; numbers in `stats.json`.",
        "",
    ]


def _splits(splits: Mapping[str, Mapping[str, Any]], leak: Mapping[str, Any] | None,
            norm: Mapping[str, Any] | None) -> list[str]:
    """Each split's id list and shard files by checksum, the leakage check, BasicIRSTD's numbers."""
    out = ["## Splits", ""]
    if splits:
        out += ["The id lists are the files a DNANet or BasicIRSTD export writes (`50_50/<split>.txt`, "
                "`img_idx/<split>_<NAME>.txt`: one id a line, LF, in shard order); their sha256:", "",
                "| split | samples | id list sha256 |", "| --- | ---: | --- |"]
        out += [f"| {split} | {s['samples']} | `{s['ids_sha256']}` |" for split, s in splits.items()]
        out.append("")
        recorded = next((s["recorded_in"] for s in splits.values() if s.get("recorded_in")), None)
        out += [f"Shard files (sha256 as `{recorded}` records them):" if recorded
                else "Shard files (no manifest or stage record gives their sha256):", ""]
        for split, s in splits.items():
            for name, digest in s["shards"]:
                out.append(f"- {split}: `{name}`" + (f" `{digest}`" if digest else ""))
        out.append("")
    out += ["### Leakage between train and test", ""]
    if leak is None:
        out += ["Not checked: the dataset lacks a train or a test split.", ""]
    else:
        groups = leak.get("groups")
        out += [f"Rule: {LEAKAGE_RULE}. Checked {leak['checked']['test']} test images against "
                f"{leak['checked']['train']} train images ({leak['checked']['near_candidates']} of them for near "
                "duplicates: the originals the others are made from). Real sets have some; they are warnings.", "",
                f"- exact duplicates: {leak['exact']['test_images']} test image(s), {leak['exact']['pairs']} pair(s)",
                f"- near duplicates: {leak['near']['test_images']} test image(s), {leak['near']['pairs']} pair(s)",
                ("- sequences in both splits: not known (the source layout names no sequences)" if groups is None else
                 f"- sequences in both splits ({groups['layout']} names): {groups['in_both']} of "
                 f"{groups['groups_train']} train and {groups['groups_test']} test sequence(s)"), ""]
        pairs = [("exact", p[0], p[1], "") for p in leak["exact"]["list"]] + \
                [("near", p[0], p[1], f"dHash {p[2]}, r {p[3]}") for p in leak["near"]["list"]]
        if pairs:
            out += ["| test | train | match |", "| --- | --- | --- |"]
            out += [f"| `{t}` | `{r}` | {kind}{' (' + how + ')' if how else ''} |" for kind, t, r, how in pairs[:PAIRS_SHOWN]]
            more = leak["exact"]["pairs"] + leak["near"]["pairs"] - min(len(pairs), PAIRS_SHOWN)
            out += ([f"", f"... and {more} more pair(s) (`stats.json` lists up to 1000 of each)."] if more > 0 else []) + [""]
        if groups and groups["list"]:
            out += ["Sequences in both splits: " + ", ".join(
                f"`{g['group']}` ({g['train']} train / {g['test']} test)" for g in groups["list"][:PAIRS_SHOWN])
                + (", ..." if len(groups["list"]) > PAIRS_SHOWN else ""), ""]
    out += ["### Normalisation for BasicIRSTD", ""]
    if norm is None:
        out += ["Not computed: no train split.", ""]
    else:
        out += [f"Mean of the per-image means and of the per-image standard deviations over the {norm['n_images']} "
                "train images (float32, 0..255, as BasicIRSTD's `get_img_norm_cfg` takes them, but from the train "
                "split only):", "", "```",
                f"--img_norm_cfg_mean {norm['mean']!r} --img_norm_cfg_std {norm['std']!r}", "```", ""]
    return out


def _provenance(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    """The manifest's inputs, a line each, and every stage's parameters as JSON."""
    out = ["## Provenance", ""]
    if inputs:
        for key, value in inputs.items():
            if isinstance(value, Mapping):
                fields = ", ".join(f"{k}: `{v}`" for k, v in value.items())
                out.append(f"- **{key}**: {fields}")
            else:
                out.append(f"- **{key}**: `{value}`")
    else:
        out.append("- not recorded (no manifest)")
    return out + ["", "Parameters:", "", "```json", json.dumps(params, indent=2, sort_keys=True, default=str), "```", ""]


# The field list is written out, not joined from META_FIELDS, so that the card's line breaks
# stay as they are; tests/test_report.py checks it against the schema.
_FORMAT_AND_LOADING = [
    "## Format",
    "",
    f"HDF5 shards `<split>-NNNNN.h5` (schema_version {SCHEMA_VERSION}), listed with their sha256 in `manifest.json`:",
    "`/images` and `/masks` uint8 `[N, H, W]` (masks 0/255, one chunk per image), and one 1-D",
    "dataset per metadata field under `/meta` (`sample_id`, `source_id`, `kind` original | transfer |",
    "negative, `mix`, `noise_id`, `patch`, `k`, `flip`, `target_index`, `center_y`, `center_x`,",
    "`n_targets`, ...; -1 or NaN where a field does not apply). Root attributes name the dataset,",
    "version, split and producer.",
    "",
    "## Loading",
    "",
    "```python",
    "from torch.utils.data import DataLoader",
    "from sirst5k.loader import ShardDataset",
    "",
    'train = ShardDataset("path/to/dataset", split="train", channels=3)  # or the manifest file',
    "image, mask = train[0]  # float32 [3, H, W] in [0, 1], float32 [1, H, W] in {0, 1}",
    "loader = DataLoader(train, batch_size=16, shuffle=True, num_workers=4)",
    "```",
    "",
    "Folders for DNANet, BasicIRSTD, YOLO or COCO tools: `sirst5k export path/to/dataset OUT --layout",
    "dnanet|basicirstd|yolo|coco` (one folder each; for BasicIRSTD the folder's name is the dataset name).",
    "",
]


def _citation(inputs: Mapping[str, Any]) -> list[str]:
    """The method's citation and BibTeX, then the source data's."""
    return [
        "## Citation",
        "",
        "The method:",
        "",
        CITATION,
        "",
        "```bibtex",
        BIBTEX,
        "```",
        "",
        "The source data:",
        "",
        *_source_citation(inputs),
        "",
    ]
