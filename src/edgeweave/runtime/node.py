"""Start a node server process: gRPC with auth, message limits, metrics, graceful shutdown.

Every message is parsed by the node's own handlers (`requests.tolerant`), never by gRPC: when
gRPC's deserialisation of a streamed message fails, it answers the call itself while the
handler finishes, and the server could then never complete its shutdown (a node ignored
SIGTERM after malformed InferStream traffic in 16 of 22 runs). A stop is bounded anyway: after
the grace period and a short margin the process exits even if a call is still running.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from edgeweave.errors import EdgeWeaveError
from edgeweave.rpc import bind, is_loopback, server_options, split_address
from edgeweave.runtime.metrics import NodeMetrics
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.requests import Malformed, tolerant
from edgeweave.runtime.server import NodeConfig, NodeService
from edgeweave.runtime.summary import LiveSummary
from edgeweave.runtime.tensors import MB
from edgeweave.security import (
    ClientTLS,
    TokenAuthInterceptor,
    authed_channel,
    server_credentials,
)

log = logging.getLogger("edgeweave.runtime.node")

#: gRPC's message size limits are 32-bit signed byte counts.
MAX_MESSAGE_MB = 2047
#: How long past the grace period a stopping node waits for gRPC before it exits regardless.
STOP_MARGIN_S = 2.0
# The main thread, idle while the server's threads serve, wakes this often. A SIGTERM the
# kernel hands to one of those threads only flags Python's handler, which then runs the next
# time the main thread runs Python: asleep for an hour, it did not (the README's harness saw a
# node ignore its SIGTERM for 30 s, once in about 15 runs).
WAKE_S = 0.2


@dataclass
class ServeOptions:
    listen: str
    token: str | None = None
    cert_dir: Path | None = None
    metrics_port: int | None = None
    max_message_mb: float = 64.0
    grace_s: float = 5.0
    summary_s: float = 0.0  # print a live one-line serving summary this often (0: never)


def message_options(max_message_mb: float) -> list[tuple[str, int]]:
    """Oversized messages are refused by gRPC itself (RESOURCE_EXHAUSTED) before we parse.
    The limit must be positive and below 2 GiB: -1 would mean "no limit" to gRPC, 0 would
    refuse everything."""
    if not 0 < max_message_mb <= MAX_MESSAGE_MB:
        raise EdgeWeaveError(f"--max-message-mb {max_message_mb}: expected a size in MiB "
                             f"above 0 and at most {MAX_MESSAGE_MB}")
    limit = int(max_message_mb * MB)
    return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]


class _Capture:
    """Stands in for a server to read the method table the generated code registers."""

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.service, self.handlers = service, handlers


def _refuse(service: Any, msg: Malformed, context: grpc.ServicerContext) -> None:
    refusal = msg.refusal()
    service.note(refusal, context)
    context.abort(refusal.code, refusal.details)


def _guard_stream(service: Any, behavior: Callable) -> Callable:
    """A streaming-request method whose messages must all parse (Deploy): a malformed one
    ends the call with INVALID_ARGUMENT."""
    def handler(request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        def checked() -> Iterator[Any]:
            for msg in request_iterator:
                if isinstance(msg, Malformed):
                    _refuse(service, msg, context)
                yield msg
        return behavior(checked(), context)
    return handler


def _guard_unary(service: Any, behavior: Callable) -> Callable:
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            _refuse(service, request, context)
        return behavior(request, context)
    return handler


def add_node_service(service: NodeService, server: grpc.Server) -> None:
    """`add_NodeServicer_to_server`, with every request parsed tolerantly: Infer and
    InferStream answer a malformed message themselves (InferStream per message), the other
    methods refuse it with INVALID_ARGUMENT."""
    add_tolerant_service(service, server, pb_grpc.add_NodeServicer_to_server,
                         ("Infer", "InferStream"))


def add_tolerant_service(service: Any, server: grpc.Server, add_servicer: Callable,
                         answers_itself: tuple[str, ...] = ()) -> None:
    """Register ``service`` (whose generated ``add_servicer`` function is given) with every
    request parsed by :func:`tolerant`: the methods in ``answers_itself`` receive
    :class:`Malformed` messages and answer them; the others refuse one with INVALID_ARGUMENT
    (``service.note(refusal, context)`` counts and logs it)."""
    cap = _Capture()
    add_servicer(service, cap)
    handlers = {}
    for name, h in cap.handlers.items():
        behavior = h.unary_unary or h.unary_stream or h.stream_unary or h.stream_stream
        if name not in answers_itself:
            behavior = (_guard_stream if h.request_streaming else _guard_unary)(service,
                                                                                behavior)
        field = {(False, False): "unary_unary", (False, True): "unary_stream",
                 (True, False): "stream_unary", (True, True): "stream_stream"}[
                     (h.request_streaming, h.response_streaming)]
        handlers[name] = h._replace(request_deserializer=tolerant(h.request_deserializer),
                                    **{field: behavior})
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(cap.service, handlers),))
    server.add_registered_method_handlers(cap.service, handlers)


def start_node(config: NodeConfig, opts: ServeOptions) -> tuple[grpc.Server, NodeService, int]:
    """Build and start the server; returns it, its service and the bound port."""
    channel_opts = message_options(opts.max_message_mb)
    tls = ClientTLS.for_node(opts.cert_dir, config.name) if opts.cert_dir else None
    config.channel_factory = lambda target: authed_channel(
        target, token=opts.token, tls=tls, options=channel_opts
    )
    metrics = NodeMetrics()
    service = NodeService(config, metrics)
    server, port = build_server(opts, config.name, config.workers,
                                lambda srv: add_node_service(service, srv))
    if opts.metrics_port is not None:
        try:
            metrics.serve_http(opts.metrics_port)
        except OSError as e:
            server.stop(0)
            raise EdgeWeaveError(f"--metrics-port {opts.metrics_port}: cannot listen there "
                                 f"({e.strerror or e})") from None
    server.start()
    warn_plaintext(opts)
    return server, service, port


def build_server(opts: ServeOptions, name: str, workers: int,
                 register: Callable[[grpc.Server], None]) -> tuple[grpc.Server, int]:
    """A gRPC server (not started) with EdgeWeave's authentication (bearer token, or mTLS as
    node ``name``), message limits and port checks; ``register`` adds its services. Returns it
    and the bound port."""
    if opts.token is None and opts.cert_dir is None:
        raise EdgeWeaveError("refusing to serve without authentication: give --token-file "
                             "or --cert-dir")
    split_address(opts.listen)
    channel_opts = message_options(opts.max_message_mb)
    creds = server_credentials(opts.cert_dir, name) if opts.cert_dir else None
    interceptors = [TokenAuthInterceptor(opts.token)] if opts.token else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        interceptors=interceptors,
        options=server_options(channel_opts),
        maximum_concurrent_rpcs=workers + 32,
    )
    register(server)
    return server, bind(server, opts.listen, creds)


def warn_plaintext(opts: ServeOptions) -> None:
    host, _ = split_address(opts.listen)
    if opts.cert_dir is None and not is_loopback(host):
        log.warning("serving in plaintext on %s: the bearer token and every activation cross "
                    "the network readable by anyone on it; use --cert-dir (edgeweave certs) "
                    "beyond a lab network", opts.listen)


def log_to_stderr() -> None:
    """The node's own log lines (rejections, warnings) on stderr, with a timestamp."""
    logger = logging.getLogger("edgeweave")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: "
                                               "%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


