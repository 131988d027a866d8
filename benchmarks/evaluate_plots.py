"""Draw an evaluation's curves as one PNG (PIL only): test mIoU per checkpoint, and Pd against Fa.

    .venv/bin/python benchmarks/evaluate_plots.py EVAL_OUT [--out docs/evaluation_curves.png]

EVAL_OUT is a `sirst5k evaluate --out` folder; the curves are its checkpoints.csv and pdfa.csv
(means over seeds, per arm).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]
W, H, PAD, LEGEND = 520, 440, 56, 64


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def panel(title: str, series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str,
          logx: bool = False) -> Image.Image:
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    fx = (lambda v: math.log10(max(v, 1e-9))) if logx else (lambda v: v)
    pts = [(fx(x), y) for s in series.values() for x, y in s]
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    sx = lambda v: PAD + (fx(v) - x0) / (x1 - x0) * (W - 2 * PAD)  # noqa: E731
    sy = lambda v: H - LEGEND - PAD - (v - y0) / (y1 - y0) * (H - LEGEND - 2 * PAD)  # noqa: E731
    d.rectangle([PAD, PAD, W - PAD, H - LEGEND - PAD], outline=(0, 0, 0))
    d.text((PAD, 10), title, fill=(0, 0, 0))
    d.text((W // 2 - 40, H - LEGEND - PAD + 20), xlabel, fill=(0, 0, 0))
    d.text((4, PAD - 16), ylabel, fill=(0, 0, 0))
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        d.text((4, sy(yv) - 6), f"{yv:.3g}", fill=(80, 80, 80))
        xv = x0 + (x1 - x0) * i / 4
        label = f"1e{xv:.1f}" if logx else f"{xv:.0f}"
        d.text((PAD + (W - 2 * PAD) * i / 4 - 12, H - LEGEND - PAD + 4), label, fill=(80, 80, 80))
    for k, (name, s) in enumerate(series.items()):
        c = COLOURS[k % len(COLOURS)]
        s = sorted(s)
        d.line([(sx(x), sy(y)) for x, y in s], fill=c, width=2)
        d.text((PAD + 220 * (k % 2), H - LEGEND + 4 + 14 * (k // 2)), name, fill=c)
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/evaluation_curves.png"))
    args = ap.parse_args()
    ck, pf = _rows(args.folder / "checkpoints.csv"), _rows(args.folder / "pdfa.csv")
    arms = list(dict.fromkeys(r["arm"] for r in ck))
    conv = {a: [(float(r["step"]), 100 * float(r["mIoU"])) for r in ck if r["arm"] == a] for a in arms}
    roc = {a: [(float(r["Fa"]), 100 * float(r["Pd"])) for r in pf if r["arm"] == a and float(r["Fa"]) > 0]
           for a in arms}
    left = panel("test mIoU at each checkpoint (mean over seeds)", conv, "step", "mIoU %")
    right = panel("Pd vs Fa, thresholds 0.05-0.95 (mean over seeds)", roc, "Fa (log)", "Pd %", logx=True)
    out = Image.new("RGB", (2 * W, H), "white")
    out.paste(left, (0, 0))
    out.paste(right, (W, 0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out.save(args.out)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
