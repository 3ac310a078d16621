"""The discrete-event core: requests walk their placement's steps through device, links and
servers on a simpy clock.

Built for fleets of 10,000 devices: nothing is a simpy process per device. Arrivals, places and
hardware are drawn up front as arrays (`workload`, `mobility`); the clock is fed the sorted
arrival times (`Clock.feed`: no queue entry per arrival), and each request is a small record
that advances step by step:

* device compute: the device's own FIFO processor (one request at a time, at its profiled
  speed; half speed while it also trains a federated round) - computed in place, no event
  until the step ends;
* a link: a FIFO queue per direction (`links.LinkQueue`) - the departure is known when the
  transfer enters, so one event at its arrival at the far end;
* a server: processor sharing over the node's cores (`servers.PSServer`) or batches - the
  server calls back when the stage is done.

The last step of a request needs no event: its end time is recorded directly, plus the
runtime's per-hop cost beyond compute and links (`Application.overhead_ms`). Failures: a link
whose queue outgrows its buffer (network), a server that refuses (capacity), no coverage when
the request is issued (network); after the run, the answers that came back after the device
left its access point (mobility) and those past the application's deadline (deadline) are
marked with array operations over all requests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from heapq import heappush
from typing import Any

import numpy as np
from simpy.events import NORMAL

from edgeweave.runtime.bandwidth import BandwidthEstimator
from edgeweave.sim.cluster import ClusterState, Framed, FrameRun
from edgeweave.sim.fleet_view import FleetView
from edgeweave.sim.itinerary import (
    DEV,
    DEVICE,
    HOLD,
    LINK,
    NET,
    OVER,
    RELEASE,
    REQ,
    SERVER,
    SERVER_HOLD,
    SRV,
    STEPS,
    UPLINK,
    Job,
    K,
    Step,
    itinerary,
    shared_end,
)
from edgeweave.sim.jitter import jitter
from edgeweave.sim.outcome import (  # noqa: F401  (re-exported: the engine's vocabulary)
    CAPACITY,
    DEADLINE,
    FAILURE_CAUSES,
    MOBILITY,
    NETWORK,
    OK,
    PENDING,
    STATUS,
    Outcome,
    classify,
)
from edgeweave.sim.policies import Policy, make_policy
from edgeweave.sim.pricing import Pricing, Work
from edgeweave.sim.scenario import Scenario
from edgeweave.sim.workload import (
    STREAM_POLICY,
    STREAM_SERVICE,
    Devices,
    Requests,
    assign_devices,
    mobility,
    requests,
    rng_for,
)
from edgeweave.sim.world import World, build_world


class Simulation(FleetView):
    """One run of a scenario under its policy (see the module doc). ``arrivals`` replaces the
    generated (times, devices) of the requests, for replaying a measured schedule."""

    def __init__(self, scn: Scenario, *, policy: str | None = None,
                 policy_params: dict[str, Any] | None = None,
                 arrivals: tuple[np.ndarray, np.ndarray] | None = None,
                 inference: bool = True,
                 progress: Callable[[float, float], None] | None = None) -> None:
        self.scn = scn
        self.devices: Devices = assign_devices(scn)
        self.places = mobility(scn, self.devices)
        if arrivals is not None:
            t, d = (np.asarray(a) for a in arrivals)
            order = np.lexsort((d, t))
            self.requests = Requests(t[order].astype(float), d[order].astype(np.int32))
        elif inference:
            self.requests = requests(scn, self.devices)
        else:
            self.requests = Requests(np.zeros(0), np.zeros(0, dtype=np.int32))
        self._app = self.devices.app.tolist()
        self.device_app = self._app  # what policies read (`PolicyContext.device_app`)
        self.world: World = build_world(scn, self._server_done)
        self.env = self.world.env
        self._call_at = self.env.call_at
        self._queue: list[Any] = self.env._queue  # the hot path pushes its calls itself
        self._eid = self.env._eid
        self.env.stepper = self._advance  # a queued `Job` comes back here
        self.pricing = Pricing(scn)
        self.rng = rng_for(scn, STREAM_POLICY)
        name = policy or scn.policy.name
        params = policy_params if policy is not None else scn.policy.params
        self.policy: Policy = make_policy(name, self, params)
        self._decide = self.policy.decide
        self.policy_name = name
        self.progress = progress
        self.edges = sorted(self.world.servers)
        self._edge_index = {e: i for i, e in enumerate(self.edges)}
        self._kinds = self.devices.kinds
        self._hw = self.devices.hardware.tolist()
        # per application, how many requests a device may have under way (0: no limit); per
        # device, how many it has and the ones waiting for them (`Application.in_flight`)
        limit = [a.in_flight or 0 for a in scn.applications]
        self._dev_limit = [limit[a] for a in self._app]
        # per device, how its compute varies (its population's `compute_cv` and `speed`)
        jitters = [jitter(p.compute_cv, rng_for(scn, STREAM_SERVICE, k), 1.0 / p.speed)
                   for k, p in enumerate(scn.populations)]
        self._jitter = [jitters[k] for k in self.devices.population.tolist()]
        # per application, what each hop a request crosses costs beyond compute and links
        # (`Application.overhead_ms`, seconds), and how it varies per request
        self._overhead = [a.overhead_ms / 1000.0 for a in scn.applications]
        self._overhead_jitter = [jitter(a.overhead_cv, rng_for(scn, STREAM_SERVICE, 2000 + k))
                                 for k, a in enumerate(scn.applications)]
        self._under_way = [0] * len(self.devices)
        self._held: dict[int, deque[int]] = {}
        self._place_ap = np.array([-1 if p.access_point is None else
                                   [a.name for a in scn.access_points].index(p.access_point)
                                   for p in scn.places], dtype=np.int32)
        self._steps: dict[tuple[int, int, str | None],
                          tuple[tuple[Step, ...], tuple[Any, ...], int]] = {}
        self._estimators: dict[int, BandwidthEstimator] = {}
        self._clusters: dict[int, ClusterState] = {}
        n_dev = len(self.devices)
        self.dev_free = [0.0] * n_dev
        self.dev_busy = [0.0] * n_dev  # seconds of inference compute per device
        self.dev_training: dict[int, tuple[float, float]] = {}  # device -> (start, end)
        n = len(self.requests)
        self.out = Outcome(
            t=self.requests.t, device=self.requests.device,
            ap=self._place_ap[self.places.at(self.requests.device, self.requests.t)]
            if n else np.zeros(0, dtype=np.int32),
            done=np.full(n, np.nan), status=np.full(n, PENDING, dtype=np.int8),
            network_s=np.zeros(n), server_s=np.zeros(n), device_s=np.zeros(n),
            work=np.full(n, -1, dtype=np.int32), edge=np.full(n, -1, dtype=np.int16))
        self._ap_list = self.out.ap.tolist()
        # the hot path writes results through memoryviews (a third of numpy's per-item cost)
        out = self.out
        self._done: Any = memoryview(out.done)  # type: ignore[arg-type]
        self._status: Any = memoryview(out.status)  # type: ignore[arg-type]
        self._net: Any = memoryview(out.network_s)  # type: ignore[arg-type]
        self._srv: Any = memoryview(out.server_s)  # type: ignore[arg-type]
        self._dev_s: Any = memoryview(out.device_s)  # type: ignore[arg-type]
        self._work: Any = memoryview(out.work)  # type: ignore[arg-type]
        self._edge: Any = memoryview(out.edge)  # type: ignore[arg-type]

    # ---- running ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the request source (and the progress ticker); `run` calls it."""
        self._source()
        if self.progress is not None:
            self.env.process(self._ticker())

    def run(self, until: float | None = None) -> Outcome:
        """Issue every request, run until all have ended (or ``until``), classify them."""
        self.start()
        self.env.run(until=until)
        return self.finish()

    def finish(self) -> Outcome:
        self._classify()
        if self.progress is not None:
            self.progress(self.scn.duration_s, self.scn.duration_s)
        return self.out

    def _ticker(self):  # type: ignore[no-untyped-def]
        step = self.scn.duration_s / 100.0
        while self.env.now < self.scn.duration_s:
            assert self.progress is not None
            self.progress(self.env.now, self.scn.duration_s)
            yield self.env.timeout(step)

    def _source(self) -> None:
        """Issue the sorted requests: the clock calls `_arrive` at each one's time, without
        a queue entry per request (`Clock.feed`)."""
        self._devs = self.requests.device.tolist()
        self.env.feed(self.requests.t.tolist(), self._arrive)

    def _arrive(self, i: int) -> None:
        dev = self._devs[i]
        lim = self._dev_limit[dev]
        if not lim:
            self._issue(i, dev, self.env._now)
        elif self._under_way[dev] < lim:
            self._under_way[dev] += 1
            self._issue(i, dev, self.env._now)
        else:  # the device is still busy with its earlier requests: this one waits
            held = self._held.get(dev)
            if held is None:
                held = self._held[dev] = deque()
            held.append(i)

    def _issue(self, i: int, dev: int, now: float) -> None:
        ap = self._ap_list[i]
        choice = self._decide(dev, ap, now)
        if choice is None:
            self._refuse(i, dev, now)
            return
        work, edge = choice
        self._work[i] = work.id
        if ap < 0 and work.up_hops:
            self._refuse(i, dev, now)
            return
        key = (work.id, ap, edge)
        route = self._steps.get(key)
        if route is None:
            route = self._steps[key] = self._route(work, ap, edge)
        steps, servers, at = route
        if at >= 0:
            self._edge[i] = at
        for server in servers:
            server.incoming += 1
        app = self._app[dev]
        over = self._overhead[app] * work.up_hops
        if over:
            jit = self._overhead_jitter[app]
            if jit is not None:
                over *= jit()
        self._advance([i, dev, steps, 0, 0.0, 0.0, over, None])  # a `Job` at its first step

    def _route(self, work: Work, ap: int, edge: str | None) -> tuple[Any, ...]:
        """What a request of placement ``work`` from ``ap`` (its edge stage on ``edge``)
        needs, computed once per (placement, access point, edge): its steps, the servers
        ahead of it and the index of its edge server (-1: none)."""
        steps = itinerary(self.world, work, ap, edge)
        servers = tuple(obj for kind, obj, _ in steps if kind in (SERVER, SERVER_HOLD))
        at = (self._edge_index[edge or self.ap_edge(ap)]
              if work.up_hops and work.compute_ms[1] > 0 else -1)
        return steps, servers, at

    def _refuse(self, i: int, dev: int, now: float) -> None:
        """A request that cannot go out (no coverage for a placement that needs it)."""
        self._status[i] = NETWORK
        self._done[i] = now
        self._free_device(dev, now)

    def _advance(self, job: Job) -> None:
        """Walk ``job``'s steps from where it is until one takes time (the hot path: a few
        million calls in a city run, so the clock's queue and the device's compute are
        inlined here)."""
        now = self.env._now  # simpy's `now` is a property
        steps = job[STEPS]
        last = len(steps)
        k = job[K]
        while k < last:
            kind, obj, amount = steps[k]
            k += 1
            job[K] = k
            if kind in (UPLINK, LINK):
                sent = obj.send(now, amount, job[DEV])
                if sent is None:
                    self._end(job, now, NETWORK)
                    return
                end = sent[0]
                job[NET] += end - now
                if kind == UPLINK:  # the device's estimate learns from its own transfer
                    dev = job[DEV]
                    est = self._estimators.get(dev)
                    if est is None:
                        est = self._estimators[dev] = BandwidthEstimator()
                    est.observe(amount, end - now - obj.half_rtt_s)
            elif kind == DEVICE:
                dev = job[DEV]
                if self._jitter[dev] is None and not self.dev_training:
                    # `_device_compute` without jitter or training, inline: FIFO on the device
                    start = self.dev_free[dev]
                    if start < now:
                        start = now
                    end = self.dev_free[dev] = start + amount
                    self.dev_busy[dev] += amount
                else:
                    end = self._device_compute(dev, now, amount)
                self._dev_s[job[REQ]] += end - now
            elif kind in (SERVER, SERVER_HOLD):
                job[SRV] -= now
                obj.incoming -= 1
                if not obj.submit(now, amount, job, kind == SERVER_HOLD):
                    job[SRV] += now
                    self._end(job, now, CAPACITY)
                return
            elif kind == RELEASE:
                obj.release(now)
                job[HOLD] = None
                continue
            else:  # CLUSTER
                FrameRun(self, job[DEV], obj, Framed(self, job, now)).start(now)
                return
            if k == last:
                self._end(job, end, OK)
                return
            if end > now:
                heappush(self._queue, (end, NORMAL, next(self._eid), job))  # `Clock.stepper`
                return
        self._end(job, now, OK)

    def framed(self, job: Job, start: float, end: float) -> None:
        """A partition's frame is over: its time counts as the device's (the cluster's)."""
        self._dev_s[job[REQ]] += end - start
        if job[K] == len(job[STEPS]):
            self._end(job, end, OK)
        else:
            self._advance(job)

    def _server_done(self, job: Job, now: float) -> None:
        job[SRV] += now
        kind, server, _ = job[STEPS][job[K] - 1]
        if kind == SERVER_HOLD:
            job[HOLD] = server
        self._advance(job)

    def _end(self, job: Job, t: float, status: int) -> None:
        i = job[REQ]
        if status == OK:  # the runtime's per-hop costs (serialisation, RPC) come on top
            t += job[OVER]
            job[NET] += job[OVER]
        else:  # it will not reach the servers still ahead of it
            for kind, server, _ in job[STEPS][job[K]:]:
                if kind in (SERVER, SERVER_HOLD):
                    server.incoming -= 1
            if job[HOLD] is not None:  # nor come back through the edge holding its slot
                job[HOLD].release(t)
                job[HOLD] = None
        self._done[i] = t
        self._status[i] = status
        self._net[i] = job[NET]
        self._srv[i] = job[SRV]
        if self._dev_limit[job[DEV]]:
            self._free_device(job[DEV], t)

    def _free_device(self, dev: int, t: float) -> None:
        """A request of ``dev`` has ended at ``t``: its next waiting one (if any) goes out
        then, otherwise the device has one fewer under way."""
        if not self._dev_limit[dev]:
            return
        held = self._held.get(dev)
        if held:
            self._call_at(t, self._release_held, (held.popleft(), dev))
        else:
            self._under_way[dev] -= 1

    def _release_held(self, got: tuple[int, int]) -> None:
        """A request that waited for its device goes out now, from where the device is now."""
        i, dev = got
        now = self.env._now
        ap = self.ap_of(dev, now)
        self._ap_list[i] = ap
        self.out.ap[i] = ap
        self._issue(i, dev, now)

    def _device_compute(self, dev: int, now: float, work_s: float) -> float:
        """FIFO on the device's processor; at half speed while it trains (processor sharing
        between the inference and the training job)."""
        start = self.dev_free[dev]
        if start < now:
            start = now
        jit = self._jitter[dev]
        if jit is not None:
            work_s *= jit()
        end = start + work_s
        training = self.dev_training.get(dev)
        if training is not None and training[1] > start and training[0] < end:
            end = shared_end(start, work_s, *training)
        self.dev_free[dev] = end
        self.dev_busy[dev] += work_s
        return end

    # ---- after the run ----------------------------------------------------------------

    def _classify(self) -> None:
        used_net = np.array([w.up_hops > 0 for w in self.pricing.works] or [False])
        deadline = np.array([a.deadline_ms / 1000.0 if a.deadline_ms else np.inf
                             for a in self.scn.applications])
        classify(self.out, used_net, lambda d, t: self._place_ap[self.places.at(d, t)],
                 deadline[self.devices.app[self.out.device]])
