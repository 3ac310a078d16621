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

A node plans a request's deadline from when it receives it to when its answer is ready; the
rest of the way (the transfer, the node's gRPC threads, the reply, the device's own threads)
is not the node's to see, and on a busy host it grows with the load. So each edge also keeps
the part of a round trip the node did not account for (mean and mean deviation, as TCP keeps
its round-trip time, RFC 6298) and a request's deadline is sent less that margin
(`margin_ms`, at most half the deadline): without it, answers the node finished in time
arrived late (measured by `benchmarks/serving.py`: MobileNetV2 at twice its capacity, p99
146 ms against a 104 ms SLO). The margin's part beyond the mean (`grace_ms`) goes with the
request: the node plans for the deadline it was sent, but an answer it finishes a little past
it still usually arrives in time, and is sent rather than dropped as late.
Refusals carry the node's time too (trailing metadata), so the margin also learns from them:
learning only from answers, a margin grown while the host was saturated made the node refuse
everything, and then nothing could shrink it again.

With `throttle_k` > 0 each edge also has a client-side throttle (`runtime.throttle`): a device
whose edge has been refusing most of its requests answers the excess itself without sending
them (the caller asks `Edge.throttle.admit`; `answered` and `refused` count the outcomes).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from edgeweave.runtime.backoff import Backoff
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.serving import LOAD_KEY, NODE_KEY
from edgeweave.runtime.throttle import Throttle
from edgeweave.security import ClientTLS, authed_channel

#: gRPC's own reconnect back-off would keep failing fast after an edge is back; ours decides:
#: attempts 100 ms apart, at most 2 s. gRPC core also takes ``min_reconnect_backoff_ms`` as the
#: least time it gives one connection attempt (its MIN_CONNECT_TIMEOUT): at 100 ms a handshake
#: that a loaded host delayed past it failed the attempt, and the fail-fast Deploy or Infer
#: waiting on it came back UNAVAILABLE from a live edge (seen in CI under load 5-10). A refused
#: connection (edge down) still fails at once, so this does not slow noticing a dead edge.
RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 5000),
             ("grpc.max_reconnect_backoff_ms", 2000)]


@dataclass
class Edge:
    target: str
    stubs: list[pb_grpc.NodeStub]  # one per connection
    channels: list[grpc.Channel] = field(default_factory=list)  # the stubs' connections
    backoff: Backoff = field(default_factory=Backoff)
    queued_ms: float = 0.0  # the node's last word on its queued work
    heard_at: float = 0.0
    inflight: int = 0  # this device's requests there now
    service_ms: float = 0.0  # EWMA of a request's round trip there
    outside_ms: float = 0.0  # EWMA of the part of a round trip the node did not account for
    outside_dev: float = 0.0  # and its mean deviation
    uploaded: set[str] = field(default_factory=set)  # stage digests it holds for us
    throttle: Throttle = field(default_factory=lambda: Throttle(k=0.0))  # off unless asked
    _turn: int = 0

    @property
    def stub(self) -> pb_grpc.NodeStub:
        """The next connection's stub, in turn."""
        return self.stubs[self.turn()]

    def turn(self) -> int:
        """The next connection's index: requests take the connections in turn."""
        self._turn = (self._turn + 1) % len(self.stubs)
        return self._turn

    def margin_ms(self, budget_ms: float = math.inf) -> float:
        """What to keep back from a deadline of `budget_ms` for the way there and back: the
        mean time outside the node plus three mean deviations (about its 99th percentile), but
        never more than half the budget. Unbounded, a margin grown while the device's own host
        was saturated (1000 devices in one load generator at twice a small model's capacity)
        left the node nothing: it refused every request, and without answers nothing brought
        the margin down again (benchmarks/serving.py, digits tenants at 200%: goodput 0)."""
        return min(self.outside_ms + 3.0 * self.outside_dev, max(0.0, budget_ms) / 2.0)

    def grace_ms(self, budget_ms: float = math.inf) -> float:
        """The part of `margin_ms` kept for the spread of the way there and back, beyond its
        mean: an answer the node finishes that much past the deadline it was sent still
        arrives in time as often as not, so the node sends it rather than dropping it as
        late (`InferRequest.grace_ms`; the node still plans for the deadline)."""
        return max(0.0, self.margin_ms(budget_ms) - self.outside_ms)

    def expected_ms(self, now: float) -> float:
        """When a new request sent now would be answered, by what we know."""
        said = max(0.0, self.queued_ms - (now - self.heard_at) * 1000.0)
        return said + (self.inflight + 1) * self.service_ms


