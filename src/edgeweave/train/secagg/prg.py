"""Expanding a 32-byte seed into a mask vector of ring elements.

Bonawitz et al. 2017 use a PRG so that two clients holding the same agreed seed produce the same
mask without ever sending it. AES-256 in counter mode over zero bytes is that PRG here: it is
what ``cryptography`` (OpenSSL, AES-NI) computes fastest, about 1 GB/s per core, so one mask of a
10k-parameter model costs microseconds and the pairwise-mask cost is dominated by key agreement,
not expansion. The keystream bytes are read directly as little-endian uint32/uint64 ring elements
(a uniform keystream gives uniform ring elements: 2^k divides 2^(8*bytes), no rejection needed).
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from edgeweave.train.types import TrainError

SEED_BYTES = 32
_NONCE = bytes(16)  # each seed is used for one stream only, so a fixed counter start is safe


def expand(seed: bytes, length: int, dtype: type[np.unsignedinteger]) -> np.ndarray:
    """``length`` pseudo-random ring elements of ``dtype`` from ``seed``."""
    if len(seed) != SEED_BYTES:
        raise TrainError(f"secagg: a PRG seed must be {SEED_BYTES} bytes, got {len(seed)}")
    width = np.dtype(dtype).itemsize
    enc = Cipher(algorithms.AES(seed), modes.CTR(_NONCE)).encryptor()
    stream = enc.update(bytes(length * width)) + enc.finalize()
    return np.frombuffer(stream, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
