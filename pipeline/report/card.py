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
        + _realism(stats.get("realism"))
        + _difficulty(stats.get("difficulty"))
        + _sizes(stats.get("sizes"))
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
        + "histograms in `target_sizes.csv`, `targets_per_image.csv` and `image_sizes.csv`; numbers in `stats.json`.",
        "",
    ]


def _num(value: Any, digits: int = 3) -> str:
    """A figure for a table cell: `digits` significant digits, "n/a" for None (not measured)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}g}"


def _realism(realism: Mapping[str, Any] | None) -> list[str]:
    """The "Noise realism" section (`report.realism`): a row per group, its two ratios against the
    originals and the bank, the PSD picture. Nothing when the stats have no groups."""
    if not isinstance(realism, Mapping) or not isinstance(realism.get("groups"), Mapping) or not realism["groups"]:
        return []
    sampling = realism.get("sampling") or {}
    out = ["## Noise realism", "",
           f"Noise in flat windows: the {realism.get('window', 32)}-px grid boxes whose variance is below "
           f"{_num(sampling.get('max_var', 50))} (where an image shows noise, not scene), of at most "
           f"{sampling.get('images_per_group_and_shard', '?')} images and {sampling.get('windows_per_group_and_shard', '?')} "
           "windows per group and shard, spread evenly. High-pass std: the median over windows of the std of the "
           "image minus its 5x5 median; estimate_sigma: skimage's wavelet noise estimate, median over images; "
           "hp ratio: a group's high-pass std over the other's (1 = the same level); |log10 PSD ratio|: the mean "
           "over the 16 rings of the radially averaged power spectra (0 = the same spectrum, 0.1 = 26 % apart). "
           "All in `stats.json` (`realism`, with the PSD and the row/column profile spectra of each group).", ""]
    bank = realism.get("bank")
    if isinstance(bank, Mapping):
        if bank.get("used"):
            scale = bank.get("scale") or [1, 1]
            out += [f"The group `bank` is the noise bank `{bank.get('path')}` (version `{bank.get('version')}`), "
                    f"{bank.get('measured') or 'measured'}; scale {_num(scale[0], 4)} x {_num(scale[1], 4)} "
                    "(the originals' median image size over size as read).", ""]
        else:
            out += [f"The noise bank `{bank.get('path')}` the dataset was made with is not measured: "
                    f"{bank.get('note') or 'not found'}.", ""]
    else:
        out += ["No noise bank is named in the dataset's provenance: the groups are not compared with the sensor's "
                "frames.", ""]
    out += ["| group | samples | images measured | flat windows | high-pass std | estimate_sigma | hp / originals | "
            "\\|log10 PSD ratio\\| vs originals | hp / bank | \\|log10 PSD ratio\\| vs bank |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, g in realism["groups"].items():
        if not isinstance(g, Mapping):
            continue
        ref, sen = g.get("vs_reference") or {}, g.get("vs_sensor") or {}
        out.append(f"| {name} | {_num(g['samples']) if 'samples' in g else ''} | {_num(g.get('images'))} | {_num(g.get('windows'))} | "
                   f"{_num(g.get('highpass_std'))} | {_num(g.get('estimate_sigma'))} | "
                   f"{_num(ref.get('highpass_ratio')) if ref else ''} | {_num(ref.get('log_psd_ratio')) if ref else ''} | "
                   f"{_num(sen.get('highpass_ratio')) if sen else ''} | {_num(sen.get('log_psd_ratio')) if sen else ''} |")
    return out + ["", "![radially averaged noise PSD per group](psd.png)", "",
                  "The curves: `psd.png`, and `realism.csv` (log10 PSD per group and frequency, for `dvc plots`).", ""]


def _difficulty_rows(difficulty: Any) -> list[tuple[str, str, str, str, Mapping]]:
    """(split, kind, counted, measure, {bin: count}) from stats' "difficulty": split -> kind ->
    {measure: {bin: count}} or -> {"samples" | "targets": {measure: {bin: count}}}, optionally
    under "splits"; entries of another shape are left out."""
    if not isinstance(difficulty, Mapping):
        return []
    splits = difficulty.get("splits") if isinstance(difficulty.get("splits"), Mapping) else difficulty
    rows = []
    for split, kinds in splits.items():
        if not isinstance(kinds, Mapping) or split in ("definition", "total"):
            continue
        for kind, entry in kinds.items():
            if not isinstance(entry, Mapping):
                continue
            nested = {c: v for c, v in entry.items() if isinstance(v, Mapping)
                      and all(isinstance(b, Mapping) for b in v.values()) and v}
            groups = nested.items() if nested else [("", entry)]
            for counted, measures in groups:
                for measure, bins in measures.items():
                    if isinstance(bins, Mapping) and bins and all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                                                  for c in bins.values()):
                        rows.append((str(split), str(kind), str(counted), str(measure), bins))
    return rows


def _difficulty(difficulty: Any) -> list[str]:
    """The "Difficulty" section: per measure (size, SCR) a table of counts per bin, a row per split,
    kind and what is counted (samples, targets). Nothing when the stats have none in a known shape."""
    rows = _difficulty_rows(difficulty)
    if not rows:
        return []
    definition = difficulty.get("definition") if isinstance(difficulty.get("definition"), Mapping) else {}
    out = ["## Difficulty", "",
           "Counts per bin of target size and signal-to-clutter ratio (SCR), per split and kind "
           "(`stats.json`: `difficulty`)" + (f"; `none`: {definition['none']}" if isinstance(definition.get("none"), str)
                                             else "") + ".", ""]
    for measure in dict.fromkeys(r[3] for r in rows):
        of = [r for r in rows if r[3] == measure]
        bins = list(dict.fromkeys(b for r in of for b in r[4]))
        base = measure[:-4] if measure.endswith("_bin") else measure
        meaning = definition.get(f"{base}_bins") if isinstance(definition.get(f"{base}_bins"), Mapping) else {}
        heads = [f"{b} ({meaning[b]})" if isinstance(meaning.get(b), str) else str(b) for b in bins]
        counted = any(r[2] for r in of)
        out += [f"{base.upper() if len(base) <= 3 else base.capitalize()}:", "",
                "| split | kind | " + ("counted | " if counted else "") + " | ".join(heads) + " |",
                "| --- | --- | " + ("--- | " if counted else "") + " | ".join("---:" for _ in bins) + " |"]
        for split, kind, what, _, counts in of:
            out.append(f"| {split} | {kind} | " + (f"{what} | " if counted else "")
                       + " | ".join(_num(counts.get(b, 0)) for b in bins) + " |")
        out.append("")
    return out


def _sizes(sizes: Any) -> list[str]:
    """The "Image sizes" section: samples per image size (H x W), a row per size, a column per
    split and kind. Nothing when the stats have none in a known shape."""
    if not isinstance(sizes, Mapping) or not isinstance(sizes.get("total"), Mapping) or not sizes["total"]:
        return []
    splits = sizes.get("splits") if isinstance(sizes.get("splits"), Mapping) else {}
    cols = [(str(split), str(kind), counts) for split, kinds in splits.items() if isinstance(kinds, Mapping)
            for kind, counts in kinds.items() if isinstance(counts, Mapping)]
    total = sizes["total"]
    n = len(total)
    out = ["## Image sizes", "",
           (f"All {sum(int(c) for c in total.values())} images are {next(iter(total)).replace('x', ' x ')} (height x width)."
            if n == 1 else
            f"{n} image sizes (height x width; every shard holds one size, `stats.json`: `sizes`, "
            "`image_sizes.csv`): samples per size, split and kind."), ""]
    if n == 1:
        return out
    out += ["| size | all | " + " | ".join(f"{sp} {k}" for sp, k, _ in cols) + " |",
            "| --- | ---: | " + " | ".join("---:" for _ in cols) + " |"]
    for size, count in total.items():
        out.append(f"| {str(size).replace('x', ' x ')} | {int(count)} | "
                   + " | ".join(str(int(c.get(size, 0))) for _, _, c in cols) + " |")
    return out + [""]


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
