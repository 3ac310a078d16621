"""Bearer-token auth on every FL RPC, and optional server-side TLS for the channel.

The token scheme is the inference wire's (:mod:`edgeweave.security`: ``authorization: Bearer
<token>`` metadata, constant-time comparison). Devices send the header explicitly on each call
(:func:`auth_metadata`) since gRPC refuses call credentials on the insecure channels a lab
deployment uses. Over a network anyone can read, the token must travel inside TLS:
:func:`server_tls` / :func:`client_tls` take PEM files such as ``edgeweave certs`` writes
(ca.pem, <node>.pem, <node>.key). Unlike the inference fleet, devices here are not issued
certificates, so TLS authenticates the server only and the token authenticates the device.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from edgeweave.security import AUTH_METADATA_KEY, check_token, load_token, write_token
from edgeweave.security import TokenAuthInterceptor as TokenAuth
from edgeweave.train.types import TrainError

__all__ = ["TokenAuth", "auth_metadata", "client_tls", "listen_on", "load_token", "server_tls",
           "write_token"]


def auth_metadata(token: str) -> tuple[tuple[str, str]]:
    return ((AUTH_METADATA_KEY, "Bearer " + check_token(token, "FL client")),)


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


def listen_on(server: grpc.Server, listen: str, tls_cert: str | os.PathLike[str] | None,
              tls_key: str | os.PathLike[str] | None, what: str) -> tuple[int, str]:
    """Bind ``server`` to ``listen`` (TLS when both PEM files are given) and start it; returns
    (port, "host:port"). A taken or malformed address is a TrainError naming ``what``."""
    try:
        if tls_cert is not None and tls_key is not None:
            port = server.add_secure_port(listen, server_tls(tls_cert, tls_key))
        else:
            port = server.add_insecure_port(listen)
    except RuntimeError as e:
        raise TrainError(f"{what}: cannot listen on {listen}: {e}") from None
    if port == 0:
        raise TrainError(f"{what}: cannot listen on {listen} (address in use?)")
    server.start()
    return port, f"{listen.rpartition(':')[0]}:{port}"
