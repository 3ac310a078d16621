"""Tensor codecs for activations at a model cut and for model updates: raw, fp16, int8, and
lossless zstd/lz4 wrappers composed with ``+`` (``get_codec("int8+zstd")``), plus parametrised
update codecs (``get_codec("topk:0.01")``): qsgd, topk, randk, lowrank, randmask, sketch and
selective (see :func:`list_families`).

Nothing is pickled: a tensor on the wire is an :class:`Encoded` (payload bytes plus codec name,
original dtype, shape and a few float params). Only ``torch``, ``numpy``, ``zstandard``, ``lz4``
and :mod:`edgeweave.errors` are imported here.
"""

from edgeweave.codec import (  # noqa: F401  (importing registers them)
    compress,
    fp16,
    int8,
    lowrank,
    none,
    qsgd,
    randk,
    randmask,
    selective,
    sketch,
    topk,
)
from edgeweave.codec.base import (
    Codec,
    CodecError,
    Encoded,
    get_codec,
    list_codecs,
    list_families,
    register,
)
from edgeweave.codec.wire import tensor_from_bytes, tensor_to_bytes

__all__ = [
    "Codec",
    "CodecError",
    "Encoded",
    "get_codec",
    "list_codecs",
    "list_families",
    "register",
    "tensor_from_bytes",
    "tensor_to_bytes",
]
