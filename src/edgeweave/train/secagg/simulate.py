"""Secure aggregation run in one process: every client's state machine and the server's, with
simulated dropouts, timing each party's own work and counting each message's bytes.

This is what the simulated server loop (:mod:`edgeweave.train.secagg.aggregate`), the tests and
the overhead benchmark use. Per-client time is the time of that client's own method calls (key
generation, sharing, encryption, masking, decryption), never the whole simulation divided by n;
the server's time is measured separately. Both are CPU time of the running thread
(``time.thread_time``): on a shared host wall time would charge other processes' work to the
protocol.

With ``Params.active`` the run plays the paper's five rounds: a fresh Ed25519 key per client and
the registry of their verification keys stand in for the PKI (unless given), advertisements are
signed and verified, and the ConsistencyCheck round precedes Unmasking; its bytes (signatures,
the whole U3 sent down, the forwarded signatures) are counted like every other message's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edgeweave.train.secagg import graph as graphs
from edgeweave.train.secagg import keys
from edgeweave.train.secagg.client import SecAggClient
from edgeweave.train.secagg.messages import Params
from edgeweave.train.secagg.server import SecAggServer
from edgeweave.train.types import TrainError


@dataclass
class SecAggResult:
    """The unmasked sum and what it cost."""

    total: np.ndarray  # sum of the survivors' inputs in the ring
    survivors: list[int]  # U3: whose inputs are in ``total``
    dropped: list[int]  # shared keys, then vanished before sending a masked input
    failed: dict[int, str]
    client_s: dict[int, float]  # each client's own compute time, all rounds
    server_s: float
    # per message: mean payload bytes over the clients that sent (up) or received (down) it, so
    # the sums are what one client that stays to the end moves
    bytes_up: dict[str, float] = field(default_factory=dict)
    bytes_down: dict[str, float] = field(default_factory=dict)

    @property
    def client_bytes_up(self) -> float:
        return sum(self.bytes_up.values())

    @property
    def client_bytes_down(self) -> float:
        return sum(self.bytes_down.values())


def make_graph(ids: list[int], k: int | None, seed: int) -> dict[int, list[int]]:
    """The complete graph (k None or >= n-1) or a random k-regular one (Bell et al. 2020)."""
    if k is None or k >= len(ids) - 1:
        return graphs.complete(ids)
    return graphs.k_regular(ids, k, seed)


def secure_sum(inputs: dict[int, np.ndarray], params: Params, graph: dict[int, list[int]],
               drop_before_masking: set[int] | frozenset[int] = frozenset(),
               drop_before_unmasking: set[int] | frozenset[int] = frozenset(),
               drop_before_signing: set[int] | frozenset[int] = frozenset(),
               signing_keys: dict[int, keys.SigningKey] | None = None) -> SecAggResult:
    """Run the four rounds (five with ``params.active``) over ``inputs`` (id -> ring vector).
    Clients in ``drop_before_masking`` vanish after ShareKeys (their pairwise masks are
    already in the others' inputs: the case recovery exists for); ``drop_before_unmasking``
    after sending their masked input (their input is still summed; in active mode after
    signing U3 too); ``drop_before_signing`` (active only) after the masked input but before
    the ConsistencyCheck. ``signing_keys`` (active only): each client's long-term key; fresh
    ones when None."""
    if set(graph) != set(inputs):
        raise TrainError("secagg: the graph must cover exactly the clients with inputs")
    if drop_before_signing and not params.active:
        raise TrainError("secagg: drop_before_signing needs active mode (there is no "
                         "ConsistencyCheck round otherwise)")
    ids = sorted(inputs)
    if params.active:
        signing_keys = signing_keys or {u: keys.SigningKey() for u in ids}
        missing = sorted(set(ids) - set(signing_keys))
        if missing:
            raise TrainError(f"secagg: no signing key for clients {missing[:5]}")
        registry = {u: signing_keys[u].public for u in ids}
    else:
        signing_keys, registry = {}, None
    clock = {u: 0.0 for u in ids}
    up: dict[str, float] = {}
    down: dict[str, float] = {}

    def timed(u: int, fn, *args):
        t0 = time.thread_time()
        out = fn(*args)
        clock[u] += time.thread_time() - t0
        return out

    server_s = 0.0
    t0 = time.thread_time()
    server = SecAggServer(params, graph)
    server_s += time.thread_time() - t0
    clients = {u: timed(u, SecAggClient, u, inputs[u], params, signing_keys.get(u), registry)
               for u in ids}
    adverts = [timed(u, clients[u].advertise) for u in ids]
    up["advertise"] = sum(a.nbytes for a in adverts) / len(adverts)

    t0 = time.thread_time()
    rosters = server.advertise(adverts)
    server_s += time.thread_time() - t0
    down["rosters"] = sum(a.nbytes for r in rosters.values() for a in r.values()) / len(rosters)
    shared = [timed(u, clients[u].share_keys, rosters[u]) for u in sorted(rosters)]
    up["shares"] = sum(m.nbytes for m in shared) / len(shared)

    t0 = time.thread_time()
    inbox = server.route(shared)
    server_s += time.thread_time() - t0
    down["shares"] = sum(8 + len(c) for box in inbox.values() for c in box.values()) / len(inbox)
    masked = [timed(u, clients[u].masked_input, inbox[u]) for u in sorted(inbox)
              if u not in drop_before_masking]
    up["masked_input"] = sum(m.nbytes for m in masked) / max(len(masked), 1)

    t0 = time.thread_time()
    survivors = server.collect(masked)
    server_s += time.thread_time() - t0
    if params.active:
        # every client of U3 is shown (and signs) the whole U3: O(n) down, one signature up
        down["survivors"] = 8.0 * len(survivors)
        sigs = [timed(u, clients[u].consistency, survivors) for u in survivors
                if u not in drop_before_signing]
        up["consistency"] = sum(m.nbytes for m in sigs) / max(len(sigs), 1)
        t0 = time.thread_time()
        proof = server.consistency(sigs)
        server_s += time.thread_time() - t0
        down["consistency"] = float(proof.nbytes)
        unmasks = [timed(u, clients[u].unmask, None, proof) for u in sorted(server.u4 or ())
                   if u not in drop_before_unmasking]
    else:
        # each client learns only which of ITS share holders' peers survived: O(k), not O(n)
        views = {u: server.survivors_for(u) for u in survivors}
        down["survivors"] = sum(8 * len(v) for v in views.values()) / max(len(views), 1)
        unmasks = [timed(u, clients[u].unmask, views[u]) for u in survivors
                   if u not in drop_before_unmasking]
    up["unmask_shares"] = sum(m.nbytes for m in unmasks) / max(len(unmasks), 1)

    t0 = time.thread_time()
    total = server.finish(unmasks)
    server_s += time.thread_time() - t0
    return SecAggResult(
        total=total, survivors=survivors, dropped=sorted(server.u2 - set(survivors)),
        failed=dict(server.failed), client_s=clock, server_s=server_s,
        bytes_up=up, bytes_down=down,
    )
