"""Sums and means that give the same bits on every device.

A CPU and a CUDA `torch.sum` add the same numbers in different orders, so their float results
can differ in the last bit, and a pixel that sits on a rounding boundary then lands on a
different grey level. Adding along a fixed binary tree of elementwise adds (each one IEEE-
rounded on any device, with no fused multiply-add across kernels) fixes the order, so a shard
made on a GPU worker is byte-identical to one made on a CPU worker. Checked on an H100
(tests/test_reductions.py, tests/test_gpu_stages.py).
"""

from __future__ import annotations

from typing import Sequence

import torch


def pairwise_sum(x: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Sum of `x` over `dims` (removed), added pairwise in a fixed order.

    Args:
        x: any floating tensor, on any device.
        dims: the dimensions to reduce.

    Returns:
        `x` without `dims`, same dtype and device.
    """
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
    # A tensor divisor, not a Python number: CUDA divides by a scalar as a multiply by its
    # reciprocal, which rounds differently from the CPU's true division.
    out = total / total.new_full((), count)
    if keepdim:
        for d in sorted(d % x.ndim for d in dims):
            out = out.unsqueeze(d)
    return out
