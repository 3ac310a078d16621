"""Stateful update compressors for federated training: error feedback around any codec, and
Deep Gradient Compression. Plain codec names give stateless compression.

``make_compressor(spec)`` reads a spec string (the form ServerConfig carries):

- ``"ef:CODEC"``: :class:`ErrorFeedback` around the codec ``CODEC`` (e.g. ``"ef:topk:0.001"``)
- ``"dgc:DENSITY[,MOMENTUM[,CLIP[,WARMUP]]]"``: :class:`DGC` (Lin et al. 2018)
- any codec name (``"int8"``, ``"qsgd:127"``, ``"topk:0.01+zstd"``): :class:`CodecCompressor`
"""

from __future__ import annotations

from edgeweave.train.compress.base import CodecCompressor, UpdateCompressor, codec_named
from edgeweave.train.compress.dgc import DGC, dgc_from_spec, warmup_density
from edgeweave.train.compress.error_feedback import ErrorFeedback
from edgeweave.train.types import TrainError


def make_compressor(spec: str, context: str = "compressor") -> UpdateCompressor:
    """The compressor a spec names; TrainError naming ``context`` if it is not valid."""
    if not isinstance(spec, str) or not spec.strip():
        raise TrainError(f"{context}: expected a codec or compressor name, got {spec!r}")
    if spec.startswith("ef:"):
        return ErrorFeedback(codec_named(spec[3:], context))
    if spec == "dgc" or spec.startswith("dgc:"):
        try:
            return dgc_from_spec(spec)
        except TrainError as e:
            raise TrainError(f"{context}: {e}") from None
    return CodecCompressor(codec_named(spec, context))


__all__ = ["DGC", "CodecCompressor", "ErrorFeedback", "UpdateCompressor", "make_compressor",
           "warmup_density"]
