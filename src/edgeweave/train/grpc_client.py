"""The device side of the grpc backend: connect, register, train each round on local data, repeat.

The device always dials out, so it works behind NAT. It keeps reconnecting with exponential
back-off while the server is unreachable (not started yet, restarting after a crash) and
re-registers under the same client id, which is how the server recognises it after a restart.
It stops on the server's SHUTDOWN, or gives up on errors retrying cannot fix (a wrong token, a
model this device cannot build).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import torch

from edgeweave.train.client import TorchClient
from edgeweave.train.data.files import load_npz
from edgeweave.train.secagg.device import DeviceSecAgg
from edgeweave.train.secagg.keys import SigningKey
from edgeweave.train.types import FitConfig, Params, TrainError
from edgeweave.train.wire import fl_pb2, fl_pb2_grpc
from edgeweave.train.wire.auth import auth_metadata, client_tls
from edgeweave.train.wire.messages import (
    config_from_msg,
    params_from_msgs,
    params_to_msgs,
    payload_bytes,
)

log = logging.getLogger(__name__)

#: (global params, config, round) -> (new params, examples used, mean train loss)
FitFn = Callable[[Params, FitConfig, int], tuple[Params, int, float]]

# Statuses a retry cannot fix: the device stops and says why instead of looping forever.
_FATAL = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
          grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT,
          grpc.StatusCode.UNIMPLEMENTED}


#: the model and tasks a device accepts from the server: the server's default update cap
#: (64 MiB of tensors) twice over plus room for the rest of the message
DEFAULT_MAX_MESSAGE_BYTES = 129 * 2**20

#: statuses with which the server refuses one message (the device counts it and goes on)
_REFUSED = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION)


def _reason(e: Exception) -> str:
    """What the server records as this device's failure: our own errors say it themselves."""
    return str(e) if isinstance(e, TrainError) else f"{type(e).__name__}: {e}"


@dataclass
class ClientStats:
    rounds: int = 0
    registrations: int = 0
    rejected: int = 0


