"""``"none"``: the tensor's raw little-endian bytes, lossless."""

from __future__ import annotations

import torch

from edgeweave.codec.base import Codec, Encoded, register
from edgeweave.codec.wire import tensor_from_bytes, tensor_to_bytes


class NoneCodec(Codec):
    """Raw bytes: payload is exactly ``numel * itemsize`` bytes; decoding is bit-exact."""

    name = "none"
    lossy = False

    def encode(self, t: torch.Tensor) -> Encoded:
        data, dtype, shape = tensor_to_bytes(t, context=self.name)
        return Encoded(self.name, dtype, tuple(shape), data)

    def decode(self, e: Encoded) -> torch.Tensor:
        self._check(e)
        return tensor_from_bytes(e.payload, e.dtype, e.shape, context=self.name)


register(NoneCodec())
