"""Is the injected noise the sensor's, at the image's scale? Measured on SIRST-V2 sequences held out of the bank.

    .venv/bin/python benchmarks/noise_realism.py [--plot docs/noise_psd.png] [--held-out S2,S7,TH]

The bank is built (as `sirst5k noise-bank --temporal 2 --model` would with its defaults: the spot
rule, but no scene split, which would leave SIRST-V2 few pairs; with the library functions that stage
calls) from every SIRST-V2 sequence except the held-out ones. The held-out frames (640x512) play the
labelled images: ingested to 256x256 as ingest does (`resize_image`), then transferred in each
mode with the transfer stage's own functions.

Printed (Markdown tables, docs/noise.md quotes them):
1. realism of the sets (`sirst5k.report.realism`): originals, each transfer mode (m as used for
   training), and the bank's frames resampled to the same scale, in their own flat windows
   (variance < 50), against the originals;
2. the goal, one sensor at a time: every sequence of 8+ frames split in alternate pairs (frames 0,
   1 bank, 2, 3 held out, ...: each side keeps consecutive pairs) into bank frames and held-out
   frames (SIRST-V2's sequences are different sensors and gains); the held-out frames are
   ingested to 256 px and get the injected noise alone (m = 1 additive, in float): the mosaic, the
   flat-fit model (format 1) and the temporal-fit model (format 2), all at `--noise-scale source`;
   compared with two references at that scale: the held-out frames' own high-pass noise (frames and
   their kept windows' masks resampled alike, 32-px windows wholly inside) and their temporal noise
   (`(f_t - f_{t+1}) / sqrt 2` of their pairs and the pair's stable mask resampled alike); and the
   temporal model fitted from one-scene pairs only (thumbnails correlating >= 0.9); and the
   temporal model with its noise-level function drawn at the held-out images' own local grey
   level (`--noise-level image`, model format 3); and, as the bound of any stationary Gaussian
   model of one level, a Gaussian field drawn to the own high-pass reference's exact spectrum
   (`spectrum_matched`); and the spectra compared by each bin's median over the windows
   (`realism.median_psd`: the typical window's spectrum, as the level is the median window's);
   and a level-varying field (`gain_spread`, `gain_mixture_fields`: the temporal model's noise
   times a log-normal gain whose spread is measured from the bank's pair differences at the
   native size of one 32-px window at the image's scale; an experiment, not a transfer option,
   docs/noise.md); 2b repeats it on frames whose noise is each
   sequence's flat-fit model alone (over a smooth scene: a level-independent noise, where the
   function should be flat and change nothing);
3. both fits per bank sequence, and what the clean-bank rules do to the banks (`--sections`
   picks sections; 2 and 2b alone skip the pooled bank).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import _common as C
from sirst5k.formats.frames import list_sequences, sequence_shape
from sirst5k.formats.imageio import read_grey, resize_image
from sirst5k.method.noise_bank import (extract_patches, select_windows, window_max, window_min, window_spots,
                                       window_stats)
from sirst5k.params import NoiseBankParams
from sirst5k.formats.frames import scene_runs
from sirst5k.method.noise_model import detrend, fit_sequence, fit_temporal, pair_mask, pair_tiles, synthesize_parts
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
SPOT_SIGMAS, SPOT_FLOOR, SCENE_CORR = NoiseBankParams.spot_sigmas, NoiseBankParams.spot_floor, NoiseBankParams.scene_corr
WINDOW = 32


def load(paths):
    frames = [read_grey(p) for p in paths]
    shape = sequence_shape(f.shape for f in frames)
    return np.stack([f for f in frames if f.shape == shape])


def select(frames, max_peak=0.0, max_dip=0.0, temporal=2, spot_sigmas=SPOT_SIGMAS, spot_floor=SPOT_FLOOR):
    """The bank's windows: by default as `noise-bank --temporal 2` keeps them (the spot rule on)."""
    var, mean = window_stats(frames, WINDOW, WINDOW)
    peak = window_max(frames, WINDOW, WINDOW) - mean if max_peak else None
    dip = mean - window_min(frames, WINDOW, WINDOW) if max_dip else None
    spots = window_spots(frames, WINDOW, WINDOW, spot_sigmas, spot_floor) if spot_sigmas else None
    return select_windows(var, mean, temporal=temporal, peak=peak, max_peak=max_peak, dip=dip, max_dip=max_dip,
                          spots=spots)


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
        imgs, boxes = own_windows(frames, kept, scale)
        parts.append(R.summarize(imgs, boxes=boxes, sigma=False))
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
    ap.add_argument("--tile", type=int, default=NoiseBankParams().tile, help="the temporal fit's tile (px)")
    ap.add_argument("--sections", default="1,2,2b,3", help="which sections to run (1 and 3 build the pooled bank)")
    args = ap.parse_args()
    sections = {"2b"} if args.only_noise_only else set(args.sections.split(","))
    if not sections & {"1", "3"}:
        C.header(f"noise realism, sections {', '.join(sorted(sections))}")
        seqs = list_sequences(C.data_root() / "sirst-v2-frames")
        for sec, synthetic in (("2", False), ("2b", True)):
            if sec in sections:
                print(f"\n{sec}. the goal on {'noise-only' if synthetic else 'the real'} frames (see the module text)")
                C.table(GOAL_HEADERS, goal_rows(seqs, [], args.seed, synthetic=synthetic, tile=args.tile))
        return
    held = [s for s in args.held_out.split(",") if s]
    C.header(f"noise realism: bank from SIRST-V2 without {', '.join(held)}; those are the images")
    t_start = time.perf_counter()
    sequences = list_sequences(C.data_root() / "sirst-v2-frames")
    bank_seqs, held_seqs, models, patches, names = {}, {}, [], [], []
    t_models, t_names = [], []
    rows_clean = []
    for name, paths in sequences.items():
        frames = load(paths)
        if len(frames) < 2:
            continue
        kept = select(frames)
        raw = select(frames, spot_sigmas=0)
        peaked = select(frames, 20, 20, spot_sigmas=0)
        one_scene = np.concatenate([[False], scene_runs(list(frames), SCENE_CORR)[1] >= SCENE_CORR])
        runs = np.cumsum(~one_scene)  # the scene runs the default split makes
        in_runs = sum(len(select(frames[runs == r])) for r in np.unique(runs) if (runs == r).sum() >= 2)
        rows_clean.append([name, "held out" if name in held else "bank", len(raw), len(peaked), len(kept),
                           f"{1 - len(kept) / max(1, len(raw)):.1%}", int(runs[-1]), in_runs])
        if not len(kept):
            continue
        (held_seqs if name in held else bank_seqs)[name] = (frames, kept)
        if name in held:
            continue
        p = extract_patches(frames, kept, WINDOW, WINDOW, 2)
        models.append(fit_sequence(p, frames))
        names.append(name)
        tm = fit_temporal(frames, kept, 2, WINDOW)
        if tm is not None:
            t_models.append(tm)
            t_names.append(name)
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
        ("additive/model temporal source m=1", "additive", "model", "source", 1.0),
        ("additive/mosaic source m=0.5", "additive", "mosaic", "source", 0.5),
    ]
    groups = {"original": R.summarize(originals)}
    injected = {}
    for label, mode, field, sc, mix in modes:
        use = t_models if "temporal" in label else models
        draws = draw_transfer_params(args.seed, ids, len(bank), (SIZE, SIZE), WINDOW, field,
                                     source_sizes=orig_hw if sc == "source" else None, n_models=len(use))
        out = transfer_images(originals, bank, draws, [mix], mode, models=use)
        groups[label] = R.summarize(out)
        if mode == "additive":
            field_img = _field(bank, draws, use, len(originals))
            noise = (mix * (field_img - field_img.mean(axis=(1, 2), keepdims=True))).astype(np.float64)
            injected[label] = (R.summarize(noise, boxes=flat, sigma=False), noise, draws)
        C.progress(f"{label}: done; {time.perf_counter() - t_start:.0f} s")
    # the bank's frames at the images' scale, in their own flat windows (as the originals are measured)
    resampled = [R.summarize(np.stack(R.resample_frames(frames, scale))) for frames, _ in bank_seqs.values()]
    groups["bank frames at image scale"] = pool(resampled)
    stats = R.realism_stats(groups, reference="original", sensor="bank frames at image scale")
    print("\n1. the sets, each in its own flat windows (variance < 50), against the originals and the bank frames")
    C.table(R.TABLE_HEADERS, R.realism_table(stats))

    if "2" not in sections:
        _section3(names, models, t_names, t_models, rows_clean, stats, args, t_start)
        return
    print("\n2. the goal, one sensor at a time: each sequence's frames split alternately into bank frames and "
          "held-out frames (one recording: one sensor, one setting); the held-out frames ingested to 256 px; the "
          "injected noise (m = 1 additive, float) against the held-out frames' own noise at that scale")
    C.table(GOAL_HEADERS, goal_rows(sequences, held, args.seed, tile=args.tile))
    print("\n2b. the same, on frames whose noise is each sequence's fitted model alone over a smooth scene (no "
          "texture in the flat windows): what the scaling does where the bank holds noise only")
    C.table(GOAL_HEADERS, goal_rows(sequences, held, args.seed, synthetic=True, tile=args.tile))
    _section3(names, models, t_names, t_models, rows_clean, stats, args, t_start)


