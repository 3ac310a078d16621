"""The grpc backend: real devices, one process each, dial in to a gRPC server inside the FL server.

Devices initiate every connection (they may sit behind NAT): ``Register`` returns a session, a
server stream (``Tasks``) stays open and carries each round's global model down, and the result
comes back with ``SubmitUpdate``. The open stream is also the liveness signal: when a device
process dies its socket closes, gRPC cancels the stream and the device's round fails at once
instead of after the round timeout (keepalive pings catch a silent network too).

A device is identified by its client id, not its connection: registering again with the same id
replaces the old session (a restarted device resumes; a task still open for it is sent to the new
session). A registration is a lease renewed by the device's activity (see
:mod:`edgeweave.train.backends.registry`), so registrations that go idle free their slot (a
holder of the token that keeps ``max_clients`` streams open still fills the registry: the token is
the fleet's), and the sample count a device registers is capped at ``max_client_examples``.

A round needs ``min_clients`` connected devices. Before the first round the server waits for them
(``wait_clients_s``, None: as long as it takes), saying every so often who is missing. Once
training runs, a round short of devices waits at most ``round_timeout_s`` for the missing ones
(named by client id in the log), then goes on with those connected if there are at least
``quorum`` of them, or fails with the missing ids; a device that stays away is not waited for
again until another one goes missing.

Every update is checked (session, task, size, names, dtypes, shapes, finite values) before it
may reach the aggregate; a rejected one fails that client's round with the reason,
which also goes back to the device as the gRPC status. The server keeps serving the others.
The checks are :mod:`.grpc_checks`; a round's open tasks and result, :mod:`.grpc_round`.

Secure aggregation runs over the same connections: :class:`edgeweave.train.secagg.backend.
SecAggGrpcBackend` extends this class with the ``SecAgg`` RPC and SECAGG task steps.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Collection
from concurrent import futures
from pathlib import Path

import grpc

from edgeweave.rpc import server_options
from edgeweave.train.backends.base import Backend
from edgeweave.train.backends.grpc_checks import (
    DEFAULT_MAX_UPDATE_BYTES,
    check_numbers,
    check_registration,
    check_update,
)
from edgeweave.train.backends.grpc_round import PendingTask, round_updates
from edgeweave.train.backends.grpc_service import SHUTDOWN, Reject, Servicer, handlers
from edgeweave.train.backends.registry import (
    DEFAULT_LEASE_S,
    DeviceRegistry,
    RegistryFull,
    Session,
)
from edgeweave.train.claims import DEFAULT_MAX_CLIENT_EXAMPLES
from edgeweave.train.types import ClientInfo, FitConfig, Params, TrainError, Updates
from edgeweave.train.wire import fl_pb2
from edgeweave.train.wire.auth import TokenAuth, listen_on
from edgeweave.train.wire.messages import config_to_msg, params_to_msgs, payload_bytes

# Reject and DEFAULT_MAX_UPDATE_BYTES have always been importable from here
__all__ = ["DEFAULT_MAX_UPDATE_BYTES", "GrpcBackend", "Reject"]

log = logging.getLogger(__name__)

_WAIT_LOG_S = 15.0  # while waiting for devices, say who is missing this often
_FIRST_LOG_S = 5.0


class GrpcBackend(Backend):
    """A gRPC server for devices running :func:`edgeweave.train.grpc_client.run_client`.

    Args:
        listen: ``host:port`` to bind (port 0 picks a free one: read :attr:`port`).
        token: the bearer token every RPC must carry.
        min_clients: :meth:`available_clients` waits until this many devices are connected.
        round_timeout_s: how long :meth:`fit` waits for updates; late clients fail the round.
        max_update_bytes: largest accepted update (tensor bytes); larger ones are rejected.
        model_spec: the :func:`~edgeweave.train.models.build_model` spec devices train.
        wait_clients_s: give up waiting for ``min_clients`` after this long (None: never).
        heartbeat_s: the Tasks stream sends a PING this often, so devices notice a dead server.
        tls_cert, tls_key: serve TLS with this PEM certificate and key (devices need the CA);
            without them the channel is plaintext and the token readable on the network.
        max_clients: registrations held at once; lease_s: a registration's lease (seconds
            without activity before it expires).
        max_client_examples: the most examples a device may register (larger claims are
            clipped, with a warning).
        quorum: the fewest devices a round proceeds with once the wait for ``min_clients``
            ended (default: ``min_clients``, i.e. fail instead).
        allowed_clients: the only client ids that may register (None: any); an edge
            aggregator takes just the devices the fleet puts under it.
    """

    name = "grpc"

    def __init__(self, listen: str, token: str, min_clients: int = 1,
                 round_timeout_s: float = 60.0, max_update_bytes: int = DEFAULT_MAX_UPDATE_BYTES,
                 *, model_spec: str, wait_clients_s: float | None = None,
                 heartbeat_s: float = 2.0, max_clients: int = 256,
                 tls_cert: str | Path | None = None, tls_key: str | Path | None = None,
                 lease_s: float = DEFAULT_LEASE_S,
                 max_client_examples: int = DEFAULT_MAX_CLIENT_EXAMPLES,
                 quorum: int | None = None,
                 allowed_clients: Collection[int] | None = None) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise TrainError("grpc backend: give both tls_cert and tls_key, or neither")
        check_numbers(min_clients=min_clients, round_timeout_s=round_timeout_s,
                      max_update_bytes=max_update_bytes, wait_clients_s=wait_clients_s,
                      heartbeat_s=heartbeat_s, max_client_examples=max_client_examples,
                      quorum=quorum)
        self.model_spec = model_spec
        self.min_clients = min_clients
        self.quorum = min_clients if quorum is None else min(quorum, min_clients)
        self.round_timeout_s = round_timeout_s
        self.max_update_bytes = max_update_bytes
        self.wait_clients_s = wait_clients_s
        self.heartbeat_s = heartbeat_s
        self.max_clients = max_clients
        self.max_client_examples = max_client_examples
        self.allowed = None if allowed_clients is None else frozenset(allowed_clients)
        self._cond = threading.Condition()
        self._registry = DeviceRegistry(max_clients, lease_s)
        # the registry's own dicts, under the names the secure-aggregation backend reads
        self._sessions = self._registry.sessions
        self._by_client = self._registry.by_client
        self._started = False  # a round has been handed out (waits are bounded from then on)
        self._expected: set[int] = set()  # ids that took part: missing when not connected
        self._waited_for: set[int] = set()  # missing ids already waited for once
        self._pending: dict[int, PendingTask] = {}
        self._global: Params | None = None
        self._closed = False
        # The transport cap sits above the update cap so an oversize update still reaches the
        # handler and is refused with a reason (and recorded) instead of a bare transport error.
        cap = min(2 * max_update_bytes + 2**20, 2**31 - 1)
        options = [
            ("grpc.max_receive_message_length", cap),
            ("grpc.max_send_message_length", -1),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.http2.max_pings_without_data", 0),
        ]
        # One thread per open Tasks stream plus some for Register/SubmitUpdate.
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_clients + 16),
                                   interceptors=[TokenAuth(token)],
                                   options=server_options(options))
        self._server.add_generic_rpc_handlers((handlers(Servicer(self)),))
        self.port, self.address = listen_on(self._server, listen, tls_cert, tls_key,
                                            "grpc backend")
        log.info("FL server listening on %s", self.address)

    # ------------------------------------------------------------------ Backend interface

    def available_clients(self) -> list[ClientInfo]:
        """The connected devices, after waiting for ``min_clients`` of them (see the module
        docstring for how long, and what happens when they do not come)."""
        first = not self._started
        wait = self.wait_clients_s if first else self.round_timeout_s
        t0 = time.monotonic()
        deadline = None if wait is None else t0 + wait
        # who is missing: at once during training; at the start only when devices are slow to
        # come (a fresh server always waits a moment); then every _WAIT_LOG_S
        next_log = t0 + (_FIRST_LOG_S if first else 0.0)
        with self._cond:
            while True:
                now = time.monotonic()
                self._registry.expire(now)
                live = self._registry.live()
                missing = self._registry.missing(self._expected)
                if len(live) >= self.min_clients or (not first and
                                                     set(missing) <= self._waited_for):
                    break
                left = None if deadline is None else deadline - now
                if left is not None and left <= 0:
                    break
                if now >= next_log:
                    log.warning("waiting for min_clients=%d devices on %s: %s%s",
                                self.min_clients, self.address,
                                self._registry.describe(live, missing, now, self.min_clients),
                                "" if left is None else f"; waiting up to {left:.0f} s more")
                    next_log = now + _WAIT_LOG_S
                self._cond.wait(1.0 if left is None else min(left, 1.0))
            if len(live) < self.min_clients:
                self._short(live, missing, time.monotonic() - t0)
            else:
                self._waited_for = set()
            self._started = True
            ids = {s.client_id for s in live}
            self._expected = (ids | set(missing)) if len(self._expected) < 4 * self.max_clients \
                else ids
            return [ClientInfo(s.client_id, s.num_examples, device=s.device or None)
                    for s in live]

    def _short(self, live: list[Session], missing: list[int], waited: float) -> None:
        """The wait ended with fewer than min_clients devices: go on with a quorum, or fail."""
        who = self._registry.describe(live, missing, time.monotonic(),
                                      self.min_clients)
        if len(live) < self.quorum:
            raise TrainError(f"grpc backend: {len(live)} devices connected to {self.address} "
                             f"after waiting {waited:.1f} s, fewer than the "
                             f"{self.quorum} a round needs (min_clients={self.min_clients}): "
                             f"{who}")
        if set(missing) - self._waited_for:
            log.warning("round goes on with %d of min_clients=%d devices after waiting %.1f s: "
                        "%s", len(live), self.min_clients, waited, who)
        self._waited_for = set(missing)

    def connected(self) -> list[int]:
        """Ids of the devices with an open task stream now (no waiting)."""
        with self._cond:
            return [s.client_id for s in self._registry.live()]

    def fit(self, round_num: int, global_params: Params, client_ids: list[int],
            config: FitConfig) -> Updates:
        params_msgs = params_to_msgs(global_params)
        down = payload_bytes(params_msgs)
        # Serialized once for all clients: protobuf merges concatenated messages, so each
        # client's task is these bytes plus its own task_id field, not a copy of the model.
        common = fl_pb2.Task(kind=fl_pb2.Task.FIT, round=round_num, model_spec=self.model_spec,
                             params=params_msgs, config=config_to_msg(config)).SerializeToString()
        failed: dict[int, str] = {}
        sent = 0
        with self._cond:
            self._global = global_params
            self._pending.clear()
            for cid in client_ids:
                sess = self._by_client.get(cid)
                if sess is None or not sess.streaming:
                    failed[cid] = f"client {cid} is not connected"
                    continue
                tid = secrets.token_hex(8)
                pend = PendingTask(tid, round_num,
                                common + fl_pb2.Task(task_id=tid).SerializeToString())
                self._pending[cid] = pend
                sess.queue.put(pend.payload)
                sent += 1
            deadline = time.monotonic() + self.round_timeout_s
            while not all(p.done for p in self._pending.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            pending, self._pending = self._pending, {}
        return self._collect(client_ids, pending, failed, sent * down)

    def close(self, farewell: bool = True) -> None:
        """Stop serving. With ``farewell`` devices are told training is over and exit; without
        it they see a lost server and keep reconnecting (what a crashed server looks like)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            for s in self._registry.close_all():
                s.queue.put(SHUTDOWN if farewell else None)
            self._cond.notify_all()
        self._server.stop(grace=1.0 if farewell else 0).wait()

    # ------------------------------------------------------------------ internals

    def _collect(self, client_ids: list[int], pending: dict[int, PendingTask],
                 failed: dict[int, str], bytes_down: int) -> Updates:
        updates = round_updates(client_ids, pending, failed, bytes_down, self.round_timeout_s,
                                self._global)
        for cid, why in failed.items():
            log.warning("round failed for client %d: %s", cid, why)
        return updates

    def _register(self, req: fl_pb2.RegisterRequest) -> Session:
        examples = check_registration(req, model_spec=self.model_spec, allowed=self.allowed,
                                      max_client_examples=self.max_client_examples)
        if examples < req.num_examples:
            log.warning("client %d registered %d examples; counted as %d "
                        "(max_client_examples)", req.client_id, req.num_examples, examples)
        with self._cond:
            if self._closed:
                raise Reject(grpc.StatusCode.UNAVAILABLE, "the FL server is shutting down")
            now = time.monotonic()
            sess = Session(secrets.token_hex(16), req.client_id, examples, req.device[:200], now)
            try:
                old = self._registry.add(sess, now)
            except RegistryFull as e:
                raise Reject(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)) from None
            if old is not None:
                log.info("client %d registered again: resuming with a new session",
                         req.client_id)
            pend = self._pending.get(req.client_id)
            if pend is not None and not pend.done:
                sess.queue.put(pend.payload)
            return sess

    def _session(self, session: str) -> Session:
        with self._cond:
            sess = self._registry.get(session, time.monotonic())
        if sess is None:
            raise Reject(grpc.StatusCode.NOT_FOUND,
                          "unknown, replaced or expired session (a registration lapses "
                          f"{self._registry.lease_s:g} s after the device's last activity): "
                          "Register again")
        return sess

    def _stream_state(self, sess: Session, open_: bool) -> None:
        with self._cond:
            if open_:
                if sess.streaming:  # one stream per session: two would steal each other's tasks
                    raise Reject(grpc.StatusCode.ALREADY_EXISTS,
                                  "this session already has a task stream; Register again")
                sess.streaming = sess.streamed = True
            elif self._by_client.get(sess.client_id) is sess:
                sess.streaming = False
                sess.seen = time.monotonic()  # the lease runs from the stream's end
                p = self._pending.get(sess.client_id)
                if p is not None and not p.done:
                    p.reason = (f"client {sess.client_id} disconnected during round "
                                f"{p.round}")
            self._cond.notify_all()

    def _submit(self, req: fl_pb2.Update) -> None:
        sess = self._session(req.session)
        cid = sess.client_id
        with self._cond:
            p = self._pending.get(cid)
            if p is None or p.task_id != req.task_id or p.done:
                raise Reject(grpc.StatusCode.FAILED_PRECONDITION,
                              f"client {cid}: task {req.task_id!r} of round {req.round} is not "
                              "open (the round closed, timed out, or already has your update)")
            like = self._global
        assert like is not None
        try:
            result, nbytes = check_update(req, like, cid, self.max_update_bytes)
        except Reject as e:
            self._resolve(cid, p, reason=e.details)
            raise
        if not self._resolve(cid, p, result=result, bytes_up=nbytes):
            raise Reject(grpc.StatusCode.FAILED_PRECONDITION,
                          f"client {cid}: round {req.round} closed before the update was checked")

    def _secagg(self, req: fl_pb2.SecAggMessage) -> None:
        """A secure-aggregation message; only :class:`edgeweave.train.secagg.backend.
        SecAggGrpcBackend` runs the protocol, so plain FL refuses it by name."""
        raise Reject(grpc.StatusCode.FAILED_PRECONDITION,
                     "this FL server does not run secure aggregation")

    def _resolve(self, cid: int, p: PendingTask, *, result: tuple[Params, int, float] | None = None,
                 reason: str | None = None, bytes_up: int = 0) -> bool:
        """Settle a client's task; False when its round already closed (timed out)."""
        with self._cond:
            if self._pending.get(cid) is not p or p.done:
                return False
            p.result, p.reason, p.bytes_up = result, reason, bytes_up
            self._cond.notify_all()
            return True