class _Stop(Exception):
    """Raised in the main thread by the SIGTERM/SIGINT handler. (Setting a threading.Event from
    a signal handler can deadlock: the handler runs in the main thread, which may hold the
    event's lock at that instant.)"""


def _raise_stop(*_: object) -> None:
    raise _Stop


def serve_forever(config: NodeConfig, opts: ServeOptions, ready: threading.Event | None = None,
                  announce=print, start: Callable[..., tuple[grpc.Server, Any, int]] = start_node
                  ) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting and let in-flight requests finish
    within the grace period; then the process exits (os._exit), finished or not: a worker
    thread still computing or waiting for an emulated link would otherwise hold the exit.
    ``start(config, opts)`` builds the server (a cluster worker passes its own; its config
    has the same ``role``, ``name`` and ``next_target``)."""
    # The stop handler goes in before the port opens: a supervisor that sees the port listening
    # may stop the node at once (the README's harness did, under load, and the stop landed
    # before the handler: exit 143 instead of a clean 0). A stop while starting exits cleanly.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _raise_stop)
    started: tuple[grpc.Server, Any, int] | None = None
    summary = None
    try:
        started = start(config, opts)
        server, service, port = started
        host = opts.listen.rsplit(":", 1)[0]
        if opts.summary_s > 0:
            summary = LiveSummary(service.metrics.registry, config.name, opts.summary_s,
                                  lambda line: announce(line, flush=True)).start()
        announce(f"edgeweave {config.role} {config.name} serving on {host}:{port}"
                 + (f", next {config.next_target}" if config.next_target else "")
                 + (f", metrics on :{opts.metrics_port}" if opts.metrics_port else ""),
                 flush=True)
        if ready:
            ready.set()
        while True:  # short naps: see WAKE_S
            time.sleep(WAKE_S)
    except _Stop:
        pass
    for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut the stop short
        signal.signal(sig, signal.SIG_IGN)
    if started is None:
        log.info("%s stopped while starting", config.name)
    else:
        server, service, _ = started
        log.info("%s stopping (grace %g s)", config.name, opts.grace_s)
        if summary is not None:
            summary.stop()
        stopping = server.stop(grace=opts.grace_s)
        service.close()  # queued requests are refused (UNAVAILABLE); running batches finish
        stopped = stopping.wait(opts.grace_s + STOP_MARGIN_S)
        if not stopped:
            log.warning("%s: calls still running %g s after the stop; exiting anyway",
                        config.name, opts.grace_s + STOP_MARGIN_S)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