def _section3(names, models, t_names, t_models, rows_clean, stats, args, t_start):
    print("\n3. the fitted models of each bank sequence (native pitch): the flat fit (format 1), the temporal fit "
          "(format 2, every consecutive pair), and the clean-bank rule")
    C.table(["sequence", "windows", "sigma", "temporal", "fixed", "row stripes", "column stripes", "hot/dead px"],
            [[n, m.n_windows, m.sigma, m.sigma_temporal, m.sigma_fixed, m.sigma_row, m.sigma_col, len(m.defects)]
             for n, m in zip(names, models)])
    C.table(["sequence", "tiles", "tile px", "sigma", "temporal", "fixed stripes", "row stripes", "column stripes",
             "hot/dead px"],
            [[n, m.n_windows, m.fit_window, m.sigma, m.sigma_temporal, m.sigma_fixed, m.sigma_row, m.sigma_col,
              len(m.defects)] for n, m in zip(t_names, t_models)])
    tot = ["total", ""] + [sum(r[k] for r in rows_clean) for k in (2, 3, 4)] + [""] + \
        [sum(r[k] for r in rows_clean) for k in (6, 7)]
    tot[5] = f"{1 - tot[4] / max(1, tot[2]):.1%}"
    C.table(["sequence", "role", "windows (paper rule, --temporal 2)", "--max-peak 20 --max-dip 20",
             f"spot rule {SPOT_SIGMAS:g} sigma / {SPOT_FLOOR:g} (default)", "spot rule rejects", "scene runs at "
             f"{SCENE_CORR:g} (default)", "windows in those runs"], rows_clean + [tot])
    R.psd_plot(stats, args.plot, "noise PSD of flat windows at 256 px: held-out images, transfers, bank frames")
    print(f"\n   PSD plot -> {args.plot}; {time.perf_counter() - t_start:.0f} s in all")


