"""What a node checks in a request before doing any work for it, and how it says no.

Every check here is cheap and runs before admission, decoding or compute: a request names its
own route, codecs, link rates and arrival stamp, and every one of them is a peer's claim (any
device holds the fleet's token, so authenticated is not the same as honest).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import grpc

from edgeweave.codec import CodecError
from edgeweave.runtime import tensors
from edgeweave.runtime.proto import edgeweave_pb2 as pb


class Refused(Exception):
    """A request the node will not serve: the gRPC status to answer with, the details, the
    reason it is counted and logged under, and how loudly (overload is routine: info)."""

    def __init__(self, code: grpc.StatusCode, details: str, reason: str,
                 level: int = logging.WARNING):
        super().__init__(details)
        self.code, self.details, self.reason, self.level = code, details, reason, level


@dataclass(frozen=True)
class Malformed:
    """A message that did not parse as its protobuf type (stands in for it, so the handler,
    not gRPC, answers: gRPC's own deserialisation failure on a stream could leave the server
    unable to shut down)."""

    why: str

    def refusal(self) -> Refused:
        return Refused(grpc.StatusCode.INVALID_ARGUMENT,
                       f"malformed message (not a valid protobuf): {self.why}", "malformed")


def tolerant(parse):
    """Wrap a protobuf `FromString` so a bad message becomes `Malformed` instead of an
    exception inside gRPC."""
    def deserialize(data: bytes):
        try:
            return parse(data)
        except Exception as e:  # protobuf raises DecodeError, and others on odd input
            return Malformed(str(e)[:200] or type(e).__name__)
    return deserialize


def check_route(req: pb.InferRequest) -> None:
    """A non-empty route, finite non-negative links, and only activation codecs (for every hop
    and for the reply), so nothing fails half-way through the work."""
    if not req.route:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "request has an empty route",
                      "bad_route")
    for hop in req.route:
        mbps, rtt = hop.link_mbps, hop.link_rtt_ms
        if not (math.isfinite(mbps) and mbps >= 0 and math.isfinite(rtt) and rtt >= 0):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                          f"route links need finite link_mbps >= 0 and link_rtt_ms >= 0, got "
                          f"{mbps!r} Mbit/s, {rtt!r} ms", "bad_link")
    try:
        for hop in req.route:
            tensors.activation_codec(hop.codec)
        tensors.activation_codec(req.return_codec)
    except CodecError as e:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"route: {e}", "bad_codec") from None


def check_tensors(req: pb.InferRequest, expected: tensors.Expect, max_bytes: float) -> None:
    """The declared dtype and shape of every tensor, before a byte of it is decoded."""
    try:
        tensors.check_declared(req.tensors, expected, max_bytes)
    except CodecError as e:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"bad tensor: {e}", "bad_tensor"
                      ) from None


def bound_wait(seconds: float, limit_s: float, what: str, flag: str,
               remaining: float | None) -> None:
    """Refuse a wait a peer asked for that is longer than this node allows (`flag` names the
    node's setting) or than the call's deadline."""
    if seconds > limit_s:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                      f"{what} would spend {seconds:.1f} s on the emulated link, more than this "
                      f"node allows ({limit_s:g} s, serve {flag}): check the route's link_mbps "
                      f"and link_rtt_ms, or the sender's clock", "bad_link")
    if remaining is not None and seconds > remaining:
        raise Refused(grpc.StatusCode.DEADLINE_EXCEEDED,
                      f"{what} would spend {seconds:.1f} s on the emulated link; the request's "
                      f"deadline is {remaining:.1f} s away", "deadline")
