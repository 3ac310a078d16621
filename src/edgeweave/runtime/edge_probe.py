"""Whether the device can use the edge at all, and if not, why: the edge refusing our token,
a failed TLS handshake, or no answer. A client that cannot authenticate is misconfigured, not
unlucky, so these failures are told apart from an edge that is merely down or slow (which the
client survives by running locally).
"""

from __future__ import annotations

import grpc

from edgeweave.errors import EdgeWeaveError
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.security import ClientTLS, authed_channel


def credential_failure(code: grpc.StatusCode, details: str) -> str | None:
    """What was wrong with our credentials, if the failure says so: the edge refused the token,
    or the TLS handshake failed (either side refused the other's certificate, or one side
    speaks TLS and the other does not)."""
    text = (details or "").lower()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"it did not accept our token (--token-file): {details}"
    if code == grpc.StatusCode.UNAVAILABLE and ("handshake" in text or "ssl" in text):
        return (f"the TLS handshake failed; check --cert-dir (the CA, the device's certificate) "
                f"and that the edge serves TLS: {details}")
    if code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in text \
            and "socket closed" in text:
        return ("the edge closed the connection during the handshake: it serves TLS and "
                "refused our certificate, or expects TLS and we sent none (--cert-dir)")
    return None


def check_usable(code: grpc.StatusCode, details: str, what: str, fallback_local: bool) -> None:
    """Raise EdgeWeaveError unless a failure is one to survive by running locally: the edge
    refusing the request itself (down, overloaded, too slow), or our credentials when
    `fallback_local` says to run on the device anyway."""
    from edgeweave.runtime.server import FALLBACK_CODES

    cause = credential_failure(code, details)
    if cause and not fallback_local:
        raise EdgeWeaveError(f"edge refused {what}: {cause}")
    if code not in FALLBACK_CODES and not cause:
        raise EdgeWeaveError(f"edge refused {what}: {code.name}: {details}")


def probe_edge(target: str, token: str | None = None, tls: ClientTLS | None = None,
               timeout_s: float = 10.0) -> None:
    """Ask the node at `target` for its Health with these credentials; EdgeWeaveError naming
    the cause when it does not answer (what `infer` checks before any work)."""
    with authed_channel(target, token=token, tls=tls) as channel:
        health(pb_grpc.NodeStub(channel), target, timeout_s)


def health(stub: pb_grpc.NodeStub, target: str | None, timeout_s: float) -> None:
    try:
        stub.Health(pb.HealthRequest(), timeout=timeout_s)
    except grpc.RpcError as e:
        cause = credential_failure(e.code(), e.details()) or (
            f"unreachable ({e.code().name}: {e.details()})")
        raise EdgeWeaveError(f"edge {target}: {cause}") from None
