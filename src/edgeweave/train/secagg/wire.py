"""Secure-aggregation messages <-> fl.proto, with every field checked on the way in.

A peer controls every byte of what arrives, so decoding bounds counts and sizes before any
allocation and names the field at fault; the grpc backend turns the TrainError into an
INVALID_ARGUMENT status and treats the sender as dropped.
"""

from __future__ import annotations

import numpy as np

from edgeweave.train.secagg import keys
from edgeweave.train.secagg.messages import (
    Advertise,
    ConsistencyProof,
    MaskedInput,
    Params,
    SharedKeys,
    Unmask,
)
from edgeweave.train.secagg.shamir import CHUNKS
from edgeweave.train.secagg.vector import UpdateVector
from edgeweave.train.types import TrainError
from edgeweave.train.wire import fl_pb2

MAX_CIPHERTEXT = 1024


def setup_to_msg(p: Params, vec: UpdateVector) -> fl_pb2.SecAggSetup:
    return fl_pb2.SecAggSetup(ring_bits=p.ring_bits, threshold=p.threshold,
                              frac_bits=vec.delta.frac_bits, loss_frac_bits=vec.loss.frac_bits,
                              clip=vec.delta.clip, max_weight=vec.max_weight, label=p.label,
                              active=p.active)


def keys_to_msg(a: Advertise) -> fl_pb2.PublicKeys:
    return fl_pb2.PublicKeys(client_id=a.cid, c_pk=a.c_pk, s_pk=a.s_pk, sig=a.sig)


def keys_from_msg(m: fl_pb2.PublicKeys) -> Advertise:
    if len(m.c_pk) != keys.KEY_BYTES or len(m.s_pk) != keys.KEY_BYTES:
        raise TrainError(f"secagg: public keys of client {m.client_id} must be "
                         f"{keys.KEY_BYTES} bytes each, got {len(m.c_pk)} and {len(m.s_pk)}")
    if len(m.sig) not in (0, keys.SIG_BYTES):
        raise TrainError(f"secagg: the advertisement signature of client {m.client_id} must be "
                         f"{keys.SIG_BYTES} bytes (or absent), got {len(m.sig)}")
    return Advertise(int(m.client_id), bytes(m.c_pk), bytes(m.s_pk), bytes(m.sig))


def proof_to_msg(p: ConsistencyProof) -> fl_pb2.ConsistencyProof:
    return fl_pb2.ConsistencyProof(sigs=[fl_pb2.Signature(client_id=v, sig=s)
                                         for v, s in sorted(p.sigs.items())])


def proof_from_msg(m: fl_pb2.ConsistencyProof, max_signers: int) -> ConsistencyProof:
    if len(m.sigs) > max_signers:
        raise TrainError(f"secagg: {len(m.sigs)} consistency signatures, more than the "
                         f"{max_signers} survivors")
    sigs: dict[int, bytes] = {}
    for e in m.sigs:
        if e.client_id in sigs or len(e.sig) != keys.SIG_BYTES:
            raise TrainError(f"secagg: a duplicate or malformed consistency signature of client "
                             f"{e.client_id} (need {keys.SIG_BYTES} bytes)")
        sigs[int(e.client_id)] = bytes(e.sig)
    return ConsistencyProof(sigs)


def shared_to_msg(s: SharedKeys) -> fl_pb2.SharedKeys:
    return fl_pb2.SharedKeys(b_commit=s.b_commit, shares=[
        fl_pb2.EncryptedShare(client_id=v, ciphertext=c) for v, c in sorted(s.ciphertexts.items())])


def shared_from_msg(cid: int, m: fl_pb2.SharedKeys, max_peers: int) -> SharedKeys:
    if len(m.shares) > max_peers:
        raise TrainError(f"secagg: client {cid} sent {len(m.shares)} shares, more than its "
                         f"{max_peers} neighbours")
    cts: dict[int, bytes] = {}
    for e in m.shares:
        if e.client_id in cts or len(e.ciphertext) > MAX_CIPHERTEXT:
            raise TrainError(f"secagg: client {cid} sent a duplicate or oversized share for "
                             f"{e.client_id}")
        cts[int(e.client_id)] = bytes(e.ciphertext)
    return SharedKeys(cid, bytes(m.b_commit), cts)


def masked_from_msg(cid: int, data: bytes, p: Params) -> MaskedInput:
    width = np.dtype(p.dtype).itemsize
    if len(data) != p.length * width:
        raise TrainError(f"secagg: masked input of client {cid} has {len(data)} bytes, expected "
                         f"{p.length * width} ({p.length} ring elements of {p.ring_bits} bits)")
    return MaskedInput(cid, np.frombuffer(data, np.dtype(p.dtype).newbyteorder("<"))
                       .astype(p.dtype))


def masked_to_bytes(m: MaskedInput) -> bytes:
    return m.y.astype(np.dtype(m.y.dtype).newbyteorder("<")).tobytes()


def unmask_to_msg(u: Unmask) -> fl_pb2.UnmaskShares:
    def rows(d):
        return [fl_pb2.FieldShare(client_id=v, values=s.tolist()) for v, s in sorted(d.items())]
    return fl_pb2.UnmaskShares(b_shares=rows(u.b_shares), s_shares=rows(u.s_shares))


def unmask_from_msg(cid: int, m: fl_pb2.UnmaskShares, max_peers: int) -> Unmask:
    if len(m.b_shares) + len(m.s_shares) > max_peers:
        raise TrainError(f"secagg: client {cid} sent {len(m.b_shares) + len(m.s_shares)} "
                         f"unmasking shares, more than its {max_peers} neighbours")
    out = Unmask(cid)
    for field, dest in ((m.b_shares, out.b_shares), (m.s_shares, out.s_shares)):
        for f in field:
            if len(f.values) != CHUNKS or f.client_id in dest:
                raise TrainError(f"secagg: client {cid} sent a malformed or duplicate share of "
                                 f"client {f.client_id} (need {CHUNKS} field elements)")
            dest[int(f.client_id)] = np.asarray(f.values, np.uint32)
    return out
