"""Messages in emulated flight: how a shaped link's time and the real transfer overlap.

With application shaping on loopback, sleeping out a link's time and only then sending adds
the real transfer (about 3 ms for 0.6 MB after an idle gap, measured) to a wire time that, on a
real link, already contains it. So a sender reserves the link, stamps the message with the
instant its last byte arrives (on the host's monotonic clock, named by `CLOCK_ID`) and sends at
once; the receiver starts on it no earlier. A receiver on another clock cannot use the stamp
and emulates the link itself on receipt (the node server does; see `NodeService._arrive`).
"""

from __future__ import annotations

import math
import time
from typing import Protocol

from edgeweave.runtime import tensors
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.shaper import CLOCK_ID, LinkShaper, sleep_until


def send_on(link: LinkShaper | None, rtt_ms: float, req: pb.InferRequest) -> float:
    """Ready `req` to cross an emulated link; returns the link's time in ms.

    Shaped here (`link`): reserve the link and stamp the arrival instant, so the real loopback
    transfer happens inside the emulated one instead of after it. Kernel-shaped (`link` None,
    netlab): the bytes take their time on the wire, so only the propagation delay is slept.
    """
    if link is None:
        time.sleep(rtt_ms / 2000.0)
        return rtt_ms / 2.0
    return stamp(req, link, tensors.payload_bytes(req.tensors))


class InFlight(Protocol):
    """A message that can carry an arrival stamp (InferRequest/Reply, a cluster Task)."""

    deliver_at_ns: int
    clock: str


def stamp(msg: InFlight, link: LinkShaper, nbytes: int) -> float:
    """Reserve `link` for `nbytes` and stamp `msg` with their arrival; returns the ms until
    then (the link's time, as the segment timings report it)."""
    at = link.reserve(nbytes)
    msg.deliver_at_ns, msg.clock = int(at * 1e9), CLOCK_ID
    return max(0.0, at - time.monotonic()) * 1000.0


def same_clock(clock: str) -> bool:
    """Whether a stamp made on `clock` can be waited for here ("" is nobody's clock)."""
    return bool(clock) and clock == CLOCK_ID


def arrive(msg: InFlight, max_wait_s: float = math.inf) -> bool:
    """Wait until a message stamped on our clock has crossed its emulated link, but never
    longer than `max_wait_s` (a stamp is the sender's word). False when it carries no stamp we
    can use (unstamped, or from another clock): then its sender shaped it, or the receiver
    must."""
    if not (msg.deliver_at_ns and same_clock(msg.clock)):
        return False
    sleep_until(min(msg.deliver_at_ns / 1e9, time.monotonic() + max_wait_s))
    return True
