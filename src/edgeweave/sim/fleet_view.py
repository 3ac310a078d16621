"""What the rest of the simulator sees of a running simulation: the context policies decide
with (`policies.PolicyContext`: a device's hardware and application, its access point and
edge, its bandwidth estimate, the servers' loads), what a partition's frame needs from its
gateway (`cluster.ClusterHost`), and where a device is when (the federated rounds ask which
devices are still covered). The engine (`engine.Simulation`) keeps the hot path; this is the
read side and the rare writes (a probe, a re-deploy), kept apart so each stays small.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgeweave.plan.edgent_dynamic import PROBE_BYTES
from edgeweave.runtime.bandwidth import BandwidthEstimator
from edgeweave.sim.cluster import ClusterState, Frame
from edgeweave.sim.jitter import Jitter
from edgeweave.sim.links import LinkQueue
from edgeweave.sim.mobility import Timeline
from edgeweave.sim.scenario import Scenario
from edgeweave.sim.servers import BatchServer, PSServer
from edgeweave.sim.world import World


class FleetView:
    """The read side of `engine.Simulation` (a mixin: the engine sets these attributes)."""

    scn: Scenario
    world: World
    env: Any
    places: Timeline
    _kinds: list[str]
    _hw: list[int]
    _app: list[int]
    _place_ap: np.ndarray
    _estimators: dict[int, BandwidthEstimator]
    _clusters: dict[int, ClusterState]
    _jitter: list[Jitter | None]
    dev_free: list[float]

    def _device_compute(self, dev: int, now: float, work_s: float) -> float:
        raise NotImplementedError

    # ---- the context policies see (edgeweave.sim.policies.PolicyContext) ---------------

    def hardware_of(self, device: int) -> str:
        return self._kinds[self._hw[device]]

    def app_of(self, device: int) -> int:
        return self._app[device]

    def ap_name(self, ap: int) -> str:
        return self.scn.access_points[ap].name

    def ap_edge(self, ap: int) -> str:
        return self.scn.access_points[ap].edge

    def server(self, name: str) -> PSServer | BatchServer:
        return self.world.servers[name]

    def compute_jitters(self) -> list[Jitter]:
        """Every device's and server's compute variability (`sim.jitter`), once each."""
        got = [*self._jitter, *(s.jitter for s in self.world.servers.values())]
        return list({id(j): j for j in got if j is not None}.values())

    def tier_jitters(self) -> dict[str, list[Jitter]]:
        """`compute_jitters` by the tier they vary (``device``, ``edge``, ``cloud``)."""
        out: dict[str, dict[int, Jitter]] = {}
        for j in self._jitter:
            if j is not None:
                out.setdefault("device", {})[id(j)] = j
        for name, s in self.world.servers.items():
            if s.jitter is not None:
                out.setdefault(self.scn.fleet.node(name).tier, {})[id(s.jitter)] = s.jitter
        return {t: list(js.values()) for t, js in out.items()}

    def cloud_of(self, edge: str) -> str | None:
        wan = self.world.wan.get(edge)
        return None if wan is None else wan[0]

    def neighbours(self, edge: str) -> list[str]:
        return self.world.neighbours(edge)

    def estimate_mbps(self, device: int) -> float | None:
        est = self._estimators.get(device)
        return None if est is None else est.mbps

    def ap_mbps(self, ap: int, now: float) -> float:
        """The uplink rate of access point ``ap`` at ``now`` (its trace's, if it has one)."""
        return self.world.access_points[ap].up.rate_at(now)

    def probe(self, device: int, ap: int, now: float) -> None:
        """A heartbeat of `PROBE_BYTES` on the device's uplink (a device that uploads nothing
        still times its keep-alives, as the runtime's Edgent client does): its estimate
        learns the cell's rate now."""
        est = self._estimators.get(device)
        if est is None:
            est = self._estimators[device] = BandwidthEstimator()
        est.observe(PROBE_BYTES, PROBE_BYTES * 8.0 / (self.ap_mbps(ap, now) * 1e6))

    # ---- what a partition's frame needs (sim.cluster.ClusterHost) -----------------------

    @property
    def now(self) -> float:
        return self.env.now

    def call_at(self, t: float, fn: Callable[[Any], None], arg: Any) -> None:
        self.env.call_at(t, fn, arg)

    def gateway_compute(self, dev: int, now: float, seconds: float) -> float:
        return self._device_compute(dev, now, seconds)

    def gateway_free(self, dev: int) -> float:
        return self.dev_free[dev]

    def cluster_of(self, dev: int, frame: Frame) -> ClusterState:
        got = self._clusters.get(dev)
        if got is None:
            from edgeweave.topology import Link

            medium = Link.model_validate({"from": "gateway", "to": "medium",
                                          "mbps": frame.medium_mbps,
                                          "rtt_ms": frame.medium_rtt_ms})
            got = self._clusters[dev] = ClusterState(LinkQueue(medium, f"cluster {dev}"),
                                                     len(frame.helpers))
        return got

    def occupy_device(self, device: int, seconds: float) -> None:
        """Hold the device's processor for ``seconds`` from now (a re-deploy after a plan
        switch): its next requests wait behind it."""
        self.dev_free[device] = max(self.dev_free[device], self.env.now) + seconds

    def ap_of(self, device: int, t: float) -> int:
        """The access point ``device`` is attached to at ``t`` (-1: no coverage)."""
        return int(self._place_ap[self.places.at_one(device, t)])

    def aps_visited(self, device: int, start: float, end: float) -> set[int]:
        """Every access point (-1: no coverage) ``device`` is attached to during [start, end]."""
        seen = {self.ap_of(device, start)}
        for t, place in self.places.segments(device):
            if start < t <= end:
                seen.add(int(self._place_ap[place]))
        return seen

    def first_ap(self, device: int) -> int:
        """The first access point ``device`` attaches to in the run (-1: never covered)."""
        aps = (int(self._place_ap[p]) for _, p in self.places.segments(device))
        return next((a for a in aps if a >= 0), -1)
