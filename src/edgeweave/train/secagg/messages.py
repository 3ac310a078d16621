"""The rounds' messages of secure aggregation (Bonawitz et al. 2017, fig. 4), as plain data.

With ``Params.active`` the advertisements carry an Ed25519 signature and a ConsistencyCheck
round (:class:`ConsistencySig`, :class:`ConsistencyProof`) sits between MaskedInputCollection
and Unmasking: the five rounds of the paper's actively secure version.

The same dataclasses travel through the in-process simulation and, converted by
:mod:`edgeweave.train.secagg.wire`, over gRPC; ``nbytes`` is what each one puts on the wire as
payload (keys, ciphertexts, ring elements, share ids), the figure the overhead benchmark reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeweave.train.secagg.shamir import SHARE_BYTES
from edgeweave.train.types import TrainError

ID_BYTES = 8


@dataclass(frozen=True)
class Params:
    """What every party of one aggregation agrees on before it starts."""

    ring_bits: int
    threshold: int
    length: int  # ring elements per input vector
    label: bytes  # binds keys, masks and ciphertexts to this round (no replay across rounds)
    # signed advertisements + ConsistencyCheck: secure against a server that lies (substitutes
    # keys, tells clients different survivor sets); off: honest-but-curious server only
    active: bool = False

    def __post_init__(self) -> None:
        if self.ring_bits not in (32, 64) or self.threshold < 1 or self.length < 1:
            raise TrainError(f"secagg: need ring_bits in (32, 64), threshold >= 1 and length >= 1; "
                             f"got {self.ring_bits}, {self.threshold}, {self.length}")

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return np.uint32 if self.ring_bits == 32 else np.uint64


@dataclass(frozen=True)
class Advertise:
    """Round 0, AdvertiseKeys: the two public keys (c: share encryption, s: mask agreement);
    in active mode signed with the owner's long-term key (``sig``, empty otherwise)."""

    cid: int
    c_pk: bytes
    s_pk: bytes
    sig: bytes = b""

    @property
    def nbytes(self) -> int:
        return ID_BYTES + len(self.c_pk) + len(self.s_pk) + len(self.sig)


@dataclass(frozen=True)
class SharedKeys:
    """Round 1, ShareKeys: one ciphertext per neighbour (its shares of b_u and s_u^SK, readable
    only by that neighbour) and a hash of b_u, so a wrong share is caught at reconstruction."""

    cid: int
    b_commit: bytes
    ciphertexts: dict[int, bytes]

    @property
    def nbytes(self) -> int:
        return ID_BYTES + len(self.b_commit) + sum(ID_BYTES + len(c)
                                                   for c in self.ciphertexts.values())


@dataclass(frozen=True)
class MaskedInput:
    """Round 2, MaskedInputCollection: y_u = x_u + PRG(b_u) + sum_v +-PRG(s_uv) in Z_{2^k}."""

    cid: int
    y: np.ndarray

    @property
    def nbytes(self) -> int:
        return ID_BYTES + self.y.nbytes


@dataclass(frozen=True)
class ConsistencySig:
    """Active round 3, ConsistencyCheck (up): u's signature on the survivor set U3 the server
    showed it. Down, the server sent U3 itself (``ID_BYTES`` per id)."""

    cid: int
    sig: bytes

    @property
    def nbytes(self) -> int:
        return ID_BYTES + len(self.sig)


@dataclass(frozen=True)
class ConsistencyProof:
    """Active round 4, Unmasking (down): the signatures on U3 of the clients U4 that answered
    the ConsistencyCheck; a client releases shares only if all verify on ITS U3 and
    |U4| >= t."""

    sigs: dict[int, bytes]

    @property
    def nbytes(self) -> int:
        return sum(ID_BYTES + len(s) for s in self.sigs.values())


@dataclass(frozen=True)
class Unmask:
    """Round 3, Unmasking: shares of b_v for surviving neighbours and of s_v^SK for dropped ones
    (never both for the same v: that would unmask v's input)."""

    cid: int
    b_shares: dict[int, np.ndarray] = field(default_factory=dict)
    s_shares: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return ID_BYTES + (len(self.b_shares) + len(self.s_shares)) * (ID_BYTES + SHARE_BYTES)


def share_plaintext(u: int, v: int, b_share: np.ndarray, s_share: np.ndarray) -> bytes:
    return (u.to_bytes(8, "little") + v.to_bytes(8, "little")
            + np.asarray(b_share, "<u4").tobytes() + np.asarray(s_share, "<u4").tobytes())


def parse_share_plaintext(data: bytes) -> tuple[int, int, np.ndarray, np.ndarray]:
    if len(data) != 16 + 2 * SHARE_BYTES:
        raise TrainError(f"secagg: share plaintext of {len(data)} bytes, expected "
                         f"{16 + 2 * SHARE_BYTES}")
    u = int.from_bytes(data[:8], "little")
    v = int.from_bytes(data[8:16], "little")
    b = np.frombuffer(data[16:16 + SHARE_BYTES], "<u4").astype(np.uint32)
    s = np.frombuffer(data[16 + SHARE_BYTES:], "<u4").astype(np.uint32)
    return u, v, b, s
