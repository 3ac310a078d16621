"""Weights as content-addressed chunks: what an incremental upload sends, resumes and checks.

A weight's upload bytes (its wire bytes, :mod:`edgeweave.codec.wire`, as Deploy sends them; or
fp16 / per-channel int8, :mod:`edgeweave.codec.weights`) are cut on a fixed grid: chunk k covers
bytes ``[k * CHUNK_BYTES, min((k + 1) * CHUNK_BYTES, nbytes))``, and an empty weight is one empty
chunk. Device and node derive the grid from a weight's dtype, shape and encoding alone, and a
chunk is named by the sha256 of its bytes, so the node can store chunks by digest as they
arrive, say which it holds (an upload broken off resumes by sending only the rest), and re-check
every chunk's bytes against its name whenever it reads one.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from edgeweave.codec.wire import tensor_to_bytes
from edgeweave.runtime.recipe import WeightSpec, tensor_pieces

#: 32 KiB, small because a chunk is also what the upload puts on the device's uplink at once: a
#: query waits behind at most one (52 ms at 5 Mbit/s) when the kernel shapes the link (the
#: upload yields to queries between chunks, `runtime.incremental`), and a broken call loses at
#: most the chunks in flight. AlexNet's 244 MB are 7,460 chunks, 480 kB of digests to ask about.
CHUNK_BYTES = 32 << 10
_HEX = frozenset("0123456789abcdef")


def chunk_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_digest(text: str) -> bool:
    """64 lowercase hex digits (a sha256), as every chunk and stage is named."""
    return len(text) == 64 and _HEX.issuperset(text)


def chunk_count(nbytes: int) -> int:
    return max(1, math.ceil(nbytes / CHUNK_BYTES))


def chunk_size(nbytes: int, offset: int) -> int | None:
    """The size of the chunk at ``offset`` of a weight of ``nbytes``, or None when no chunk of
    the grid starts there."""
    if offset < 0 or offset % CHUNK_BYTES or (offset >= nbytes and not (offset == nbytes == 0)):
        return None
    return min(CHUNK_BYTES, nbytes - offset)


@dataclass(frozen=True)
class ChunkRef:
    """One chunk of one weight: where it sits and what its bytes hash to."""

    weight: str
    offset: int
    size: int
    digest: str
    codec: str = "none"  # the weight's encoding (edgeweave.codec.weights)


def weight_chunks(spec: WeightSpec, tensor: torch.Tensor) -> list[ChunkRef]:
    """The chunks of one weight's raw bytes, hashed (the device side; the node re-hashes what
    arrives)."""
    return [ChunkRef(spec.name, offset, len(data), chunk_digest(data))
            for offset, data in tensor_pieces(tensor, CHUNK_BYTES)]


def encoded_chunks(name: str, data: bytes, codec: str) -> list[ChunkRef]:
    """The chunks of one weight's ``codec``-encoded bytes ``data``, hashed."""
    return [ChunkRef(name, k, len(piece), chunk_digest(piece), codec)
            for k in range(0, max(1, len(data)), CHUNK_BYTES)
            for piece in (data[k:k + CHUNK_BYTES],)]


def chunk_data(tensor: torch.Tensor, offset: int) -> bytes:
    """The bytes of the chunk at ``offset`` of ``tensor``'s wire bytes (made again when sent,
    so a device holds its model once, not a second time as chunks)."""
    flat = tensor.detach().reshape(-1)
    size = flat.element_size()
    start = offset // size
    return tensor_to_bytes(flat[start:start + CHUNK_BYTES // size])[0] if flat.numel() else b""
