"""One client's side of secure aggregation (Bonawitz et al. 2017, fig. 4), as a state machine.

The client never sends its input in the clear: it adds a self-mask PRG(b_u) and, for every
neighbour v that reached round 1, a pairwise mask +-PRG(s_uv) that v adds with the opposite
sign, so the masks cancel in the sum over survivors. Its two secrets (b_u and its mask private
key s_u^SK) are Shamir-shared among its neighbours, encrypted end to end, so the server can
remove the masks of clients that vanish, but only with t neighbours' help and never both
secrets of one client.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from edgeweave.train.secagg import keys, prg, shamir
from edgeweave.train.secagg.messages import (
    Advertise,
    MaskedInput,
    Params,
    SharedKeys,
    Unmask,
    parse_share_plaintext,
    share_plaintext,
)
from edgeweave.train.types import TrainError


def mask_label(p: Params) -> bytes:
    return b"edgeweave-secagg mask " + p.label


def share_aad(p: Params, u: int, v: int) -> bytes:
    return b"edgeweave-secagg share " + p.label + b"|%d|%d" % (u, v)


def pair_sign(u: int, v: int) -> int:
    """+1 for the lower id of the pair, -1 for the higher: the two masks cancel."""
    return 1 if u < v else -1


class SecAggClient:
    """Holds x_u (ring elements) and the round's secrets; one method per protocol round."""

    def __init__(self, cid: int, x: np.ndarray, params: Params) -> None:
        self.cid, self.p = cid, params
        x = np.asarray(x)
        if x.shape != (params.length,) or x.dtype != params.dtype:
            raise TrainError(f"secagg client {cid}: input must be {params.length} "
                             f"{np.dtype(params.dtype).name} ring elements, got {x.shape} "
                             f"{x.dtype}")
        self.x = x
        self.c, self.s = keys.KeyPair(), keys.KeyPair()
        self.b = os.urandom(prg.SEED_BYTES)
        self.roster: dict[int, Advertise] = {}
        self.inbox: dict[int, bytes] = {}
        self._enc: dict[int, bytes] = {}  # the AES-GCM key agreed with each neighbour

    def advertise(self) -> Advertise:
        return Advertise(self.cid, self.c.public, self.s.public)

    def share_keys(self, roster: dict[int, Advertise]) -> SharedKeys:
        """Shares of b_u and s_u^SK for each neighbour in ``roster`` (the neighbours that
        advertised keys), each encrypted under the key agreed with that neighbour. u keeps one
        share of b_u itself (Bonawitz et al. share among all of U1, u included): a survivor's
        self-mask then needs only t-1 live neighbours."""
        roster = {v: a for v, a in roster.items() if v != self.cid}
        if len(roster) + 1 < self.p.threshold:
            raise TrainError(f"secagg client {self.cid}: only {len(roster)} neighbours advertised "
                             f"keys, too few for the threshold t={self.p.threshold}: aborting")
        self.roster = roster
        ids = sorted(roster)
        points = [v + 1 for v in ids] + [self.cid + 1]  # a holder's field point: its id + 1
        b_sh = shamir.split(self.b, points, self.p.threshold)
        s_sh = shamir.split(self.s.secret, points, self.p.threshold)
        self._own_b = b_sh[-1]
        cts = {}
        for i, v in enumerate(ids):
            key = self._enc[v] = self.c.agree(roster[v].c_pk,
                                              b"edgeweave-secagg enc " + self.p.label)
            pt = share_plaintext(self.cid, v, b_sh[i], s_sh[i])
            cts[v] = keys.encrypt(key, pt, share_aad(self.p, self.cid, v))
        return SharedKeys(self.cid, hashlib.sha256(self.b).digest(), cts)

    def masked_input(self, inbox: dict[int, bytes]) -> MaskedInput:
        """y_u from the ciphertexts addressed to u: their senders are the neighbours that
        completed round 1 (U2), exactly the ones that mask with u."""
        unknown = sorted(set(inbox) - set(self.roster))
        if unknown:
            raise TrainError(f"secagg client {self.cid}: shares from non-neighbours {unknown[:5]}")
        if len(inbox) + 1 < self.p.threshold:
            raise TrainError(f"secagg client {self.cid}: only {len(inbox)} neighbours shared "
                             f"keys, too few for t={self.p.threshold}: aborting")
        self.inbox = dict(inbox)
        dt, n = self.p.dtype, self.p.length
        y = self.x + prg.expand(self.b, n, dt)
        label = mask_label(self.p)
        for v in sorted(inbox):
            m = prg.expand(self.s.agree(self.roster[v].s_pk, label), n, dt)
            y = y + m if pair_sign(self.cid, v) > 0 else y - m
        return MaskedInput(self.cid, y)

    def unmask(self, survivors: list[int]) -> Unmask:
        """For each neighbour that shared with u: its b-share if it survived round 2, its
        s-share if it did not. Refuses when fewer than t survive (the sum would be lost anyway,
        and answering could only leak)."""
        alive = set(survivors)
        if len(alive & (set(self.inbox) | {self.cid})) < self.p.threshold:
            raise TrainError(f"secagg client {self.cid}: only {len(alive)} clients survived, "
                             f"fewer than t={self.p.threshold} of my neighbours: aborting")
        out = Unmask(self.cid, b_shares={self.cid: self._own_b})
        for v, ct in sorted(self.inbox.items()):
            u_, v_, b_sh, s_sh = parse_share_plaintext(
                keys.decrypt(self._enc[v], ct, share_aad(self.p, v, self.cid)))
            if (u_, v_) != (v, self.cid):
                raise TrainError(f"secagg client {self.cid}: share from {v} names ({u_}, {v_})")
            if v in alive:
                out.b_shares[v] = b_sh
            else:
                out.s_shares[v] = s_sh
        return out
