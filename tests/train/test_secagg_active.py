"""Secure aggregation against a lying server (Bonawitz et al. 2017, fig. 4 with a PKI): signed
advertisements and the ConsistencyCheck round. Honest runs give the passive sum exactly; a
server that substitutes keys or shows clients different survivor sets is caught before any
share is released."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict

import numpy as np
import pytest
import torch
from secagg_helpers import ring_inputs, ring_sum

from edgeweave.train.grpc_client import FLClient
from edgeweave.train.secagg import graph as graphs
from edgeweave.train.secagg import keys
from edgeweave.train.secagg.aggregate import SecAggFedAvg
from edgeweave.train.secagg.backend import SecAggGrpcBackend
from edgeweave.train.secagg.client import SecAggClient
from edgeweave.train.secagg.messages import Advertise, ConsistencyProof, Params
from edgeweave.train.secagg.server import SecAggServer
from edgeweave.train.secagg.simulate import make_graph, secure_sum
from edgeweave.train.types import FitConfig, TrainError, Updates

pytestmark = pytest.mark.usefixtures("one_thread")


def _fleet(n: int, p: Params, seed: int = 0):
    """Clients with long-term keys and the registry (the PKI), plus an honest server."""
    sks = {u: keys.SigningKey() for u in range(n)}
    registry = {u: sk.public for u, sk in sks.items()}
    x = ring_inputs(n, p.length, seed)
    clients = {u: SecAggClient(u, x[u], p, sks[u], registry) for u in range(n)}
    return x, clients, SecAggServer(p, graphs.complete(list(range(n))))


def _through_masking(n: int, p: Params):
    x, clients, server = _fleet(n, p)
    rosters = server.advertise([c.advertise() for c in clients.values()])
    inbox = server.route([clients[u].share_keys(rosters[u]) for u in range(n)])
    survivors = server.collect([clients[u].masked_input(inbox[u]) for u in range(n)])
    return x, clients, server, survivors


@pytest.mark.parametrize("k", [None, 4])
def test_active_honest_run_sums_exactly_like_passive(k):
    n, length = 10, 64
    x = ring_inputs(n, length, seed=2)
    g = make_graph(list(range(n)), k, seed=1)
    t = graphs.threshold(min(len(v) for v in g.values()) + 1)
    passive = secure_sum(x, Params(32, t, length, b"h"), g, drop_before_masking={3})
    active = secure_sum(x, Params(32, t, length, b"h", active=True), g,
                        drop_before_masking={3})
    assert np.array_equal(active.total, passive.total)
    assert np.array_equal(active.total, ring_sum(x[u] for u in active.survivors))
    assert active.survivors == passive.survivors and 3 not in active.survivors
    # the new bytes are counted: a signature per advertisement, up and relayed down, and the
    # ConsistencyCheck (U3 down, one signature up, U4's signatures down)
    assert active.bytes_up["advertise"] == passive.bytes_up["advertise"] + keys.SIG_BYTES
    assert active.bytes_down["rosters"] > passive.bytes_down["rosters"]
    assert active.bytes_up["consistency"] == 8 + keys.SIG_BYTES
    assert active.bytes_down["consistency"] == len(active.survivors) * (8 + keys.SIG_BYTES)
    assert "consistency" not in passive.bytes_up
    assert active.client_bytes_up > passive.client_bytes_up


def test_strategy_with_active_gives_the_same_model():
    w = OrderedDict(a=torch.zeros(4, 3), b=torch.ones(3))
    g = torch.Generator().manual_seed(0)
    params = [OrderedDict((k, v + 0.05 * torch.randn(v.shape, generator=g))
                          for k, v in w.items()) for _ in range(8)]
    upd = Updates.stack(list(range(8)), params, [10 + i for i in range(8)], [0.5] * 8)
    a, b = SecAggFedAvg(dropout=0.25, seed=3), SecAggFedAvg(dropout=0.25, seed=3, active=True)
    new_a, new_b = a.aggregate(1, w, upd), b.aggregate(1, w, upd)
    for name in w:
        assert torch.equal(new_a[name], new_b[name])
    assert b.round_metrics()["secagg_active"] is True
    assert (b.round_metrics()["secagg_bytes_up_per_client"]
            > a.round_metrics()["secagg_bytes_up_per_client"])


def test_substituted_key_in_the_advertisements_is_detected_by_the_victims_neighbours():
    n, victim = 6, 2
    p = Params(32, 4, 16, b"mitm", active=True)
    _, clients, server = _fleet(n, p)
    rosters = server.advertise([c.advertise() for c in clients.values()])
    real = rosters[0][victim]
    mallory, mallory_sk = keys.KeyPair(), keys.SigningKey()
    forged = {  # the server's own c key: it could then read every share sent to the victim
        "kept signature": Advertise(victim, mallory.public, real.s_pk, real.sig),
        "re-signed by the server": Advertise(victim, mallory.public, real.s_pk, mallory_sk.sign(
            keys.advert_message(p.label, victim, mallory.public, real.s_pk))),
        "replayed from another round": _other_round_advert(victim, clients[victim]),
    }
    for how, fake in forged.items():
        for u in range(n):
            if u == victim:
                continue
            roster = dict(rosters[u])
            roster[victim] = fake
            with pytest.raises(TrainError, match=rf"client {u}: the advertisement of neighbour "
                                                 rf"{victim} does not carry its valid signature"):
                clients[u].share_keys(roster)
            assert clients[u].roster == {}, how  # nothing was shared
    # the honest roster still goes through
    assert set(clients[0].share_keys(rosters[0]).ciphertexts) == set(range(1, n))


def _other_round_advert(cid: int, client: SecAggClient) -> Advertise:
    msg = keys.advert_message(b"an earlier round", cid, client.c.public, client.s.public)
    return Advertise(cid, client.c.public, client.s.public, client.sk.sign(msg))


def test_passive_mode_accepts_a_substituted_key():
    """The threat the signatures close: without them the same substitution goes through."""
    p = Params(32, 3, 16, b"p")
    clients = {u: SecAggClient(u, np.zeros(16, np.uint32), p) for u in range(4)}
    server = SecAggServer(p, graphs.complete(list(range(4))))
    rosters = server.advertise([c.advertise() for c in clients.values()])
    roster = dict(rosters[0])
    roster[1] = Advertise(1, keys.KeyPair().public, roster[1].s_pk)
    assert 1 in clients[0].share_keys(roster).ciphertexts


def test_active_client_refuses_reused_keys_and_a_missing_pki():
    p = Params(32, 3, 16, b"r", active=True)
    _, clients, server = _fleet(4, p)
    rosters = server.advertise([c.advertise() for c in clients.values()])
    roster = dict(rosters[0])
    roster[3] = rosters[0][1]
    with pytest.raises(TrainError, match="advertisement of neighbour 3"):
        clients[0].share_keys(roster)  # 1's signed advertisement presented as 3's
    a1 = rosters[0][1]  # 3 itself signs 1's keys (a client colluding with the server)
    roster[3] = Advertise(3, a1.c_pk, a1.s_pk, clients[3].sk.sign(
        keys.advert_message(p.label, 3, a1.c_pk, a1.s_pk)))
    with pytest.raises(TrainError, match="neighbour 3 advertised a public key already in use"):
        clients[0].share_keys(roster)
    with pytest.raises(TrainError, match="needs a signing key and the registry"):
        SecAggClient(0, np.zeros(16, np.uint32), p)
    with pytest.raises(TrainError, match="registry does not hold my own"):
        SecAggClient(0, np.zeros(16, np.uint32), p, keys.SigningKey(), {0: bytes(32)})


def test_two_survivor_sets_are_caught_before_any_share_is_released():
    n = 7
    p = Params(32, graphs.threshold(n), 16, b"split", active=True)  # t = 4 > n/2
    _, clients, server, survivors = _through_masking(n, p)
    assert survivors == list(range(n))
    # the lying server: 4 and 5 are told 6 dropped (they would release s_6's shares), the
    # others that 6 survived (they would release b_6's): together x_6 in the clear
    u3_a, u3_b = survivors, [u for u in survivors if u != 6]
    view = {u: (u3_b if u in (4, 5) else u3_a) for u in survivors}
    sigs = [clients[u].consistency(view[u]) for u in survivors]
    proof = server.consistency(sigs)  # relays them: it cannot tell
    assert sorted(proof.sigs) == survivors
    released = []
    for u in survivors:
        if view[u] is u3_a:
            why = "the consistency signatures of clients [4, 5] do not verify on my survivor set"
        else:  # 6 signed although 4 and 5 were told it dropped
            why = "consistency signatures from clients [6] outside the survivor set I signed"
        with pytest.raises(TrainError, match=re.escape(f"client {u}: {why}")):
            released.append(clients[u].unmask(None, proof))
        if view[u] is u3_b:  # the server hides 6's signature: the others' still fail
            hidden = ConsistencyProof({v: s for v, s in proof.sigs.items() if v != 6})
            with pytest.raises(TrainError, match=re.escape(
                    "signatures of clients [0, 1, 2, 3] do not verify on my survivor set of 6")):
                released.append(clients[u].unmask(None, hidden))
    assert released == []
    # forwarding each group only its own signatures: 4 and 5 hold 2 < t and still refuse
    only_b = ConsistencyProof({v: proof.sigs[v] for v in (4, 5)})
    for u in (4, 5):
        with pytest.raises(TrainError, match="only 2 consistency signatures, fewer than t=4"):
            clients[u].unmask(None, only_b)


def test_too_few_consistency_signatures_refuse_to_unmask():
    n = 8
    p = Params(32, 5, 16, b"few", active=True)
    _, clients, server, survivors = _through_masking(n, p)
    sigs = [clients[u].consistency(survivors) for u in survivors]
    few = ConsistencyProof({m.cid: m.sig for m in sigs[:4]})
    with pytest.raises(TrainError, match="only 4 consistency signatures, fewer than t=5"):
        clients[0].unmask(None, few)
    # the honest server refuses to go on below t as well
    with pytest.raises(TrainError, match="only 4 clients signed the survivor set"):
        server.consistency(sigs[:4])
    # and a client never unmasks without the check, nor signs twice
    with pytest.raises(TrainError, match="not a survivor list"):
        clients[1].unmask(survivors)
    with pytest.raises(TrainError, match="second survivor set"):
        clients[1].consistency(survivors)
    with pytest.raises(TrainError, match="outside the survivor set I signed"):
        clients[2].unmask(None, ConsistencyProof({**few.sigs, 99: bytes(64)}))


def test_dropouts_around_the_consistency_round_still_recover_the_sum():
    n = 10
    x = ring_inputs(n, 32, seed=5)
    p = Params(32, graphs.threshold(n), 32, b"d", active=True)  # t = 6
    res = secure_sum(x, p, graphs.complete(list(range(n))), drop_before_masking={1},
                     drop_before_signing={2}, drop_before_unmasking={3, 4})
    assert res.survivors == [0, 2, 3, 4, 5, 6, 7, 8, 9]  # 2, 3, 4 sent masked inputs
    assert np.array_equal(res.total, ring_sum(x[u] for u in res.survivors))
    assert res.dropped == [1]
    with pytest.raises(TrainError, match="drop_before_signing needs active mode"):
        secure_sum(x, Params(32, 6, 32, b"d"), graphs.complete(list(range(n))),
                   drop_before_signing={2})


# ---------------------------------------------------------------- over the grpc backend


class _Device(threading.Thread):
    """An FLClient in a thread whose fit adds 0.01 * (cid + 1) to the global model."""

    def __init__(self, address: str, token: str, cid: int, pki=(None, None)) -> None:
        super().__init__(daemon=True)

        def fit(params, config, round_num):
            return (OrderedDict((k, v + 0.01 * (cid + 1)) for k, v in params.items()),
                    10 * (cid + 1), 0.1)

        self.client = FLClient(address, token, cid, fit=fit, num_examples=10 * (cid + 1),
                               give_up_s=10, retry_max_s=0.2, secagg_key=pki[0],
                               secagg_registry=pki[1])

    def run(self) -> None:
        self.client.run()


def _grpc_round(n: int, active: bool, pki=None, rounds=None):
    token = "t" * 32
    backend = SecAggGrpcBackend("127.0.0.1:0", token, min_clients=n, model_spec="logreg:3,2",
                                round_timeout_s=20, wait_clients_s=20, heartbeat_s=0.5,
                                active=active)
    devices = [_Device(backend.address, token, c, pki(c) if pki else (None, None))
               for c in range(n)]
    try:
        for d in devices:
            d.start()
        backend.available_clients()
        model = OrderedDict(w=torch.zeros(2, 3), b=torch.zeros(2))
        return backend.fit(1, model, list(range(n)), FitConfig())
    finally:
        backend.close()
        for d in devices:
            d.client.stop()
            d.join(10)
        if rounds is not None:
            rounds.extend(d.client.stats.rounds for d in devices)


def test_grpc_active_round_matches_passive():
    """The devices get their signing keys and the registry (the PKI) as FLClient options."""
    n = 4
    sks = {c: keys.SigningKey() for c in range(n)}
    registry = {c: sk.public for c, sk in sks.items()}
    rounds: list[int] = []
    active = _grpc_round(n, True, pki=lambda c: (sks[c], registry), rounds=rounds)
    assert rounds == [1] * n  # the proof step ends a device's round, as survivors does
    passive = _grpc_round(n, False)
    wts = [10 * (c + 1) for c in range(n)]
    want = sum(w * 0.01 * (c + 1) for c, w in enumerate(wts)) / sum(wts)
    for u in (active, passive):
        assert u.metrics["failed"] == {} and u.metrics["secagg"]["survivors"] == n
        assert torch.allclose(u.params["w"][0], torch.full((2, 3), want), atol=1e-3)
    assert torch.equal(active.params["w"], passive.params["w"])
    assert active.metrics["secagg"]["active"] is True
    # signatures up (advertisement, consistency) and down (rosters, U3, U4's signatures)
    extra_up = active.metrics["bytes_up"] - passive.metrics["bytes_up"]
    assert extra_up >= n * 2 * keys.SIG_BYTES
    assert (active.metrics["bytes_down"] - passive.metrics["bytes_down"]
            >= n * (n - 1) * keys.SIG_BYTES + n * n * keys.SIG_BYTES)


def test_grpc_active_round_without_the_pki_fails_by_name():
    u = _grpc_round(3, True)
    assert len(u) == 0
    assert all("needs a signing key and the registry" in u.metrics["failed"][c]
               for c in range(3))
