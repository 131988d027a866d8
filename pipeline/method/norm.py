"""BasicIRSTD's image normalisation values (`img_norm_cfg`) of a set of images.

BasicIRSTD's `get_img_norm_cfg` takes, for a dataset not in its table, each image as float32 on
the 0..255 scale, its mean and (population) standard deviation, and then the mean of the means
and the mean of the standard deviations, each over a float32 array (numpy's pairwise sum). The
same numbers are computed here from the shards' uint8 images, which are the exported PNGs' pixels;
the pipeline takes them over the train split only.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def image_mean_std(image: np.ndarray) -> tuple[np.float32, np.float32]:
    """One image's mean and population standard deviation, float32, over its grey values 0..255."""
    x = np.ascontiguousarray(image, dtype=np.float32)
    return x.mean(), x.std()


def norm_cfg(means: Sequence, stds: Sequence) -> dict[str, float]:
    """{"mean", "std"}: the float32 mean of the per-image means and of the per-image stds, in order."""
    return {"mean": float(np.asarray(means, dtype=np.float32).mean()),
            "std": float(np.asarray(stds, dtype=np.float32).mean())}


def norm_args(cfg: dict[str, float]) -> str:
    """The BasicIRSTD command-line options that pass `cfg` (float repr: exactly the value)."""
    return f"--img_norm_cfg_mean {cfg['mean']!r} --img_norm_cfg_std {cfg['std']!r}"