GOAL_HEADERS = ("sequence", "scale", "own hp (windows)", "own temporal (windows)", "mosaic / own hp", "|log10 PSD|",
                "flat model / own hp", "|log10 PSD|", "temporal model / own hp", "|log10 PSD|",
                "temporal model / own temporal", "|log10 PSD|", "NLF model / own hp", "|log10 PSD|",
                "NLF model / own temporal", "|log10 PSD|", "temporal model, own windows / own hp", "|log10 PSD|",
                "NLF model, own windows / own hp", "|log10 PSD|", "one-scene pairs", "one-scene model / own temporal",
                "|log10 PSD|", "Gaussian field of own hp's spectrum / own hp", "|log10 PSD|",
                "temporal model, median PSD: |log10 PSD|", "gain box (native px), sigma", "gain mixture / own hp",
                "|log10 PSD|", "median PSD: |log10 PSD|")


def spectrum_matched(own, n: int = 8, size: int = SIZE, seed: int = 1, rounds: int = 4):
    """The summary of a stationary Gaussian field drawn to the reference's own ring spectrum (the
    32-px windows' radially averaged PSD): what the best stationary, Gaussian, one-level model
    (random phase, the reference's spectrum) gives against the goal. The field's spectrum is put
    on the 256 grid by ring and corrected ring by ring `rounds` times (same white draws each time)
    until it measures as the reference's."""
    k = np.fft.fftfreq(size) * size
    ring = np.hypot(k[:, None], k[None, :]) / size * WINDOW  # ring index on the 32-px windows' grid
    rings = np.arange(1, len(own.psd) + 1)
    spec = np.interp(ring, rings, own.psd)
    spec[0, 0] = 0.0
    for _ in range(rounds):
        rng = np.random.default_rng(seed)
        field = np.stack([np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size))) * np.sqrt(spec)).real
                          for _ in range(n)])
        got = R.summarize(field, boxes=R.all_boxes(field.shape), sigma=False)
        spec = spec * np.interp(ring, rings, own.psd / got.psd)
    return got


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


