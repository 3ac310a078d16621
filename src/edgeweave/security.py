"""Authentication for every RPC between EdgeWeave nodes: bearer tokens and mutual TLS.

Two independent mechanisms, usable alone or together:

* **Bearer token** -- a shared secret in a file (:func:`write_token` / :func:`load_token`).
  Servers install :class:`TokenAuthInterceptor`; clients wrap their channel with
  :class:`TokenClientInterceptor` (works on insecure *and* secure channels) or simply call
  :func:`authed_channel`. Comparison is constant-time (:func:`hmac.compare_digest`).
* **Mutual TLS** -- a private CA plus one certificate per node (:func:`make_fleet_certs`),
  each valid for both server and client auth. :func:`server_credentials` demands a client
  certificate signed by the CA; :func:`client_credentials` presents the node's certificate.

File layout written by :func:`make_fleet_certs` (one directory per fleet)::

    ca/ca.pem  ca/ca.key                  the CA: stays on the machine that issues certificates
    <node>/ca.pem <node>/<node>.pem <node>/<node>.key    one folder per node: copy it there

(``*.key`` files are mode 0600). The CA's private key signs every identity in the fleet, so it
never sits in a folder that is copied to a node. The loaders take either the fleet directory
(they look in ``<dir>/<node>/``) or a node's own folder.
"""

from __future__ import annotations

import collections
import datetime as _dt
import hmac
import ipaddress
import logging
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeweave.errors import EdgeWeaveError
from edgeweave.rpc import RateLimitedLog

__all__ = [
    "CA_CERT_FILE",
    "CA_DIR",
    "CA_KEY_FILE",
    "MIN_TOKEN_LENGTH",
    "CertPair",
    "ClientTLS",
    "SecurityError",
    "TokenAuthInterceptor",
    "TokenClientInterceptor",
    "authed_channel",
    "client_credentials",
    "generate_token",
    "load_token",
    "make_ca",
    "make_fleet_certs",
    "make_node_cert",
    "node_dir",
    "server_credentials",
    "token_call_credentials",
    "write_token",
]

log = logging.getLogger(__name__)
_rejections = RateLimitedLog(log)

MIN_TOKEN_LENGTH = 16
CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CA_DIR = "ca"  # the CA's own folder inside a fleet directory
AUTH_METADATA_KEY = "authorization"
DEFAULT_HOSTS = ("127.0.0.1", "localhost")

