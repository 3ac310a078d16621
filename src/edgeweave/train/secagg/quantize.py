"""Fixed-point encoding of float updates into the ring Z_{2^k} where secure aggregation adds.

Pairwise masks only cancel exactly in modular integer arithmetic (Bonawitz et al. 2017, sec. 3):
floats would leave rounding residue of the size of the masks themselves. So an update is
clipped to ``[-clip, clip]``, scaled by ``2^frac_bits``, rounded to an integer and stored as a
two's-complement element of Z_{2^k} (numpy's uint32/uint64 wrap modulo 2^k for free). A sum of
such elements decodes back correctly as long as the true integer sum stays inside
``(-2^(k-1), 2^(k-1))``: :func:`frac_bits_for` picks the finest step that leaves that headroom
for a given total weight, so the exact integer sum never wraps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgeweave.train.types import TrainError

RING_DTYPES: dict[int, type[np.unsignedinteger]] = {32: np.uint32, 64: np.uint64}


@dataclass(frozen=True)
class FixedPoint:
    """Values in [-clip, clip] as integers ``round(x * 2^frac_bits)`` in Z_{2^ring_bits}."""

    ring_bits: int = 32
    frac_bits: int = 16
    clip: float = 1.0

    def __post_init__(self) -> None:
        if self.ring_bits not in RING_DTYPES:
            raise TrainError(f"secagg: ring_bits must be 32 or 64, got {self.ring_bits}")
        if not 0 <= self.frac_bits < self.ring_bits - 1:
            raise TrainError(f"secagg: frac_bits must be in [0, {self.ring_bits - 1}), got "
                             f"{self.frac_bits}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise TrainError(f"secagg: clip must be a finite value > 0, got {self.clip}")
        if self.clip * 2.0 ** self.frac_bits >= 2.0 ** (self.ring_bits - 1):
            raise TrainError(f"secagg: clip={self.clip} at frac_bits={self.frac_bits} does not "
                             f"fit one value in a {self.ring_bits}-bit ring")

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return RING_DTYPES[self.ring_bits]

    @property
    def step(self) -> float:
        """The quantisation step: one client's value is within step/2 of its float."""
        return 2.0 ** -self.frac_bits

    def to_int(self, x: np.ndarray) -> np.ndarray:
        """Signed integers round(clip(x) * 2^f) as int64 (before any weighting)."""
        x = np.asarray(x, dtype=np.float64)
        if not np.isfinite(x).all():
            raise TrainError("secagg: cannot quantise NaN/Inf values")
        return np.rint(np.clip(x, -self.clip, self.clip) * 2.0 ** self.frac_bits).astype(np.int64)

    def to_ring(self, ints: np.ndarray) -> np.ndarray:
        """Signed integers into the ring (two's complement modulo 2^k)."""
        return np.asarray(ints, dtype=np.int64).astype(self.dtype)

    def from_ring(self, elems: np.ndarray) -> np.ndarray:
        """Ring elements back to signed integers (the centred representative)."""
        e = np.asarray(elems).astype(self.dtype)
        signed = e.view(np.int32 if self.ring_bits == 32 else np.int64)
        return signed.astype(np.int64)

    def decode(self, elems: np.ndarray) -> np.ndarray:
        """Ring elements to floats: the signed integer times the step."""
        return self.from_ring(elems).astype(np.float64) * self.step


def frac_bits_for(total_weight: int, clip: float, ring_bits: int = 32) -> int:
    """The most fractional bits such that ``total_weight`` clipped values of at most ``clip``,
    summed, stay below 2^(ring_bits-1) in magnitude: exact decoding of any sum of weighted
    inputs whose weights add up to at most ``total_weight``."""
    if total_weight < 1:
        raise TrainError(f"secagg: total weight must be >= 1, got {total_weight}")
    if not (math.isfinite(clip) and clip > 0):
        raise TrainError(f"secagg: clip must be a finite value > 0, got {clip}")
    # |sum| <= W * clip * 2^f + W/2 (rounding) < 2^(k-1)
    room = (ring_bits - 1) - math.log2(total_weight * clip) - 1
    f = math.floor(room)
    if f < 0:
        raise TrainError(f"secure_aggregation: a total weight of {total_weight} with clip "
                         f"{clip:g} does not fit a {ring_bits}-bit ring; set "
                         "secure_aggregation.ring_bits: 64 or a smaller secure_aggregation.clip")
    return min(f, ring_bits - 2)
