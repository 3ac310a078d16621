"""gRPC server plumbing shared by the inference runtime and training (which cannot import each
other): server options, binding with clear errors, and rejection logs that cannot flood.

gRPC enables SO_REUSEPORT on Linux by default, so a second server started on a port already in
use binds "successfully" and the kernel then splits new connections between the two (measured:
a second `serve` on the edge's port took 19 of 40 new connections). Every server EdgeWeave
starts turns it off with :func:`server_options`, so a busy port is an error at start instead.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import grpc

from edgeweave.errors import EdgeWeaveError

#: No port sharing: a second server on a busy port must fail to bind, not steal connections.
NO_PORT_SHARING = ("grpc.so_reuseport", 0)


def server_options(extra: Iterable[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """Options for every `grpc.server` EdgeWeave builds: `extra` plus no port sharing."""
    opts = [o for o in extra if o[0] != NO_PORT_SHARING[0]]
    return [*opts, NO_PORT_SHARING]


def split_address(listen: str, flag: str = "--listen") -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:port`) -> (host, port); EdgeWeaveError naming `flag`.

    gRPC itself accepts port numbers above 65535 and binds some other port, so the range is
    checked here."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise EdgeWeaveError(f"{flag} {listen!r}: expected host:port, e.g. 127.0.0.1:50051")
    port = int(port_text)
    if port > 65535:
        raise EdgeWeaveError(f"{flag} {listen}: port {port} is out of range (0-65535)")
    return host, port


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or name from a listen address) is reachable only locally."""
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name or "0.0.0.0"-like wildcard: assume the network sees it


def bind(server: grpc.Server, listen: str, credentials: grpc.ServerCredentials | None = None,
         flag: str = "--listen") -> int:
    """Add `listen` to `server` (TLS with `credentials`); returns the bound port.

    A malformed, unresolvable or busy address is one EdgeWeaveError naming `flag` and the
    address, not a RuntimeError from gRPC."""
    split_address(listen, flag)
    try:
        if credentials is not None:
            port = server.add_secure_port(listen, credentials)
        else:
            port = server.add_insecure_port(listen)
    except RuntimeError:
        port = 0
    if port == 0:
        raise EdgeWeaveError(f"{flag} {listen}: cannot listen there (the port is in use by "
                             f"another process, or the address is not one of this host's)")
    return port


class RateLimitedLog:
    """Log lines grouped by a reason, at most one per reason every `interval_s`; the next line
    of a reason says how many were held back. A hostile peer can make a server reject requests
    as fast as it can send them; the log must still be readable (and the disk not fill up)."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0):
        self.logger = logger
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, reason: str, msg: str, *args: object, **kw: Any) -> bool:
        """Log `msg % args` (`kw` as for `Logger.log`, e.g. exc_info) unless `reason` was
        logged less than `interval_s` ago; returns whether it was logged."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(reason)
            if last is not None and now - last < self.interval_s:
                self._held[reason] = self._held.get(reason, 0) + 1
                return False
            self._last[reason] = now
            held = self._held.pop(reason, 0)
        if held:
            msg += f" (and {held} more like it since the last such line)"
        self.logger.log(level, msg, *args, **kw)
        return True
