"""CPU vs CUDA: how often a transfer's pixels would differ, with F.interpolate and with ours.

    python benchmarks/cuda_parity.py        # needs a CUDA device

PyTorch's bilinear kernels fuse multiply-adds, differently on a CPU and a GPU, so the same
resize differs in the last bit, and after the blend and the rounding to uint8 some pixels land
one grey level apart: the same inputs, params and seed would give different shard bytes on a
GPU worker. `pipeline.transfer.resize_field` does the arithmetic as separate, individually
rounded steps; this prints both counts on real-sized inputs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import _common as C
from sirst5k.method.transfer import blend, resize_field, to_uint8


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("cuda_parity.py needs a CUDA device")
    C.header(f"CPU vs CUDA ({torch.cuda.get_device_name(0)}, torch {torch.__version__}): differing values")
    rng = np.random.default_rng(0)
    rows = []
    for patch, size in ((32, (256, 256)), (16, (256, 256)), (32, (300, 211)), (24, (512, 640))):
        noise = torch.from_numpy(rng.integers(0, 256, (256, patch, patch)).astype(np.float32))
        images = torch.from_numpy(rng.integers(0, 256, (256, *size)).astype(np.float32))
        for name, resize in (("F.interpolate", lambda x: F.interpolate(x[:, None], size=size, mode="bilinear",
                                                                         align_corners=False)[:, 0]),
                             ("resize_field", lambda x: resize_field(x, size))):
            on_cpu, on_gpu = resize(noise), resize(noise.cuda()).cpu()
            fused_cpu = to_uint8(blend(images, on_cpu, 0.1))
            fused_gpu = to_uint8(blend(images.cuda(), on_gpu.cuda(), 0.1)).cpu()
            n = on_cpu.numel()
            rows.append([f"{patch} -> {size[0]}x{size[1]}", name, n, int((on_cpu != on_gpu).sum()),
                         int((fused_cpu != fused_gpu).sum()), int((fused_cpu != fused_gpu).any(dim=(1, 2)).sum())])
    C.table(["resize", "kernel", "values", "field values differing", "uint8 pixels differing (m=0.1)",
             "images of 256 differing"], rows)


if __name__ == "__main__":
    main()
