"""The edges a device may send requests to, and which one gets the next request.

A device can be given several edge servers. Each request goes to the edge expected to answer it
soonest: the edge's last word on its queued work (every reply and refusal carries the node's
queued milliseconds per worker, `InferReply.queued_ms`; Health has it too), aged by the time
since it was said, plus this device's own requests in flight there times what a request has
been taking there (join the shortest queue, Nexus and Clipper's front ends route this way). An
edge that fails (unreachable, crashed) sits out an exponential back-off, and the request is
retried on the next edge while its deadline allows; an edge that merely refused (a full queue,
a deadline it cannot meet) is alive and is not backed off. With one edge this is the client's
old behaviour: that edge, or the device's own fallback while it is in back-off.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.serving import LOAD_KEY
from edgeweave.security import ClientTLS, authed_channel

#: gRPC's own reconnect back-off would keep failing fast after an edge is back; ours decides.
RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
             ("grpc.max_reconnect_backoff_ms", 2000)]


@dataclass
class Edge:
    target: str
    stubs: list[pb_grpc.NodeStub]  # one per connection
    down_until: float = 0.0
    failures: int = 0
    queued_ms: float = 0.0  # the node's last word on its queued work
    heard_at: float = 0.0
    inflight: int = 0  # this device's requests there now
    service_ms: float = 0.0  # EWMA of a request's round trip there
    uploaded: set[str] = field(default_factory=set)  # stage digests it holds for us
    _turn: int = 0

    @property
    def stub(self) -> pb_grpc.NodeStub:
        """The next connection's stub, in turn."""
        self._turn = (self._turn + 1) % len(self.stubs)
        return self.stubs[self._turn]

    def expected_ms(self, now: float) -> float:
        """When a new request sent now would be answered, by what we know."""
        said = max(0.0, self.queued_ms - (now - self.heard_at) * 1000.0)
        return said + (self.inflight + 1) * self.service_ms


class EdgePool:
    """Thread-safe; see module doc."""

    def __init__(self, targets: Sequence[str], token: str | None = None,
                 tls: ClientTLS | None = None, options: Sequence[tuple[str, Any]] = (),
                 backoff_s: tuple[float, float] = (0.5, 8.0), connections: int = 1):
        self.backoff_s = backoff_s
        # gRPC shares one connection between channels with equal arguments: a distinct
        # argument per channel makes each its own connection
        self.edges = [Edge(t, [pb_grpc.NodeStub(authed_channel(
            t, token=token, tls=tls,
            options=[*options, *RECONNECT, ("edgeweave.connection", k)]))
            for k in range(connections)]) for t in targets]
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.edges)

    def up(self) -> list[Edge]:
        now = time.monotonic()
        return [e for e in self.edges if now >= e.down_until]

    def pick(self, exclude: Sequence[Edge] = ()) -> Edge | None:
        """The edge expected to answer soonest among those not in back-off (and not tried
        already for this request), or None."""
        now = time.monotonic()
        with self._lock:
            ready = [e for e in self.edges if now >= e.down_until and e not in exclude]
            if not ready:
                return None
            best = min(ready, key=lambda e: (e.expected_ms(now), self.edges.index(e)))
            best.inflight += 1
            return best

    def release(self, edge: Edge, round_trip_ms: float | None = None) -> None:
        """The request sent to `edge` by `pick` has ended (with its round trip if answered)."""
        with self._lock:
            edge.inflight = max(0, edge.inflight - 1)
            if round_trip_ms is not None:
                edge.service_ms = (round_trip_ms if not edge.service_ms
                                   else 0.8 * edge.service_ms + 0.2 * round_trip_ms)

    def heard(self, edge: Edge, queued_ms: float) -> None:
        """The edge answered (a reply or a refusal): alive, with this much queued work."""
        if not math.isfinite(queued_ms) or queued_ms < 0:
            return  # a peer's number; a nonsense one is ignored
        with self._lock:
            edge.queued_ms, edge.heard_at = min(queued_ms, 3.6e6), time.monotonic()
            edge.failures, edge.down_until = 0, 0.0

    def heard_error(self, edge: Edge, error: grpc.RpcError) -> bool:
        """Whether a failed call was the edge refusing (it sent its load signal: alive)."""
        for key, value in error.trailing_metadata() or ():
            if key == LOAD_KEY:
                try:
                    self.heard(edge, float(value))
                except ValueError:
                    return False
                return True
        return False

    def failed(self, edge: Edge) -> None:
        """The edge is down or broken: back off from it, exponentially."""
        with self._lock:
            edge.failures += 1
            low, high = self.backoff_s
            edge.down_until = time.monotonic() + min(high, low * 2 ** (edge.failures - 1))
            edge.uploaded.clear()  # a restarted node has lost our stages
