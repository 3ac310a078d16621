"""Named tensors <-> protobuf `Tensor` messages, through a codec (never pickle).

What a peer declares is checked before anything is decoded: a 32 KB zstd payload declared as a
1 GiB float32 tensor would otherwise be inflated before anyone looked at its shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

from edgeweave.codec import Codec, CodecError, Encoded, get_codec
from edgeweave.codec.base import list_codecs, list_compressors
from edgeweave.codec.wire import nbytes_for
from edgeweave.runtime.proto import edgeweave_pb2 as pb

#: A value's expected (dtype name, shape), or None when the receiver has no expectation.
Spec = tuple[str, tuple[int, ...]]
Expect = Callable[[str], Spec | None]

MB = 1 << 20


def activation_codec(name: str) -> Codec:
    """The codec called `name` ("" is "none") if it is one activations travel in: a registered
    codec, optionally followed by one compressor ("int8+zstd"). Parametrised update codecs
    ("topk:0.01") and deeper compositions are refused: each distinct name a peer sends would
    otherwise build and cache a new codec."""
    name = name or "none"
    inner, _, outer = name.partition("+")
    base = list_codecs()
    if inner not in base or (outer and outer not in list_compressors()):
        raise CodecError(f"codec {name[:64]!r} is not an activation codec; expected one of "
                         f"{', '.join(base)}, optionally +{'/+'.join(list_compressors())}")
    return get_codec(name)


def encode(values: Mapping[str, torch.Tensor], names: Iterable[str], codec: str
           ) -> list[pb.Tensor]:
    c = activation_codec(codec)
    out = []
    for name in names:
        e = c.encode(values[name].detach().contiguous())
        out.append(pb.Tensor(name=name, codec=e.codec, dtype=e.dtype, shape=list(e.shape),
                             payload=e.payload, params=dict(e.params)))
    return out


def check_declared(messages: Sequence[pb.Tensor], expected: Expect | None,
                   max_bytes: float) -> None:
    """Refuse (CodecError naming the tensor) before decoding: an unknown codec, a repeated name,
    a declared dtype/shape other than `expected` says, or values with no expectation whose
    declared decoded sizes add up to more than `max_bytes`."""
    seen: set[str] = set()
    unexpected = 0
    for m in messages:
        where = f"tensor {m.name!r}"
        if m.name in seen:
            raise CodecError(f"{where} appears twice")
        seen.add(m.name)
        activation_codec(m.codec)  # an unknown codec is named here, before any work
        declared = (m.dtype, tuple(m.shape))
        want = expected(m.name) if expected is not None else None
        if want is None:
            unexpected += nbytes_for(m.dtype, declared[1], context=where)
        elif declared != (want[0], tuple(want[1])):
            raise CodecError(f"{where} is declared {m.dtype} {list(m.shape)}; the stage here "
                             f"takes {want[0]} {list(want[1])}")
    if unexpected > max_bytes:
        raise CodecError(f"tensors declare {unexpected / MB:.1f} MiB once decoded, more than "
                         f"the {max_bytes / MB:g} MiB this receiver accepts")


def decode(messages: Sequence[pb.Tensor], expected: Expect | None = None,
           max_bytes: float = float("inf")) -> dict[str, torch.Tensor]:
    """Check what `messages` declare (`check_declared`), then decode every tensor; a malformed
    one raises CodecError (or ValueError) naming it."""
    check_declared(messages, expected, max_bytes)
    values = {}
    for m in messages:
        e = Encoded(codec=m.codec, dtype=m.dtype, shape=tuple(m.shape), payload=m.payload,
                    params=dict(m.params))
        values[m.name] = activation_codec(m.codec).decode(e)
    return values


def payload_bytes(messages: Iterable[pb.Tensor]) -> int:
    """Bytes of tensor data in `messages` (what the cost model charges a link for)."""
    return sum(len(m.payload) for m in messages)