class EdgePool:
    """Thread-safe; see module doc."""

    def __init__(self, targets: Sequence[str], token: str | None = None,
                 tls: ClientTLS | None = None, options: Sequence[tuple[str, Any]] = (),
                 backoff_s: tuple[float, float] = (0.5, 8.0), connections: int = 1,
                 throttle_k: float = 0.0):
        # gRPC shares one connection between channels with equal arguments: a distinct
        # argument per channel makes each its own connection
        self.edges: list[Edge] = []
        for t in targets:
            channels = [authed_channel(t, token=token, tls=tls, options=[
                *options, *RECONNECT, ("edgeweave.connection", k)]) for k in range(connections)]
            self.edges.append(Edge(t, [pb_grpc.NodeStub(c) for c in channels],
                                   channels=channels, backoff=Backoff(*backoff_s),
                                   throttle=Throttle(k=throttle_k, seed=len(self.edges))))
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.edges)

    def up(self) -> list[Edge]:
        now = time.monotonic()
        return [e for e in self.edges if now >= e.backoff.until]

    def pick(self, exclude: Sequence[Edge] = ()) -> Edge | None:
        """The edge expected to answer soonest among those not in back-off (and not tried
        already for this request), or None."""
        now = time.monotonic()
        with self._lock:
            ready = [e for e in self.edges if now >= e.backoff.until and e not in exclude]
            if not ready:
                return None
            best = min(ready, key=lambda e: (e.expected_ms(now), self.edges.index(e)))
            best.inflight += 1
            return best

    def release(self, edge: Edge) -> None:
        """The request sent to `edge` by `pick` ended without word from the node."""
        with self._lock:
            edge.inflight = max(0, edge.inflight - 1)

    def answered(self, edge: Edge, round_trip_ms: float, reply: pb.InferReply) -> None:
        """The node answered: it is alive, with its queued work and its own time on the
        request (the rest of the round trip was outside it)."""
        t = reply.timings[0] if reply.timings else None
        node = (t.decode_ms + t.queue_ms + t.compute_ms + t.encode_ms + t.forward_ms
                if t is not None else None)
        with self._lock:
            edge.service_ms = (round_trip_ms if not edge.service_ms
                               else 0.8 * edge.service_ms + 0.2 * round_trip_ms)
        edge.throttle.accepted(time.monotonic())
        self._ended(edge, round_trip_ms, node, reply.queued_ms)

    def refused(self, edge: Edge, round_trip_ms: float, error: grpc.RpcError) -> bool:
        """Whether a failed call was the node refusing the request (it sent its load signal
        and its own time: alive, and learnt from); False for a failure without word from it."""
        edge.throttle.refused(time.monotonic())
        said = {k: v for k, v in (error.trailing_metadata() or ()) if k in (LOAD_KEY, NODE_KEY)}
        try:
            queued, node = float(said[LOAD_KEY]), float(said[NODE_KEY])
        except (KeyError, ValueError):
            self.release(edge)
            return False
        self._ended(edge, round_trip_ms, node, queued)
        return True

    def _ended(self, edge: Edge, round_trip_ms: float, node_ms: float | None,
               queued_ms: float) -> None:
        with self._lock:
            edge.inflight = max(0, edge.inflight - 1)
            edge.backoff.reset()
            if math.isfinite(queued_ms) and queued_ms >= 0:  # a peer's number: sane or ignored
                edge.queued_ms, edge.heard_at = min(queued_ms, 3.6e6), time.monotonic()
            if node_ms is None or not (math.isfinite(node_ms) and node_ms >= 0):
                return
            outside = max(0.0, round_trip_ms - node_ms)
            if not edge.outside_ms:
                edge.outside_ms, edge.outside_dev = outside, outside / 2
            else:  # RFC 6298's gains
                edge.outside_dev += 0.25 * (abs(outside - edge.outside_ms) - edge.outside_dev)
                edge.outside_ms += 0.125 * (outside - edge.outside_ms)

    def heard(self, edge: Edge, queued_ms: float) -> None:
        """A node's load signal from elsewhere (Health)."""
        if math.isfinite(queued_ms) and queued_ms >= 0:
            with self._lock:
                edge.queued_ms, edge.heard_at = min(queued_ms, 3.6e6), time.monotonic()

    def failed(self, edge: Edge) -> None:
        """The edge is down or broken: back off from it, exponentially."""
        with self._lock:
            edge.backoff.fail()
            edge.uploaded.clear()  # a restarted node has lost our stages
