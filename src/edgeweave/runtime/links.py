"""The emulated links a node's requests cross, as the requests name them.

A request names its own link rates and arrival stamp, so every crossing is bounded
(`--max-link-s`, `--max-arrival-wait-s`) and refused before it takes a place if too long. Each
distinct (direction, rate, RTT) is one token bucket shared by the requests on it, as a real link
is shared; the rates are the peer's numbers, so at most `MAX_LINKS` buckets are kept (the least
recently used goes).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from edgeweave.runtime import tensors
from edgeweave.runtime.flight import arrive, same_clock, send_on
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.requests import bound_wait
from edgeweave.runtime.shaper import LinkShaper

MAX_LINKS = 64


class NodeLinks:
    def __init__(self, max_link_s: float, max_arrival_wait_s: float):
        self.max_link_s = max_link_s
        self.max_arrival_wait_s = max_arrival_wait_s
        self._links: OrderedDict[tuple[str, float, float], LinkShaper] = OrderedDict()
        self._lock = threading.Lock()

    def arrival_s(self, req: pb.InferRequest, remaining: float | None) -> float:
        """How long the request must wait for its emulated link before it is here: on our
        clock, until its stamp (bounded by --max-arrival-wait-s); from a sender on another
        clock, the first link's time for its bytes (bounded by --max-link-s). Refused if too
        long or past the call's deadline (`remaining` seconds)."""
        if not req.deliver_at_ns:
            return 0.0
        if same_clock(req.clock):
            ahead = req.deliver_at_ns / 1e9 - time.monotonic()
            bound_wait(ahead, self.max_arrival_wait_s, "the request's arrival stamp",
                       "--max-arrival-wait-s", remaining)
            return max(0.0, ahead)
        return self.check(req.route[0], tensors.payload_bytes(req.tensors), "the request",
                          remaining)

    def arrive(self, req: pb.InferRequest) -> None:
        """Hold an admitted request until it has crossed its emulated link."""
        if same_clock(req.clock):
            arrive(req, max_wait_s=self.max_arrival_wait_s)
        else:
            self.shape(req.route[0], tensors.payload_bytes(req.tensors), "in")

    def check(self, hop: pb.Hop, nbytes: int, what: str, remaining: float | None) -> float:
        """Refuse a crossing of the request's own link that would hold it too long; returns
        the crossing's seconds."""
        if hop.link_mbps <= 0:
            return 0.0
        serial = nbytes * 8 / (hop.link_mbps * 1e6) if hop.shape_bandwidth else 0.0
        seconds = serial + hop.link_rtt_ms / 2000.0
        bound_wait(seconds, self.max_link_s, what, "--max-link-s", remaining)
        return seconds

    def link(self, hop: pb.Hop, direction: str) -> LinkShaper:
        """One bucket per link and direction (links are full duplex), shared by concurrent
        requests as a real link is."""
        key = (direction, hop.link_mbps, hop.link_rtt_ms)
        with self._lock:
            link = self._links.get(key)
            if link is None:
                link = self._links[key] = LinkShaper(hop.link_mbps, hop.link_rtt_ms)
                if len(self._links) > MAX_LINKS:
                    self._links.popitem(last=False)
            self._links.move_to_end(key)
        return link

    def send(self, hop: pb.Hop, req: pb.InferRequest) -> float:
        """Put `req` on the hop's link: stamped with its arrival instant when shaped here (the
        receiver waits for it), or after half the RTT when the kernel shapes the bytes."""
        if hop.link_mbps <= 0:
            return 0.0
        return send_on(self.link(hop, "up") if hop.shape_bandwidth else None,
                       hop.link_rtt_ms, req)

    def shape(self, hop: pb.Hop, nbytes: int, direction: str) -> float:
        """Emulate the hop's link for `nbytes` before sending: serialisation (unless the kernel
        shapes it) plus half the RTT (the kernel here has no netem)."""
        if hop.link_mbps <= 0:
            return 0.0
        if not hop.shape_bandwidth:
            time.sleep(hop.link_rtt_ms / 2000.0)
            return hop.link_rtt_ms / 2.0
        return self.link(hop, direction).transmit(nbytes) * 1000.0