# Printable ASCII without spaces: what a gRPC (non-binary) metadata value may carry.
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")
# Node names become file names: keep them boring.
_NODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DNS_RE = re.compile(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*")
_CLOCK_SKEW = _dt.timedelta(minutes=5)


class SecurityError(EdgeWeaveError):
    """A token, certificate or key is missing, malformed or unusable."""


# --------------------------------------------------------------------------- file helpers


def _write_private(path: Path, data: bytes) -> None:
    """Write *data* to *path* atomically with mode 0600 (never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), 0o600)
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if hasattr(os, "chmod"):
        os.chmod(path, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_file(path: Path, what: str) -> bytes:
    if not path.exists():
        raise SecurityError(f"{what} {path} does not exist")
    if not path.is_file():
        raise SecurityError(f"{what} {path} is not a regular file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SecurityError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------------- tokens


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


# --------------------------------------------------------------------------- TLS loading


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


# --------------------------------------------------------------------------- certificate making


def _check_node_name(node_name: str) -> str:
    if not isinstance(node_name, str) or not _NODE_RE.fullmatch(node_name):
        raise SecurityError(
            f"node name {node_name!r} must be 1-64 characters of letters, digits, '.', '_' "
            "or '-', starting with a letter or digit (it becomes a file name)"
        )
    if node_name.lower() == "ca":
        raise SecurityError("node name 'ca' is reserved for the certificate authority")
    return node_name


def _check_days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise SecurityError(f"days must be a positive integer, got {days!r}")
    return days


def _san_entries(hosts: Iterable[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for host in hosts:
        if not isinstance(host, str) or not host.strip():
            raise SecurityError(f"hosts entry {host!r} is not a host name or IP address")
        host = host.strip()
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not _DNS_RE.fullmatch(host) or len(host) > 253:
            raise SecurityError(f"hosts entry {host!r} is not a valid IP address or DNS name")
        entries.append(x509.DNSName(host))
    if not entries:
        raise SecurityError("hosts is empty: a node certificate needs at least one host")
    return entries


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    _write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def _validity(days: int) -> tuple[_dt.datetime, _dt.datetime]:
    now = _dt.datetime.now(_dt.UTC)
    return now - _CLOCK_SKEW, now + _dt.timedelta(days=days)


def make_ca(
    out_dir: str | os.PathLike[str], name: str = "edgeweave-ca", days: int = 365
) -> CertPair:
    """Create a private CA (EC P-256) as ``out_dir/ca.pem`` + ``out_dir/ca.key`` (0600).

    Overwrites an existing CA there: certificates it signed stop being trusted.
    """
    _check_days(days)
    if not isinstance(name, str) or not name.strip():
        raise SecurityError(f"CA name {name!r} must be a non-empty string")
    d = Path(out_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name.strip())])
    not_before, not_after = _validity(days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pair = CertPair(cert=d / CA_CERT_FILE, key=d / CA_KEY_FILE)
    _write_key(pair.key, key)
    _write_public(pair.cert, cert.public_bytes(serialization.Encoding.PEM))
    return pair


def make_node_cert(
    out_dir: str | os.PathLike[str],
    node_name: str,
    ca_dir: str | os.PathLike[str],
    hosts: Iterable[str] = DEFAULT_HOSTS,
    days: int = 365,
) -> CertPair:
    """Create ``out_dir/<node>.pem`` + ``<node>.key`` (0600) signed by the CA in *ca_dir*.

    The certificate carries the *hosts* as SubjectAltNames (IP addresses or DNS names) and is
    valid for both serverAuth and clientAuth, so one node identity serves both directions.
    """
    _check_node_name(node_name)
    _check_days(days)
    sans = _san_entries(hosts)
    ca = Path(ca_dir)
    _, ca_cert = _load_cert(ca / CA_CERT_FILE, "CA certificate")
    _, ca_key = _load_key(ca / CA_KEY_FILE, "CA private key")
    if _spki(ca_cert.public_key()) != _spki(ca_key.public_key()):
        raise SecurityError(
            f"CA private key {ca / CA_KEY_FILE} does not belong to {ca / CA_CERT_FILE}"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity(days)
    not_after = min(not_after, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    d = Path(out_dir)
    pair = CertPair(cert=d / f"{node_name}.pem", key=d / f"{node_name}.key")
    _write_key(pair.key, key)
    _write_public(pair.cert, cert.public_bytes(serialization.Encoding.PEM))
    return pair


def make_fleet_certs(
    out_dir: str | os.PathLike[str],
    node_names: Iterable[str],
    hosts: Iterable[str] = DEFAULT_HOSTS,
    days: int = 365,
    *,
    ca_name: str = "edgeweave-ca",
    reuse_ca: bool = False,
) -> dict[str, CertPair]:
    """A CA in ``out_dir/ca/`` plus one folder per node, ``out_dir/<node>/`` holding the node's
    certificate, key and a copy of ``ca.pem`` (what ``edgeweave certs`` runs; see the module
    docstring). A node's folder is all that node needs; the CA key is in none of them.

    Every node certificate carries the same *hosts*. With ``reuse_ca=True`` an existing CA in
    ``out_dir/ca/`` is kept (so certificates already deployed stay valid).
    Returns ``{"ca": CertPair, node: CertPair, ...}``.
    """
    names = list(node_names)
    if not names:
        raise SecurityError("certs: no node names given (--node NAME, one per node)")
    for n in names:
        _check_node_name(n)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SecurityError(f"certs: --node names {dupes} more than once; each node needs its "
                            "own name")
    host_list = list(hosts)
    _san_entries(host_list)  # validate before writing anything
    _check_days(days)
    ca_dir = Path(out_dir) / CA_DIR
    if reuse_ca and (ca_dir / CA_CERT_FILE).exists() and (ca_dir / CA_KEY_FILE).exists():
        _load_cert(ca_dir / CA_CERT_FILE, "CA certificate")
        ca = CertPair(cert=ca_dir / CA_CERT_FILE, key=ca_dir / CA_KEY_FILE)
    else:
        ca = make_ca(ca_dir, name=ca_name, days=days)
    out: dict[str, CertPair] = {"ca": ca}
    for n in names:
        out[n] = make_node_cert(Path(out_dir) / n, n, ca_dir, hosts=host_list, days=days)
        _write_public(out[n].cert.parent / CA_CERT_FILE, ca.cert.read_bytes())
    return out
