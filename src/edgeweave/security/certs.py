"""Mutual TLS, issuing side: a private CA and one certificate per node, each valid for server
and client auth, written in the fleet directory layout the loaders read."""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeweave.security.common import (
    _CLOCK_SKEW,
    _DNS_RE,
    CA_CERT_FILE,
    CA_DIR,
    CA_KEY_FILE,
    DEFAULT_HOSTS,
    SecurityError,
    _check_node_name,
    _write_private,
    _write_public,
)
from edgeweave.security.tls import CertPair, _load_cert, _load_key, _spki


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
            # the CA key's public half: checked above to be the CA certificate's
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
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
