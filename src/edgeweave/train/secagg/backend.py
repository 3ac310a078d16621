"""Secure aggregation over the grpc backend: devices mask, the server sums, nobody else reads.

Each round the FIT task carries a ``secagg_setup``; after training every device answers with
SecAgg messages instead of SubmitUpdate, and the server drives the four rounds of Bonawitz et
al. (2017) by pushing SECAGG tasks down the devices' Tasks streams: rosters of public keys,
the encrypted shares addressed to each device, and finally the list of survivors. The server
holds only :class:`~edgeweave.train.secagg.server.SecAggServer`'s view (keys, ciphertexts,
masked vectors, unmasking shares) and never a device's model.

How the strategy gets the result: :meth:`SecAggGrpcBackend.fit` returns ONE row, the new
global model ``w + sum n_i delta_i / sum n_i`` over the survivors, with ``num_examples`` the
summed weight, ``train_loss`` the weighted mean loss, ``client_ids`` one survivor's id (the
server loop needs a real id), and ``metrics["secagg"]`` describing the round. Use it with
:class:`~edgeweave.train.secagg.aggregate.SecAggFedAvg`, which applies a flagged row as is
(plain FedAvg over one row gives the same model). Do not combine it with an update codec: the
row is an aggregate, not a device's upload.

A device whose message is malformed, oversized, out of turn or reports an error gets a gRPC
status naming the problem and is treated as dropped from that step on; the server keeps
serving, and the sum is still recovered while at least t share holders remain.

``active=True`` runs the paper's version against a server that may lie (signed advertisements,
then a ConsistencyCheck step: every survivor gets all of U3 to sign, and the Unmasking step
carries the collected signatures instead of a survivor list). The devices must then hold their
long-term signing keys and the registry of everyone's verification keys (the PKI), given to
:class:`~edgeweave.train.secagg.device.DeviceSecAgg`; the server needs neither.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import grpc

from edgeweave.train.backends.grpc_backend import GrpcBackend, Reject
from edgeweave.train.backends.sequential import empty_updates
from edgeweave.train.secagg import graph as graphs
from edgeweave.train.secagg import keys as sakeys
from edgeweave.train.secagg import wire
from edgeweave.train.secagg.aggregate import PRESUMMED
from edgeweave.train.secagg.messages import ConsistencySig
from edgeweave.train.secagg.messages import Params as SecAggParams
from edgeweave.train.secagg.server import SecAggServer
from edgeweave.train.secagg.simulate import make_graph
from edgeweave.train.secagg.vector import UpdateVector
from edgeweave.train.types import PRESUMMED_WIRE, FitConfig, Params, TrainError, Updates
from edgeweave.train.wire import fl_pb2
from edgeweave.train.wire.messages import config_to_msg, params_to_msgs, payload_bytes


@dataclass
class _Round:
    round: int
    params: SecAggParams
    server: SecAggServer
    task_ids: dict[int, str]
    sessions: dict[int, Any]
    expect: str = "keys"
    waiting: set[int] = field(default_factory=set)
    got: dict[int, Any] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0


class SecAggGrpcBackend(GrpcBackend):
    """:class:`GrpcBackend` whose rounds are securely aggregated (see the module docstring).

    Args beyond GrpcBackend's:
        clip, ring_bits: the fixed point (see :class:`~edgeweave.train.secagg.vector.UpdateVector`).
        k: neighbours per device (Bell et al. 2020); None: every device masks with every other.
        threshold_frac: t = floor(threshold_frac * (degree + 1)) + 1.
        step_timeout_s: how long each protocol step waits for answers (default round_timeout_s).
        active: the actively secure protocol (see the module docstring); the devices need
            their signing keys and the registry.
    """

    name = "grpc-secagg"

    def __init__(self, listen: str, token: str, min_clients: int = 2, *, clip: float = 1.0,
                 ring_bits: int = 32, k: int | None = None, threshold_frac: float = 0.5,
                 step_timeout_s: float | None = None, seed: int = 0, active: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(listen, token, min_clients, **kwargs)
        self.clip, self.ring_bits, self.k = clip, ring_bits, k
        self.threshold_frac, self.seed, self.active = threshold_frac, seed, active
        self.step_timeout_s = step_timeout_s or self.round_timeout_s
        self._sa: _Round | None = None
        self._sa_lock = threading.Lock()  # one aggregation at a time

    def fit(self, round_num: int, global_params: Params, client_ids: list[int],
            config: FitConfig) -> Updates:
        with self._sa_lock:
            return self._fit(round_num, global_params, client_ids, config)

    def _fit(self, round_num: int, global_params: Params, client_ids: list[int],
             config: FitConfig) -> Updates:
        with self._cond:
            self._global = global_params
            sess = {c: s for c in client_ids
                    if (s := self._by_client.get(c)) is not None and s.streaming}
        failed = {c: f"client {c} is not connected" for c in client_ids if c not in sess}
        live = sorted(sess)
        if len(live) < 2:
            failed.update({c: "secure aggregation needs at least 2 connected clients"
                           for c in live})
            return self._failed(global_params, failed, 0, 0)
        vec = UpdateVector.for_model(global_params, sum(s.num_examples for s in sess.values()),
                                     self.clip, self.ring_bits)
        g = make_graph(live, self.k, self.seed + round_num)
        t = graphs.threshold(min(len(v) for v in g.values()) + 1, self.threshold_frac)
        params = SecAggParams(self.ring_bits, t, vec.length,
                              b"round %d " % round_num + secrets.token_bytes(8),
                              active=self.active)
        rnd = _Round(round_num, params, SecAggServer(params, g),
                     {c: secrets.token_hex(8) for c in live}, sess)
        msgs = params_to_msgs(global_params)
        common = fl_pb2.Task(kind=fl_pb2.Task.FIT, round=round_num, model_spec=self.model_spec,
                             params=msgs, config=config_to_msg(config),
                             secagg_setup=wire.setup_to_msg(params, vec)).SerializeToString()
        t0, server_s = time.perf_counter(), 0.0
        try:
            adverts = self._step(rnd, "keys", {c: common for c in live}, self.round_timeout_s)
            rnd.bytes_down += len(live) * payload_bytes(msgs)
            server_s, out = self._protocol(rnd, adverts)
        except TrainError as e:
            failed.update(rnd.server.failed)
            failed.update({c: str(e) for c in live if c not in failed})
            return self._failed(global_params, failed, rnd.bytes_up, rnd.bytes_down)
        finally:
            with self._cond:
                self._sa = None
        mean, weight, loss = vec.decode(out)
        new = OrderedDict((k, (v.double() + mean[k]).to(v.dtype))
                          for k, v in global_params.items())
        survivors = rnd.server.u3
        failed.update(rnd.server.failed)
        updates = Updates.stack([survivors[-1]], [new], [weight], [loss])
        updates.metrics.update(failed=failed, bytes_up=rnd.bytes_up, bytes_down=rnd.bytes_down)
        updates.metrics[PRESUMMED_WIRE] = {"clients": len(survivors), "bytes_up": rnd.bytes_up,
                                           "bytes_down": rnd.bytes_down}
        updates.metrics[PRESUMMED] = {
            "survivors": len(survivors), "dropped": len(rnd.server.u2) - len(survivors),
            "threshold": t, "degree": min(len(v) for v in g.values()), "weight": weight,
            "active": self.active,
            "server_s": server_s, "round_s": time.perf_counter() - t0,
            "bytes_up_per_client": rnd.bytes_up / len(live),
            "bytes_down_per_client": rnd.bytes_down / len(live),
        }
        return updates

    def _protocol(self, rnd: _Round, adverts: dict[int, Any]) -> tuple[float, Any]:
        srv, timed = rnd.server, 0.0
        t0 = time.perf_counter()
        rosters = srv.advertise(list(adverts.values()))
        timed += time.perf_counter() - t0
        shared = self._step(rnd, "shared", {u: _task(rnd, u, fl_pb2.SecAggStep(
            roster=fl_pb2.Roster(keys=[wire.keys_to_msg(a) for a in r.values()])))
            for u, r in rosters.items()})
        t0 = time.perf_counter()
        inbox = srv.route(list(shared.values()))
        timed += time.perf_counter() - t0
        masked = self._step(rnd, "masked", {u: _task(rnd, u, fl_pb2.SecAggStep(
            inbox=fl_pb2.Inbox(shares=[fl_pb2.EncryptedShare(client_id=v, ciphertext=c)
                                       for v, c in sorted(box.items())])))
            for u, box in inbox.items()})
        t0 = time.perf_counter()
        survivors = srv.collect(list(masked.values()))
        timed += time.perf_counter() - t0
        if rnd.params.active:  # ConsistencyCheck: all of U3 to sign, then U4's signatures
            u3 = fl_pb2.Survivors(client_ids=survivors)
            sigs = self._step(rnd, "consistency", {u: _task(rnd, u, fl_pb2.SecAggStep(
                consistency=u3)) for u in survivors})
            t0 = time.perf_counter()
            proof = wire.proof_to_msg(srv.consistency(list(sigs.values())))
            timed += time.perf_counter() - t0
            unmask = self._step(rnd, "unmask", {u: _task(rnd, u, fl_pb2.SecAggStep(
                proof=proof)) for u in sorted(srv.u4 or ())})
        else:
            unmask = self._step(rnd, "unmask", {u: _task(rnd, u, fl_pb2.SecAggStep(
                survivors=fl_pb2.Survivors(client_ids=srv.survivors_for(u))))
                for u in survivors})
        t0 = time.perf_counter()
        total = srv.finish(list(unmask.values()))
        return timed + time.perf_counter() - t0, total

    def _step(self, rnd: _Round, expect: str, payloads: dict[int, bytes],
              timeout: float | None = None) -> dict[int, Any]:
        """Send each device its task for this step; wait for the answers (or the timeout, or
        its stream closing: a device that is gone is dropped, not waited for)."""
        with self._cond:
            self._sa, rnd.expect, rnd.got = rnd, expect, {}
            rnd.waiting = set(payloads)
            for cid, payload in payloads.items():
                tid = fl_pb2.Task(task_id=rnd.task_ids[cid]).SerializeToString()
                rnd.sessions[cid].queue.put(payload + tid if expect == "keys" else payload)
                if expect != "keys":
                    rnd.bytes_down += len(payload)
            deadline = time.monotonic() + (timeout or self.step_timeout_s)
            while rnd.waiting:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
                rnd.waiting = {c for c in rnd.waiting if rnd.sessions[c].streaming
                               and not rnd.sessions[c].closed}
            for cid in payloads:
                if cid not in rnd.got:  # keeps an earlier, more precise reason
                    rnd.server.drop(cid, f"sent no {expect} message (timed out or "
                                         "disconnected)")
            rnd.waiting = set()
            return dict(rnd.got)

    def _secagg(self, req: fl_pb2.SecAggMessage) -> None:
        sess = self._session(req.session)
        cid = sess.client_id
        with self._cond:
            rnd = self._sa
            if (rnd is None or cid not in rnd.waiting or rnd.sessions.get(cid) is not sess
                    or rnd.task_ids.get(cid) != req.task_id):
                raise Reject(grpc.StatusCode.FAILED_PRECONDITION,
                             f"client {cid}: no secure-aggregation step of task "
                             f"{req.task_id!r} is waiting for you")
            expect = rnd.expect
        try:
            value = self._decode(req, cid, expect, rnd)
        except Reject as e:
            with self._cond:
                rnd.server.drop(cid, e.details)
                rnd.waiting.discard(cid)
                self._cond.notify_all()
            raise
        with self._cond:
            if self._sa is rnd and rnd.expect == expect and cid in rnd.waiting:
                rnd.got[cid] = value
                rnd.bytes_up += req.ByteSize()
                rnd.waiting.discard(cid)
                self._cond.notify_all()

    def _decode(self, req: fl_pb2.SecAggMessage, cid: int, expect: str, rnd: _Round) -> Any:
        where = f"secure-aggregation {expect} message from client {cid}"
        if req.error:
            raise Reject(grpc.StatusCode.ABORTED, f"{where}: the client failed: {req.error[:500]}")
        if req.ByteSize() > self.max_update_bytes:
            raise Reject(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"{where}: {req.ByteSize()} bytes exceeds max_update_bytes="
                         f"{self.max_update_bytes}")
        kind = req.WhichOneof("step")
        if kind != expect:
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT,
                         f"{where}: expected a {expect!r} step, got {kind!r}")
        peers = len(rnd.server.graph.get(cid, ()))
        try:
            if kind == "keys":
                a = wire.keys_from_msg(req.keys)
                return type(a)(cid, a.c_pk, a.s_pk, a.sig)
            if kind == "shared":
                return wire.shared_from_msg(cid, req.shared, peers)
            if kind == "masked":
                return wire.masked_from_msg(cid, req.masked, rnd.params)
            if kind == "consistency":
                if len(req.consistency) != sakeys.SIG_BYTES:
                    raise TrainError(f"consistency signature must be {sakeys.SIG_BYTES} bytes, "
                                     f"got {len(req.consistency)}")
                return ConsistencySig(cid, bytes(req.consistency))
            return wire.unmask_from_msg(cid, req.unmask, peers + 1)  # + its own b-share
        except TrainError as e:
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: {e}") from None

    def _failed(self, global_params: Params, failed: dict[int, str], up: int,
                down: int) -> Updates:
        updates = empty_updates(global_params, failed)
        updates.metrics.update(failed=failed, bytes_up=up, bytes_down=down)
        return updates


def _task(rnd: _Round, cid: int, step: fl_pb2.SecAggStep) -> bytes:
    return fl_pb2.Task(kind=fl_pb2.Task.SECAGG, task_id=rnd.task_ids[cid], round=rnd.round,
                       secagg=step).SerializeToString()

