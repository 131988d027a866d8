"""Is the injected noise the sensor's, at the image's scale? Measured on SIRST-V2 sequences held out of the bank.

    .venv/bin/python benchmarks/noise_realism.py [--plot docs/noise_psd.png] [--held-out S2,S7,TH]

The bank is built (as `sirst5k noise-bank --temporal 2 --max-peak 20 --max-dip 20 --model`
would, with the library functions that stage calls) from every SIRST-V2 sequence except the held-
out ones. The held-out frames (640x512) play the labelled images: ingested to 256x256 as ingest
does (`resize_image`), then transferred in each mode with the transfer stage's own functions.

Printed (Markdown tables, docs/noise.md quotes them):
1. realism of the sets (`sirst5k.report.realism`): originals, each transfer mode (m as used for
   training), and the bank's frames resampled to the same scale, in their own flat windows
   (variance < 50), against the originals;
2. the goal, one sensor at a time: every sequence of 8+ frames split alternately into bank frames
   and held-out frames (SIRST-V2's sequences are different sensors and gains, 0.07 to 4.9 grey
   levels of native high-pass noise, so a bank of some sequences says nothing about another's
   level); the held-out frames are ingested to 256 px and get the injected noise alone (m = 1
   additive, in float), compared with the held-out frames' own noise at that scale: the frames and
   their kept (flat and stable at native scale) windows resampled alike, measured in the 32-px
   windows wholly inside them; and, in single tiles (each kept window's footprint at the image's
   scale, one pixel in from its edge, no seams), the same level both ways; 2b repeats it on
   frames whose noise is each sequence's fitted model alone (over a smooth scene), where a flat
   window holds nothing but noise;
3. the model's fit per bank sequence, and what `--max-peak 20 --max-dip 20` does to the banks.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import _common as C
from sirst5k.formats.frames import list_sequences, sequence_shape
from sirst5k.formats.imageio import read_grey, resize_image
from sirst5k.method.noise_bank import extract_patches, select_windows, window_max, window_min, window_stats
from sirst5k.method.noise_model import fit_sequence
from sirst5k.method.transfer import (
    additive,
    draw_transfer_params,
    model_fields,
    resample_like_ingest,
    source_mosaic_fields,
    transfer_images,
)
from sirst5k.report import realism as R

SIZE = 256
WINDOW = 32


def load(paths):
    frames = [read_grey(p) for p in paths]
    shape = sequence_shape(f.shape for f in frames)
    return np.stack([f for f in frames if f.shape == shape])


def select(frames, max_peak=20.0, max_dip=20.0, temporal=2):
    var, mean = window_stats(frames, WINDOW, WINDOW)
    peak = window_max(frames, WINDOW, WINDOW) - mean if max_peak else None
    dip = mean - window_min(frames, WINDOW, WINDOW) if max_dip else None
    return select_windows(var, mean, temporal=temporal, peak=peak, max_peak=max_peak, dip=dip, max_dip=max_dip)


def kept_masks(shape, kept, length=2):
    """Per frame, where a kept window (flat and stable at native scale) lies: float [T, H, W]."""
    masks = np.zeros(shape, np.float32)
    for t0, gy, gx in kept:
        masks[t0:t0 + length, gy * WINDOW:(gy + 1) * WINDOW, gx * WINDOW:(gx + 1) * WINDOW] = 1
    return masks


def own_noise(seqs: dict, scale, floor=None):
    """The frames' own noise at `scale`: frames and kept-window masks resampled alike, 32-px windows
    wholly inside the kept regions; also the footprint interiors of the kept windows."""
    parts, foot = [], []
    for frames, kept in seqs.values():
        masks = kept_masks(frames.shape, kept)
        size = (round(frames.shape[1] * scale[0]), round(frames.shape[2] * scale[1]))
        imgs = np.stack([resample_like_ingest(f.astype(np.float32), size) for f in frames])
        ms = np.stack([resample_like_ingest(m, size) for m in masks])
        parts.append(R.summarize(imgs, boxes=R.inside_boxes(ms), sigma=False))
        foot += footprint_hp(imgs, [[(gy * WINDOW, gx * WINDOW) for t0, gy, gx in kept if t0 <= t < t0 + 2]
                                    for t in range(len(frames))], scale)
    return pool(parts), np.array(foot)


def footprint_hp(images, boxes_per_image, scale):
    hp = R.highpass(images)
    out = []
    for h, boxes in zip(hp, boxes_per_image):
        for y, x in boxes:
            y0, y1 = int(np.ceil(y * scale[0])) + 1, int(np.floor((y + WINDOW) * scale[0])) - 1
            x0, x1 = int(np.ceil(x * scale[1])) + 1, int(np.floor((x + WINDOW) * scale[1])) - 1
            if y1 - y0 >= 4 and x1 - x0 >= 4:
                out.append(h[y0:y1, x0:x1].std())
    return out


def pool(parts):
    return R.merge(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plot", type=Path, default=C.REPO / "docs" / "noise_psd.png")
    ap.add_argument("--held-out", default="S2,S7,TH")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only-noise-only", action="store_true", help="section 2b alone")
    args = ap.parse_args()
    if args.only_noise_only:
        C.header("noise realism, section 2b alone")
        C.table(GOAL_HEADERS, goal_rows(list_sequences(C.data_root() / "sirst-v2-frames"), [], args.seed, True))
        return
    held = [s for s in args.held_out.split(",") if s]
    C.header(f"noise realism: bank from SIRST-V2 without {', '.join(held)}; those are the images")
    t_start = time.perf_counter()
    sequences = list_sequences(C.data_root() / "sirst-v2-frames")
    bank_seqs, held_seqs, models, patches, names = {}, {}, [], [], []
    rows_clean = []
    for name, paths in sequences.items():
        frames = load(paths)
        if len(frames) < 2:
            continue
        kept = select(frames)
        raw = select(frames, 0, 0)
        rows_clean.append([name, "held out" if name in held else "bank", len(raw), len(kept),
                           f"{1 - len(kept) / max(1, len(raw)):.1%}"])
        if not len(kept):
            continue
        (held_seqs if name in held else bank_seqs)[name] = (frames, kept)
        if name in held:
            continue
        p = extract_patches(frames, kept, WINDOW, WINDOW, 2)
        models.append(fit_sequence(p, frames))
        names.append(name)
        patches.append(p.reshape(-1, WINDOW, WINDOW))
    bank = np.concatenate(patches)
    C.progress(f"bank: {len(bank):,} rows from {len(names)} sequences; {time.perf_counter() - t_start:.0f} s")

    # the held-out frames as labelled images: ingested to 256 px
    originals = np.concatenate([np.stack([resize_image(f, SIZE) for f in frames]) for frames, _ in held_seqs.values()])
    orig_hw = np.concatenate([np.tile(frames.shape[1:], (len(frames), 1)) for frames, _ in held_seqs.values()])
    ids = [f"h{i:04d}" for i in range(len(originals))]
    scale = (SIZE / orig_hw[0, 0], SIZE / orig_hw[0, 1])
    flat = R.flat_boxes(originals)

    modes = [  # (label, mode, field, scale, mix)
        ("blend/resize m=0.1 (paper)", "blend", "resize", "bank", 0.1),
        ("additive/resize m=1", "additive", "resize", "bank", 1.0),
        ("additive/mosaic bank m=1", "additive", "mosaic", "bank", 1.0),
        ("additive/mosaic source m=1", "additive", "mosaic", "source", 1.0),
        ("additive/model source m=1", "additive", "model", "source", 1.0),
        ("additive/mosaic source m=0.5", "additive", "mosaic", "source", 0.5),
    ]
    groups = {"original": R.summarize(originals)}
    injected = {}
    for label, mode, field, sc, mix in modes:
        draws = draw_transfer_params(args.seed, ids, len(bank), (SIZE, SIZE), WINDOW, field,
                                     source_sizes=orig_hw if sc == "source" else None, n_models=len(models))
        out = transfer_images(originals, bank, draws, [mix], mode, models=models)
        groups[label] = R.summarize(out)
        if mode == "additive":
            field_img = _field(bank, draws, models, len(originals))
            noise = (mix * (field_img - field_img.mean(axis=(1, 2), keepdims=True))).astype(np.float64)
            injected[label] = (R.summarize(noise, boxes=flat, sigma=False), noise, draws)
        C.progress(f"{label}: done; {time.perf_counter() - t_start:.0f} s")
    # the bank's frames at the images' scale, in their own flat windows (as the originals are measured)
    resampled = [R.summarize(np.stack(R.resample_frames(frames, scale))) for frames, _ in bank_seqs.values()]
    groups["bank frames at image scale"] = pool(resampled)
    stats = R.realism_stats(groups, reference="original", sensor="bank frames at image scale")
    print("\n1. the sets, each in its own flat windows (variance < 50), against the originals and the bank frames")
    C.table(R.TABLE_HEADERS, R.realism_table(stats))

    print("\n2. the goal, one sensor at a time: each sequence's frames split alternately into bank frames and "
          "held-out frames (one recording: one sensor, one setting); the held-out frames ingested to 256 px; the "
          "injected noise (m = 1 additive, float) against the held-out frames' own noise at that scale")
    C.table(GOAL_HEADERS, goal_rows(sequences, held, args.seed))
    print("\n2b. the same, on frames whose noise is each sequence's fitted model alone over a smooth scene (no "
          "texture in the flat windows): what the scaling does where the bank holds noise only")
    C.table(GOAL_HEADERS, goal_rows(sequences, held, args.seed, synthetic=True))
    print("\n3. the fitted model of each bank sequence (native pitch) and the clean-bank rule")
    C.table(["sequence", "windows", "sigma", "temporal", "fixed", "row stripes", "column stripes", "hot/dead px"],
            [[n, m.n_windows, m.sigma, m.sigma_temporal, m.sigma_fixed, m.sigma_row, m.sigma_col, len(m.defects)]
             for n, m in zip(names, models)])
    C.table(["sequence", "role", "windows (paper rule, --temporal 2)", "with --max-peak 20 --max-dip 20", "rejected"],
            rows_clean)
    R.psd_plot(stats, args.plot, "noise PSD of flat windows at 256 px: held-out images, transfers, bank frames")
    print(f"\n   PSD plot -> {args.plot}; {time.perf_counter() - t_start:.0f} s in all")


GOAL_HEADERS = ("sequence", "scale", "own hp (windows)", "mosaic source / own", "|log10 PSD|", "model source / own",
                "|log10 PSD|", "mosaic bank / own", "|log10 PSD|", "tile interiors: mosaic source / own")


def noise_only(frames: np.ndarray, seed: int) -> np.ndarray:
    """Frames of the same size whose noise is the sequence's fitted model alone (no scene texture),
    over a smooth scene (each frame's 1/128 box-average, bilinear back up: no structure a 32-px
    window's plane would not take out): uint8."""
    from PIL import Image

    from sirst5k.method.noise_model import synthesize

    kept = select(frames)
    model = fit_sequence(extract_patches(frames, kept, WINDOW, WINDOW, 2))
    h, w = frames.shape[1:]
    out = []
    for i, f in enumerate(frames):
        small = Image.fromarray(f.astype(np.float32)).resize((max(2, w // 128), max(2, h // 128)), Image.Resampling.BOX)
        smooth = np.asarray(small.resize((w, h), Image.Resampling.BILINEAR), np.float64)
        out.append(np.clip(np.rint(smooth + synthesize(model, (h, w), seed + i)), 0, 255).astype(np.uint8))
    return np.stack(out)


def goal_rows(sequences, held, seed, synthetic: bool = False):
    """Per sequence: bank from its even frames, the odd ones held out (see section 2)."""
    rows, ratios = [], {"mosaic": [], "model": [], "bank": [], "foot": [], "psd_mosaic": [], "psd_model": []}
    for name, paths in sequences.items():
        frames = load(paths)
        if len(frames) < 8:
            continue
        if synthetic:
            frames = noise_only(frames, seed)
        bank_frames, held_frames = frames[0::2], frames[1::2]
        kept_b, kept_h = select(bank_frames), select(held_frames)
        if len(kept_b) < 8 or len(kept_h) < 8:
            continue
        p = extract_patches(bank_frames, kept_b, WINDOW, WINDOW, 2)
        bank = p.reshape(-1, WINDOW, WINDOW)
        models = [fit_sequence(p, bank_frames)]
        h, w = held_frames.shape[1:]
        scale = (SIZE / h, SIZE / w)
        own, foot = own_noise({name: (held_frames, kept_h)}, scale)
        if own.n_windows < 10:
            continue
        images = np.stack([resize_image(f, SIZE) for f in held_frames])
        ids = [f"{name}-{i}" for i in range(len(images))]
        orig = np.tile([h, w], (len(images), 1))
        flat = R.flat_boxes(images)
        got = {}
        for key, field, src in (("mosaic", "mosaic", orig), ("model", "model", orig), ("bank", "mosaic", None)):
            d = draw_transfer_params(seed, ids, len(bank), (SIZE, SIZE), WINDOW, field, source_sizes=src, n_models=1)
            f = _field(bank, d, models, len(images)).astype(np.float64)
            noise = f - f.mean(axis=(1, 2), keepdims=True)
            got[key] = R.summarize(noise, boxes=flat, sigma=False)
            if key == "mosaic":
                tiles = [(y, x) for y in range(0, h - WINDOW + 1, WINDOW) for x in range(0, w - WINDOW + 1, WINDOW)]
                tile_hp = np.median(footprint_hp(noise, [tiles] * len(noise), scale))
        r = {k: got[k].highpass_median / own.highpass_median for k in got}
        psd = {k: R.log_psd_distance(got[k].psd, own.psd) for k in got}
        rows.append([name, f"{h}x{w} -> {SIZE}", f"{own.highpass_median:.3f} ({own.n_windows})", r["mosaic"],
                     psd["mosaic"], r["model"], psd["model"], r["bank"], psd["bank"], tile_hp / np.median(foot)])
        for k in ("mosaic", "model", "bank"):
            ratios[k].append(r[k])
        if np.isfinite(tile_hp / np.median(foot)):
            ratios["foot"].append(tile_hp / np.median(foot))
        ratios["psd_mosaic"].append(psd["mosaic"])
        ratios["psd_model"].append(psd["model"])
        C.progress(f"goal: {name}")
    med = lambda k: float(np.median(ratios[k]))  # noqa: E731
    rows.append(["median", "", "", med("mosaic"), med("psd_mosaic"), med("model"), med("psd_model"), med("bank"), "",
                 med("foot")])
    return rows


def _field(bank, draws, models, n):
    """The float field each sample's transfer fuses (what `transfer_images` builds inside)."""
    import torch

    from sirst5k.method.transfer import mosaic_field, resize_field

    if draws.field == "resize":
        return resize_field(torch.from_numpy(bank[draws.rows]).float(), (SIZE, SIZE)).numpy()
    if draws.field == "model":
        return model_fields(models, draws.rows, draws.seeds, draws.build_size, (SIZE, SIZE))
    if draws.build_size is not None:
        return source_mosaic_fields(bank, draws.rows, draws.build_size, (SIZE, SIZE))
    return mosaic_field(torch.from_numpy(bank[draws.rows.reshape(n, -1)]).float(), (SIZE, SIZE)).numpy()


if __name__ == "__main__":
    main()
