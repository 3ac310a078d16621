"""``"randk:FRACTION"``: k = ceil(FRACTION * n) coordinates chosen uniformly at random, scaled by
n / k on decode so the estimate is unbiased (E[decode(encode(x))] = x).

Random-k (Stich et al. 2018; Wangni et al. 2018) trades top-k's accuracy for two things: the
indices cost nothing (they follow from ``params["seed"]``, so the payload is the k values only)
and the compressor is unbiased, which makes it compose with averaging over clients and with
secure aggregation's sums. Its variance is (n/k - 1) * ||x||^2, so on its own it needs small
compression or error feedback.
"""

from __future__ import annotations

import torch

from edgeweave.codec.base import CodecError, Encoded, register_family
from edgeweave.codec.update import UpdateCodec, generator, parse_numbers, take_k
from edgeweave.codec.wire import itemsize, tensor_to_bytes

USAGE = "randk:FRACTION with 0 < FRACTION <= 1 (e.g. randk:0.01)"


def chosen(seed: int, n: int, k: int) -> torch.Tensor:
    """The k coordinates (sorted) a seed selects among n."""
    return torch.randperm(n, generator=generator(seed))[:k].sort().values


class RandKCodec(UpdateCodec):
    """k uniformly random coordinates from a seed; values sent, indices regenerated."""

    randomized = True

    def __init__(self, fraction: float, name: str) -> None:
        if not 0 < fraction <= 1:
            raise CodecError(f"codec {name}: FRACTION is {fraction}, expected {USAGE}")
        self.fraction, self.name = fraction, name

    def _encode(self, x: torch.Tensor, dtype: str, shape: tuple[int, ...],
                seed: int) -> tuple[bytes, dict[str, float]]:
        idx = chosen(seed, x.numel(), take_k(self.fraction, x.numel()))
        data, _, _ = tensor_to_bytes(x[idx].to(getattr(torch, dtype)), context=self.name)
        return data, {}

    def _decode(self, e: Encoded, n: int, work: torch.dtype) -> torch.Tensor:
        k = take_k(self.fraction, n)
        if len(e.payload) != k * itemsize(e.dtype):
            raise CodecError(f"{self.name}: payload is {len(e.payload)} bytes, expected "
                             f"{k * itemsize(e.dtype)} for {k} of {n} values")
        vals = self.values(e.payload, e.dtype, k).to(work)
        out = torch.zeros(n, dtype=work)
        out[chosen(self.seed_of(e), n, k)] = vals * (n / k)
        return out


def _factory(args: str) -> RandKCodec:
    (fraction,) = parse_numbers("randk", USAGE, args, [0.01])
    return RandKCodec(fraction, f"randk:{args}" if args else "randk")


register_family("randk", _factory, USAGE)
