"""``"randmask:P"``: Konecny et al. 2016's structured random-mask update: each coordinate is kept
with probability P by a mask drawn from a seed; the kept values are sent, the rest are zero.

The mask costs nothing on the wire (``params["seed"]`` regenerates it), so the payload is the
kept values only, ~P times the raw size. As in the paper the update is *restricted* to the mask,
not rescaled: Konecny et al. train in that restricted space, and a codec applied after training
is the projection onto it (E = P x, biased towards zero; ``randk`` is the rescaled, unbiased
alternative). Pair it with error feedback so the masked-out part is sent in later rounds.
"""

from __future__ import annotations

import torch

from edgeweave.codec.base import CodecError, Encoded, register_family
from edgeweave.codec.update import UpdateCodec, generator, parse_numbers
from edgeweave.codec.wire import itemsize, tensor_to_bytes

USAGE = "randmask:P with 0 < P <= 1 (probability a coordinate is kept)"


def mask(seed: int, n: int, p: float) -> torch.Tensor:
    return torch.rand(n, generator=generator(seed), dtype=torch.float64) < p


class RandMaskCodec(UpdateCodec):
    """Bernoulli(P) mask from a seed; the masked values are sent as they are."""

    randomized = True

    def __init__(self, p: float, name: str) -> None:
        if not 0 < p <= 1:
            raise CodecError(f"codec {name}: P is {p}, expected {USAGE}")
        self.p, self.name = p, name

    def _encode(self, x: torch.Tensor, dtype: str, shape: tuple[int, ...],
                seed: int) -> tuple[bytes, dict[str, float]]:
        data, _, _ = tensor_to_bytes(x[mask(seed, x.numel(), self.p)].to(getattr(torch, dtype)),
                                     context=self.name)
        return data, {}

    def _decode(self, e: Encoded, n: int, work: torch.dtype) -> torch.Tensor:
        keep = mask(self.seed_of(e), n, self.p)
        k = int(keep.sum())
        if len(e.payload) != k * itemsize(e.dtype):
            raise CodecError(f"{self.name}: payload is {len(e.payload)} bytes, expected "
                             f"{k * itemsize(e.dtype)} for the {k} coordinates the seed keeps")
        out = torch.zeros(n, dtype=work)
        out[keep] = self.values(e.payload, e.dtype, k).to(work)
        return out


def _factory(args: str) -> RandMaskCodec:
    (p,) = parse_numbers("randmask", USAGE, args, [0.1])
    return RandMaskCodec(p, f"randmask:{args}" if args else "randmask")


register_family("randmask", _factory, USAGE)
