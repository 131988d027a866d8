"""Rotated negatives: mirror and rotate a box around a target, in image and mask alike.

A negative takes the `patch` x `patch` box around one target (`--patch N` means an N-pixel
box; the original scripts' variants named 3/5/7/9 cut 2/4/6/8-pixel boxes), mirrors it
left-right when `flip`, rotates it by `k` x 90 degrees counter-clockwise (PIL `rotate(90 * k)`,
= `np.rot90(box, k)`) and pastes it back at the same place. The mask gets the same operation, so
the label stays true.

The one implementation the negatives stage, `sirst5k modes` and the parity tests all call:
  - planning, apart from the pixels: `negative_boxes` places a box, `draw_negative_params` gives
    the negatives of one patch size, `plan_negatives` those of a batch of masks for several patch
    sizes, in the stage's order (sample, patch, target, k). A `NegativeParams` replays any
    negative from its fields alone;
  - the pixels: `transform_boxes` mirrors and rotates boxes; `build_negatives` (a plan, or a slice
    of one, over its source batch) and `apply_negatives` (one box per sample of a batch) share
    `_negate_boxes_`, which gathers the boxes, transforms them and pastes them back in place;
  - label checks: `check_negatives` (a plan) and `label_check` (built masks) both reduce to
    `label_check_boxes`, which needs only the sources' foreground pixels and the boxes.

The pixel work is integer gathers, flips and rotations: on the CPU (`build_negatives`,
`check_negatives` without a CUDA device) it runs in numpy and torch is not imported (1.3-2.5
CPU-s a process); a CUDA device gets the boxes as torch tensors. Both give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from sirst5k.method.devices import on_cpu
from sirst5k.method.targets import batch_target_table, label_points, mask_points
from sirst5k.params import Clamp, choices

if TYPE_CHECKING:
    import torch

CLAMPS = choices(Clamp)  # the choices, written once in sirst5k.params


def _check_patch(patch: int, image_size: tuple[int, int]) -> tuple[int, int, int]:
    height, width = (int(s) for s in image_size)
    patch = int(patch)
    if patch < 1:
        raise ValueError(f"patch must be >= 1 pixel, got {patch}")
    if patch > min(height, width):
        raise ValueError(f"patch {patch} does not fit an image of {height}x{width}")
    return patch, height, width


def negative_boxes(centers, image_size: tuple[int, int], patch: int, clamp: str = "script") -> np.ndarray:
    """Top-left corners [T, 2] int64 (y0, x0) of the `patch`-pixel boxes around `centers`.

    centers: [T, 2] int (y, x). image_size: (H, W). The box is rows y0..y0+patch-1, columns
    x0..x0+patch-1, always inside the image. Per axis, with c the centre and S the image size:
      - "script": the original `rot_patch_32` rule generalised to any P and S:
        x0 = c - P//2 when P <= c <= S - P; 0 when c < P; S - P when c > S - P. Near a border
        the box is pushed flush against it, not just inside (c=230, P=32, S=256 gives 224,
        not 214). Needed to reproduce the reference outputs.
      - "clip": the minimal shift, clip(c - P//2, 0, S - P).
    Raises ValueError when the patch does not fit the image or `clamp` is unknown.
    """
    patch, height, width = _check_patch(patch, image_size)
    c = np.asarray(centers, dtype=np.int64).reshape(-1, 2)
    size = np.array([height, width], np.int64)
    if clamp == "script":
        inside = c - patch // 2
        corner = np.where(c < patch, 0, np.where(c > size - patch, size - patch, inside))
    elif clamp == "clip":
        corner = np.clip(c - patch // 2, 0, size - patch)
    else:
        raise ValueError(f"clamp must be one of {CLAMPS}, got {clamp!r}")
    return corner.astype(np.int64)


@dataclass(frozen=True)
class NegativeParams:
    """Everything needed to replay N negatives; arrays are [N], `center` is [N, 2] (y, x).

    `source` indexes the image (within the batch the params were drawn for) and
    `target_index` the target (label order) each negative is built around; `patch` is each
    negative's box side, (y0, x0) its box's top-left corner, `k` its rotation (0..3) and
    `flip` whether it is mirrored first. All int64, `flip` bool.
    """

    patch: np.ndarray
    source: np.ndarray
    target_index: np.ndarray
    center: np.ndarray
    y0: np.ndarray
    x0: np.ndarray
    k: np.ndarray
    flip: np.ndarray

    def __len__(self) -> int:
        return int(self.k.shape[0])

    def take(self, index) -> NegativeParams:
        """The negatives picked by `index` (a slice, [M] indices or an [N] bool mask), in its order."""
        return NegativeParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: Sequence[NegativeParams]) -> NegativeParams:
        """The negatives of `parts`, one after the other."""
        if not parts:
            return _empty_params()
        return NegativeParams(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                                 for f in fields(NegativeParams)})

    def by_patch(self) -> Iterator[tuple[int, np.ndarray]]:
        """(patch, index [M] of the negatives with that box side), for each patch size, ascending."""
        for p in np.unique(self.patch).tolist():
            yield int(p), np.flatnonzero(self.patch == p)

    def tensors(self, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """The per-sample fields as tensors on `device`, ready for `apply_negatives`."""
        import torch

        return {
            "source": torch.as_tensor(self.source, device=device),
            "y0": torch.as_tensor(self.y0, device=device),
            "x0": torch.as_tensor(self.x0, device=device),
            "k": torch.as_tensor(self.k, device=device),
            "flip": torch.as_tensor(self.flip, device=device),
        }


def _empty_params() -> NegativeParams:
    none = np.zeros(0, np.int64)
    return NegativeParams(patch=none, source=none, target_index=none, center=np.zeros((0, 2), np.int64),
                          y0=none, x0=none, k=none, flip=np.zeros(0, bool))


def draw_negative_params(
    centers: np.ndarray | Sequence[np.ndarray],
    image_size: tuple[int, int],
    patch: int,
    *,
    rotations: Sequence[int] = (0, 1, 2, 3),
    mirror: bool = True,
    clamp: str = "script",
    rng: np.random.Generator | None = None,
    n_per_target: int | None = None,
) -> NegativeParams:
    """Parameters of the negatives of a batch of images, one patch size.

    centers: one [T_i, 2] (y, x) array per image (a single 2-D array = one image).
    By default (the paper) every target gets one negative per rotation in `rotations`, ordered
    image, then target, then rotation, as the original scripts write `<id>_k<k>_j<j>`. With
    `rng` and `n_per_target`, each target instead gets `n_per_target` distinct rotations drawn
    from `rotations`. `flip` is `mirror` for every negative (the 32-pixel script mirrors).
    Raises ValueError when the patch does not fit the image or `clamp` is unknown.
    """
    if isinstance(centers, np.ndarray) and centers.ndim == 2:
        centers = [centers]
    rotations = np.asarray(list(rotations), dtype=np.int64)
    if rotations.size == 0:
        raise ValueError("rotations must not be empty")
    if (rng is None) != (n_per_target is None):
        raise ValueError("give both rng and n_per_target, or neither")
    if n_per_target is not None and not 1 <= n_per_target <= rotations.size:
        raise ValueError(f"n_per_target must be in 1..{rotations.size}, got {n_per_target}")
    centers = [np.asarray(c, dtype=np.int64).reshape(-1, 2) for c in centers]
    counts = np.array([c.shape[0] for c in centers], np.int64)
    all_centers = np.concatenate(centers) if centers else np.zeros((0, 2), np.int64)
    image = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    target = np.arange(counts.sum(), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    if rng is None:  # every rotation of every target
        n_k = np.full(image.size, rotations.size, np.int64)
        ks = np.tile(rotations, image.size)
    else:  # drawn target by target, in order, so a draw replays from the generator alone
        n_k = np.full(image.size, int(n_per_target), np.int64)
        ks = np.concatenate([rng.choice(rotations, size=n_per_target, replace=False) for _ in range(image.size)]
                            + [np.zeros(0, np.int64)]).astype(np.int64)
    cen = np.repeat(all_centers, n_k, axis=0)
    corners = negative_boxes(cen, image_size, patch, clamp)
    return NegativeParams(
        patch=np.full(ks.shape, int(patch), np.int64),
        source=np.repeat(image, n_k),
        target_index=np.repeat(target, n_k),
        center=cen,
        y0=corners[:, 0].copy(),
        x0=corners[:, 1].copy(),
        k=ks % 4,
        flip=np.full(ks.shape, bool(mirror)),
    )


def plan_negatives(
    masks,
    patches: Sequence[int],
    *,
    rotations: Sequence[int] = (0, 1, 2, 3),
    mirror: bool = True,
    clamp: str = "script",
    valid_sizes: np.ndarray | None = None,
) -> NegativeParams:
    """Every negative of a batch of masks [B, H, W] (nonzero = target; numpy or tensor).

    valid_sizes: [B, 2] (h, w) of each image's valid region, the top-left part of a padded image
    (`ingest --keep-aspect`); a box is placed inside that region by the `clamp` rule, as if the
    image were h x w. -1 (or the full size) = the whole image; a region smaller than the box
    leaves the box placed in the whole image. None = every image whole (the bytes as before).

    One negative per target (8-connected components, label order) per patch size in `patches`
    per k in `rotations`, ordered sample, then patch (in the order given), then target, then k:
    the negatives stage's order. `source` indexes `masks`. Empty when the batch has no target,
    or `patches` or `rotations` is empty. Raises ValueError when a patch does not fit the images
    or `clamp` is unknown.
    """
    if hasattr(masks, "detach"):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [B, H, W], got shape {masks.shape}")
    table = batch_target_table(masks)
    patches = [int(p) for p in patches]
    if len(table["image"]) == 0 or not patches or len(rotations) == 0:
        return _empty_params()
    centers = np.split(table["center"], np.cumsum(table["count"])[:-1])
    parts = [draw_negative_params(centers, masks.shape[1:], p, rotations=rotations, mirror=mirror, clamp=clamp)
             for p in patches]
    plan = NegativeParams.concat(parts)
    # stable sort on (sample, patch slot): targets and k keep their order within
    slot = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    plan = plan.take(np.lexsort((slot, plan.source)))
    return plan if valid_sizes is None else clamp_to_valid(plan, valid_sizes, masks.shape[1:], clamp)


def clamp_to_valid(plan: NegativeParams, valid_sizes, image_size: tuple[int, int], clamp: str = "script") -> NegativeParams:
    """`plan` with each box placed inside its image's valid region (see `plan_negatives`):
    valid_sizes [B, 2] (h, w) indexed by `plan.source`, -1 = the whole `image_size`."""
    full = np.asarray(image_size, np.int64).reshape(1, 2)
    valid = np.asarray(valid_sizes, np.int64).reshape(-1, 2)
    valid = np.where(valid > 0, np.minimum(valid, full), full)
    if not len(plan) or (valid == full).all():
        return plan
    size = valid[plan.source]
    fits = (size >= plan.patch[:, None]).all(axis=1) & (size != full).any(axis=1)
    y0, x0 = plan.y0.copy(), plan.x0.copy()
    for (h, w, p) in {tuple(v) for v in np.column_stack([size, plan.patch])[fits].tolist()}:
        sel = fits & (size[:, 0] == h) & (size[:, 1] == w) & (plan.patch == p)
        corners = negative_boxes(plan.center[sel], (h, w), p, clamp)
        y0[sel], x0[sel] = corners[:, 0], corners[:, 1]
    return NegativeParams(patch=plan.patch, source=plan.source, target_index=plan.target_index, center=plan.center,
                          y0=y0, x0=x0, k=plan.k, flip=plan.flip)


def transform_boxes(boxes: torch.Tensor, k, flip) -> torch.Tensor:
    """Mirror (where `flip`) then rotate by `k` x 90 degrees CCW each box of boxes [B, P, P].

    k: [B] int (taken mod 4), flip: [B] bool, on the boxes' device. Returns a new [B, P, P]
    tensor: out[b] = rot90(fliplr(boxes[b]) if flip[b] else boxes[b], k[b]). A numpy array
    `boxes` gives a numpy array (the same values).
    """
    if boxes.ndim != 3 or boxes.shape[1] != boxes.shape[2]:
        raise ValueError(f"boxes must be [B, P, P], got {tuple(boxes.shape)}")
    batch = boxes.shape[0]
    if isinstance(boxes, np.ndarray):
        k = np.asarray(_numpy(k)).astype(np.int64).reshape(-1) % 4
        flip = np.asarray(_numpy(flip)).astype(bool).reshape(-1)
        if k.shape[0] != batch or flip.shape[0] != batch:
            raise ValueError(f"expected {batch} values of k and flip, got {k.shape[0]} and {flip.shape[0]}")
        out = np.empty_like(boxes)
        code = k * 2 + flip
        for c in np.unique(code).tolist():
            sel = np.flatnonzero(code == c)
            group = boxes[sel]
            if c % 2:
                group = group[:, :, ::-1]
            out[sel] = np.rot90(group, c // 2, axes=(1, 2))
        return out
    import torch

    device = boxes.device
    k = torch.as_tensor(k, device=device).to(torch.long).reshape(-1) % 4
    flip = torch.as_tensor(flip, device=device).to(torch.bool).reshape(-1)
    if k.shape[0] != batch or flip.shape[0] != batch:
        raise ValueError(f"expected {batch} values of k and flip, got {k.shape[0]} and {flip.shape[0]}")
    # At most 8 (k, flip) groups: whole-group flips and rotations are plain strided copies,
    # several times cheaper than a per-pixel gather.
    out = torch.empty_like(boxes)
    code = k * 2 + flip.to(torch.long)
    for c in torch.unique(code).tolist():
        sel = (code == c).nonzero().view(-1)
        group = boxes.index_select(0, sel)
        if c % 2:
            group = torch.flip(group, dims=(2,))
        out.index_copy_(0, sel, torch.rot90(group, c // 2, dims=(1, 2)))
    return out


def _box_index(index: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor,
               patch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index tensors (sample, row, column), each [B, P, P], of every pixel of box b: rows
    y0[b]..y0[b]+P-1, columns x0[b]..x0[b]+P-1 of entry index[b]. index, y0, x0: [B] long."""
    if isinstance(y0, np.ndarray):
        idx = np.arange(patch)
        rows = np.broadcast_to(y0.reshape(-1, 1, 1) + idx.reshape(1, -1, 1), (len(y0), patch, patch))
        cols = np.broadcast_to(x0.reshape(-1, 1, 1) + idx.reshape(1, 1, -1), (len(y0), patch, patch))
        return np.broadcast_to(index.reshape(-1, 1, 1), (len(y0), patch, patch)), rows, cols
    import torch

    idx = torch.arange(patch, device=y0.device)
    rows = (y0.view(-1, 1, 1) + idx.view(1, -1, 1)).expand(-1, -1, patch)
    cols = (x0.view(-1, 1, 1) + idx.view(1, 1, -1)).expand(-1, patch, -1)
    bi = index.view(-1, 1, 1).expand(-1, patch, patch)
    return bi, rows, cols


def _negate_boxes_(arrays: Sequence[torch.Tensor], index: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor,
                   patch: int, k, flip, device: torch.device) -> None:
    """In place, in each of `arrays` ([N, H, W], one device): box b of entry index[b] becomes its
    mirrored and rotated self (`transform_boxes`, run on `device`). index, y0, x0: [B] long on the
    arrays' device, boxes inside the image and distinct entries; k, flip: [B]. The pixels of
    every negative the package makes pass here. numpy `arrays` and index, y0, x0 (int64): the
    transform runs in numpy, on the CPU."""
    if len(index) == 0:
        return
    if isinstance(index, np.ndarray):
        for arr in arrays:
            # every box as one [P, P] block of a window view: ~2x faster than per-pixel indices
            view = np.lib.stride_tricks.sliding_window_view(arr, (patch, patch), axis=(1, 2), writeable=True)
            view[index, y0, x0] = transform_boxes(view[index, y0, x0], k, flip)
        return
    bi, rows, cols = _box_index(index, y0, x0, patch)
    for arr in arrays:
        arr[bi, rows, cols] = transform_boxes(arr[bi, rows, cols].to(device), k, flip).to(arr.device)


def _params(images: torch.Tensor, masks: torch.Tensor, y0, x0, patch: int, k, flip):
    if images.ndim != 3 or masks.shape != images.shape:
        raise ValueError(f"images and masks must both be [B, H, W], got {tuple(images.shape)} and {tuple(masks.shape)}")
    import torch

    batch, height, width = images.shape
    patch, _, _ = _check_patch(patch, (height, width))
    device = images.device

    def vec(v, dtype):
        t = torch.as_tensor(v, device=device).to(dtype).reshape(-1)
        if t.numel() == 1 and batch != 1:
            t = t.expand(batch)
        if t.shape[0] != batch:
            raise ValueError(f"expected {batch} values per parameter, got {t.shape[0]}")
        return t

    y0, x0, k = vec(y0, torch.long), vec(x0, torch.long), vec(k, torch.long) % 4
    flip = vec(flip, torch.bool)
    # Out-of-range corners would wrap around silently under advanced indexing.
    if batch and bool(((y0 < 0) | (x0 < 0) | (y0 > height - patch) | (x0 > width - patch)).any()):
        raise ValueError(f"a box of {patch} px starts outside a {height}x{width} image")
    return patch, y0, x0, k, flip


def apply_negatives(
    images: torch.Tensor,
    masks: torch.Tensor,
    y0,
    x0,
    patch: int,
    k,
    flip,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror (where `flip`) then rotate by `k` x 90 degrees CCW the box of each sample.

    images, masks: [B, H, W] (any dtype; uint8 in the pipeline). y0, x0: [B] top-left corners
    (from `negative_boxes`). k: [B] int (taken mod 4). flip: [B] bool. Returns new (images,
    masks); the inputs are not modified. One gather and one scatter of the boxes for the whole
    batch, on the inputs' device.
    """
    import torch

    patch, y0, x0, k, flip = _params(images, masks, y0, x0, patch, k, flip)
    out_images, out_masks = images.clone(), masks.clone()
    index = torch.arange(images.shape[0], device=images.device)
    _negate_boxes_((out_images, out_masks), index, y0, x0, patch, k, flip, images.device)
    return out_images, out_masks


def build_negatives(images: np.ndarray, masks: np.ndarray, plan: NegativeParams,
                    device: torch.device | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images and masks [N, H, W] of the negatives of `plan` (or of a slice of one), in plan order.

    images, masks: the plan's sources [S, H, W] (numpy, uint8 in the pipeline), indexed by
    `plan.source`. Memory: one copy of each source a negative is built from (N images and N
    masks, not S), its boxes then mirrored and rotated in place, one patch size at a time; the
    boxes travel to `device` (default CPU) for the transform and back. The sources are not
    modified. Raises ValueError on mismatched shapes or a box outside the image.
    """
    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim != 3 or masks.shape != images.shape:
        raise ValueError(f"images and masks must both be [S, H, W], got {images.shape} and {masks.shape}")
    height, width = images.shape[1:]
    _check_plan(plan, len(images), (height, width))
    out_images, out_masks = images[plan.source], masks[plan.source]  # copies; the boxes are pasted in place
    if on_cpu(device):
        for patch, sel in plan.by_patch():
            _negate_boxes_((out_images, out_masks), sel.astype(np.int64), plan.y0[sel].astype(np.int64),
                           plan.x0[sel].astype(np.int64), patch, plan.k[sel], plan.flip[sel], None)
        return out_images, out_masks
    _negate_plan_torch(out_images, out_masks, plan, device)
    return out_images, out_masks


def _negate_plan_torch(out_images: np.ndarray, out_masks: np.ndarray, plan: NegativeParams, device) -> None:
    """`build_negatives`' boxes transformed in torch on `device`, in place in the copies (what a
    CUDA device runs; tests run it on torch's CPU against the numpy path, bit for bit)."""
    import torch

    device = torch.device(device)
    arrays = (torch.from_numpy(out_images), torch.from_numpy(out_masks))
    for patch, sel in plan.by_patch():
        _negate_boxes_(arrays, torch.from_numpy(sel), torch.from_numpy(plan.y0[sel]), torch.from_numpy(plan.x0[sel]),
                       patch, plan.k[sel], plan.flip[sel], device)


def check_negatives(masks: np.ndarray, plan: NegativeParams,
                    device: torch.device | str | None = None) -> dict[str, np.ndarray]:
    """`label_check` of every negative of `plan`, from the source masks' boxes alone (no copies).

    masks: the plan's source masks [S, H, W] (numpy, nonzero = target). Returns the arrays [N] of
    `label_check_boxes`: `n_targets_before`, `n_targets_after`, `area_before`, `area_after`,
    `straddle`, `cut`. The boxes' transform runs on `device` (default CPU).
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [S, H, W], got shape {masks.shape}")
    _check_plan(plan, len(masks), masks.shape[1:])
    if on_cpu(device):
        def transform(before: np.ndarray, k, flip) -> np.ndarray:
            return transform_boxes(before, k, flip)
    else:
        import torch

        dev = torch.device(device)

        def transform(before: np.ndarray, k, flip) -> np.ndarray:
            return transform_boxes(torch.from_numpy(before).to(dev), k, flip).cpu().numpy()
    points = mask_points(masks)
    out = {name: np.zeros(len(plan), np.int64) for name in ("n_targets_before", "n_targets_after", "area_before",
                                                             "area_after")}
    out.update(straddle=np.zeros(len(plan), bool), cut=np.zeros(len(plan), bool))
    for patch, sel in plan.by_patch():
        source, y0, x0 = plan.source[sel], plan.y0[sel], plan.x0[sel]
        before = _gather_boxes(masks, source, y0, x0, patch)
        after = transform(before, plan.k[sel], plan.flip[sel])
        check = label_check_boxes(points, len(masks), source, y0, x0, before != 0, after != 0)
        for name, values in check.items():
            out[name][sel] = values
    return out


def _check_plan(plan: NegativeParams, n_sources: int, image_size: tuple[int, int]) -> None:
    """ValueError unless every negative of `plan` has a source in 0..n_sources-1 and a box inside the image."""
    if not len(plan):
        return
    height, width = (int(s) for s in image_size)
    for patch, _ in plan.by_patch():
        _check_patch(patch, (height, width))
    if plan.source.min() < 0 or plan.source.max() >= n_sources:
        raise ValueError(f"plan sources must index {n_sources} images")
    if ((plan.y0 < 0) | (plan.x0 < 0) | (plan.y0 > height - plan.patch) | (plan.x0 > width - plan.patch)).any():
        raise ValueError(f"a planned box starts outside a {height}x{width} image")


def _gather_boxes(arr: np.ndarray, source: np.ndarray, y0: np.ndarray, x0: np.ndarray, patch: int) -> np.ndarray:
    """Boxes [B, P, P] (a copy) of arr [S, H, W]: rows y0[b].., columns x0[b].. of arr[source[b]]."""
    patch = int(patch)
    view = np.lib.stride_tricks.sliding_window_view(arr, (patch, patch), axis=(1, 2))
    return view[np.asarray(source), np.asarray(y0), np.asarray(x0)]


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def label_check(masks_before, masks_after, y0, x0, patch: int, source=None) -> dict[str, np.ndarray]:
    """Did the negative keep the label sane? Per sample, all arrays [B].

    masks_after: [B, H, W]; masks_before: [B, H, W], or with `source` ([B] int) the distinct
    source masks [S, H, W], sample b being made from masks_before[source[b]] (numpy or tensors).
    Returns:
      - `n_targets_before`, `n_targets_after`: 8-connected component counts;
      - `area_before`, `area_after`: foreground pixel counts (a rotation keeps the area);
      - `straddle`: some target of the original mask lies partly inside, partly outside the box;
      - `cut`: `straddle` and the mask inside the box changed, so that target was cut apart
        (k = 0 without flip, or a box whose content is symmetric, changes nothing).
    Only the box of masks_after is read: outside it a negative equals its source.
    """
    before, after = _numpy(masks_before), _numpy(masks_after)
    if before.ndim != 3 or after.ndim != 3 or before.shape[1:] != after.shape[1:]:
        raise ValueError(f"masks must both be [B, H, W], got {before.shape} and {after.shape}")
    batch, height, width = after.shape
    if source is None:
        if before.shape[0] != batch:
            raise ValueError(f"masks must both be [B, H, W], got {before.shape} and {after.shape}")
        source = np.arange(batch)
    source = np.asarray(_numpy(source), dtype=np.int64).reshape(-1)
    if source.shape[0] != batch or (batch and (source.min() < 0 or source.max() >= before.shape[0])):
        raise ValueError(f"source must hold {batch} indices into {before.shape[0]} masks")
    patch, _, _ = _check_patch(patch, (height, width))
    y0 = np.broadcast_to(_numpy(y0).astype(np.int64).reshape(-1), (batch,))
    x0 = np.broadcast_to(_numpy(x0).astype(np.int64).reshape(-1), (batch,))
    before_box = _gather_boxes(before, source, y0, x0, patch) != 0
    after_box = _gather_boxes(after, np.arange(batch), y0, x0, patch) != 0
    return label_check_boxes(mask_points(before), before.shape[0], source, y0, x0, before_box, after_box)


def label_check_boxes(
    points: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_sources: int,
    source: np.ndarray,
    y0: np.ndarray,
    x0: np.ndarray,
    before_box: np.ndarray,
    after_box: np.ndarray,
) -> dict[str, np.ndarray]:
    """`label_check` from sparse sources and the boxes alone.

    points: the sources' foreground pixels (image, y, x), each [N], sorted by image (as
    `mask_points` gives them); n_sources: S. source, y0, x0: [B] int. before_box, after_box:
    [B, P, P] bool, the box of each negative before and after the transform. Components are
    counted on the pixels alone (`label_points`), so the cost follows the targets' area, not
    the image size.
    """
    sb, sy, sx = (np.asarray(a, dtype=np.int64) for a in points)
    batch, patch = before_box.shape[0], before_box.shape[1]
    src_labels, src_counts = label_points(sb, sy, sx, n_sources)
    px_count = np.bincount(sb, minlength=n_sources).astype(np.int64)
    px_start = np.concatenate([[0], np.cumsum(px_count)[:-1]]).astype(np.int64)
    # Every negative's copy of its source's pixels, negative by negative.
    npx = px_count[source]
    neg = np.repeat(np.arange(batch), npx)
    first = np.concatenate([[0], np.cumsum(npx)[:-1]]).astype(np.int64)
    take = np.arange(int(npx.sum()), dtype=np.int64) - np.repeat(first - px_start[source], npx)
    py, px, plab = sy[take], sx[take], src_labels[take]
    inside = (py >= y0[neg]) & (py < y0[neg] + patch) & (px >= x0[neg]) & (px < x0[neg] + patch)
    # Straddle: a component of the source with pixels on both sides of the box edge.
    ncomp = src_counts[source]
    comp_first = np.concatenate([[0], np.cumsum(ncomp)[:-1]]).astype(np.int64)
    gid = comp_first[neg] + plab - 1
    total = int(ncomp.sum())
    has_in, has_out = np.zeros(total, bool), np.zeros(total, bool)
    has_in[gid[inside]] = True
    has_out[gid[~inside]] = True
    comp_neg = np.repeat(np.arange(batch), ncomp)
    straddle = np.bincount(comp_neg[has_in & has_out], minlength=batch) > 0
    # After: the source's pixels outside the box plus the new box content.
    ab, ai, aj = np.nonzero(after_box)
    out = ~inside
    img = np.concatenate([neg[out], ab])
    ys = np.concatenate([py[out], y0[ab] + ai])
    xs = np.concatenate([px[out], x0[ab] + aj])
    _, n_after = label_points(img, ys, xs, batch)
    area_after = np.bincount(img, minlength=batch).astype(np.int64)
    changed = (before_box != after_box).reshape(batch, -1).any(axis=1)
    return {
        "n_targets_before": ncomp.astype(np.int64),
        "n_targets_after": n_after.astype(np.int64),
        "area_before": npx.astype(np.int64),
        "area_after": area_after,
        "straddle": straddle,
        "cut": straddle & changed,
    }
