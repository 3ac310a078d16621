"""Lossless byte compressors that wrap any codec: ``"zstd"`` (level 3) and ``"lz4"`` (lz4 frame).

``get_codec("int8+zstd")`` encodes with ``int8`` and compresses its payload; ``params`` are the
inner codec's. The bare names ``"zstd"`` and ``"lz4"`` mean ``"none+zstd"`` and ``"none+lz4"``.

Frames carry a content checksum, so corruption is detected rather than decoded into garbage.
Decompression is bounded: output larger than the inner codec's ``max_payload_nbytes`` for the
declared dtype and shape is refused (CodecError) before it is materialised, which defuses
decompression bombs.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from functools import partial

import lz4.frame
import torch
import zstandard

from edgeweave.codec.base import Codec, CodecError, Encoded, get_codec, register, register_wrapper
from edgeweave.codec.none import NoneCodec  # noqa: F401  (registers "none", wrapped below)


class Compressor(ABC):
    """A lossless byte compressor with bounded decompression."""

    name: str

    @abstractmethod
    def compress(self, data: bytes) -> bytes:
        """Compress ``data``."""

    @abstractmethod
    def decompress(self, data: bytes, limit: int, context: str) -> bytes:
        """Decompress ``data``; CodecError if corrupt or if the output would exceed ``limit``."""

    def bound(self, n: int) -> int:
        """Upper bound on ``len(compress(data))`` for ``len(data) == n``."""
        return n + n // 128 + 1024


class ZstdCompressor(Compressor):
    """zstandard frames, level 3, with content size and checksum."""

    name = "zstd"
    level = 3

    def __init__(self) -> None:
        self._local = threading.local()  # zstandard contexts are not thread-safe

    def _ctx(self) -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
        ctx = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = (
                zstandard.ZstdCompressor(
                    level=self.level, write_checksum=True, write_content_size=True
                ),
                zstandard.ZstdDecompressor(),
            )
            self._local.ctx = ctx
        return ctx

    def compress(self, data: bytes) -> bytes:
        return self._ctx()[0].compress(data)

    def decompress(self, data: bytes, limit: int, context: str) -> bytes:
        try:
            size = zstandard.frame_content_size(data)
        except zstandard.ZstdError as exc:
            raise CodecError(f"{context}: payload is not a valid zstd frame ({exc})") from None
        if size > limit:
            raise CodecError(
                f"{context}: zstd frame declares {size} bytes, expected at most {limit}; "
                f"refusing to decompress"
            )
        try:
            # With a declared size zstd decodes into exactly that many bytes and fails if the
            # frame holds more; without one, max_output_size caps the buffer.
            out = self._ctx()[1].decompress(data, max_output_size=max(limit, 1))
        except zstandard.ZstdError as exc:
            raise CodecError(
                f"{context}: zstd payload is corrupt or decompresses to more than {limit} bytes "
                f"({exc})"
            ) from None
        if len(out) > limit:  # pragma: no cover - guarded above, kept as a last line of defence
            raise CodecError(f"{context}: zstd output is {len(out)} bytes, expected <= {limit}")
        return out


class Lz4Compressor(Compressor):
    """lz4 frames (default level) with content size and checksum."""

    name = "lz4"

    def compress(self, data: bytes) -> bytes:
        return lz4.frame.compress(data, content_checksum=True, store_size=True)

    def decompress(self, data: bytes, limit: int, context: str) -> bytes:
        try:
            size = lz4.frame.get_frame_info(data).get("content_size", 0)
        except (RuntimeError, ValueError) as exc:
            raise CodecError(f"{context}: payload is not a valid lz4 frame ({exc})") from None
        if size > limit:
            raise CodecError(
                f"{context}: lz4 frame declares {size} bytes, expected at most {limit}; "
                f"refusing to decompress"
            )
        dec = lz4.frame.LZ4FrameDecompressor()
        try:
            out = dec.decompress(data, max_length=limit + 1)
        except (RuntimeError, ValueError) as exc:
            raise CodecError(f"{context}: lz4 payload is corrupt ({exc})") from None
        if len(out) > limit:
            raise CodecError(
                f"{context}: lz4 payload decompresses to more than {limit} bytes; "
                f"refusing to decompress"
            )
        if not dec.eof:
            raise CodecError(f"{context}: lz4 payload is truncated (frame has no end mark)")
        if dec.unused_data:
            raise CodecError(
                f"{context}: lz4 payload has {len(dec.unused_data)} trailing bytes after the frame"
            )
        return out


class Compressed(Codec):
    """``inner`` followed by a byte compressor; lossless on top of ``inner``."""

    def __init__(self, inner: Codec, compressor: Compressor, name: str | None = None) -> None:
        self.inner = inner
        self.compressor = compressor
        self.name = name or f"{inner.name}+{compressor.name}"
        self.lossy = inner.lossy

    def encode(self, t: torch.Tensor) -> Encoded:
        e = self.inner.encode(t)
        payload = self.compressor.compress(e.payload)
        return Encoded(self.name, e.dtype, e.shape, payload, dict(e.params))

    def decode(self, e: Encoded) -> torch.Tensor:
        self._check(e)
        limit = self.inner.max_payload_nbytes(e.dtype, e.shape)
        raw = self.compressor.decompress(e.payload, limit, self.name)
        return self.inner.decode(Encoded(self.inner.name, e.dtype, e.shape, raw, dict(e.params)))

    def max_payload_nbytes(self, dtype: str, shape: tuple[int, ...]) -> int:
        return self.compressor.bound(self.inner.max_payload_nbytes(dtype, shape))


ZSTD = ZstdCompressor()
LZ4 = Lz4Compressor()

for _comp in (ZSTD, LZ4):
    register_wrapper(_comp.name, partial(Compressed, compressor=_comp))
    register(Compressed(get_codec("none"), _comp, name=_comp.name))
