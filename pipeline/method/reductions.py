"""Sums and means that give the same bits on every device.

A CPU and a CUDA `torch.sum` add the same numbers in different orders, so their float results
can differ in the last bit, and a pixel that sits on a rounding boundary then lands on a
different grey level. Adding along a fixed binary tree of elementwise adds (each one IEEE-
rounded on any device, with no fused multiply-add across kernels) fixes the order, so a shard
made on a GPU worker is byte-identical to one made on a CPU worker. Checked on an H100
(tests/test_reductions.py, tests/test_gpu_stages.py).

Both functions take a torch tensor or a numpy array and return the same kind: numpy's
elementwise adds and its true division round as torch's do, so the CPU stages compute the same
bits in numpy without importing torch (1.3-2.5 CPU-s a process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch


def _pairwise_sum_np(x: np.ndarray, dims: Sequence[int]) -> np.ndarray:
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"pairwise_sum needs a floating array, got {x.dtype}")
    dims = sorted({d % x.ndim for d in dims})
    keep = [d for d in range(x.ndim) if d not in dims]
    flat = x.transpose(*keep, *dims).reshape(*(x.shape[d] for d in keep), -1)
    if flat.shape[-1] == 0:
        return np.zeros(flat.shape[:-1], x.dtype)
    while flat.shape[-1] > 1:
        n = flat.shape[-1]
        even = n - n % 2
        summed = flat[..., 0:even:2] + flat[..., 1:even:2]
        flat = np.concatenate([summed, flat[..., even:]], axis=-1) if n % 2 else summed
    return np.asarray(flat[..., 0])


def pairwise_sum(x: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Sum of `x` over `dims` (removed), added pairwise in a fixed order.

    Args:
        x: any floating tensor, on any device, or a floating numpy array (the same bits).
        dims: the dimensions to reduce.

    Returns:
        `x` without `dims`, same dtype and device (a numpy array for a numpy input).
    """
    if isinstance(x, np.ndarray):
        return _pairwise_sum_np(x, dims)
    import torch

    if not x.is_floating_point():
        raise ValueError(f"pairwise_sum needs a floating tensor, got {x.dtype}")
    dims = sorted({d % x.ndim for d in dims})
    keep = [d for d in range(x.ndim) if d not in dims]
    flat = x.permute(*keep, *dims).reshape(*(x.shape[d] for d in keep), -1)
    if flat.shape[-1] == 0:
        return flat.new_zeros(flat.shape[:-1])
    while flat.shape[-1] > 1:
        n = flat.shape[-1]
        even = n - n % 2
        summed = flat[..., 0:even:2] + flat[..., 1:even:2]
        flat = torch.cat([summed, flat[..., even:]], dim=-1) if n % 2 else summed
    return flat[..., 0]


def pairwise_mean(x: torch.Tensor, dims: Sequence[int], keepdim: bool = False) -> torch.Tensor:
    """Mean over `dims` from `pairwise_sum`: one division, so as device-independent as the sum."""
    count = 1
    for d in dims:
        count *= x.shape[d]
    total = pairwise_sum(x, dims)
    if isinstance(total, np.ndarray):
        out = np.asarray(total / np.asarray(count, total.dtype))
        if keepdim:
            for d in sorted(d % x.ndim for d in dims):
                out = np.expand_dims(out, d)
        return out
    # A tensor divisor, not a Python number: CUDA divides by a scalar as a multiply by its
    # reciprocal, which rounds differently from the CPU's true division.
    out = total / total.new_full((), count)
    if keepdim:
        for d in sorted(d % x.ndim for d in dims):
            out = out.unsqueeze(d)
    return out
