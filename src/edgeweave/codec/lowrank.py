"""``"lowrank:FRACTION"``: Konecny et al. 2016's structured low-rank update, H ~ A B with A
random (from a seed) and only B sent.

The tensor is viewed as a matrix (dim 0 by the rest; a conv kernel is out x in*kh*kw) and
arranged as m x n with m >= n. A is m x k with orthonormal columns (QR of a seeded Gaussian),
k = ceil(FRACTION * m), and B = A^T H (k x n) is the payload: k * n values, ~1/FRACTION times
smaller than H. Decoding rebuilds A from the seed and returns A B.

Konecny et al. learn B directly during local training (the update is restricted to that
subspace from the start); a codec sees the finished update, so here B is its least-squares fit,
the orthogonal projection of H onto span(A). That projection keeps on average k/m of the
update's energy (E[A A^T] = (k/m) I): biased towards zero, not rescaled, because rescaling by m/k
would make it unbiased but multiply its variance by m/k. Pair it with error feedback to recover
the dropped part over rounds. When k >= m (nothing to save: vectors, tiny matrices) the values
are sent as they are (``params["dense"] = 1``).
"""

from __future__ import annotations

import math

import torch

from edgeweave.codec.base import CodecError, Encoded, register_family
from edgeweave.codec.update import UpdateCodec, generator, parse_numbers
from edgeweave.codec.wire import itemsize, tensor_to_bytes

USAGE = "lowrank:FRACTION with 0 < FRACTION <= 1 (rank = ceil(FRACTION * larger dim))"


def basis(seed: int, m: int, k: int) -> torch.Tensor:
    """m x k float64 matrix with orthonormal columns, a function of the seed only."""
    g = torch.randn(m, k, generator=generator(seed), dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    return q * torch.sign(torch.diagonal(r))  # fixes QR's sign freedom: a unique basis


class LowRankCodec(UpdateCodec):
    """Projection onto a seeded random rank-k subspace; the k x n coefficients are sent."""

    randomized = True

    def __init__(self, fraction: float, name: str) -> None:
        if not 0 < fraction <= 1:
            raise CodecError(f"codec {name}: FRACTION is {fraction}, expected {USAGE}")
        self.fraction, self.name = fraction, name

    def plan(self, shape: tuple[int, ...]) -> tuple[int, int, int, bool]:
        """(m, n, k, transposed) for a tensor of ``shape``; k >= m means send raw."""
        rows = shape[0] if len(shape) >= 2 else 1
        cols = math.prod(shape) // max(rows, 1)
        m, n = max(rows, cols), min(rows, cols)
        return m, n, math.ceil(self.fraction * m - 1e-9), rows < cols

    def _encode(self, x: torch.Tensor, dtype: str, shape: tuple[int, ...],
                seed: int) -> tuple[bytes, dict[str, float]]:
        m, n, k, transposed = self.plan(shape)
        out_dtype = getattr(torch, dtype)
        if k >= m:
            data, _, _ = tensor_to_bytes(x.to(out_dtype), context=self.name)
            return data, {"dense": 1.0}
        h = x.to(torch.float64).reshape(n, m).T if transposed else x.to(torch.float64).reshape(m, n)
        b = basis(seed, m, k).T @ h
        data, _, _ = tensor_to_bytes(b.to(out_dtype).contiguous(), context=self.name)
        return data, {}

    def _decode(self, e: Encoded, n_all: int, work: torch.dtype) -> torch.Tensor:
        m, n, k, transposed = self.plan(e.shape)
        dense = k >= m
        count = n_all if dense else k * n
        if bool(e.params.get("dense")) != dense or len(e.payload) != count * itemsize(e.dtype):
            raise CodecError(f"{self.name}: payload is {len(e.payload)} bytes with params "
                             f"{e.params}, expected {count * itemsize(e.dtype)} bytes "
                             f"({'dense' if dense else f'rank {k}'}) for shape {list(e.shape)}")
        vals = self.values(e.payload, e.dtype, count).to(torch.float64)
        if dense:
            return vals.to(work)
        h = basis(self.seed_of(e), m, k) @ vals.reshape(k, n)
        return (h.T if transposed else h).reshape(-1).to(work)


def _factory(args: str) -> LowRankCodec:
    (fraction,) = parse_numbers("lowrank", USAGE, args, [0.1])
    return LowRankCodec(fraction, f"lowrank:{args}" if args else "lowrank")


register_family("lowrank", _factory, USAGE)