class FLClient:
    """One device. ``fit`` is built lazily from the server's model spec unless given.

    Args:
        server: ``host:port`` of the FL server.
        token: the bearer token.
        client_id: this device's id (stable across restarts).
        data: (x, y) local training data, used when ``fit`` is None.
        fit: a custom local-training function, e.g. ``client.as_fit_fn()`` of a Flower-style
            :class:`~edgeweave.train.client.Client` (default: a TorchClient on ``data``).
        num_examples: what to report at registration (default: len(y)).
        give_up_s: stop when the server has been unreachable this long (None: keep trying).
        tls_ca: connect with TLS, trusting this PEM CA (the server then needs tls_cert/key).
        tls_server_name: the name in the server's certificate, when it differs from the host.
        max_message_bytes: the largest message accepted from the server (a task carrying a
            bigger model ends the client with an error saying so).
        model_spec: the model spec a custom ``fit`` trains, offered at registration so that a
            server training another model refuses this client at once.
    """

    def __init__(self, server: str, token: str, client_id: int,
                 data: tuple[torch.Tensor, torch.Tensor] | None = None, *,
                 fit: FitFn | None = None, num_examples: int | None = None, device: str = "",
                 retry_s: float = 0.2, retry_max_s: float = 5.0,
                 give_up_s: float | None = None, tls_ca: str | Path | None = None,
                 tls_server_name: str | None = None,
                 secagg_key: SigningKey | None = None,
                 secagg_registry: dict[int, bytes] | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 model_spec: str | None = None) -> None:
        if data is None and (fit is None or num_examples is None):
            raise TrainError("FL client: give data, or both fit and num_examples")
        if not 1 <= max_message_bytes < 2**31:
            raise TrainError(f"FL client: max_message_bytes must be in [1, 2^31), got "
                             f"{max_message_bytes}")
        self.max_message_bytes = max_message_bytes
        self.server, self.client_id, self.data = server, client_id, data
        self.metadata = auth_metadata(token)
        self.num_examples = num_examples if num_examples is not None else len(data[1])  # type: ignore[index]
        self.device = device
        self.retry_s, self.retry_max_s, self.give_up_s = retry_s, retry_max_s, give_up_s
        self._creds = None if tls_ca is None else client_tls(tls_ca)
        self._server_name = tls_server_name
        self._fit = fit
        self._fit_spec: str | None = model_spec if fit is not None else None
        self.stats = ClientStats()
        self._stop = threading.Event()
        self._call: grpc.Future | None = None
        self._secagg: tuple[str, DeviceSecAgg] | None = None  # (task id, protocol state)
        # active secure aggregation: this device's Ed25519 key and every device's public key
        self._secagg_pki = (secagg_key, secagg_registry)

    def stop(self) -> None:
        self._stop.set()
        if self._call is not None:
            self._call.cancel()

    def run(self) -> ClientStats:
        """Serve rounds until the server says SHUTDOWN; reconnect whenever the link drops."""
        delay, lost_since, last = self.retry_s, None, ""
        while not self._stop.is_set():
            options: list[tuple[str, int | str]] = [
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000)]
            if self._server_name:
                options.append(("grpc.ssl_target_name_override", self._server_name))
            channel = (grpc.insecure_channel(self.server, options=options) if self._creds is None
                       else grpc.secure_channel(self.server, self._creds, options=options))
            with channel:
                stub = fl_pb2_grpc.FederatedLearningStub(channel)
                try:
                    if self._session(stub):
                        return self.stats
                    delay, lost_since = self.retry_s, None  # it was up: retry quickly
                except grpc.RpcError as e:
                    code = e.code()
                    if code in _FATAL:
                        raise TrainError(f"FL client {self.client_id}: server {self.server} "
                                         f"refused: {code.name}: {e.details()}") from None
                    # say why on every retry: a device the server turns away (registry full)
                    # must not look like one waiting for a server that is down
                    why = "unreachable" if code == grpc.StatusCode.UNAVAILABLE else "refused"
                    last = f"{why}: {code.name}: {e.details()}"
                    log.warning("client %d: server %s %s; retrying in %.1f s",
                                self.client_id, self.server, last, delay)
            now = time.monotonic()
            lost_since = lost_since or now
            if self.give_up_s is not None and now - lost_since > self.give_up_s:
                raise TrainError(f"FL client {self.client_id}: no session with server "
                                 f"{self.server} for {self.give_up_s} s (last: {last})")
            # jittered, so a fleet that lost its server does not reconnect in lockstep
            self._stop.wait(delay * random.uniform(0.5, 1.0))
            delay = min(2 * delay, self.retry_max_s)
        return self.stats

    def _session(self, stub: fl_pb2_grpc.FederatedLearningStub) -> bool:
        """One registration and its task stream; True when the server ended training."""
        reg = stub.Register(fl_pb2.RegisterRequest(
            client_id=self.client_id, num_examples=self.num_examples,
            model_specs=[] if self._fit is None or self._fit_spec is None else [self._fit_spec],
            device=self.device), metadata=self.metadata, timeout=10)
        self.stats.registrations += 1
        log.info("client %d registered with %s", self.client_id, self.server)
        call = stub.Tasks(fl_pb2.TasksRequest(session=reg.session), metadata=self.metadata)
        self._call = call
        watchdog = _Watchdog(call, 3 * reg.heartbeat_s + 5)
        try:
            for task in call:
                watchdog.beat()
                if task.kind == fl_pb2.Task.SHUTDOWN:
                    return True
                if task.kind == fl_pb2.Task.FIT:
                    with watchdog.paused():
                        self._train(stub, reg, task)
                elif task.kind == fl_pb2.Task.SECAGG:
                    with watchdog.paused():
                        self._secagg_step(stub, reg, task)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:  # the server forgot us (restarted, or
                return False  # our lease ran out): register again
            if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "received" in \
                    (e.details() or "").lower():  # our own receive cap: retrying cannot help
                raise TrainError(f"FL client {self.client_id}: the server sent a task larger "
                                 f"than this client takes ({self.max_message_bytes / 2**20:g} "
                                 f"MiB; raise it with `fl client --max-message-mb`): "
                                 f"{e.details()}") from None
            raise
        finally:
            watchdog.stop()
        return False

    def _train(self, stub: fl_pb2_grpc.FederatedLearningStub, reg: fl_pb2.RegisterReply,
               task: fl_pb2.Task) -> None:
        if task.HasField("secagg_setup"):
            self._train_secagg(stub, reg, task)
            return
        update = fl_pb2.Update(session=reg.session, task_id=task.task_id, round=task.round)
        try:
            params = params_from_msgs(task.params, context=f"round {task.round} global model")
            config = config_from_msg(task.config)
            new, n, loss = self._fit_for(task.model_spec)(params, config, task.round)
            msgs = params_to_msgs(new)
            if payload_bytes(msgs) > reg.max_update_bytes:
                raise TrainError(f"update of {payload_bytes(msgs)} bytes exceeds the server's "
                                 f"max_update_bytes={reg.max_update_bytes}")
            update.params.extend(msgs)
            update.num_examples, update.train_loss = n, loss
        except Exception as e:  # report it: the server records why this client's round failed,
            # and the device stays up for the next round instead of dying with a traceback
            update.error = _reason(e)
        try:
            stub.SubmitUpdate(update, metadata=self.metadata, timeout=60)
            self.stats.rounds += 0 if update.error else 1
        except grpc.RpcError as e:
            if e.code() not in _REFUSED:
                raise
            self.stats.rejected += 1
            log.warning("client %d: round %d update rejected: %s", self.client_id, task.round,
                        e.details())

    def _train_secagg(self, stub: fl_pb2_grpc.FederatedLearningStub,
                      reg: fl_pb2.RegisterReply, task: fl_pb2.Task) -> None:
        """Secure aggregation: train, encode the update as a ring vector and advertise keys; the
        model itself never leaves the device (see edgeweave.train.secagg.device)."""
        msg = fl_pb2.SecAggMessage(session=reg.session, task_id=task.task_id, round=task.round)
        self._secagg = None
        try:
            params = params_from_msgs(task.params, context=f"round {task.round} global model")
            config = config_from_msg(task.config)
            new, n, loss = self._fit_for(task.model_spec)(params, config, task.round)
            state = DeviceSecAgg(self.client_id, task.secagg_setup, params, new, n, loss,
                                 *self._secagg_pki)
            state.advertise(msg)
            self._secagg = (task.task_id, state)
        except Exception as e:
            msg.error = _reason(e)
        self._send_secagg(stub, msg)

    def _secagg_step(self, stub: fl_pb2_grpc.FederatedLearningStub,
                     reg: fl_pb2.RegisterReply, task: fl_pb2.Task) -> None:
        msg = fl_pb2.SecAggMessage(session=reg.session, task_id=task.task_id, round=task.round)
        last = task.secagg.WhichOneof("step") in DeviceSecAgg.LAST_STEPS
        try:
            if self._secagg is None or self._secagg[0] != task.task_id:
                raise TrainError(f"secure-aggregation step for task {task.task_id!r}, which "
                                 "this device is not running")
            self._secagg[1].step(task.secagg, msg)
        except Exception as e:  # the server then treats this device as dropped
            msg.error = _reason(e)
            last = True
        if last:
            self._secagg = None
        if self._send_secagg(stub, msg) and last and not msg.error:
            self.stats.rounds += 1

    def _send_secagg(self, stub: fl_pb2_grpc.FederatedLearningStub,
                     msg: fl_pb2.SecAggMessage) -> bool:
        try:
            stub.SecAgg(msg, metadata=self.metadata, timeout=60)
            return True
        except grpc.RpcError as e:
            if e.code() not in _REFUSED:
                raise
            self.stats.rejected += 1
            self._secagg = None
            log.warning("client %d: round %d secure-aggregation message rejected: %s",
                        self.client_id, msg.round, e.details())
            return False

    def _fit_for(self, spec: str) -> FitFn:
        if self._fit is not None and (self._fit_spec is None or self._fit_spec == spec):
            return self._fit
        assert self.data is not None
        x, y = self.data
        # the reference local training, exactly what the simulated backends run, so a
        # deployment reproduces a simulation of the same split and seeds
        self._fit = TorchClient(spec, x, y, self.client_id).as_fit_fn()
        self._fit_spec = spec
        return self._fit


