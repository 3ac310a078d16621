"""``"qsgd:LEVELS[,BUCKET]"``: QSGD (Alistarh et al. 2017), unbiased stochastic quantization.

Each bucket of BUCKET consecutive coordinates (default 512, the paper's choice; 0 = the whole
tensor in one bucket) is sent as its L2 norm plus, per coordinate, sign(x) * l with the level l in
{0..s} drawn by stochastic rounding of s * |x| / norm: l = floor(r) + Bernoulli(r - floor(r)).
Then E[norm * sign * l / s] = x exactly (unbiased), and the variance per bucket is at most
min(d / s^2, sqrt(d) / s) * ||x||^2 -- which is why buckets matter: one norm over 131k
coordinates at s = 127 would allow ~2.9 ||x||^2, 512-coordinate buckets ~0.18.

Payload: the bucket norms (float32; float64 for float64 tensors) then the codes sign*l + s in
[0, 2s], packed at ceil(log2(2s + 1)) bits each. ``qsgd:127`` is the 8-bit variant (255 codes):
8 bits per coordinate plus 32 bits per 512-coordinate bucket, 3.97x smaller than float32.
The rounding draws come from ``params["seed"]`` (see :mod:`edgeweave.codec.update`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from edgeweave.codec.base import CodecError, Encoded, register_family
from edgeweave.codec.packing import MAX_BITS, bits_for, pack_bits, packed_nbytes, unpack_bits
from edgeweave.codec.update import UpdateCodec, generator, parse_numbers, scalar_dtype
from edgeweave.codec.wire import itemsize, tensor_from_bytes, tensor_to_bytes

USAGE = "qsgd:LEVELS[,BUCKET] with 1 <= LEVELS <= 32767 and BUCKET >= 0 (0 = whole tensor), " \
        "e.g. qsgd:127 (8 bits per coordinate)"


class QSGDCodec(UpdateCodec):
    """s-level stochastic quantization of x / ||x|| per bucket; unbiased."""

    randomized = True

    def __init__(self, levels: float, bucket: float, name: str) -> None:
        if not (levels.is_integer() and 1 <= levels <= 2**(MAX_BITS - 1) - 1) or \
                not (bucket.is_integer() and bucket >= 0):
            raise CodecError(f"codec {name}: got LEVELS={levels:g}, BUCKET={bucket:g}; "
                             f"expected {USAGE}")
        self.levels, self.bucket, self.name = int(levels), int(bucket), name
        self.bits = bits_for(2 * self.levels + 1)

    def _buckets(self, n: int) -> int:
        return 1 if self.bucket == 0 else math.ceil(n / self.bucket)

    def _encode(self, x: torch.Tensor, dtype: str, shape: tuple[int, ...],
                seed: int) -> tuple[bytes, dict[str, float]]:
        n, s = x.numel(), self.levels
        size = n if self.bucket == 0 else self.bucket
        nb = self._buckets(n)
        padded = torch.zeros(nb * size, dtype=torch.float64)
        padded[:n] = x.to(torch.float64)
        rows = padded.view(nb, size)
        norms = rows.norm(dim=1)
        # decode uses the norm as sent (float32): quantise against it, or the estimate is biased
        norms = norms.to(getattr(torch, scalar_dtype(dtype))).to(torch.float64)
        safe = torch.where(norms > 0, norms, torch.ones_like(norms))
        r = (rows.abs() / safe[:, None] * s).clamp_(0, s).reshape(-1)[:n]
        low = r.floor()
        u = torch.rand(n, generator=generator(seed), dtype=torch.float64)
        level = (low + (u < (r - low)).to(torch.float64)).clamp_(0, s)
        codes = (torch.sign(x.to(torch.float64)) * level + s).to(torch.int64).numpy()
        head, _, _ = tensor_to_bytes(norms.to(getattr(torch, scalar_dtype(dtype))))
        return head + pack_bits(codes.astype(np.uint16), self.bits), {}

    def _decode(self, e: Encoded, n: int, work: torch.dtype) -> torch.Tensor:
        nb, s = self._buckets(n), self.levels
        head = nb * itemsize(scalar_dtype(e.dtype))
        want = head + packed_nbytes(n, self.bits)
        if len(e.payload) != want:
            raise CodecError(f"{self.name}: payload is {len(e.payload)} bytes, expected {want} "
                             f"({nb} norms + {n} x {self.bits}-bit codes)")
        norms = tensor_from_bytes(e.payload[:head], scalar_dtype(e.dtype), (nb,),
                                  context=self.name).to(torch.float64)
        if not bool(torch.isfinite(norms).all()) or bool((norms < 0).any()):
            raise CodecError(f"{self.name}: bucket norms must be finite and >= 0")
        codes = unpack_bits(e.payload[head:], self.bits, n, context=self.name)
        if codes.size and codes.max() > 2 * s:
            raise CodecError(f"{self.name}: code {int(codes.max())} exceeds 2 * LEVELS = {2 * s}")
        q = (torch.from_numpy(codes).to(torch.float64) - s) / s
        size = n if self.bucket == 0 else self.bucket
        scale = norms.repeat_interleave(size)[:n]
        return (q * scale).to(work)


def _factory(args: str) -> QSGDCodec:
    levels, bucket = parse_numbers("qsgd", USAGE, args, [127.0, 512.0])
    return QSGDCodec(levels, bucket, f"qsgd:{args}" if args else "qsgd")


register_family("qsgd", _factory, USAGE)
