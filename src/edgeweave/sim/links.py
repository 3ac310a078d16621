"""Links as shared queues: one direction of a fleet link serialises transfers first come, first
served at the link's rate (its bandwidth trace when it has one), then propagates them for half
the link's RTT.

Serialisation is what a shared link queues on; propagation delays a transfer without occupying
the link (the same split the planner's cost model makes: `topology.transfer_ms` = rtt/2 +
`serialize_ms`). A FIFO queue with a known rate needs no simulation events of its own: when a
transfer enters at time `now`, every earlier transfer has already entered, so its departure is
`max(now, free_at) + serialisation` and is known at once. The engine calls `send` from the event
at which the transfer enters, so entries are always in time order and the answer is exact.

A link is either shared by every device behind it (a Wi-Fi cell, a WAN pipe) or per device (a
cellular radio bearer: each device gets the rate on its own); the latter keeps one `free_at`
per device.
"""

from __future__ import annotations

import math

from edgeweave.topology import Link

#: bits per megabit, and milliseconds per second: the units of `topology.serialize_ms`
_MBIT = 1e6


class LinkQueue:
    """One direction of ``link``: FIFO serialisation at the link's (traced) rate + rtt/2.

    ``buffer_s`` bounds how long a transfer may wait for the link before it would start; a
    transfer that would wait longer is dropped (`send` returns None), as a full router buffer
    drops packets. ``per_device`` gives each device its own queue at the full rate.
    """

    __slots__ = ("_bits_per_s", "_free", "buffer_s", "busy_s", "half_rtt_s", "link", "mbps", "name",
                 "per_device", "sent_bytes", "trace", "transfers")

    def __init__(self, link: Link, name: str, buffer_s: float | None = None,
                 per_device: bool = False) -> None:
        self.link = link
        self.name = name
        self.mbps = link.mbps
        self._bits_per_s = self.mbps * _MBIT
        self.trace = link.trace
        self.half_rtt_s = link.rtt_ms / 2000.0
        self.buffer_s = math.inf if buffer_s is None else buffer_s
        self.per_device = per_device
        self._free: dict[int, float] = {}
        self.busy_s = 0.0
        self.sent_bytes = 0.0
        self.transfers = 0

    def rate_at(self, t: float) -> float:
        """The link's bandwidth (Mbit/s) at time ``t``."""
        return self.mbps if self.trace is None else self.trace.mbps_at(t)

    def serialized_at(self, start: float, nbytes: float) -> float:
        """When ``nbytes`` that start serialising at ``start`` have left, integrating the
        trace's piecewise-constant rate across its samples."""
        bits = nbytes * 8.0
        if self.trace is None:
            return start + bits / (self.mbps * _MBIT)
        t = start
        while True:
            mbps, until = self.trace.segment_at(t)
            room = (until - t) * mbps * _MBIT
            if bits <= room:
                return t + bits / (mbps * _MBIT)
            bits -= room
            t = until

    def send(self, now: float, nbytes: float, device: int = 0) -> tuple[float, float] | None:
        """Enqueue ``nbytes`` at ``now``: ``(arrival at the far end, seconds waited for the
        link)``, or None when the wait would exceed the buffer (the transfer is dropped)."""
        key = device if self.per_device else 0
        free = self._free.get(key, 0.0)
        start = free if free > now else now
        wait = start - now
        if wait > self.buffer_s:
            return None
        # the hot path: an untraced link's rate inline (`serialized_at` integrates a trace)
        end = (start + nbytes * 8.0 / self._bits_per_s if self.trace is None
               else self.serialized_at(start, nbytes))
        self._free[key] = end
        self.busy_s += end - start
        self.sent_bytes += nbytes
        self.transfers += 1
        return end + self.half_rtt_s, wait

    def backlog_s(self, now: float, device: int = 0) -> float:
        """Seconds of already-queued work ahead of a transfer entering now."""
        free = self._free.get(device if self.per_device else 0, 0.0)
        return max(0.0, free - now)
