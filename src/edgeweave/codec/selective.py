"""``"selective:THETA[,GAMMA[,TAU]]"``: selective parameter sharing from Shokri & Shmatikov 2015,
"Privacy-Preserving Deep Learning" (distributed selective SGD, DSSGD).

A DSSGD participant uploads only a fraction THETA of its update: the coordinates of largest
magnitude (the paper's "largest values" selection), of which only those with |x| > TAU are
eligible (its threshold rule; 0 = no threshold), each bounded to [-GAMMA, GAMMA] before it leaves
the device (its bounding rule, which also bounds the sensitivity for the Laplace noise of the
paper's DP variant; 0 = no bound). The same codec on the downlink gives the paper's selective
download of the most-updated parameters. The DP noise itself belongs to the privacy mechanisms,
not to this codec.

Payload: a 4-byte count (TAU may select fewer than ceil(THETA * n)), the values in the tensor's
dtype, then the indices in the smallest layout of :mod:`edgeweave.codec.packing`.
"""

from __future__ import annotations

import struct

import torch

from edgeweave.codec.base import CodecError, Encoded, register_family
from edgeweave.codec.topk import sparse_payload, sparse_values
from edgeweave.codec.update import UpdateCodec, parse_numbers, take_k

USAGE = "selective:THETA[,GAMMA[,TAU]] with 0 < THETA <= 1, GAMMA >= 0 (bound, 0 = none), " \
        "TAU >= 0 (threshold)"


class SelectiveCodec(UpdateCodec):
    """The largest-|x| THETA fraction above TAU, bounded to [-GAMMA, GAMMA]."""

    def __init__(self, theta: float, gamma: float, tau: float, name: str) -> None:
        if not 0 < theta <= 1 or gamma < 0 or tau < 0:
            raise CodecError(f"codec {name}: got THETA={theta}, GAMMA={gamma}, TAU={tau}; "
                             f"expected {USAGE}")
        self.theta, self.gamma, self.tau, self.name = theta, gamma, tau, name

    def _encode(self, x: torch.Tensor, dtype: str, shape: tuple[int, ...],
                seed: int) -> tuple[bytes, dict[str, float]]:
        mag = x.abs()
        idx = torch.topk(mag, take_k(self.theta, x.numel()), sorted=False).indices
        idx = idx[mag[idx] > self.tau].sort().values
        if self.gamma > 0:
            x = x.clamp(-self.gamma, self.gamma)
        payload, layout = sparse_payload(x, idx, dtype, x.numel(), self.name)
        return struct.pack("<I", idx.numel()) + payload, {"index": layout}

    def _decode(self, e: Encoded, n: int, work: torch.dtype) -> torch.Tensor:
        if len(e.payload) < 4:
            raise CodecError(f"{self.name}: payload is {len(e.payload)} bytes, expected a 4-byte "
                             "count first")
        (k,) = struct.unpack("<I", e.payload[:4])
        if k > take_k(self.theta, n):
            raise CodecError(f"{self.name}: count {k} exceeds ceil(THETA * n) = "
                             f"{take_k(self.theta, n)}")
        body = Encoded(e.codec, e.dtype, e.shape, e.payload[4:], e.params)
        out = sparse_values(self, body, k, n, work)
        if self.gamma > 0 and bool((out.abs() > self.gamma * (1 + 1e-3)).any()):
            raise CodecError(f"{self.name}: a value exceeds the bound GAMMA = {self.gamma:g}")
        return out


def _factory(args: str) -> SelectiveCodec:
    theta, gamma, tau = parse_numbers("selective", USAGE, args, [0.1, 0.0, 0.0])
    return SelectiveCodec(theta, gamma, tau, f"selective:{args}" if args else "selective")


register_family("selective", _factory, USAGE)
