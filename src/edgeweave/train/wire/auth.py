"""Bearer-token auth on every FL RPC, and optional TLS for the channel.

The same scheme as the inference wire (``authorization: Bearer <token>`` metadata, constant-time
comparison), written again here because training never imports the runtime package. Devices
send the header explicitly on each call (:func:`auth_metadata`) since gRPC refuses call
credentials on the insecure channels a lab deployment uses. Over a network anyone can read, the
token must travel inside TLS: :func:`server_tls` / :func:`client_tls` take PEM files such as
``edgeweave certs`` writes (ca.pem, <node>.pem, <node>.key).
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from edgeweave.train.types import TrainError

log = logging.getLogger(__name__)

MIN_TOKEN_LENGTH = 16
_KEY = "authorization"
# Printable ASCII without spaces: what a (non-binary) gRPC metadata value may carry.
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")


def check_token(token: object, where: str) -> str:
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        raise TrainError(f"{where}: the token must be one word of printable ASCII")
    if len(token) < MIN_TOKEN_LENGTH:
        raise TrainError(f"{where}: the token has {len(token)} characters, at least "
                         f"{MIN_TOKEN_LENGTH} are required")
    return token


def load_token(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrainError(f"token file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TrainError(f"token file {p} cannot be read: {e}") from None
    return check_token(text.strip(), f"token file {p}")


def write_token(path: str | os.PathLike[str]) -> str:
    """A fresh 256-bit token in a new file only its owner can read."""
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def auth_metadata(token: str) -> tuple[tuple[str, str]]:
    return ((_KEY, "Bearer " + check_token(token, "FL client")),)


class TokenAuth(grpc.ServerInterceptor):
    """Rejects every call without the right bearer token before its request is deserialised."""

    def __init__(self, token: str) -> None:
        self._token = check_token(token, "FL server").encode()

    def reason(self, metadata: Iterable[Any] | None) -> str | None:
        for key, value in metadata or ():
            if key.lower() != _KEY:
                continue
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            scheme, _, credential = text.strip().partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                presented = credential.strip().encode("utf-8", "surrogateescape")
                if hmac.compare_digest(presented, self._token):
                    return None
                return "invalid bearer token"
        return "missing bearer token (expected metadata 'authorization: Bearer <token>')"

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        message = self.reason(details.invocation_metadata)
        if message is None:
            return continuation(details)
        log.info("rejected %s: %s", details.method, message)

        def abort(_request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        handler = continuation(details)  # looked up only for its call shape
        if handler is not None and handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(abort)
        return grpc.unary_unary_rpc_method_handler(abort)


def _pem(path: str | os.PathLike[str], what: str) -> bytes:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise TrainError(f"{what} {p} cannot be read: {e.strerror or e}") from None
    if b"-----BEGIN" not in data:
        raise TrainError(f"{what} {p} is not a PEM file")
    return data


def server_tls(cert: str | os.PathLike[str], key: str | os.PathLike[str]) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([(_pem(key, "TLS key"), _pem(cert, "TLS certificate"))])


def client_tls(ca: str | os.PathLike[str]) -> grpc.ChannelCredentials:
    """Trust exactly the CA that signed the server's certificate."""
    return grpc.ssl_channel_credentials(root_certificates=_pem(ca, "CA certificate"))
