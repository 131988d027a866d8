"""Bright spots in a noise bank: how many windows `--max-peak` would reject, and what they look like.

    .venv/bin/python benchmarks/bank_peaks.py [BANK] [--out docs/bank_peaks.png]

BANK defaults to a bank built from the real SIRST-V2 frames (--temporal 2, cached under the
bench dir). Prints, per threshold, the rows and windows whose brightest pixel rises that many
grey levels above the patch mean, and saves a sheet of the 24 patches with the highest peaks
(each stretched to its own min..max, the peak's value under it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import _common as C
from sirst5k.formats.bank import read_patches, read_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bank", nargs="?", type=Path)
    ap.add_argument("--out", type=Path, default=C.REPO / "docs" / "bank_peaks.png")
    args = ap.parse_args()
    bank = args.bank or C.noise_bank()
    patches, rows = read_patches(bank), read_rows(bank)
    entry, sequence = rows["entry"], rows["sequence"]
    # each row's window mean as the noise-bank stage computed it: the statistic --max-peak uses
    peak = patches.max(axis=(1, 2)) - rows["mean"]
    n_windows = np.unique(entry).size
    C.header(f"peaks in {bank} ({len(patches):,} rows, {n_windows:,} windows)")
    rows = []
    for threshold in (10, 15, 20, 30, 50):
        hit = peak >= threshold
        rejected = np.unique(entry[hit]).size
        rows.append([threshold, int(hit.sum()), rejected, f"{rejected / n_windows:.1%}"])
    C.table(["--max-peak", "rows at or above", "windows rejected", "share of windows"], rows)
    print(f"   peak quantiles (grey levels above the patch mean): 50% {np.quantile(peak, .5):.1f}, "
          f"90% {np.quantile(peak, .9):.1f}, 99% {np.quantile(peak, .99):.1f}, 99.9% {np.quantile(peak, .999):.1f}")
    _sheet(patches, peak, sequence, args.out)
    print(f"   sheet of the 24 highest peaks -> {args.out}")


def _sheet(patches: np.ndarray, peak: np.ndarray, sequence: np.ndarray, out: Path) -> None:
    from PIL import Image, ImageDraw

    order = np.argsort(-peak, kind="stable")
    seen: set[bytes] = set()
    picks = []
    for i in order:  # one of each identical patch (sequences share frames)
        key = patches[i].tobytes()
        if key not in seen:
            seen.add(key)
            picks.append(i)
        if len(picks) == 24:
            break
    scale, pad, label = 4, 6, 14
    w = patches.shape[-1] * scale
    cols = 8
    sheet = Image.new("L", (cols * (w + pad) + pad, 3 * (w + pad + label) + pad), 255)
    draw = ImageDraw.Draw(sheet)
    for n, i in enumerate(picks):
        p = patches[i].astype(np.float32)
        stretched = (p - p.min()) / max(float(np.ptp(p)), 1.0) * 255
        tile = Image.fromarray(stretched.astype(np.uint8)).resize((w, w), Image.NEAREST)
        x, y = pad + (n % cols) * (w + pad), pad + (n // cols) * (w + pad + label)
        sheet.paste(tile, (x, y))
        draw.text((x, y + w + 1), f"{sequence[i]} +{peak[i]:.0f}", fill=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


if __name__ == "__main__":
    main()
