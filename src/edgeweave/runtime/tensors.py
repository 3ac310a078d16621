"""Named tensors <-> protobuf `Tensor` messages, through a codec (never pickle)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from edgeweave.codec import Encoded, get_codec
from edgeweave.runtime.proto import edgeweave_pb2 as pb


def encode(values: Mapping[str, torch.Tensor], names: Iterable[str], codec: str
           ) -> list[pb.Tensor]:
    c = get_codec(codec or "none")
    out = []
    for name in names:
        e = c.encode(values[name].detach().contiguous())
        out.append(pb.Tensor(name=name, codec=e.codec, dtype=e.dtype, shape=list(e.shape),
                             payload=e.payload, params=dict(e.params)))
    return out


def decode(messages: Iterable[pb.Tensor]) -> dict[str, torch.Tensor]:
    """Decode every tensor; a malformed one raises CodecError (or ValueError) naming it."""
    values = {}
    for m in messages:
        e = Encoded(codec=m.codec, dtype=m.dtype, shape=tuple(m.shape), payload=m.payload,
                    params=dict(m.params))
        values[m.name] = get_codec(m.codec).decode(e)
    return values


def payload_bytes(messages: Iterable[pb.Tensor]) -> int:
    """Bytes of tensor data in `messages` (what the cost model charges a link for)."""
    return sum(len(m.payload) for m in messages)
