"""Targets of a binary mask: 8-connected components, their centres, areas and boxes.

Components are labelled with `skimage.measure.label(connectivity=2)`, as BasicIRSTD's metrics
count targets, and are numbered in skimage's label order (raster order of each component's
first pixel). Every function here keeps that order, so "target j" means the same component
everywhere in the pipeline.

Centre rule: `centre = floor(centroid + 0.5)` per axis (round half up), centroid = mean pixel
index. The reference coordinates (`sirst5k-reference/inputs/coordinates.txt`) cannot tell floor
from round: all its targets are 3x3 squares whose centroid is an exact pixel index. Round half
up is chosen because for a target of even extent it centres the scripts' even (32 px,
half-open) box on the target: a 2-px target in columns 10..11 has centroid 10.5, centre 11, and
the box `[11 - 16, 11 + 16)` reaches 16 px beyond either edge of the target's pixel span
`[10, 12)`.
"""

from __future__ import annotations

import numpy as np


def _as_mask(mask) -> np.ndarray:
    if hasattr(mask, "detach"):  # torch tensor, possibly on a GPU
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {mask.shape}")
    return mask != 0


def label_components(mask) -> tuple[np.ndarray, int]:
    """Label the 8-connected foreground components of `mask` [H, W] (nonzero = target).

    Returns (labels [H, W] int, 0 = background, 1..n = components in label order; n).
    """
    # Imported here: skimage takes ~1 s to import, and the batch functions below do not need it.
    from skimage.measure import label

    labels, n = label(_as_mask(mask), connectivity=2, return_num=True)
    return labels, int(n)


def target_table(mask) -> dict[str, np.ndarray]:
    """Per-target statistics of `mask` [H, W], in label order.

    Returns a dict of arrays, T = number of targets:
      - `center`   [T, 2] int64 (y, x): floor(centroid + 0.5), see the module note;
      - `centroid` [T, 2] float64 (y, x): mean pixel row and column;
      - `area`     [T] int64: pixel count;
      - `bbox`     [T, 4] int64 (y0, x0, y1, x1), half-open.
    """
    labels, n = label_components(mask)
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs] - 1
    area = np.bincount(lab, minlength=n).astype(np.int64)
    if n == 0:
        return {
            "center": np.zeros((0, 2), np.int64),
            "centroid": np.zeros((0, 2), np.float64),
            "area": area,
            "bbox": np.zeros((0, 4), np.int64),
        }
    centroid, bbox = _geometry(lab, ys, xs, n, area)
    return {
        "center": np.floor(centroid + 0.5).astype(np.int64),
        "centroid": centroid,
        "area": area,
        "bbox": bbox,
    }


def target_centers(mask) -> np.ndarray:
    """Centres [T, 2] int64 (y, x) of the targets of `mask` [H, W], in label order."""
    return target_table(mask)["center"]


def count_targets(mask) -> tuple[int, int]:
    """(number of 8-connected targets, total foreground pixels) of `mask` [H, W]."""
    labels, n = label_components(mask)
    return n, int(np.count_nonzero(labels))


# ---------------------------------------------------------------- batches
#
# The stages find targets in hundreds of masks a task, and check thousands of negatives. Masks
# are sparse (a target is a few to a few hundred pixels of a 256x256 image), so the batch
# functions work on the foreground pixels alone: one sort and one graph search for a whole
# batch instead of one dense labelling a mask. They give the same components, numbers and
# centres as the single-mask functions above.