class _Watchdog:
    """Cancels the task stream when the server has been silent too long (a dead server behind a
    silent network): the client then reconnects. Paused while training, when nobody reads."""

    def __init__(self, call: grpc.Future, timeout_s: float) -> None:
        self.call, self.timeout_s = call, timeout_s
        self.last, self.training = time.monotonic(), False
        self._done = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def beat(self) -> None:
        self.last = time.monotonic()

    def paused(self) -> _Paused:
        return _Paused(self)

    def stop(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        while not self._done.wait(0.5):
            if not self.training and time.monotonic() - self.last > self.timeout_s:
                log.info("no word from the server for %.0f s: reconnecting", self.timeout_s)
                self.call.cancel()
                return


class _Paused:
    def __init__(self, dog: _Watchdog) -> None:
        self.dog = dog

    def __enter__(self) -> None:
        self.dog.training = True

    def __exit__(self, *exc: object) -> None:
        self.dog.training = False
        self.dog.beat()


def run_client(server: str, token: str, client_id: int, data_path: str,
               **kwargs: object) -> ClientStats:
    """Run one device on its .npz data until the server ends training (``edgeweave fl client``)."""
    x, y = load_npz(data_path)
    if len(y) == 0:
        raise TrainError(f"{data_path}: holds no samples; a client needs at least one")
    return FLClient(server, token, client_id, (x, y), **kwargs).run()  # type: ignore[arg-type]
