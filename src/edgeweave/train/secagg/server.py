"""The server's side of secure aggregation: relay, collect, and unmask only the sum.

The server sees public keys, ciphertexts it cannot read, masked vectors, and (in the last round)
shares of b_u for the clients whose masked input arrived and of s_u^SK for the clients that
vanished after sharing keys (Bonawitz et al. 2017, fig. 4). From those it removes every
self-mask and every dangling pairwise mask, leaving sum_{u in U3} x_u in Z_{2^k} and nothing
finer. Every message is checked before use; a client whose message is malformed is recorded
in :attr:`SecAggServer.failed` and treated as dropped from that round on. A wrong share that is
well-formed is caught because each rebuilt secret is checked against its commitment (sha256 of
b_u, or the advertised public key for s_u^SK); the server then searches for t shares that do
agree and treats the holders of the others as dropped.

Threat model. Passive mode (``Params.active`` False): an honest-but-curious server (it
follows the protocol but reads everything it holds) and clients that may drop or send garbage;
a server that substituted relayed keys or told clients different survivor lists would learn
individual inputs. Active mode adds Bonawitz et al.'s defences against such a lying server:
signed advertisements (relayed unchanged here; the clients verify them against their PKI
registry) and the ConsistencyCheck round (:meth:`SecAggServer.consistency`), where the server
shows every client of U3 the whole U3, collects their signatures on it (U4) and forwards them;
a client releases shares only when at least t of them verify on its own U3. The server itself
cannot check the signatures' meaning and need not: it only relays and counts.
"""

from __future__ import annotations

import hashlib
import itertools
import random

import numpy as np

from edgeweave.train.secagg import keys, prg, shamir
from edgeweave.train.secagg.client import mask_label, pair_sign
from edgeweave.train.secagg.messages import (
    Advertise,
    ConsistencyProof,
    ConsistencySig,
    MaskedInput,
    Params,
    SharedKeys,
    Unmask,
)
from edgeweave.train.secagg.shamir import CHUNKS, P
from edgeweave.train.types import TrainError

CIPHERTEXT_BYTES = keys.NONCE_BYTES + 16 + 2 * shamir.SHARE_BYTES + keys.TAG_BYTES
_SEARCH_TRIES = 64


