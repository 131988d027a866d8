"""Built-in synthetic infrared source, so the whole pipeline runs offline without data.

Labelled images look like single-frame IRST data (NUDT-SIRST-like): a smooth sky with clouds,
in some images a ground band with texture, buildings and a tree line, 1-4 dim small targets
(1-9 px, roughly Gaussian, not touching, none within 1 px of the border; about 1.45 per
image), and sensor noise: a fixed pattern (column and row stripes, per-pixel gain and offset)
plus fresh temporal Gaussian noise (in a labelled image, seen once, the per-pixel terms are one
Gaussian draw: `expose_once`). Sequences are one static-ish scene that drifts by whole
pixels, with the same fixed pattern in every frame and temporal noise of constant statistics,
so flat sky windows pass the noise-bank test and the clutter does not.

Everything is a pure function of `(seed, index)`: parameters are drawn first from
`rng.generator(seed, "synth", key)` (`sample_params`, `sequence_params`), then rendered from
generators keyed by the same sample (`render_sample`, `render_sequence`), so a sample can be
replayed from its parameters and does not depend on what else was generated.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from sirst5k.method.rng import generator

STAGE = "synth"

# Target-count distribution: 1..4 with mean 1.45 (NUDT-SIRST: 917 targets in 663 train images).
TARGET_COUNTS = np.array([1, 2, 3, 4])
TARGET_COUNT_P = np.array([0.72, 0.16, 0.07, 0.05])
MAX_TARGET_SIZE = 9
# Target extents 1..9 px: small ones commoner, as in NUDT-SIRST.
_SIZE_P = np.array([4, 6, 8, 8, 7, 6, 5, 4, 3], dtype=float)
_SIZE_P /= _SIZE_P.sum()
# Pixels a sequence's view may drift along each axis; the scene is rendered this much larger.
DRIFT_PAD = 16
MIN_SIZE = 16


@dataclass(frozen=True)
class Target:
    """One target: its box's top-left corner, its extent in pixels and its peak contrast."""

    y0: int
    x0: int
    height: int
    width: int
    contrast: float


@dataclass(frozen=True)
class Building:
    """A rectangle standing on the ground: columns `[x0, x1)`, `height` px above the horizon."""

    x0: int
    x1: int
    height: int
    level: float


@dataclass(frozen=True)
class SceneParams:
    """The drawn parameters of one scene and its sensor (no pixel arrays)."""

    height: int
    width: int
    sky_level: float
    sky_gradient: float  # grey levels from top to bottom of the image
    cloud_amp: float  # signed: IR clouds can be warmer or colder than clear sky
    cloud_threshold: float  # fractal level below which the sky is clear
    ground: bool
    horizon: int  # mean horizon row (canvas coordinates); rows below are ground
    hill_amp: float
    ground_level: float  # relative to the sky level
    texture_amp: float
    tree_height: float
    tree_level: float
    buildings: tuple[Building, ...]
    column_sigma: float
    row_sigma: float
    gain_sigma: float
    offset_sigma: float
    noise_sigma: float


@dataclass(frozen=True)
class SampleParams:
    """A labelled image: its scene and its targets."""

    seed: int
    index: int
    scene: SceneParams
    targets: tuple[Target, ...]

    @property
    def key(self) -> str:
        return f"sample/{self.index}"


@dataclass(frozen=True)
class SequenceParams:
    """A frame sequence: its scene (rendered `DRIFT_PAD` larger), per-frame drift and level drift."""

    seed: int
    seq_index: int
    n_frames: int
    height: int
    width: int
    scene: SceneParams
    drift_y: float  # px per frame, the view stops at the canvas edge
    drift_x: float
    level_drift: float  # grey levels per frame, bounded by `max_level_drift`
    max_level_drift: float

    @property
    def key(self) -> str:
        return f"sequence/{self.seq_index}"


def image_id(index: int) -> str:
    """The id of the `index`-th image (0-based): "000001", "000002", ..."""
    return f"{index + 1:06d}"


def split_ids(n_images: int = 1327, seed: int = 0) -> tuple[list[str], list[str]]:
    """A seeded 50/50 train/test split of `n_images` ids: `n_images // 2` train, the rest test.

    The default 1,327 gives NUDT-SIRST's 663 / 664. Each list is sorted.
    """
    if n_images < 0:
        raise ValueError(f"n_images must be >= 0, got {n_images}")
    order = generator(seed, STAGE, "split").permutation(n_images)
    n_train = n_images // 2
    train = sorted(image_id(int(i)) for i in order[:n_train])
    test = sorted(image_id(int(i)) for i in order[n_train:])
    return train, test


