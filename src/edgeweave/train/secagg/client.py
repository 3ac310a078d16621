"""One client's side of secure aggregation (Bonawitz et al. 2017, fig. 4), as a state machine.

The client never sends its input in the clear: it adds a self-mask PRG(b_u) and, for every
neighbour v that reached round 1, a pairwise mask +-PRG(s_uv) that v adds with the opposite
sign, so the masks cancel in the sum over survivors. Its two secrets (b_u and its mask private
key s_u^SK) are Shamir-shared among its neighbours, encrypted end to end, so the server can
remove the masks of clients that vanish, but only with t neighbours' help and never both
secrets of one client.

Threat models. Passive (``Params.active`` False): the server is honest but curious; it could
break privacy by lying, either by substituting the public keys it relays (a man in the middle
on every pairwise key) or by telling some neighbours of v that v dropped and others that it
survived (collecting t shares of both b_v and s_v^SK, which unmasks x_v). Active (True, the
paper's fig. 4 with a PKI): every advertisement is signed with the owner's long-term Ed25519
key, checked against a registry of verification keys the client got up front, so substituted
keys abort the client; and before Unmasking the client signs the survivor set U3 it was shown
and releases shares only once at least t signatures from U3, all on that same U3, came back.
Honest clients sign only one U3, so with t > n/2 (n: the clients that started; the complete
graph's default threshold) the server cannot gather t signatures on two different sets.
Corrupt clients colluding with the server need t > 2n/3 as in the paper, and are otherwise
outside both modes. On a sparse k-regular graph (Bell et al. 2020) t is about k/2, far below
n/2: the signed advertisements still stop key substitution, but the ConsistencyCheck can no
longer rule out two disjoint groups of t signers (Bell et al.'s neighbourhood-local check is
not implemented). Dropouts are tolerated in both modes.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from edgeweave.train.secagg import keys, prg, shamir
from edgeweave.train.secagg.messages import (
    Advertise,
    ConsistencyProof,
    ConsistencySig,
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
    """Holds x_u (ring elements) and the round's secrets; one method per protocol round.

    In active mode ``signing_key`` is u's long-term key and ``registry`` (cid -> Ed25519
    verification key) the PKI: every peer whose advertisement or consistency signature u
    accepts must be in it."""

    def __init__(self, cid: int, x: np.ndarray, params: Params,
                 signing_key: keys.SigningKey | None = None,
                 registry: dict[int, bytes] | None = None) -> None:
        self.cid, self.p = cid, params
        if params.active:
            if signing_key is None or registry is None:
                raise TrainError(f"secagg client {cid}: active mode needs a signing key and the "
                                 "registry of every client's verification key")
            if registry.get(cid) != signing_key.public:
                raise TrainError(f"secagg client {cid}: the registry does not hold my own "
                                 "verification key: refusing a PKI that does not know me")
        self.sk, self.registry = signing_key, dict(registry or {})
        self.u3: list[int] | None = None  # active: the survivor set I signed
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
        if not self.p.active:
            return Advertise(self.cid, self.c.public, self.s.public)
        msg = keys.advert_message(self.p.label, self.cid, self.c.public, self.s.public)
        return Advertise(self.cid, self.c.public, self.s.public, self._sign(msg))

    def _sign(self, msg: bytes) -> bytes:
        assert self.sk is not None  # only active mode signs, and __init__ requires the key then
        return self.sk.sign(msg)

    def _check_roster(self, roster: dict[int, Advertise]) -> None:
        """Active mode: every neighbour's keys signed by that neighbour, and all keys distinct
        (a server reusing one key for two clients would read both clients' shares)."""
        seen = {self.c.public, self.s.public}
        for v, a in sorted(roster.items()):
            vk = self.registry.get(v)
            if vk is None:
                raise TrainError(f"secagg client {self.cid}: neighbour {v} has no verification "
                                 "key in the registry: aborting")
            if a.cid != v or not keys.verify(vk, a.sig, keys.advert_message(
                    self.p.label, v, a.c_pk, a.s_pk)):
                raise TrainError(f"secagg client {self.cid}: the advertisement of neighbour {v} "
                                 "does not carry its valid signature (keys substituted by the "
                                 "server?): aborting")
            if a.c_pk in seen or a.s_pk in seen or a.c_pk == a.s_pk:
                raise TrainError(f"secagg client {self.cid}: neighbour {v} advertised a public "
                                 "key already in use this round: aborting")
            seen |= {a.c_pk, a.s_pk}

    def share_keys(self, roster: dict[int, Advertise]) -> SharedKeys:
        """Shares of b_u and s_u^SK for each neighbour in ``roster`` (the neighbours that
        advertised keys), each encrypted under the key agreed with that neighbour. u keeps one
        share of b_u itself (Bonawitz et al. share among all of U1, u included): a survivor's
        self-mask then needs only t-1 live neighbours."""
        roster = {v: a for v, a in roster.items() if v != self.cid}
        if self.p.active:
            self._check_roster(roster)
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

    def consistency(self, u3: list[int]) -> ConsistencySig:
        """Active round 3: sign the survivor set the server claims (U3, all of it). This is
        u's only commitment to a view of who survived; it signs at most one per round."""
        if not self.p.active:
            raise TrainError(f"secagg client {self.cid}: the ConsistencyCheck round is part of "
                             "active mode only")
        if self.u3 is not None:
            raise TrainError(f"secagg client {self.cid}: asked to sign a second survivor set: "
                             "aborting")
        ids = sorted(set(int(v) for v in u3))
        if len(ids) != len(u3) or self.cid not in ids:
            raise TrainError(f"secagg client {self.cid}: the survivor set has duplicates or "
                             "leaves me out although I sent my masked input: aborting")
        if len(ids) < self.p.threshold:
            raise TrainError(f"secagg client {self.cid}: only {len(ids)} survivors, fewer than "
                             f"t={self.p.threshold}: aborting")
        self.u3 = ids
        return ConsistencySig(self.cid, self._sign(keys.consistency_message(self.p.label, ids)))

    def _check_consistency(self, proof: ConsistencyProof) -> list[int]:
        """Bonawitz et al. round 4's check: U4 within my U3, |U4| >= t, and every signature
        on exactly the U3 I signed. Any failure means the server showed clients different
        survivor sets (or lost too many): releasing shares could then unmask someone."""
        if self.u3 is None:
            raise TrainError(f"secagg client {self.cid}: asked to unmask before the "
                             "ConsistencyCheck: refusing")
        u4 = sorted(proof.sigs)
        outside = sorted(set(u4) - set(self.u3))
        if outside:
            raise TrainError(f"secagg client {self.cid}: consistency signatures from clients "
                             f"{outside[:5]} outside the survivor set I signed: refusing to "
                             "unmask")
        if len(u4) < self.p.threshold:
            raise TrainError(f"secagg client {self.cid}: only {len(u4)} consistency "
                             f"signatures, fewer than t={self.p.threshold}: refusing to unmask")
        msg = keys.consistency_message(self.p.label, self.u3)
        bad = [v for v in u4 if not keys.verify(self.registry.get(v, b""), proof.sigs[v], msg)]
        if bad:
            raise TrainError(f"secagg client {self.cid}: the consistency signatures of clients "
                             f"{bad[:5]} do not verify on my survivor set of {len(self.u3)} "
                             "(the server showed them a different one?): refusing to unmask")
        return self.u3

    def unmask(self, survivors: list[int] | None = None,
               proof: ConsistencyProof | None = None) -> Unmask:
        """For each neighbour that shared with u: its b-share if it survived round 2, its
        s-share if it did not. Refuses when fewer than t survive (the sum would be lost anyway,
        and answering could only leak). In active mode the survivors are the U3 u signed and
        ``proof`` must pass :meth:`_check_consistency` first (``survivors`` must be None)."""
        if self.p.active:
            if survivors is not None or proof is None:
                raise TrainError(f"secagg client {self.cid}: in active mode unmasking takes the "
                                 "consistency signatures, not a survivor list: refusing")
            survivors = self._check_consistency(proof)
        elif survivors is None:
            raise TrainError(f"secagg client {self.cid}: unmasking needs the survivor list")
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
