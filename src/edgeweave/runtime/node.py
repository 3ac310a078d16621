"""Start a node server process: gRPC with auth, message limits, metrics, graceful shutdown."""

from __future__ import annotations

import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc

from edgeweave.errors import EdgeWeaveError
from edgeweave.runtime.metrics import NodeMetrics
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.server import NodeConfig, NodeService
from edgeweave.security import (
    ClientTLS,
    TokenAuthInterceptor,
    authed_channel,
    server_credentials,
)

MB = 1 << 20


@dataclass
class ServeOptions:
    listen: str
    token: str | None = None
    cert_dir: Path | None = None
    metrics_port: int | None = None
    max_message_mb: float = 64.0
    grace_s: float = 5.0


def message_options(max_message_mb: float) -> list[tuple[str, int]]:
    """Oversized messages are refused by gRPC itself (RESOURCE_EXHAUSTED) before we parse."""
    limit = int(max_message_mb * MB)
    return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]


def start_node(config: NodeConfig, opts: ServeOptions) -> tuple[grpc.Server, NodeService, int]:
    """Build and start the server; returns it, its service and the bound port."""
    if opts.token is None and opts.cert_dir is None:
        raise EdgeWeaveError("refusing to serve without authentication: give --token-file "
                             "or --cert-dir")
    channel_opts = message_options(opts.max_message_mb)
    tls = ClientTLS.for_node(opts.cert_dir, config.name) if opts.cert_dir else None
    config.channel_factory = lambda target: authed_channel(
        target, token=opts.token, tls=tls, options=channel_opts
    )
    metrics = NodeMetrics()
    service = NodeService(config, metrics)
    interceptors = [TokenAuthInterceptor(opts.token)] if opts.token else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.max_concurrency + config.max_queue + 2),
        interceptors=interceptors,
        options=channel_opts,
        maximum_concurrent_rpcs=config.max_concurrency + config.max_queue + 64,
    )
    pb_grpc.add_NodeServicer_to_server(service, server)
    if opts.cert_dir:
        port = server.add_secure_port(opts.listen, server_credentials(opts.cert_dir, config.name))
    else:
        port = server.add_insecure_port(opts.listen)
    if port == 0:
        raise EdgeWeaveError(f"--listen {opts.listen}: cannot bind (address in use or invalid)")
    server.start()
    if opts.metrics_port is not None:
        metrics.serve_http(opts.metrics_port)
    return server, service, port


def serve_forever(config: NodeConfig, opts: ServeOptions, ready: threading.Event | None = None,
                  announce=print) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting and let in-flight requests finish."""
    server, _, port = start_node(config, opts)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    host = opts.listen.rsplit(":", 1)[0]
    announce(f"edgeweave {config.role} {config.name} serving on {host}:{port}"
             + (f", next {config.next_target}" if config.next_target else "")
             + (f", metrics on :{opts.metrics_port}" if opts.metrics_port else ""), flush=True)
    if ready:
        ready.set()
    stop.wait()
    server.stop(grace=opts.grace_s).wait()
