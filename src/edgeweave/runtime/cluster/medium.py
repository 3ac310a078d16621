"""The cluster's one shared medium: every device's transfers take turns on it.

Devices on one Wi-Fi share its airtime, so a cluster has one emulated link, not one per device:
a single :class:`~edgeweave.runtime.shaper.LinkShaper` whose token bucket every transfer
reserves, first come first served, whichever devices it joins (the plan prices the same thing,
:mod:`edgeweave.plan.medium`). All traffic passes the gateway's process (it holds the frames and
gathers the results), so the medium lives there: a task it sends is stamped with the instant its
bytes arrive (the worker starts no earlier, :mod:`edgeweave.runtime.flight`); a result a worker
sends back over loopback is held on receipt until its transfer would have ended. A transfer
between a device and itself (the gateway's own tiles, a data source's own tiles) is free.
"""

from __future__ import annotations

import threading
import time

from edgeweave.runtime.flight import InFlight, stamp
from edgeweave.runtime.shaper import CLOCK_ID, LinkShaper, sleep_until


class SharedMedium:
    """One shared link for a cluster: ``send`` stamps a message, ``receive`` holds one."""

    def __init__(self, mbps: float, rtt_ms: float, time_scale: float = 1.0):
        """``time_scale``: the run is in slow motion by this factor (runtime.cluster.session),
        so the medium is that much slower too."""
        self.link = LinkShaper(mbps / time_scale, rtt_ms * time_scale)
        self._lock = threading.Lock()
        self.bytes = 0  # everything that crossed the medium
        self.transfers = 0

    @property
    def mbps(self) -> float:
        return self.link.mbps

    def _count(self, nbytes: int) -> None:
        with self._lock:
            self.bytes += nbytes
            self.transfers += 1

    def send(self, msg: InFlight, nbytes: int, src: str, dst: str,
             not_before: float = 0.0) -> float:
        """Put ``msg`` (``nbytes`` of payload from device ``src`` to ``dst``) on the medium:
        stamped with its arrival instant, after every transfer reserved before it; returns the
        ms until then (0 and no stamp between a device and itself). ``not_before``: a
        monotonic instant the message cannot arrive before (its bytes reach ``src`` then,
        :meth:`relay`), kept even between a device and itself."""
        if src == dst:
            msg.deliver_at_ns, msg.clock = 0, ""
            waited = 0.0
        else:
            self._count(nbytes)
            waited = stamp(msg, self.link, nbytes)
        if not_before * 1e9 > msg.deliver_at_ns and not_before > time.monotonic():
            msg.deliver_at_ns, msg.clock = int(not_before * 1e9), CLOCK_ID
            waited = (not_before - time.monotonic()) * 1000.0
        return waited

    def relay(self, nbytes: int, src: str, dst: str) -> float:
        """Reserve a transfer of ``nbytes`` from ``src`` to ``dst`` that nobody waits for now
        (a data source handing a tile to the gateway under work sharing); returns the
        monotonic instant it arrives (now between a device and itself)."""
        if src == dst:
            return time.monotonic()
        self._count(nbytes)
        return self.link.reserve(nbytes)

    def receive(self, nbytes: int, src: str, dst: str) -> float:
        """Hold a message that just reached the gateway from ``src`` over loopback until its
        ``nbytes`` would have crossed the medium (queued behind earlier transfers); returns the
        ms held."""
        if src == dst:
            return 0.0
        self._count(nbytes)
        start = time.monotonic()
        sleep_until(self.link.reserve(nbytes))
        return (time.monotonic() - start) * 1000.0
