"""A request's way through the fleet: the steps of its placement, in order.

A placement (`pricing.Work`) becomes a tuple of steps the engine walks: the device's compute,
each link crossed (the access point's uplink first: the device learns its bandwidth from it),
and each server's stage. The edge admits every request that goes through it; one it forwards
to the cloud keeps its slot until the reply comes back down, as the runtime's server keeps a
forwarded request admitted, so the path ends that hold with a release step.
"""

from __future__ import annotations

from typing import Any

from edgeweave.sim.pricing import Work
from edgeweave.sim.world import World

#: step kinds: (kind, the link or server, seconds of device compute / bytes / ms of work);
#: CLUSTER: a partition's frame (`sim.cluster`) on the device's cluster
DEVICE, LINK, UPLINK, SERVER, SERVER_HOLD, RELEASE, CLUSTER = range(7)
Step = tuple[int, Any, float]


#: a request in flight is a list (a class instance costs ~1 us to build, a list a quarter of
#: that, and the engine builds one per request): these name its fields. Which step it is on
#: (``K``) and where its time went so far (``NET``, ``SRV`` seconds); ``OVER``: seconds the
#: runtime's per-hop costs add at its end; ``HOLD``: the server whose slot it keeps while
#: forwarded (None)
REQ, DEV, STEPS, K, NET, SRV, OVER, HOLD = range(8)
Job = list[Any]  # a new one: [i, dev, steps, 0, 0.0, 0.0, overhead, None]


def itinerary(world: World, w: Work, ap: int, edge: str | None) -> tuple[Step, ...]:
    """The steps of placement ``w`` from access point ``ap``, its edge stage on ``edge``
    (None: the access point's own edge; another one is reached over the MAN)."""
    steps: list[Step] = []
    if w.frame is not None:
        steps.append((CLUSTER, w.frame, 0.0))
    if w.compute_ms[0] > 0:
        steps.append((DEVICE, None, w.compute_ms[0] / 1000.0))
    if w.up_hops == 0:
        return tuple(steps)
    q = world.access_points[ap]
    home = q.edge
    at = edge or home
    steps.append((UPLINK, q.up, w.up_bytes[0]))
    if at != home:
        steps.append((LINK, world.man[(home, at)], w.up_bytes[0]))
    server = world.servers[at]
    forwards = w.up_hops >= 2
    steps.append((SERVER_HOLD if forwards else SERVER, server, w.compute_ms[1]))
    if forwards:
        cloud, up, down = world.wan[at]
        steps.append((LINK, up, w.up_bytes[1]))
        steps.append((SERVER, world.servers[cloud], w.compute_ms[2]))
        if w.down_hops >= 2:
            steps.append((LINK, down, w.down_bytes[1]))
        steps.append((RELEASE, server, 0.0))
    if at != home:
        steps.append((LINK, world.man[(at, home)], w.down_bytes[0]))
    if w.down_hops >= 1:
        steps.append((LINK, q.down, w.down_bytes[0]))
    return tuple(steps)


def shared_end(start: float, work: float, t0: float, t1: float) -> float:
    """When ``work`` seconds of compute started at ``start`` end if the processor runs at half
    speed during [t0, t1) (shared with a training job) and full speed otherwise."""
    t = start
    if t < t0:
        if t + work <= t0:
            return t + work
        work -= t0 - t
        t = t0
    if t < t1:
        if t + 2 * work <= t1:
            return t + 2 * work
        work -= (t1 - t) / 2
        t = t1
    return t + work
