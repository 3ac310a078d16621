"""Encoded tensors and weights <-> split.proto messages.

An :class:`~edgeweave.codec.Encoded` maps field for field onto ``split.v1.Tensor``; the receiver
decodes it with the codec it names, so a peer can only make us build a tensor of an allowed dtype
whose payload matches its shape (the codecs check sizes and refuse decompression bombs).
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from edgeweave.codec import CodecError, Encoded, get_codec
from edgeweave.codec.wire import dtype_name
from edgeweave.train.types import Params, TrainError
from edgeweave.train.wire import split_pb2


def encoded_to_msg(e: Encoded, name: str = "") -> split_pb2.Tensor:
    return split_pb2.Tensor(name=name, codec=e.codec, dtype=e.dtype, shape=list(e.shape),
                            payload=e.payload, params=dict(e.params))


def msg_to_encoded(m: split_pb2.Tensor, *, context: str) -> Encoded:
    try:
        return Encoded(m.codec, m.dtype, tuple(m.shape), m.payload, dict(m.params))
    except CodecError as e:
        raise TrainError(f"{context}: {e}") from None


def decode_msg(m: split_pb2.Tensor, *, context: str) -> torch.Tensor:
    """Decode with the codec the message names; TrainError naming ``context`` if malformed."""
    e = msg_to_encoded(m, context=context)
    try:
        return get_codec(e.codec).decode(e)
    except CodecError as err:
        raise TrainError(f"{context}: {err}") from None


def encode_params(params: Params, codec: str = "none") -> list[Encoded]:
    c = get_codec(codec)
    return [c.encode(v) for v in params.values()]


def params_to_msgs(params: Params, codec: str = "none") -> list[split_pb2.Tensor]:
    return [encoded_to_msg(e, k) for k, e in zip(params, encode_params(params, codec),
                                                   strict=True)]


def params_from_msgs(msgs: list[split_pb2.Tensor], like: Params | None, *,
                     context: str) -> Params:
    """Decode weights; with ``like``, names, dtypes and shapes must match it exactly."""
    out: Params = OrderedDict()
    for m in msgs:
        if m.name in out:
            raise TrainError(f"{context}: parameter {m.name!r} appears twice")
        if like is not None:
            if m.name not in like:
                raise TrainError(f"{context}: unexpected parameter {m.name!r}; expected "
                                 f"{list(like)}")
            ref = like[m.name]
            if tuple(m.shape) != tuple(ref.shape):
                raise TrainError(f"{context}: parameter {m.name!r} has shape {list(m.shape)}, "
                                 f"expected {list(ref.shape)}")
            if m.dtype != dtype_name(ref.dtype):  # checked before decoding, like the shape
                raise TrainError(f"{context}: parameter {m.name!r} has dtype {m.dtype!r}, "
                                 f"expected {dtype_name(ref.dtype)!r}")
        t = decode_msg(m, context=f"{context}: parameter {m.name!r}")
        if like is not None and t.dtype != like[m.name].dtype:
            raise TrainError(f"{context}: parameter {m.name!r} has dtype {t.dtype}, expected "
                             f"{like[m.name].dtype}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise TrainError(f"{context}: parameter {m.name!r} has NaN/inf values")
        out[m.name] = t
    if like is not None and list(out) != list(like):
        missing = [k for k in like if k not in out]
        raise TrainError(f"{context}: missing parameters {missing}")
    return out


def payload_nbytes(msgs: list[split_pb2.Tensor]) -> int:
    return sum(len(m.payload) for m in msgs)