def label_points(image: np.ndarray, y: np.ndarray, x: np.ndarray, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of sets of foreground pixels, one set per image.

    image, y, x: [N] int, pixel (y, x) of image `image` is foreground (each pixel at most once).
    Returns (labels [N] int64: the pixel's component within its image, 1..n in label order,
    i.e. raster order of each component's first pixel, as `label_components`; counts [n_images]
    int64: components per image).
    """
    image, y, x = (np.asarray(a, dtype=np.int64).reshape(-1) for a in (image, y, x))
    n = image.size
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(n_images, np.int64)
    # One raster index over all images, padded by a pixel on every side so that a neighbour
    # offset never wraps into the next row or image.
    height, width = int(y.max()) + 3, int(x.max()) + 3
    lin = (image * height + y + 1) * width + x + 1
    order = np.argsort(lin, kind="stable")
    lin_sorted = lin[order]
    rows, cols = [], []
    for off in (1, width - 1, width, width + 1):  # right, and the three below: each edge once
        pos = np.searchsorted(lin_sorted, lin_sorted + off)
        pos_c = np.minimum(pos, n - 1)
        hit = lin_sorted[pos_c] == lin_sorted + off
        rows.append(np.flatnonzero(hit))
        cols.append(pos_c[hit])
    r, c = np.concatenate(rows), np.concatenate(cols)
    n_comp, comp = _components(n, r, c)
    # Number components by their first pixel in raster order (nodes are sorted that way).
    first = np.full(n_comp, n, np.int64)
    np.minimum.at(first, comp, np.arange(n))
    rank = np.empty(n_comp, np.int64)
    rank[np.argsort(first)] = np.arange(n_comp)
    comp_image = image[order][np.sort(first)]  # image of each component, in rank order
    counts = np.bincount(comp_image, minlength=n_images).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    labels_sorted = rank[comp] - start[comp_image[rank[comp]]] + 1
    labels = np.empty(n, np.int64)
    labels[order] = labels_sorted
    return labels, counts


def _components(n: int, r: np.ndarray, c: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of the undirected graph on nodes 0..n-1 with edges (r[i], c[i]).

    Returns (n_comp, comp [n] int64): components numbered by their smallest node. In numpy (no
    scipy.sparse: its import is 0.2-0.3 s of every command that labels targets): each node takes
    the smallest label among its neighbours, then follows its label's label until nothing
    changes (pointer jumping), so the rounds grow with the log of a component's extent, not its
    size. At the fixed point every edge joins equal labels, and each label is the smallest node
    of its component (a label is always a node of the component, never above the node).
    """
    lab = np.arange(n, dtype=np.int64)
    if r.size:
        r, c = np.asarray(r, np.int64), np.asarray(c, np.int64)
        while True:
            low = np.minimum(lab[r], lab[c])
            new = lab.copy()
            np.minimum.at(new, r, low)
            np.minimum.at(new, c, low)
            while True:  # pointer jumping: new[x] <= x, and new[new[x]] lies in x's component
                jumped = new[new]
                if np.array_equal(jumped, new):
                    break
                new = jumped
            if np.array_equal(new, lab):
                break
            lab = new
    roots = np.flatnonzero(lab == np.arange(n))
    return int(roots.size), np.searchsorted(roots, lab).astype(np.int64)


def mask_points(masks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Foreground pixels (image, y, x) of masks [B, H, W] (nonzero = target), each [N] int64, raster order."""
    if hasattr(masks, "detach"):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [B, H, W], got shape {masks.shape}")
    _, height, width = masks.shape
    flat = np.ascontiguousarray(masks if masks.dtype.itemsize == 1 else masks != 0).reshape(-1).view(np.uint8)
    if flat.size % 8 == 0:
        # Scanning 8 bytes a step is ~10x faster than np.nonzero on mostly-empty uint8 masks.
        words = np.flatnonzero(flat.view(np.uint64))
        cand = (words[:, None] * 8 + np.arange(8)).reshape(-1)
        pos = cand[flat[cand] != 0]
    else:
        pos = np.flatnonzero(flat)
    pos = pos.astype(np.int64)
    b, rest = np.divmod(pos, height * width)
    y, x = np.divmod(rest, width)
    return b, y, x


def point_target_ids(b: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Targets numbered across a batch, mask by mask in label order: each foreground point's target
    id `[P]` int64 and each mask's first id `[B]` (an exclusive cumsum of `counts`), from
    `mask_points`' `b` `[P]` and `label_points`' `labels` `[P]` (from 1) and `counts` `[B]`.
    `np.bincount(ids, minlength=counts.sum())` is then every target's area."""
    start = (np.cumsum(counts) - counts).astype(np.int64)
    ids = start[b] + labels - 1 if np.size(b) else np.zeros(0, np.int64)
    return ids, start


def batch_target_table(masks) -> dict[str, np.ndarray]:
    """`target_table` of every mask of masks [B, H, W] at once, targets concatenated image by image.

    Returns a dict of arrays, T = targets in the batch:
      - `image` [T] int64: which mask the target is in;
      - `index` [T] int64: the target's number within its mask (label order, from 0);
      - `center` [T, 2], `centroid` [T, 2], `area` [T], `bbox` [T, 4]: as `target_table`;
      - `count` [B] int64: targets per mask.
    """
    b, y, x = mask_points(masks)
    n_images = int(np.shape(masks)[0])
    labels, counts = label_points(b, y, x, n_images)
    gid, start = point_target_ids(b, labels, counts)
    t = int(counts.sum())
    area = np.bincount(gid, minlength=t).astype(np.int64)
    image = np.repeat(np.arange(n_images, dtype=np.int64), counts)
    index = np.arange(t, dtype=np.int64) - np.repeat(start, counts)
    if t == 0:
        return {"image": image, "index": index, "center": np.zeros((0, 2), np.int64),
                "centroid": np.zeros((0, 2), np.float64), "area": area, "bbox": np.zeros((0, 4), np.int64),
                "count": counts}
    centroid, bbox = _geometry(gid, y, x, t, area)
    return {"image": image, "index": index, "center": np.floor(centroid + 0.5).astype(np.int64),
            "centroid": centroid, "area": area, "bbox": bbox, "count": counts}


def _geometry(labels: np.ndarray, ys: np.ndarray, xs: np.ndarray, n: int, area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroids [n, 2] (y, x) and bounding boxes [n, 4] (y0, x0, y1, x1; end excluded) of n
    components, given each foreground pixel's component id and coordinates."""
    centroid = np.stack(
        [np.bincount(labels, weights=ys, minlength=n) / area, np.bincount(labels, weights=xs, minlength=n) / area],
        axis=1,
    )
    bbox = np.empty((n, 4), np.int64)
    bbox[:, :2] = np.iinfo(np.int64).max
    bbox[:, 2:] = np.iinfo(np.int64).min
    np.minimum.at(bbox[:, 0], labels, ys)
    np.minimum.at(bbox[:, 1], labels, xs)
    np.maximum.at(bbox[:, 2], labels, ys + 1)
    np.maximum.at(bbox[:, 3], labels, xs + 1)
    return centroid, bbox
