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
from edgeweave.runtime.shaper import LinkShaper, sleep_until


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

    def send(self, msg: InFlight, nbytes: int, src: str, dst: str) -> float:
        """Put ``msg`` (``nbytes`` of payload from device ``src`` to ``dst``) on the medium:
        stamped with its arrival instant, after every transfer reserved before it; returns the
        ms until then (0 and no stamp between a device and itself)."""
        if src == dst:
            msg.deliver_at_ns, msg.clock = 0, ""
            return 0.0
        self._count(nbytes)
        return stamp(msg, self.link, nbytes)

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
