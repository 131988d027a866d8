"""Which kind of device a batch function was given: the one test the method modules share.

The method modules take `device` as None (the CPU), a string ("cpu", "cuda:1") or a
torch.device, and run numpy on the CPU and torch on a GPU; this reads the kind without
importing torch. (`runner.cluster.resolve_device_type` is the other question: what a stage's
`--device auto|cpu|cuda` resolves to on this machine.)
"""

from __future__ import annotations


def device_type(device) -> str:
    """"cpu" or "cuda" of a device given as None (the CPU), a string ("cuda:1") or a torch.device."""
    return "cpu" if device is None else str(getattr(device, "type", device)).split(":")[0]


def on_cpu(device) -> bool:
    """`device` (None, a string such as "cuda:1", or a torch.device) is the CPU."""
    return device_type(device) == "cpu"
