"""How the near-duplicate rule of `sirst5k.method.duplicates` behaves on real infrared images.

Needs SIRST5K_DATA (../shared/data): SIRST v1 (427 labelled images) and the SIRST-V2 background
frames. Prints, for the dHash alone and for the full rule: train/test pairs of SIRST v1 flagged,
pairs among the frames flagged, and the share of SIRST v1 images found again after alterations a
sequence makes (noise, shift, AGC, blend, rescale). ~30 s on one core.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from sirst5k.formats.frames import list_sequences
from sirst5k.formats.imageio import read_grey, resize_image
from sirst5k.formats.layouts import list_labelled, load_sample
from sirst5k.method import duplicates as D


def altered(x: np.ndarray, kind: str, rng) -> np.ndarray:
    x = x.astype(np.float64)
    if kind == "noise sigma 3":
        x = x + rng.normal(0, 3, x.shape)
    elif kind == "shift 2 px":
        x = np.roll(x, (2, 2), axis=(1, 2))
    elif kind == "AGC x1.15 +12":
        x = (x - x.mean()) * 1.15 + x.mean() + 12
    elif kind == "rescale 160 px":
        x = np.stack([resize_image(resize_image(i.astype(np.uint8), 160), 256) for i in x]).astype(np.float64)
    elif kind == "blend m=0.1":
        x = 0.9 * x + 0.1 * (100 + rng.normal(0, 2, x.shape))
    elif kind == "shift 1 px + noise 2":
        x = np.roll(x, 1, axis=2) + rng.normal(0, 2, x.shape)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def near(a: np.ndarray, b: np.ndarray, full: bool) -> np.ndarray:
    """[N, M] bool: the rule (or the dHash alone) between image sets a and b."""
    ham = D.hamming(D.dhash(a), D.dhash(b)) <= D.NEAR_HAMMING
    if not full:
        return ham
    corr, ratio = D.thumb_similarity(D.thumbnails(a), D.thumbnails(b))
    return ham & (corr >= D.NEAR_CORRELATION) & (ratio <= D.NEAR_CONTRAST)


def main() -> None:
    data = Path(os.environ.get("SIRST5K_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (data / "sirst").is_dir():
        sys.exit(f"no SIRST data under {data} (set SIRST5K_DATA)")
    labelled = list_labelled(data / "sirst", "sirst")
    images = np.stack([load_sample(r, 256).image for r in labelled.samples])
    split = np.array([r.split for r in labelled.samples])
    ids = np.array([r.id for r in labelled.samples])
    frames = np.stack([resize_image(read_grey(p), 256) for seq in list_sequences(data / "sirst-v2-frames").values()
                       for p in seq])
    rng = np.random.default_rng(0)
    kinds = ("noise sigma 3", "shift 2 px", "AGC x1.15 +12", "blend m=0.1", "rescale 160 px", "shift 1 px + noise 2")
    copies = {k: altered(images, k, rng) for k in kinds}
    print(f"rule: {D.RULE}")
    for full in (False, True):
        name = "full rule" if full else "dHash alone"
        cross = near(images[split == "test"], images[split == "train"], full)
        pairs = np.triu(near(frames, frames, full), 1)
        found = {k: float(np.diag(near(images, c, full)).mean()) for k, c in copies.items()}
        print(f"\n{name}: SIRST v1 train/test pairs flagged {int(cross.sum())} "
              f"({int(cross.any(axis=1).sum())} of {int((split == 'test').sum())} test images); "
              f"SIRST-V2 frame pairs flagged {int(pairs.sum())} of {len(frames) * (len(frames) - 1) // 2}")
        for k, v in found.items():
            print(f"  found again after {k:22s} {100 * v:5.1f} %")
        if full:
            te, tr = ids[split == "test"], ids[split == "train"]
            print("  SIRST v1 pairs:", ", ".join(f"{te[i]} ~ {tr[j]}" for i, j in zip(*np.nonzero(cross))))


if __name__ == "__main__":
    main()
