"""What the token, TLS and certificate modules share: the file layout's names, the error, the
logger (``edgeweave.security``, one for the package), and files written atomically with the
right mode."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import secrets
from pathlib import Path

from edgeweave.errors import EdgeWeaveError

log = logging.getLogger("edgeweave.security")

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


def _check_node_name(node_name: str) -> str:
    if not isinstance(node_name, str) or not _NODE_RE.fullmatch(node_name):
        raise SecurityError(
            f"node name {node_name!r} must be 1-64 characters of letters, digits, '.', '_' "
            "or '-', starting with a letter or digit (it becomes a file name)"
        )
    if node_name.lower() == "ca":
        raise SecurityError("node name 'ca' is reserved for the certificate authority")
    return node_name