class SecAggServer:
    """One aggregation over the clients of ``graph`` (id -> neighbour ids)."""

    def __init__(self, params: Params, graph: dict[int, list[int]],
                 min_survivors: int | None = None) -> None:
        self.p, self.graph = params, {u: set(vs) for u, vs in graph.items()}
        self.min_survivors = max(params.threshold, min_survivors or 0)
        self.failed: dict[int, str] = {}
        self.adverts: dict[int, Advertise] = {}
        self.commits: dict[int, bytes] = {}
        self.inbox_from: dict[int, set[int]] = {}
        self.masked: dict[int, np.ndarray] = {}
        self.u2: set[int] = set()
        self.u4: set[int] | None = None  # active: who signed U3 (None: no ConsistencyCheck yet)

    def drop(self, cid: int, why: str) -> None:
        """Treat ``cid`` as dropped from now on, for this reason (the first one is kept)."""
        self.failed.setdefault(cid, why)

    # ---- round 0 -> 1
    def advertise(self, adverts: list[Advertise]) -> dict[int, dict[int, Advertise]]:
        """Each client's roster: its neighbours that advertised valid keys (U1)."""
        for a in adverts:
            if a.cid not in self.graph:
                self.drop(a.cid, "advertised keys but is not in this round")
            elif len(a.c_pk) != keys.KEY_BYTES or len(a.s_pk) != keys.KEY_BYTES:
                self.drop(a.cid, f"public keys must be {keys.KEY_BYTES} bytes each")
            elif len(a.sig) != (keys.SIG_BYTES if self.p.active else 0):
                self.drop(a.cid, f"advertisement signature must be "
                                 f"{keys.SIG_BYTES if self.p.active else 0} bytes "
                                 f"(active={self.p.active}), got {len(a.sig)}")
            elif a.cid not in self.adverts:
                self.adverts[a.cid] = a
        alive = set(self.adverts)
        while True:  # drop clients with too few live neighbours until none is left short
            short = {u for u in alive if len(self.graph[u] & alive) + 1 < self.p.threshold}
            if not short:
                break
            for u in short:
                self.drop(u, f"fewer than t={self.p.threshold} neighbours advertised keys")
            alive -= short
        self.u1 = alive
        self._need(alive, "advertised keys")
        return {u: {v: self.adverts[v] for v in sorted(self.graph[u] & alive)} for u in alive}

    # ---- round 1 -> 2
    def route(self, shared: list[SharedKeys]) -> dict[int, dict[int, bytes]]:
        """Each U2 client's inbox: the ciphertexts its U2 neighbours addressed to it."""
        good: dict[int, SharedKeys] = {}
        for m in shared:
            want = self.graph.get(m.cid, set()) & self.u1
            if m.cid not in self.u1 or m.cid in good:
                self.drop(m.cid, "sent shares outside round 1 or twice")
            elif set(m.ciphertexts) != want:
                self.drop(m.cid, "sent shares to a set other than its roster")
            elif len(m.b_commit) != 32 or any(len(c) != CIPHERTEXT_BYTES
                                              for c in m.ciphertexts.values()):
                self.drop(m.cid, f"share ciphertexts must be {CIPHERTEXT_BYTES} bytes")
            else:
                good[m.cid] = m
        self.u2 = set(good)
        self._need(self.u2, "shared keys")
        inbox: dict[int, dict[int, bytes]] = {v: {} for v in self.u2}
        for u, m in good.items():
            self.commits[u] = m.b_commit
            for v, ct in m.ciphertexts.items():
                if v in self.u2:
                    inbox[v][u] = ct
        self.inbox_from = {v: set(box) for v, box in inbox.items()}
        return inbox

    # ---- round 2 -> 3
    def collect(self, inputs: list[MaskedInput]) -> list[int]:
        """U3: the clients whose masked input arrived (and is well-formed)."""
        for m in inputs:
            if m.cid not in self.u2 or m.cid in self.masked:
                self.drop(m.cid, "sent a masked input outside round 2 or twice")
            elif m.y.shape != (self.p.length,) or m.y.dtype != self.p.dtype:
                self.drop(m.cid, f"masked input must be {self.p.length} "
                                  f"{np.dtype(self.p.dtype).name} values, got {m.y.shape} "
                                  f"{m.y.dtype}")
            else:
                self.masked[m.cid] = m.y
        self.u3 = sorted(self.masked)
        self._need(set(self.u3), "sent masked inputs")
        return self.u3

    def survivors_for(self, u: int) -> list[int]:
        """What client u needs of U3: which of the peers that shared with it (and itself)
        survived; the rest of its inbox dropped."""
        return sorted((self.inbox_from[u] | {u}) & set(self.u3))

    # ---- active round 3 (ConsistencyCheck) -> 4
    def consistency(self, sigs: list[ConsistencySig]) -> ConsistencyProof:
        """U4: the clients of U3 that signed; the proof every one of them gets back (all of
        U4's signatures: each client checks them on its own U3). Before this, every client of
        U3 was sent U3 itself (:attr:`u3`)."""
        if not self.p.active:
            raise TrainError("secagg: the ConsistencyCheck round is part of active mode only")
        got: dict[int, bytes] = {}
        for m in sigs:
            if m.cid not in self.masked or m.cid in got:
                self.drop(m.cid, "sent a consistency signature outside U3 or twice")
            elif len(m.sig) != keys.SIG_BYTES:
                self.drop(m.cid, f"consistency signature must be {keys.SIG_BYTES} bytes")
            else:
                got[m.cid] = m.sig
        self.u4 = set(got)
        self._need(self.u4, "signed the survivor set")
        return ConsistencyProof(dict(sorted(got.items())))

    # ---- round 3 -> result
    def finish(self, unmasks: list[Unmask]) -> np.ndarray:
        """sum_{u in U3} x_u in the ring, or TrainError when fewer than t shares of some
        secret arrived."""
        if self.p.active and self.u4 is None:
            raise TrainError("secagg: active mode unmasks only after the ConsistencyCheck "
                             "round (SecAggServer.consistency)")
        alive, dropped = set(self.u3), self.u2 - set(self.u3)
        b_sh: dict[int, dict[int, np.ndarray]] = {u: {} for u in alive}
        s_sh: dict[int, dict[int, np.ndarray]] = {u: {} for u in dropped}
        for m in unmasks:
            why = self._check_unmask(m, alive, dropped)
            if why:
                self.drop(m.cid, why)
                continue
            for u, sh in m.b_shares.items():
                b_sh[u][m.cid] = sh
            for u, sh in m.s_shares.items():
                s_sh[u][m.cid] = sh
        z = np.sum(np.stack([self.masked[u] for u in self.u3]), axis=0, dtype=self.p.dtype)
        n, dt = self.p.length, self.p.dtype
        for u in self.u3:
            b = self._rebuild(u, "self-mask seed b", b_sh[u],
                              lambda s, u=u: hashlib.sha256(s).digest() == self.commits[u])
            z = z - prg.expand(b, n, dt)
        label = mask_label(self.p)
        for u in sorted(dropped):
            sk = self._rebuild(u, "mask key s^SK", s_sh[u],
                               lambda s, u=u: keys.public_of(s) == self.adverts[u].s_pk)
            pair = keys.KeyPair(sk)
            for v in self.u3:
                if u in self.inbox_from[v]:  # v masked with u: remove v's half of the pair
                    mask = prg.expand(pair.agree(self.adverts[v].s_pk, label), n, dt)
                    z = z - mask if pair_sign(v, u) > 0 else z + mask
        return z

    def _check_unmask(self, m: Unmask, alive: set[int], dropped: set[int]) -> str | None:
        if m.cid not in alive:
            return "sent unmasking shares but its masked input is not in the sum"
        if self.p.active and (self.u4 is None or m.cid not in self.u4):
            return "sent unmasking shares without having signed the survivor set"
        mine = self.inbox_from[m.cid]
        if set(m.b_shares) != (mine | {m.cid}) & alive or set(m.s_shares) != mine & dropped:
            return "sent unmasking shares for the wrong set of clients"
        for sh in itertools.chain(m.b_shares.values(), m.s_shares.values()):
            a = np.asarray(sh)
            if a.shape != (CHUNKS,) or (a.astype(np.int64) >= P).any():
                return f"sent a malformed share (need {CHUNKS} field elements below p)"
        return None

    def _rebuild(self, owner: int, what: str, shares: dict[int, np.ndarray], ok) -> bytes:
        holders = [h for h in sorted(shares) if h not in self.failed]
        t = self.p.threshold
        if len(holders) < t:
            raise TrainError(f"secagg: cannot rebuild client {owner}'s {what}: {len(holders)} of "
                             f"t={t} shares arrived (too many clients dropped); aborting the sum")
        pts = [h + 1 for h in holders]
        rows = np.stack([np.asarray(shares[h], np.int64) for h in holders])
        secret = shamir.combine(pts, rows, t)
        if ok(secret):
            return secret
        rng = random.Random(owner)
        for _ in range(_SEARCH_TRIES):  # a wrong share among them: look for t that agree
            pick = sorted(rng.sample(range(len(holders)), t))
            secret = shamir.combine([pts[i] for i in pick], rows[pick], t)
            if ok(secret):
                order = pick + [i for i in range(len(holders)) if i not in pick]
                good = shamir.consistent([pts[i] for i in order], rows[order], t)
                for i, fine in zip(order, good, strict=True):
                    if not fine:
                        self.drop(holders[i], f"sent a wrong share of client {owner}'s {what}")
                return secret
        raise TrainError(f"secagg: client {owner}'s {what} does not match its commitment from "
                         f"any {t} of {len(holders)} shares (bad shares); aborting the sum")

    def _need(self, ids: set[int], stage: str) -> None:
        if len(ids) < self.min_survivors:
            raise TrainError(f"secagg: only {len(ids)} clients {stage}, fewer than the "
                             f"{self.min_survivors} needed (threshold t={self.p.threshold}); "
                             "aborting: the sum cannot be recovered")
