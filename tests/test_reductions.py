"""Device-independent sums: a fixed order of adds, so CPU and CUDA workers agree bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sirst5k.method.reductions import pairwise_mean, pairwise_sum


@pytest.mark.parametrize("shape,dims", [((3, 256, 256), (1, 2)), ((2, 7, 33, 17), (1, 3)), ((5, 1), (1,)),
                                        ((4, 6, 9), (0,)), ((1, 3, 5), (-1, -2))])
def test_sum_is_the_sum(device, shape, dims):
    x = torch.from_numpy(np.random.default_rng(len(shape)).normal(100, 30, shape)).to(device)
    expected = x.sum(dim=tuple(dims))
    out = pairwise_sum(x, dims)
    assert out.shape == expected.shape and out.device == x.device and out.dtype == x.dtype
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(pairwise_mean(x, dims, keepdim=True), x.mean(dim=tuple(dims), keepdim=True))


def test_integer_pixels_sum_exactly(device):
    # 65,536 grey levels: the exact sum (up to 16.7 M) fits float32's 24 bits, whatever the order
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 256, 256))).to(device, torch.float32)
    assert pairwise_sum(x, (1, 2)).cpu().tolist() == x.cpu().to(torch.int64).sum(dim=(1, 2)).tolist()


def test_same_bits_on_every_device(device):
    # values with long mantissas, where the order of adds shows in the last bit
    x = torch.from_numpy(np.random.default_rng(1).uniform(0, 255, (4, 255, 257)).astype(np.float32))
    assert torch.equal(pairwise_sum(x.to(device), (1, 2)).cpu(), pairwise_sum(x, (1, 2)))
    assert torch.equal(pairwise_mean(x.to(device), (2,)).cpu(), pairwise_mean(x, (2,)))


def test_empty_and_errors():
    assert pairwise_sum(torch.zeros(3, 0), (1,)).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="floating"):
        pairwise_sum(torch.zeros(3, 4, dtype=torch.int64), (1,))