# ---------------------------------------------------------------------------------------------
# parameters


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, (int, np.integer)) else size
    h, w = int(h), int(w)
    if h < MIN_SIZE or w < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} px each way, got {h}x{w}")
    return h, w


def _scene_params(
    rng: np.random.Generator, h: int, w: int, *, p_ground: float, clouds: tuple[float, float]
) -> SceneParams:
    ground = bool(rng.random() < p_ground)
    horizon = int(round(h * rng.uniform(0.55, 0.85)))
    buildings: list[Building] = []
    if ground:
        for _ in range(int(rng.integers(0, 5))):
            bw = int(rng.integers(max(3, w // 40), max(4, w // 6)))
            x0 = int(rng.integers(0, max(1, w - bw)))
            bh = int(rng.integers(max(2, h // 40), max(3, h // 6)))
            buildings.append(Building(x0, x0 + bw, bh, float(rng.uniform(10, 90))))
    sky_level = float(rng.uniform(40, 140))
    sign = float(rng.choice([-1.0, 1.0]))
    # Thresholded clouds reach ~3.5 sigma; keep them off the 0 and 255 rails.
    headroom = (sky_level - 10.0 if sign < 0 else 245.0 - sky_level) / 3.5
    return SceneParams(
        height=h,
        width=w,
        sky_level=sky_level,
        sky_gradient=float(rng.uniform(-30, 30)),
        cloud_amp=sign * min(float(rng.uniform(*clouds)), headroom),
        cloud_threshold=float(rng.uniform(-0.5, 1.0)),
        ground=ground,
        horizon=horizon,
        hill_amp=float(rng.uniform(0, h / 40)),
        ground_level=float(rng.uniform(15, 70)),
        texture_amp=float(rng.uniform(10, 25)),
        tree_height=float(rng.uniform(0, h / 16)),
        tree_level=float(rng.uniform(10, 60)),
        buildings=tuple(buildings),
        column_sigma=float(rng.uniform(0.3, 1.5)),
        row_sigma=float(rng.uniform(0.1, 0.6)),
        gain_sigma=float(rng.uniform(0.005, 0.02)),
        offset_sigma=float(rng.uniform(0.2, 0.8)),
        noise_sigma=float(rng.uniform(1.0, 3.0)),
    )


def _draw_targets(rng: np.random.Generator, h: int, w: int) -> tuple[Target, ...]:
    n_wanted = int(rng.choice(TARGET_COUNTS, p=TARGET_COUNT_P))
    targets: list[Target] = []
    for _ in range(n_wanted):
        # Small targets are commoner; the width stays near the height (mostly round blobs).
        size = int(rng.choice(np.arange(1, MAX_TARGET_SIZE + 1), p=_SIZE_P))
        th = size
        tw = int(np.clip(size + rng.integers(-2, 3), 1, MAX_TARGET_SIZE))
        contrast = float(rng.uniform(6, 20) if rng.random() < 0.3 else rng.uniform(20, 110))
        for _attempt in range(50):
            # Keep every target pixel at least 1 px from the border.
            y0 = int(rng.integers(1, h - th))
            x0 = int(rng.integers(1, w - tw))
            cand = Target(y0, x0, th, tw, contrast)
            if all(_apart(cand, other) for other in targets):
                targets.append(cand)
                break
    return tuple(targets)


def _apart(a: Target, b: Target, gap: int = 2) -> bool:
    """Boxes at least `gap` px apart, so masks never touch, even diagonally."""
    return (
        a.y0 >= b.y0 + b.height + gap
        or b.y0 >= a.y0 + a.height + gap
        or a.x0 >= b.x0 + b.width + gap
        or b.x0 >= a.x0 + a.width + gap
    )


def sample_params(seed: int, index: int, size: int | tuple[int, int] = 256) -> SampleParams:
    """Draw the parameters of labelled image `index`."""
    h, w = _size_hw(size)
    rng = generator(seed, STAGE, f"sample/{index}")
    scene = _scene_params(rng, h, w, p_ground=0.45, clouds=(5, 60))
    return SampleParams(seed=seed, index=index, scene=scene, targets=_draw_targets(rng, h, w))


def sequence_params(seed: int, seq_index: int, n_frames: int, size: int | tuple[int, int] = 256) -> SequenceParams:
    """Draw the parameters of sequence `seq_index`; calmer clouds than the labelled images."""
    h, w = _size_hw(size)
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    rng = generator(seed, STAGE, f"sequence/{seq_index}")
    scene = _scene_params(rng, h + 2 * DRIFT_PAD, w + 2 * DRIFT_PAD, p_ground=0.8, clouds=(3, 30))
    return SequenceParams(
        seed=seed,
        seq_index=seq_index,
        n_frames=n_frames,
        height=h,
        width=w,
        scene=scene,
        drift_y=float(rng.uniform(-0.3, 0.3)),
        drift_x=float(rng.uniform(-0.5, 0.5)),
        level_drift=float(rng.uniform(-0.2, 0.2)),
        max_level_drift=float(rng.uniform(0, 4)),
    )


# ---------------------------------------------------------------------------------------------
# rendering


@lru_cache(maxsize=64)
def _basis(length: int, scale: int) -> np.ndarray:
    """`[length, n]` Gaussian bumps `scale` px apart, rows normalised to unit energy.

    `B @ z` with `z` standard normal is a smooth curve of unit variance at every point, with
    no wrap-around (unlike FFT filtering).
    """
    n = int(np.ceil(length / scale)) + 3
    centres = (np.arange(n) - 1.5) * scale
    b = np.exp(-0.5 * ((np.arange(length)[:, None] - centres[None, :]) / scale) ** 2)
    b /= np.sqrt((b**2).sum(axis=1, keepdims=True))
    b.setflags(write=False)
    return b


@lru_cache(maxsize=32)
def _spectrum(h: int, w: int, scales: tuple[int, ...], persistence: float) -> tuple[np.ndarray, int, np.ndarray]:
    """The rfft2 amplitude of a fractal field, cut to the band where it is not negligible.

    Octave `s` is white noise blurred by a Gaussian of sigma `s` px, weighted `persistence**i`;
    octaves add in power. Returns `(rows, n_cols, amp)`: the rfft2 rows (frequency order) and
    the first `n_cols` columns that carry power, and `amp` `[len(rows), n_cols]` over them.
    Smooth clouds need only a few low frequencies, so drawing just those is far cheaper than
    filtering a full white-noise image.
    """
    fy = np.fft.fftfreq(h)
    fx = np.fft.rfftfreq(w)
    power = np.zeros((h, fx.size))
    total = 0.0
    for i, s in enumerate(scales):
        k = 4.0 * np.pi**2 * s * s
        weight = persistence ** (2 * i)
        # Each octave at unit variance: its mean power over the full 2-D spectrum is 1.
        norm = h * w / (np.exp(-k * fy**2).sum() * np.exp(-k * np.fft.fftfreq(w) ** 2).sum())
        power += weight * norm * np.exp(-k * fy**2)[:, None] * np.exp(-k * fx**2)[None, :]
        total += weight
    amp = np.sqrt(power / total)
    keep = amp > 1e-4 * amp.max()
    rows = np.flatnonzero(keep.any(axis=1))
    n_cols = int(np.flatnonzero(keep.any(axis=0)).max()) + 1
    band = amp[rows, :n_cols]
    band.setflags(write=False)
    rows.setflags(write=False)
    return rows, n_cols, band


def _fractal(
    rng: np.random.Generator, h: int, w: int, scales: tuple[int, ...], persistence: float = 0.55
) -> np.ndarray:
    """A smooth random field, float64 `[h, w]`, with zero mean and unit variance over the image.

    Drawn directly in the frequency domain (random complex coefficients shaped by `_spectrum`,
    one inverse FFT; pocketfft is single-threaded, so a busy machine does not stall it as
    multithreaded BLAS products did). Periodic across the image edges. Normalised per image
    because the coarsest octaves put most of their variance into the image's mean, which
    would otherwise leave clouds nearly flat within an image.
    """
    rows, n_cols, amp = _spectrum(h, w, scales, persistence)
    draw = rng.standard_normal((2, len(rows), n_cols))
    spec = np.zeros((h, w // 2 + 1), dtype=np.complex128)
    spec[rows, :n_cols] = amp * (draw[0] + 1j * draw[1])
    field = np.fft.irfft2(spec, s=(h, w))
    field -= field.mean()
    field /= max(float(field.std()), 1e-12)
    return field


def _profile(rng: np.random.Generator, w: int, scale: int) -> np.ndarray:
    """A smooth 1-D unit-variance curve of length `w`."""
    b = _basis(w, scale)
    return b @ rng.standard_normal(b.shape[1])


def skyline(p: SceneParams, seed: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Per column of the canvas: `(horizon, clutter_top)`, float64 `[p.width]` rows.

    Rows at or below `horizon` are ground; rows at or below `clutter_top` hold ground, trees
    or buildings. Without ground both are `p.height` (no clutter).
    """
    w = p.width
    if not p.ground:
        flat = np.full(w, float(p.height))
        return flat, flat
    horizon, trees_top = _curves(p, seed, key)
    top = trees_top.copy()
    for b in p.buildings:
        top[b.x0 : b.x1] = np.minimum(top[b.x0 : b.x1], _building_top(b, horizon))
    return horizon, top


def _curves(p: SceneParams, seed: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    """The horizon (hills) and the tree line above it, `[p.width]` rows each."""
    rng = generator(seed, STAGE, f"{key}/skyline")
    horizon = p.horizon + p.hill_amp * _profile(rng, p.width, 48)
    trees_top = horizon - p.tree_height * np.maximum(_profile(rng, p.width, 6) + 0.5, 0.0)
    return horizon, trees_top


def _building_top(b: Building, horizon: np.ndarray) -> int:
    return int(np.floor(horizon[b.x0 : b.x1].min())) - b.height


def render_scene(p: SceneParams, seed: int, key: str) -> np.ndarray:
    """The noise-free radiance of a scene, float64 `[p.height, p.width]` in grey levels.

    Each component draws from its own generator (`{key}/clouds`, `{key}/skyline`,
    `{key}/texture`), so e.g. `skyline` replays the horizon without rendering the rest.
    """
    h, w = p.height, p.width
    rows = np.arange(h)[:, None]
    sky = p.sky_level + p.sky_gradient * (rows / max(1, h - 1) - 0.5)
    fractal = _fractal(generator(seed, STAGE, f"{key}/clouds"), h, w, (128, 64, 32, 16))
    img = sky + p.cloud_amp * np.maximum(fractal - p.cloud_threshold, 0.0)
    if not p.ground:
        return img

    horizon, trees_top = _curves(p, seed, key)
    # Fine scales dominate so a 32-px ground window holds most of the texture's variance
    # (clutter must fail the noise-bank test); the coarse term varies the terrain.
    tex_rng = generator(seed, STAGE, f"{key}/texture")
    texture = p.texture_amp * _fractal(tex_rng, h, w, (8, 4, 2, 1), persistence=1.0)
    terrain = 0.5 * p.texture_amp * _fractal(tex_rng, h, w, (32,))
    tree_mask = (rows >= trees_top[None, :]) & (rows < horizon[None, :])
    img = np.where(tree_mask, p.sky_level + p.tree_level + 0.6 * texture, img)
    for b in p.buildings:
        top = _building_top(b, horizon)
        r = slice(max(top, 0), h)
        # Shading and a faint texture keep facades from being flat noise windows.
        img[r, b.x0 : b.x1] = p.sky_level + b.level + 0.15 * (rows[r] - top) + 0.5 * texture[r, b.x0 : b.x1]
    # Ground is warmer towards the viewer (bottom rows).
    near = (rows - p.horizon) / max(1, h - p.horizon)
    ground = p.sky_level + p.ground_level + 15.0 * near + terrain + texture
    return np.where(rows >= horizon[None, :], ground, img)


def render_targets(targets: tuple[Target, ...], h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Target radiance (float64 `[h, w]`, added to the scene) and mask (bool `[h, w]`).

    Each target is the ellipse inscribed in its box, so its mask spans exactly `height` x
    `width`; the signal falls off as a Gaussian from the peak to ~0.2 x contrast at the rim.
    """
    signal = np.zeros((h, w))
    mask = np.zeros((h, w), dtype=bool)
    for t in targets:
        ys = (np.arange(t.height) - (t.height - 1) / 2) / (t.height / 2)
        xs = (np.arange(t.width) - (t.width - 1) / 2) / (t.width / 2)
        r2 = ys[:, None] ** 2 + xs[None, :] ** 2
        inside = r2 <= 1.0
        sl = (slice(t.y0, t.y0 + t.height), slice(t.x0, t.x0 + t.width))
        signal[sl] += np.where(inside, t.contrast * np.exp(-1.6 * r2), 0.0)
        mask[sl] |= inside
    return signal, mask


def fixed_pattern(p: SceneParams, rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The sensor's fixed pattern: per-pixel gain and offset (column and row stripes included)."""
    gain = 1.0 + p.gain_sigma * rng.standard_normal((h, w))
    offset = (
        p.column_sigma * rng.standard_normal((1, w))
        + p.row_sigma * rng.standard_normal((h, 1))
        + p.offset_sigma * rng.standard_normal((h, w))
    )
    return gain, offset


def _expose(
    radiance: np.ndarray, gain: np.ndarray, offset: np.ndarray, sigma: float, rng: np.random.Generator
) -> np.ndarray:
    raw = radiance * gain + offset + sigma * rng.standard_normal(radiance.shape)
    return np.clip(np.rint(raw), 0, 255).astype(np.uint8)


def expose_once(radiance: np.ndarray, p: SceneParams, rng: np.random.Generator) -> np.ndarray:
    """One exposure by a sensor seen once, uint8 `[H, W]`: `fixed_pattern` + `_expose` in distribution.

    In a single frame the pattern's per-pixel gain (`radiance x gain_sigma`) and offset and the
    temporal noise are three independent Gaussians per pixel, so their sum is one Gaussian of the
    summed variance: one draw of H x W normals instead of three (they were most of synth's
    rendering time). The stripes stay drawn apart (one value a column, one a row). A sequence
    needs the three apart: its frames share the pattern (`render_sequence`).
    """
    h, w = radiance.shape
    sd = np.sqrt((p.gain_sigma * radiance) ** 2 + (p.offset_sigma**2 + p.noise_sigma**2))
    stripes = p.column_sigma * rng.standard_normal((1, w)) + p.row_sigma * rng.standard_normal((h, 1))
    raw = radiance + stripes + sd * rng.standard_normal((h, w), dtype=np.float32)
    return np.clip(np.rint(raw), 0, 255).astype(np.uint8)


def render_sample(p: SampleParams) -> tuple[np.ndarray, np.ndarray]:
    """Render a labelled sample: `(image uint8 [H, W], mask uint8 [H, W] in {0, 255})`."""
    s, seed, key = p.scene, p.seed, p.key
    scene = render_scene(s, seed, key)
    signal, mask = render_targets(p.targets, s.height, s.width)
    image = expose_once(scene + signal, s, generator(seed, STAGE, f"{key}/noise"))
    return image, mask.astype(np.uint8) * 255


def make_labelled_sample(seed: int, index: int, size: int | tuple[int, int] = 256) -> tuple[np.ndarray, np.ndarray]:
    """Labelled image `index` (0-based; id `image_id(index)`): `(image, mask)`, uint8 `[H, W]`."""
    return render_sample(sample_params(seed, index, size))


def frame_offsets(p: SequenceParams) -> np.ndarray:
    """`[T, 2]` int top-left corner of each frame's view inside the rendered canvas."""
    t = np.arange(p.n_frames)
    dy = np.clip(np.rint(p.drift_y * t), -DRIFT_PAD, DRIFT_PAD)
    dx = np.clip(np.rint(p.drift_x * t), -DRIFT_PAD, DRIFT_PAD)
    return np.stack([DRIFT_PAD + dy, DRIFT_PAD + dx], axis=1).astype(np.int64)


def frame_skyline(p: SequenceParams) -> tuple[np.ndarray, np.ndarray]:
    """`skyline` in each frame's own rows: `(horizon, clutter_top)`, float64 `[T, W]`."""
    horizon, top = skyline(p.scene, p.seed, p.key)
    offsets = frame_offsets(p)
    cols = offsets[:, 1:2] + np.arange(p.width)  # [T, W]
    return horizon[cols] - offsets[:, :1], top[cols] - offsets[:, :1]


def render_sequence(p: SequenceParams) -> np.ndarray:
    """Render a sequence: uint8 `[T, H, W]`.

    The view drifts over the scene, the sensor's fixed pattern stays with the sensor (same in
    every frame), and each frame's temporal noise is drawn from its own key, so frame `t` does
    not depend on how many frames follow.
    """
    seed, key = p.seed, p.key
    canvas = render_scene(p.scene, seed, key)
    gain, offset = fixed_pattern(p.scene, generator(seed, STAGE, f"{key}/pattern"), p.height, p.width)
    frames = np.empty((p.n_frames, p.height, p.width), dtype=np.uint8)
    for t, (oy, ox) in enumerate(frame_offsets(p)):
        level = np.clip(p.level_drift * t, -p.max_level_drift, p.max_level_drift)
        view = canvas[oy : oy + p.height, ox : ox + p.width] + level
        frames[t] = _expose(view, gain, offset, p.scene.noise_sigma, generator(seed, STAGE, f"{key}/frame/{t}"))
    return frames


def make_sequence(seed: int, seq_index: int, n_frames: int, size: int | tuple[int, int] = 256) -> np.ndarray:
    """Frame sequence `seq_index`: uint8 `[n_frames, H, W]` (`size` = side or `(H, W)`)."""
    return render_sequence(sequence_params(seed, seq_index, n_frames, size))
