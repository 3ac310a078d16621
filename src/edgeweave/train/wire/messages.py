"""Model parameters and fit configs <-> fl.proto messages.

Tensor bytes go through :mod:`edgeweave.codec.wire` (the one place tensor bytes are made and
parsed), so the FL wire accepts exactly the dtypes and byte layouts the inference wire does. An
update from a device is checked against the global model BEFORE its bytes are decoded: a peer
cannot make the server allocate a tensor whose name, dtype or shape the model does not have.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import torch

from edgeweave.codec.base import CodecError
from edgeweave.codec.wire import dtype_name, tensor_from_bytes, tensor_to_bytes
from edgeweave.train.types import FitConfig, Params, TrainError
from edgeweave.train.wire import fl_pb2


def params_to_msgs(params: Params) -> list[fl_pb2.Tensor]:
    out = []
    for name, t in params.items():
        try:
            data, dtype, shape = tensor_to_bytes(t, context=f"parameter {name!r}")
        except CodecError as e:
            raise TrainError(str(e)) from None
        out.append(fl_pb2.Tensor(name=name, dtype=dtype, shape=shape, data=data))
    return out


def payload_bytes(msgs: Iterable[fl_pb2.Tensor]) -> int:
    """Tensor bytes in messages: what bytes_up and bytes_down count and the update cap bounds."""
    return sum(len(m.data) for m in msgs)


def params_from_msgs(msgs: Sequence[fl_pb2.Tensor], *, context: str) -> Params:
    """Decode a parameter list whose names and shapes the receiver does not know in advance (a
    device decoding the global model)."""
    out: Params = OrderedDict()
    for m in msgs:
        if m.name in out:
            raise TrainError(f"{context}: parameter {m.name!r} appears twice")
        try:
            out[m.name] = tensor_from_bytes(m.data, m.dtype, list(m.shape),
                                            context=f"{context}: parameter {m.name!r}")
        except CodecError as e:
            raise TrainError(str(e)) from None
    return out


def decode_like(msgs: Sequence[fl_pb2.Tensor], like: Params, *, context: str) -> Params:
    """Decode a device's update, which must have exactly ``like``'s names, dtypes and shapes and
    only finite values (a NaN from one device would poison the aggregate of all)."""
    names = [m.name for m in msgs]
    missing = [k for k in like if k not in names]
    unexpected = [k for k in names if k not in like]
    if missing or unexpected or len(set(names)) != len(names):
        raise TrainError(
            f"{context}: parameter names differ from the model's: missing {missing}, "
            f"unexpected {unexpected}" + (", duplicated names" if len(set(names)) != len(names)
                                          else "")
        )
    by_name = {m.name: m for m in msgs}
    out: Params = OrderedDict()
    for name, ref in like.items():
        m = by_name[name]
        want_dtype = dtype_name(ref.dtype)
        if m.dtype != want_dtype:
            raise TrainError(f"{context}: parameter {name!r} has dtype {m.dtype!r}, expected "
                             f"{want_dtype!r}")
        if tuple(m.shape) != tuple(ref.shape):
            raise TrainError(f"{context}: parameter {name!r} has shape {list(m.shape)}, expected "
                             f"{list(ref.shape)}")
        try:
            t = tensor_from_bytes(m.data, m.dtype, list(m.shape), context=f"{context}: {name!r}")
        except CodecError as e:
            raise TrainError(str(e)) from None
        if t.is_floating_point():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                raise TrainError(f"{context}: parameter {name!r} has {bad} NaN/Inf values")
        out[name] = t
    return out


def config_to_msg(config: FitConfig) -> fl_pb2.FitConfig:
    return fl_pb2.FitConfig(
        lr=config.lr, batch_size=config.batch_size, epochs=config.epochs,
        local_steps=config.local_steps or 0, prox_mu=config.prox_mu, momentum=config.momentum,
        weight_decay=config.weight_decay, seed=config.seed,
    )


def config_from_msg(msg: fl_pb2.FitConfig) -> FitConfig:
    """FitConfig validates the values, so a malformed task fails here with the field named."""
    values = (msg.lr, msg.prox_mu, msg.momentum, msg.weight_decay)
    if not all(math.isfinite(v) for v in values):
        raise TrainError(f"fit config from the server has non-finite values {values}")
    return FitConfig(
        lr=msg.lr, batch_size=msg.batch_size, epochs=msg.epochs,
        local_steps=msg.local_steps or None, prox_mu=msg.prox_mu, momentum=msg.momentum,
        weight_decay=msg.weight_decay, seed=msg.seed,
    )