def own_windows(frames, kept, scale):
    """The own high-pass reference's images and windows (as `own_noise` measures them): the frames
    resampled to `scale` in float and the 32-px boxes wholly inside their kept regions."""
    size = (round(frames.shape[1] * scale[0]), round(frames.shape[2] * scale[1]))
    imgs = np.stack([resample_like_ingest(f.astype(np.float32), size) for f in frames])
    masks = np.stack([resample_like_ingest(m, size) for m in kept_masks(frames.shape, kept)])
    return imgs, R.inside_boxes(masks)


def _log_box_std(tiles: np.ndarray, box: int) -> np.ndarray:
    n, s, _ = tiles.shape
    k = s // box
    boxes = tiles[:, :k * box, :k * box].reshape(n, k, box, k, box).transpose(0, 1, 3, 2, 4).reshape(-1, box, box)
    sd = detrend(boxes).reshape(len(boxes), -1).std(axis=1)
    return np.log(sd[sd > 0])  # a saturated box (both frames 0 or 255) holds no noise


def _robust_var(x: np.ndarray) -> float:
    return float((1.4826 * np.median(np.abs(x - np.median(x)))) ** 2)


def gain_spread(frames, kept, pairs, model, scale, tile, window: int = WINDOW):
    """A level-varying model's one parameter, measured (not a product option: docs/noise.md): the
    spread of the noise level from place to place and pair to pair, at the native size `box` of
    one 32-px window at the image's `scale` (the nearest power of 2, at least the bank's window,
    at most half the fit's tile): sigma = sqrt(robust var of log box std of the pairs' differences
    (the temporal fit's tiles) - the same of a stationary field of the model's spectrum), 0 if
    negative. (box, sigma)."""
    if model is None:
        return window, 0.0
    a, b, _ = pair_tiles(frames, kept, 2, window, pairs=pairs, tile=tile)
    size = a.shape[-1]
    native = window / min(scale)
    box = int(2 ** np.clip(np.round(np.log2(native)), np.log2(window), max(np.log2(window), np.log2(size) - 1)))
    null = np.stack([synthesize_parts(model, (size, size), 100 + i)[0] for i in range(16)])
    excess = _robust_var(_log_box_std((a - b) / np.sqrt(2), box)) - _robust_var(_log_box_std(null, box))
    return box, float(np.sqrt(max(0.0, excess)))


def gain_mixture_fields(model, draws, source, box, sigma):
    """The temporal model's fields with their 2-D noise times a log-normal gain `exp(sigma z - sigma^2)`
    (`z` unit Gaussian, white on a `box`-px grid, bicubic in between; `E[gain^2] = 1`, so the mean
    spectrum is kept and only where the noise is varies), drawn at the source size `source` with
    each sample's own synthesis seed, resized as ingest resizes: float64 `[N, 256, 256]`, zero mean."""
    from PIL import Image

    h, w = source
    out = []
    for seed in draws.seeds:
        e, rows, cols = synthesize_parts(model, (h, w), int(seed))
        gain = 1.0
        if sigma > 0:
            gh, gw = h // box + 2, w // box + 2
            z = np.random.default_rng([int(seed), 1]).standard_normal((gh, gw)).astype(np.float32)
            z = np.asarray(Image.fromarray(z).resize((gw * box, gh * box), Image.Resampling.BICUBIC))[:h, :w]
            gain = np.exp(sigma * z / z.std() - sigma * sigma)
        f = resample_like_ingest((e * gain + rows[:, None] + cols[None, :]).astype(np.float32), (SIZE, SIZE))
        out.append(f.astype(np.float64) - f.mean())
    return np.stack(out)


