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

from edgeweave.security.certs import make_ca, make_fleet_certs, make_node_cert
from edgeweave.security.common import (
    AUTH_METADATA_KEY,
    CA_CERT_FILE,
    CA_DIR,
    CA_KEY_FILE,
    DEFAULT_HOSTS,
    MIN_TOKEN_LENGTH,
    SecurityError,
)
from edgeweave.security.tls import (
    CertPair,
    ClientTLS,
    authed_channel,
    client_credentials,
    node_dir,
    server_credentials,
)
from edgeweave.security.tokens import (
    TokenAuthInterceptor,
    TokenClientInterceptor,
    check_token,
    generate_token,
    load_token,
    token_call_credentials,
    write_token,
)

__all__ = [
    "AUTH_METADATA_KEY",
    "CA_CERT_FILE",
    "CA_DIR",
    "CA_KEY_FILE",
    "DEFAULT_HOSTS",
    "MIN_TOKEN_LENGTH",
    "CertPair",
    "ClientTLS",
    "SecurityError",
    "TokenAuthInterceptor",
    "TokenClientInterceptor",
    "authed_channel",
    "check_token",
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
