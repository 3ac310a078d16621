"""``"topk:FRACTION"``: keep the ceil(FRACTION * n) largest-magnitude coordinates, drop the rest.

Top-k sparsification (Aji & Heafield 2017; Stich et al. 2018, "Sparsified SGD with memory") is
biased on its own; it converges like dense SGD when the dropped mass is fed back into the next
update (error feedback, :mod:`edgeweave.train.compress.error_feedback`), and it is the selection
step inside DGC (Lin et al. 2018). The codec itself is stateless.

Payload: the k kept values in the tensor's own dtype, then their indices in the smallest of three
layouts (:mod:`edgeweave.codec.packing`: fixed-width list, bitmap, or varint gaps; the choice is
``params["index"]``). k follows from FRACTION and the shape, so it is not sent. Ties in |x| are
broken by ``torch.topk``; the kept values are exact.
"""

from __future__ import annotations

import numpy as np
import torch

from edgeweave.codec.base import CodecError, Encoded, register_family
from edgeweave.codec.packing import BITMAP, LIST, VARINT, decode_indices, encode_indices
from edgeweave.codec.update import UpdateCodec, parse_numbers, take_k
from edgeweave.codec.wire import itemsize, tensor_to_bytes

USAGE = "topk:FRACTION with 0 < FRACTION <= 1 (e.g. topk:0.01)"


def sparse_payload(x: torch.Tensor, idx: torch.Tensor, dtype: str, n: int,
                   context: str) -> tuple[bytes, float]:
    """(values of ``x`` at sorted ``idx`` as ``dtype``, then the indices; index layout)."""
    values, _, _ = tensor_to_bytes(x[idx].to(getattr(torch, dtype)), context=context)
    layout, index = encode_indices(idx.numpy().astype(np.int64), n)
    return values + index, float(layout)


def sparse_values(codec: UpdateCodec, e: Encoded, k: int, n: int,
                  work: torch.dtype) -> torch.Tensor:
    """Dense flat tensor of ``n`` from a :func:`sparse_payload` holding ``k`` entries."""
    layout = codec.param(e, "index", (LIST, BITMAP, VARINT))
    split = k * itemsize(e.dtype)
    if len(e.payload) < split:
        raise CodecError(f"{codec.name}: payload is {len(e.payload)} bytes, shorter than the "
                         f"{split} bytes of its {k} values")
    vals = codec.values(e.payload[:split], e.dtype, k)
    idx = decode_indices(layout, e.payload[split:], k, n, context=codec.name)
    out = torch.zeros(n, dtype=work)
    out[torch.from_numpy(idx)] = vals.to(work)
    return out


class TopKCodec(UpdateCodec):
    """Largest-|x| ``fraction`` of the coordinates, exact values plus compact indices."""

    def __init__(self, fraction: float, name: str) -> None:
        if not 0 < fraction <= 1:
            raise CodecError(f"codec {name}: FRACTION is {fraction}, expected {USAGE}")
        self.fraction, self.name = fraction, name

    def _encode(self, x: torch.Tensor, dtype: str, shape: tuple[int, ...],
                seed: int) -> tuple[bytes, dict[str, float]]:
        k = take_k(self.fraction, x.numel())
        idx = torch.topk(x.abs(), k, sorted=False).indices.sort().values
        payload, layout = sparse_payload(x, idx, dtype, x.numel(), self.name)
        return payload, {"index": layout}

    def _decode(self, e: Encoded, n: int, work: torch.dtype) -> torch.Tensor:
        return sparse_values(self, e, take_k(self.fraction, n), n, work)


def _factory(args: str) -> TopKCodec:
    (fraction,) = parse_numbers("topk", USAGE, args, [0.01])
    return TopKCodec(fraction, f"topk:{args}" if args else "topk")


register_family("topk", _factory, USAGE)