def own_temporal(frames, kept, pairs, scale):
    """The frames' temporal noise at `scale`: `(f_t - f_{t+1}) / sqrt(2)` of the allowed pairs and the
    pair's stable mask (both frames in a kept window) resampled alike, in the 32-px windows wholly
    inside the mask."""
    t, h, w = frames.shape
    ok = pair_mask(kept, 2, t, (h // WINDOW, w // WINDOW), pairs)
    size = (round(h * scale[0]), round(w * scale[1]))
    diffs, masks = [], []
    for i in np.nonzero(ok.any(axis=(1, 2)))[0]:
        d = (frames[i].astype(np.float32) - frames[i + 1].astype(np.float32)) / np.sqrt(2)
        m = np.zeros((h, w), np.float32)
        m[: ok.shape[1] * WINDOW, : ok.shape[2] * WINDOW] = np.kron(ok[i], np.ones((WINDOW, WINDOW), np.float32))
        diffs.append(resample_like_ingest(d, size))
        masks.append(resample_like_ingest(m, size))
    if not diffs:
        return None
    return R.summarize(np.stack(diffs), boxes=R.inside_boxes(np.stack(masks)), sigma=False)


def goal_rows(sequences, held, seed, synthetic: bool = False, tile: int = NoiseBankParams().tile):
    """Per sequence of 8+ frames: frames in alternate pairs (0, 1 bank; 2, 3 held out; ...), so each
    side keeps pairs of consecutive frames; the bank side's flat and temporal models and mosaic, the
    held-out side's own high-pass and temporal noise as references (see section 2)."""
    rows, cols = [], {k: [] for k in range(4, len(GOAL_HEADERS))}
    for name, paths in sequences.items():
        frames = load(paths)
        if len(frames) < 8:
            continue
        if synthetic:
            frames = noise_only(frames, seed)
        idx = np.arange(len(frames))
        b_idx, h_idx = idx[(idx // 2) % 2 == 0], idx[(idx // 2) % 2 == 1]
        bank_frames, held_frames = frames[b_idx], frames[h_idx]
        pairs_b, pairs_h = np.diff(b_idx) == 1, np.diff(h_idx) == 1
        kept_b, kept_h = select(bank_frames), select(held_frames)
        if len(kept_b) < 8 or len(kept_h) < 8:
            continue
        p = extract_patches(bank_frames, kept_b, WINDOW, WINDOW, 2)
        bank = p.reshape(-1, WINDOW, WINDOW)
        flat_model = fit_sequence(p, bank_frames)
        # with its noise-level function: the flat draws ignore it (the same field as without)
        temporal_model = fit_temporal(bank_frames, kept_b, 2, WINDOW, pairs=pairs_b, tile=tile, nlf=True)
        one_scene = pairs_b & (scene_runs(list(bank_frames), 0.9)[1] >= 0.9)
        scene_model = (fit_temporal(bank_frames, kept_b, 2, WINDOW, pairs=one_scene, tile=tile)
                       if one_scene.any() else None)
        h, w = held_frames.shape[1:]
        scale = (SIZE / h, SIZE / w)
        own_images, own_window_boxes = own_windows(held_frames, kept_h, scale)  # resampled once
        own = R.summarize(own_images, boxes=own_window_boxes, sigma=False)
        own_t = own_temporal(held_frames, kept_h, pairs_h, scale)
        if own.n_windows < 10:
            continue
        images = np.stack([resize_image(f, SIZE) for f in held_frames])
        ids = [f"{name}-{i}" for i in range(len(images))]
        orig = np.tile([h, w], (len(images), 1))
        flat = R.flat_boxes(images)
        # the reference's own windows (the held-out frames' stable regions at 256 px): a field whose
        # level follows the image's brightness must be measured where the reference is, not only in
        # the images' flat boxes (brighter regions too), to be compared like for like
        masks = kept_masks(held_frames.shape, kept_h)
        own_boxes = R.inside_boxes(np.stack([resample_like_ingest(m, (SIZE, SIZE)) for m in masks]))
        got, fields = {}, {}
        for key, field, models in (("mosaic", "mosaic", [flat_model]), ("flat", "model", [flat_model]),
                                   ("temporal", "model", [temporal_model]), ("nlf", "model", [temporal_model]),
                                   ("scene", "model", [scene_model])):
            if models[0] is None:
                continue
            d = draw_transfer_params(seed, ids, len(bank), (SIZE, SIZE), WINDOW, field, source_sizes=orig, n_models=1)
            f = _field(bank, d, models, len(images), images if key == "nlf" else None).astype(np.float64)
            f -= f.mean(axis=(1, 2), keepdims=True)
            fields[key] = f
            if key == "temporal":
                d_model = d
            got[key] = R.summarize(f, boxes=flat, sigma=False)
            if key in ("temporal", "nlf"):
                got[key + "@own"] = R.summarize(f, boxes=own_boxes, sigma=False)
        ratio = lambda k, ref: (got[k].highpass_median / ref.highpass_median  # noqa: E731
                                if k in got and ref is not None and ref.n_windows else float("nan"))
        dist = lambda k, ref: (R.log_psd_distance(got[k].psd, ref.psd)  # noqa: E731
                               if k in got and ref is not None and ref.n_windows else float("nan"))
        row = [name, f"{h}x{w} -> {SIZE}", f"{own.highpass_median:.3f} ({own.n_windows})",
               "-" if own_t is None else f"{own_t.highpass_median:.3f} ({own_t.n_windows})",
               ratio("mosaic", own), dist("mosaic", own), ratio("flat", own), dist("flat", own),
               ratio("temporal", own), dist("temporal", own), ratio("temporal", own_t), dist("temporal", own_t),
               ratio("nlf", own), dist("nlf", own), ratio("nlf", own_t), dist("nlf", own_t),
               ratio("temporal@own", own), dist("temporal@own", own), ratio("nlf@own", own), dist("nlf@own", own),
               int(one_scene.sum()), ratio("scene", own_t), dist("scene", own_t)]
        got["matched"] = spectrum_matched(own)
        row += [ratio("matched", own), dist("matched", own)]
        # the median PSD (each bin's median over the windows): the typical window's spectrum
        own_med = R.median_psd(own_images, own_window_boxes)
        box, sig = WINDOW, float("nan")
        if "temporal" in fields:
            row.append(R.log_psd_distance(R.median_psd(fields["temporal"], flat), own_med))
            box, sig = gain_spread(bank_frames, kept_b, pairs_b, temporal_model, scale, tile)
            g = gain_mixture_fields(temporal_model, d_model, (h, w), box, sig)
            got["gain"] = R.summarize(g, boxes=flat, sigma=False)
            row += [f"{box}, {sig:.2f}", ratio("gain", own), dist("gain", own),
                    R.log_psd_distance(R.median_psd(g, flat), own_med)]
        else:
            row += [float("nan"), "-", float("nan"), float("nan"), float("nan")]
        rows.append(row)
        for k in cols:
            if isinstance(row[k], float) and np.isfinite(row[k]):
                cols[k].append(row[k])
        m = temporal_model
        nlf = (f"NLF {len(m.nlf_level)} bins, levels {m.nlf_level[0]:.0f}-{m.nlf_level[-1]:.0f}, sigma "
               f"{m.nlf_sigma.min():.2f}-{m.nlf_sigma.max():.2f} (temporal {m.sigma_temporal:.2f}); held-out "
               f"images' median grey {np.median(images):.0f}" if m is not None and len(m.nlf_level) else "no NLF")
        C.progress(f"goal: {name}: {nlf}; gain box {box} native px, sigma {sig:.2f}")
    rows.append(["median", "", "", ""] + [float(np.median(cols[k])) if cols[k] else float("nan")
                                          for k in range(4, len(GOAL_HEADERS))])
    return rows


def _field(bank, draws, models, n, levels=None):
    """The float field each sample's transfer fuses (what `transfer_images` builds inside); levels:
    the images whose grey level sets the model field's noise level (`--noise-level image`)."""
    import torch

    from sirst5k.method.transfer import mosaic_field, resize_field

    if draws.field == "resize":
        return resize_field(torch.from_numpy(bank[draws.rows]).float(), (SIZE, SIZE)).numpy()
    if draws.field == "model":
        return model_fields(models, draws.rows, draws.seeds, draws.build_size, (SIZE, SIZE), levels)
    if draws.build_size is not None:
        return source_mosaic_fields(bank, draws.rows, draws.build_size, (SIZE, SIZE))
    return mosaic_field(torch.from_numpy(bank[draws.rows.reshape(n, -1)]).float(), (SIZE, SIZE)).numpy()


if __name__ == "__main__":
    main()
