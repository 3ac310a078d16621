"""Bearer tokens: a shared secret in a file, checked in constant time by a server interceptor
and attached by a client interceptor (on insecure and secure channels alike)."""

from __future__ import annotations

import collections
import hmac
import logging
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc

from edgeweave.rpc import RateLimitedLog
from edgeweave.security.common import (
    _TOKEN_RE,
    AUTH_METADATA_KEY,
    MIN_TOKEN_LENGTH,
    SecurityError,
    _read_file,
    _write_private,
    log,
)

_rejections = RateLimitedLog(log)



def check_token(token: object, where: str) -> str:
    if not isinstance(token, str):
        raise SecurityError(f"{where}: token must be a str, got {type(token).__name__}")
    if not token:
        raise SecurityError(f"{where}: token is empty")
    if not _TOKEN_RE.fullmatch(token):
        raise SecurityError(
            f"{where}: token must be printable ASCII without spaces (it travels as gRPC metadata)"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise SecurityError(
            f"{where}: token has {len(token)} characters; at least {MIN_TOKEN_LENGTH} are "
            "required (make one with `edgeweave fl token FILE`)"
        )
    return token


def generate_token() -> str:
    """A fresh random bearer token (43 URL-safe characters, 256 bits)."""
    return secrets.token_urlsafe(32)


def write_token(path: str | os.PathLike[str], token: str | None = None) -> str:
    """Write *token* (a fresh one if ``None``) to *path* with mode 0600; return the token."""
    p = Path(path)
    tok = generate_token() if token is None else check_token(token, f"token for {p}")
    _write_private(p, (tok + "\n").encode("ascii"))
    return tok


def load_token(path: str | os.PathLike[str]) -> str:
    """Read a bearer token from *path* (surrounding whitespace stripped).

    Raises :class:`SecurityError` naming the file when it is missing, unreadable, empty,
    shorter than :data:`MIN_TOKEN_LENGTH` or not a single printable-ASCII word. Logs a
    warning when the file is readable by group or others.
    """
    p = Path(path)
    raw = _read_file(p, "token file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SecurityError(f"token file {p} is not UTF-8 text") from exc
    token = text.strip()
    if not token:
        raise SecurityError(f"token file {p} is empty")
    if not _TOKEN_RE.fullmatch(token):
        raise SecurityError(
            f"token file {p} must hold a single token of printable ASCII characters "
            "(no spaces or line breaks inside)"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise SecurityError(
            f"token in {p} is too short ({len(token)} characters; at least "
            f"{MIN_TOKEN_LENGTH} required): write a new one with `edgeweave fl token {p} "
            "--force` (every node and device takes it), or use mutual TLS (`edgeweave certs`)"
        )
    try:
        mode = p.stat().st_mode
    except OSError:  # pragma: no cover - raced with deletion
        mode = 0
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "token file %s is accessible by group/others (mode %o); chmod 600 it",
            p,
            stat.S_IMODE(mode),
        )
    return token


# --------------------------------------------------------------------------- server side


def _normalise_method(name: str) -> str:
    """``"pkg.Svc/Method"`` or ``"/pkg.Svc/Method"`` -> ``"/pkg.Svc/Method"``."""
    if not isinstance(name, str) or name.strip("/").count("/") != 1:
        raise SecurityError(
            f"open_methods entry {name!r} must be a full method name like "
            "'/grpc.health.v1.Health/Check'"
        )
    return "/" + name.strip("/")


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Server interceptor demanding ``authorization: Bearer <token>`` on every RPC.

    Args:
        token: the accepted token, or several (e.g. old and new during a rotation).
        open_methods: full method names (``"/grpc.health.v1.Health/Check"``; the leading
            slash is optional) that may be called without a token. Default: none.

    A rejected call is aborted with ``UNAUTHENTICATED`` before the real handler runs; the
    abort handler has the same cardinality as the real one. Calls to unknown methods are
    rejected the same way when unauthenticated, so the method list is not revealed.
    :attr:`rejected` counts rejections (thread-safe).
    """

    def __init__(self, token: str | Sequence[str], open_methods: Iterable[str] = ()) -> None:
        tokens = [token] if isinstance(token, str) else list(token)
        if not tokens:
            raise SecurityError("TokenAuthInterceptor: no token given")
        self._tokens = tuple(
            check_token(t, "TokenAuthInterceptor").encode("ascii") for t in tokens
        )
        self.open_methods = frozenset(_normalise_method(m) for m in open_methods)
        self._lock = threading.Lock()
        self._rejected = 0

    @property
    def rejected(self) -> int:
        """Number of calls rejected so far."""
        with self._lock:
            return self._rejected

    def _token_ok(self, presented: bytes) -> bool:
        ok = False
        for expected in self._tokens:  # no short-circuit: time does not reveal which matched
            ok |= hmac.compare_digest(presented, expected)
        return ok

    def check_metadata(self, metadata: Iterable[Any] | None) -> str | None:
        """``None`` if *metadata* carries a valid bearer token, else the rejection message."""
        values = [
            v for k, v in (tuple(md) for md in (metadata or ())) if k.lower() == AUTH_METADATA_KEY
        ]
        presented = None
        for value in values:
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            scheme, _, credential = text.strip().partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                presented = credential.strip()
                break
        if presented is None:
            return "missing bearer token (expected metadata 'authorization: Bearer <token>')"
        if not self._token_ok(presented.encode("utf-8", "surrogateescape")):
            return "invalid bearer token"
        return None

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method in self.open_methods:
            return continuation(handler_call_details)
        message = self.check_metadata(handler_call_details.invocation_metadata)
        if message is None:
            return continuation(handler_call_details)
        with self._lock:
            self._rejected += 1
        # Only looks the handler up (to copy its cardinality); its behaviour never runs.
        handler = continuation(handler_call_details)
        return _abort_handler(handler, message, method)


def _abort_handler(handler: grpc.RpcMethodHandler | None, message: str, method: str
                   ) -> grpc.RpcMethodHandler:
    def abort(_request: Any, context: grpc.ServicerContext) -> Any:
        # logged here, where the peer's address is known; one line per cause every few seconds
        _rejections.log(logging.WARNING, f"auth:{message}", "rejected %s from %s: %s", method,
                        context.peer(), message)
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    # Requests are left undeserialised: no work is done on an unauthenticated payload.
    if handler is None:  # unknown method: a stream-stream handler fits every call shape
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


# --------------------------------------------------------------------------- client side


class _ClientCallDetails(
    collections.namedtuple(
        "_ClientCallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class TokenClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Client interceptor adding ``authorization: Bearer <token>`` to every call.

    Works on insecure channels, where gRPC refuses :class:`grpc.CallCredentials`. Any
    ``authorization`` metadata the caller set is replaced.
    """

    def __init__(self, token: str) -> None:
        self._header = (
            AUTH_METADATA_KEY,
            "Bearer " + check_token(token, "TokenClientInterceptor"),
        )

    def _details(self, details: grpc.ClientCallDetails) -> _ClientCallDetails:
        metadata = [md for md in (details.metadata or ()) if md[0].lower() != AUTH_METADATA_KEY]
        metadata.append(self._header)
        return _ClientCallDetails(
            details.method,
            details.timeout,
            tuple(metadata),
            getattr(details, "credentials", None),
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


def token_call_credentials(token: str) -> grpc.CallCredentials:
    """Per-call credentials sending ``authorization: Bearer <token>`` (secure channels only)."""
    return grpc.access_token_call_credentials(check_token(token, "token_call_credentials"))
