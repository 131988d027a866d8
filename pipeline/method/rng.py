"""Seeded random generators keyed by what they are for, not by when they are asked for.

Every random choice in the pipeline draws from `generator(seed, stage, key)`, so a sample's
draw depends only on the global seed, the stage and the sample's key: the same on any worker,
in any task order, for any worker count.
"""

from __future__ import annotations

import hashlib

import numpy as np


def seed_words(seed: int, stage: str, key: str) -> list[int]:
    """Four 32-bit words that identify (seed, stage, key); stable across platforms and runs."""
    digest = hashlib.blake2b(f"{int(seed)}\x1f{stage}\x1f{key}".encode(), digest_size=16).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def generator(seed: int, stage: str, key: str) -> np.random.Generator:
    """A numpy Generator (PCG64) for one (seed, stage, key)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed_words(seed, stage, key))))
