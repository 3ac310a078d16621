"""``"sketch:P[,BITS[,BLOCK]]"``: Konecny et al. 2016's sketched update -- random rotation, then
subsampling, then quantization -- unbiased end to end.

1. Rotate: y = H D x per block of BLOCK coordinates (default 1024, a power of two; the last block
   zero-padded), D a seeded random +-1 diagonal and H the orthonormal Walsh-Hadamard matrix
   (the paper's "structured rotation", O(n log n)). The rotation spreads the update's energy
   evenly, so the few-bit quantizer below loses much less than on the raw coordinates.
2. Subsample: keep each rotated coordinate with probability P (mask from the seed) and scale the
   kept ones by 1/P on decode -- unbiased.
3. Quantize: the kept values to BITS bits (default 1) on 2^BITS uniform levels between their min
   and max, with stochastic rounding -- unbiased (the paper's scheme, 1 bit = {min, max}).

Decode inverts the rotation (H and D are their own inverses up to H's orthonormal scaling).
Payload: min and max (float32; float64 for float64 tensors) then the BITS-bit codes of the kept
coordinates. The mask, signs and rounding draws all come from ``params["seed"]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from edgeweave.codec.base import CodecError, Encoded, register_family
from edgeweave.codec.packing import MAX_BITS, pack_bits, packed_nbytes, unpack_bits
from edgeweave.codec.update import UpdateCodec, generator, parse_numbers, scalar_dtype
from edgeweave.codec.wire import itemsize, tensor_from_bytes, tensor_to_bytes

USAGE = "sketch:P[,BITS[,BLOCK]] with 0 < P <= 1, 1 <= BITS <= 16, BLOCK a power of two " \
        "(e.g. sketch:0.25,2)"


def hadamard(y: torch.Tensor) -> torch.Tensor:
    """Orthonormal fast Walsh-Hadamard transform along the last dim (a power of two)."""
    rows, b = y.shape
    h = 1
    while h < b:
        y = y.view(rows, b // (2 * h), 2, h)
        y = torch.stack((y[:, :, 0] + y[:, :, 1], y[:, :, 0] - y[:, :, 1]), dim=2)
        h *= 2
    return y.reshape(rows, b) / math.sqrt(b)


class SketchCodec(UpdateCodec):
    """Randomised Hadamard rotation + Bernoulli(P) subsampling + BITS-bit stochastic rounding."""

    randomized = True

    def __init__(self, p: float, bits: float, block: float, name: str) -> None:
        if not (0 < p <= 1 and bits.is_integer() and 1 <= bits <= MAX_BITS
                and block.is_integer() and block >= 1 and int(block) & (int(block) - 1) == 0):
            raise CodecError(f"codec {name}: got P={p}, BITS={bits:g}, BLOCK={block:g}; "
                             f"expected {USAGE}")
        self.p, self.bits, self.block, self.name = p, int(bits), int(block), name

    def _layout(self, n: int, seed: int) -> tuple[int, torch.Tensor, torch.Tensor, torch.Generator]:
        """(block size, signs, kept mask, generator for the rounding draws)."""
        b = min(self.block, 1 << max(0, (n - 1).bit_length()))
        total = math.ceil(n / b) * b
        g = generator(seed)
        signs = torch.randint(0, 2, (total,), generator=g, dtype=torch.int8).to(torch.float64)
        keep = torch.rand(total, generator=g, dtype=torch.float64) < self.p
        return b, signs.mul_(2).sub_(1), keep, g

    def _encode(self, x: torch.Tensor, dtype: str, shape: tuple[int, ...],
                seed: int) -> tuple[bytes, dict[str, float]]:
        n = x.numel()
        b, signs, keep, g = self._layout(n, seed)
        y = torch.zeros(signs.numel(), dtype=torch.float64)
        y[:n] = x.to(torch.float64)
        y = hadamard((y * signs).view(-1, b)).reshape(-1)[keep]
        sdt = getattr(torch, scalar_dtype(dtype))
        lo, hi = (y.min(), y.max()) if y.numel() else (torch.zeros(()), torch.zeros(()))
        ends = torch.stack((lo, hi)).to(sdt)
        lo_f, hi_f = float(ends[0]), float(ends[1])  # quantise against the ends as sent
        top = (1 << self.bits) - 1
        step = (hi_f - lo_f) / top if hi_f > lo_f else 1.0
        r = ((y - lo_f) / step).clamp_(0, top)
        low = r.floor()
        u = torch.rand(r.numel(), generator=g, dtype=torch.float64)
        codes = (low + (u < r - low).to(torch.float64)).clamp_(0, top).to(torch.int64).numpy()
        head, _, _ = tensor_to_bytes(ends)
        return head + pack_bits(codes.astype(np.uint16), self.bits), {}

    def _decode(self, e: Encoded, n: int, work: torch.dtype) -> torch.Tensor:
        b, signs, keep, _ = self._layout(n, self.seed_of(e))
        k = int(keep.sum())
        head = 2 * itemsize(scalar_dtype(e.dtype))
        want = head + packed_nbytes(k, self.bits)
        if len(e.payload) != want:
            raise CodecError(f"{self.name}: payload is {len(e.payload)} bytes, expected {want} "
                             f"(min, max + {k} x {self.bits}-bit codes)")
        lo, hi = tensor_from_bytes(e.payload[:head], scalar_dtype(e.dtype), (2,),
                                   context=self.name).tolist()
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise CodecError(f"{self.name}: min/max are {lo}, {hi}; expected finite min <= max")
        codes = unpack_bits(e.payload[head:], self.bits, k, context=self.name)
        top = (1 << self.bits) - 1
        step = (hi - lo) / top if hi > lo else 1.0
        y = torch.zeros(signs.numel(), dtype=torch.float64)
        y[keep] = (lo + torch.from_numpy(codes).to(torch.float64) * step) / self.p
        x = hadamard(y.view(-1, b)).reshape(-1) * signs
        return x[:n].to(work)


def _factory(args: str) -> SketchCodec:
    p, bits, block = parse_numbers("sketch", USAGE, args, [0.25, 1.0, 1024.0])
    return SketchCodec(p, bits, block, f"sketch:{args}" if args else "sketch")


register_family("sketch", _factory, USAGE)
