"""Secure-aggregation test helpers shared by the passive and active protocol tests."""

from __future__ import annotations

import numpy as np


def ring_inputs(n: int, length: int, seed: int = 0) -> dict[int, np.ndarray]:
    """n clients' random 32-bit ring vectors."""
    rng = np.random.default_rng(seed)
    return {u: rng.integers(0, 2**32, length, dtype=np.uint64).astype(np.uint32)
            for u in range(n)}


def ring_sum(xs) -> np.ndarray:
    """The sum the protocol must reproduce: mod 2^32, as the ring wraps."""
    return np.sum(np.stack(list(xs)), axis=0, dtype=np.uint32)
