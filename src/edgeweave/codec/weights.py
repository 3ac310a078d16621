"""Weight codecs for uploading a model to a node: ``none`` (raw), ``fp16`` and ``int8`` (per
output channel, symmetric), the bytes a weight crosses the link as.

An incremental upload (IONN) spends minutes on a large model's weights (AlexNet's 234 MB of FC
weights at 5 Mbit/s: over six minutes); sent as int8 they are a quarter of that, at a small,
measured accuracy cost (``profile.weight_agreement``). Unlike the activation codecs
(:mod:`edgeweave.codec.base`), a weight's encoded size follows from its dtype and shape alone,
so a node can check every chunk of it on its grid before any other byte has arrived, and the
device names each chunk by the sha256 of its encoded bytes.

Which codec a weight actually travels as is fixed by its spec (:func:`weight_codec`): fp16
applies to float32 tensors, int8 to float32 tensors of two or more dimensions (convolution and
linear weights: one scale per output channel, as ``torch.ao``'s per-channel observers; biases and
norm statistics are small and stay raw), everything else goes raw. Encoded layouts:

  fp16   the float16 elements, little-endian;
  int8   ``shape[0]`` float32 scales, then one int8 per element (``q`` in [-127, 127]).

Decoding is exact and deterministic (``q * scale`` in float32, one correctly rounded multiply):
the device hashes the dequantized weights into the stage digest, and the node, dequantizing the
same bytes, builds a stage with that very digest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from edgeweave.codec.base import CodecError
from edgeweave.codec.wire import dtype_name, nbytes_for, tensor_from_bytes, tensor_to_bytes

WEIGHT_CODECS = ("none", "fp16", "int8")
_LEVELS = 127


def check_weight_codec(name: str, what: str = "--upload-codec") -> str:
    if name not in WEIGHT_CODECS:
        raise CodecError(f"{what}: expected one of {', '.join(WEIGHT_CODECS)}, got {name!r}")
    return name


def weight_codec(codec: str, dtype: str, shape: Sequence[int]) -> str:
    """The codec a weight of this dtype and shape travels as when the upload asks for
    ``codec`` (see module doc)."""
    check_weight_codec(codec)
    if dtype != "float32" or codec == "none":
        return "none"
    if codec == "int8" and (len(shape) < 2 or math.prod(shape) == 0):
        return "none"
    return codec


def encoded_nbytes(codec: str, dtype: str, shape: Sequence[int]) -> int:
    """The weight's bytes on the link under ``codec`` (from its dtype and shape alone)."""
    used = weight_codec(codec, dtype, shape)
    numel = math.prod(shape)
    if used == "fp16":
        return 2 * numel
    if used == "int8":
        return 4 * int(shape[0]) + numel
    return nbytes_for(dtype, shape)


def encode_weight(codec: str, tensor: torch.Tensor) -> bytes:
    """The weight's encoded bytes (``codec`` as :func:`weight_codec` resolves it)."""
    x = tensor.detach().cpu().contiguous()
    used = weight_codec(codec, dtype_name(x.dtype, context="weight"), tuple(x.shape))
    if used == "fp16":
        return tensor_to_bytes(x.to(torch.float16))[0]
    if used == "int8":
        rows = x.reshape(x.shape[0], -1)
        if not bool(torch.isfinite(rows).all()):
            raise CodecError("int8 weight upload: the weight has NaN/inf values; upload it "
                             "with --upload-codec none")
        amax = rows.abs().amax(dim=1)
        scale = torch.where(amax > 0, amax / _LEVELS, torch.ones_like(amax))
        q = torch.round(rows / scale[:, None]).clamp(-_LEVELS, _LEVELS).to(torch.int8)
        return tensor_to_bytes(scale)[0] + tensor_to_bytes(q)[0]
    return tensor_to_bytes(x)[0]


def decode_weight(codec: str, data: bytes, dtype: str, shape: Sequence[int]) -> torch.Tensor:
    """The weight a node builds from ``data`` (CodecError when the bytes do not fit)."""
    used = weight_codec(codec, dtype, shape)
    want = encoded_nbytes(codec, dtype, shape)
    if len(data) != want:
        raise CodecError(f"{used} weight {list(shape)}: expected {want} bytes, got {len(data)}")
    shape = tuple(int(s) for s in shape)
    if used == "fp16":
        return tensor_from_bytes(data, "float16", shape).to(torch.float32)
    if used == "int8":
        rows = shape[0]
        scale = tensor_from_bytes(data[:4 * rows], "float32", (rows,))
        if not bool(torch.isfinite(scale).all()) or bool((scale < 0).any()):
            raise CodecError("int8 weight: its scales must be finite and non-negative")
        q = tensor_from_bytes(data[4 * rows:], "int8", (rows, math.prod(shape[1:])))
        return (q.to(torch.float32) * scale[:, None]).reshape(shape)
    return tensor_from_bytes(data, dtype, shape)


def roundtrip(codec: str, tensor: torch.Tensor) -> torch.Tensor:
    """What the node will hold for ``tensor``: encoded, then decoded."""
    dtype = dtype_name(tensor.dtype, context="weight")
    if weight_codec(codec, dtype, tuple(tensor.shape)) == "none":
        return tensor
    return decode_weight(codec, encode_weight(codec, tensor), dtype, tuple(tensor.shape))
