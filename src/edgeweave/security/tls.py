"""Mutual TLS, loading side: a node's certificate, key and CA from a fleet or node folder, as
gRPC server and client credentials, and :func:`authed_channel` (TLS and/or token)."""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgeweave.security.common import (
    _CLOCK_SKEW,
    CA_CERT_FILE,
    CA_DIR,
    CA_KEY_FILE,
    SecurityError,
    _check_node_name,
    _read_file,
    log,
)
from edgeweave.security.tokens import TokenClientInterceptor


@dataclass(frozen=True)
class CertPair:
    """Paths of one certificate and its private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ClientTLS:
    """What a client needs for (mutual) TLS.

    Args:
        ca: CA certificate used to verify the server.
        cert, key: this client's certificate and key (both or neither; without them the
            server, which demands client certificates, will refuse the handshake).
        server_name: expected name in the server certificate when it differs from the host
            in the target (sets ``grpc.ssl_target_name_override``).
    """

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ca", Path(self.ca))
        if (self.cert is None) != (self.key is None):
            raise SecurityError("ClientTLS: give both cert and key, or neither")
        if self.cert is not None:
            object.__setattr__(self, "cert", Path(self.cert))
            object.__setattr__(self, "key", Path(self.key))  # type: ignore[arg-type]

    @classmethod
    def for_node(cls, cert_dir: str | os.PathLike[str], node_name: str) -> ClientTLS:
        """The fleet layout: ``ca.pem`` plus ``<node>.pem|.key`` in :func:`node_dir`."""
        d = node_dir(cert_dir, node_name)
        return cls(ca=d / CA_CERT_FILE, cert=d / f"{node_name}.pem", key=d / f"{node_name}.key")


def node_dir(cert_dir: str | os.PathLike[str], node_name: str) -> Path:
    """The folder holding *node_name*'s ``ca.pem``, ``<node>.pem`` and ``<node>.key``:
    ``cert_dir/<node>/`` when it is there (a fleet directory from ``edgeweave certs``), else
    *cert_dir* itself (the node's own folder, copied to it). Warns when the CA's private key
    sits in that folder: whoever holds it can mint any identity in the fleet."""
    d = Path(cert_dir)
    _check_node_name(node_name)
    if (d / node_name / f"{node_name}.pem").exists():
        d = d / node_name
    elif not (d / f"{node_name}.pem").exists():
        raise SecurityError(
            f"no certificate for node {node_name!r} in {d}: expected {d / node_name}/"
            f"{node_name}.pem (a fleet directory from edgeweave certs) or {d}/{node_name}.pem "
            f"(the node's own folder); {node_name}.pem does not exist"
        )
    if (d / CA_KEY_FILE).exists():
        log.warning("%s holds the CA private key %s next to node %s's key; keep the CA in its "
                    "own folder (edgeweave certs writes %s/) and copy only the node's folder to "
                    "the node", d, CA_KEY_FILE, node_name, CA_DIR)
    return d


def _load_cert(path: Path, what: str = "certificate") -> tuple[bytes, x509.Certificate]:
    data = _read_file(path, what)
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise SecurityError(f"{what} {path} is not a valid PEM certificate") from exc
    now = _dt.datetime.now(_dt.UTC)
    if cert.not_valid_after_utc < now:
        raise SecurityError(f"{what} {path} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    if cert.not_valid_before_utc > now + _CLOCK_SKEW:
        raise SecurityError(
            f"{what} {path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    return data, cert


def _load_key(path: Path, what: str = "private key") -> tuple[bytes, Any]:
    data = _read_file(path, what)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SecurityError(
            f"{what} {path} is not a valid unencrypted PEM private key: {exc}"
        ) from exc
    return data, key


def _spki(public_key: Any) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load_pair(cert_path: Path, key_path: Path) -> tuple[bytes, bytes]:
    cert_pem, cert = _load_cert(cert_path)
    key_pem, key = _load_key(key_path)
    if _spki(cert.public_key()) != _spki(key.public_key()):
        raise SecurityError(f"private key {key_path} does not belong to certificate {cert_path}")
    return cert_pem, key_pem


def server_credentials(
    cert_dir: str | os.PathLike[str], node_name: str, *, require_client_auth: bool = True
) -> grpc.ServerCredentials:
    """TLS credentials for *node_name*'s server from the fleet layout in *cert_dir*.

    Uses ``<node>.pem``/``<node>.key`` in :func:`node_dir` as the server identity and its
    ``ca.pem`` as the root that client certificates must chain to (client certificates are
    required by default).
    """
    d = node_dir(cert_dir, node_name)
    ca_pem, _ = _load_cert(d / CA_CERT_FILE, "CA certificate")
    cert_pem, key_pem = _load_pair(d / f"{node_name}.pem", d / f"{node_name}.key")
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=require_client_auth
    )


def client_credentials(tls: ClientTLS) -> grpc.ChannelCredentials:
    """Channel credentials from a :class:`ClientTLS` (validates every file first)."""
    ca_pem, _ = _load_cert(tls.ca, "CA certificate")
    if tls.cert is None or tls.key is None:
        return grpc.ssl_channel_credentials(root_certificates=ca_pem)
    cert_pem, key_pem = _load_pair(tls.cert, tls.key)
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )


def authed_channel(
    target: str,
    token: str | None = None,
    tls: ClientTLS | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A channel to *target*: TLS when *tls* is given, bearer token when *token* is given.

    The caller owns the channel and should ``close()`` it (or use it as a context manager).
    """
    opts = list(options)
    if tls is not None:
        if tls.server_name:
            opts.append(("grpc.ssl_target_name_override", tls.server_name))
        channel = grpc.secure_channel(target, client_credentials(tls), options=opts)
    else:
        channel = grpc.insecure_channel(target, options=opts)
    if token is not None:
        try:
            interceptor = TokenClientInterceptor(token)
        except SecurityError:
            channel.close()
            raise
        channel = grpc.intercept_channel(channel, interceptor)
    return channel
