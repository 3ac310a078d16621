"""Who the devices are and when they send requests, drawn for all devices at once.

Each device draws its hardware and application from its population's mixes. An application
alternates active and idle periods (exponential, EdgeCloudSim's active/idle model) and, while
active, sends requests as a Poisson process of mean interval ``interval_s``. A Poisson process
on an interval is a Poisson number of points placed uniformly, so a whole run's requests are a
few array operations: period lengths, a count per active period, uniform offsets, one sort.
The engine then walks the sorted arrival times; an idle device costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeweave.sim.mobility import Timeline, nomadic
from edgeweave.sim.scenario import Scenario, mix_weights

#: independent random streams of one run, so changing one part leaves the others' draws alone
STREAM_DEVICES, STREAM_MOBILITY, STREAM_REQUESTS, STREAM_POLICY, STREAM_SERVICE = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Devices:
    """Per device (index = device id): its population, hardware kind and application."""

    population: np.ndarray
    hardware: np.ndarray  # index into `kinds`
    app: np.ndarray  # index into scenario.applications
    kinds: list[str]

    def __len__(self) -> int:
        return len(self.population)


@dataclass(frozen=True)
class Requests:
    """Every request of the run, sorted by arrival time."""

    t: np.ndarray
    device: np.ndarray

    def __len__(self) -> int:
        return len(self.t)


def rng_for(scn: Scenario, stream: int, part: int = 0) -> np.random.Generator:
    return np.random.default_rng([scn.seed, stream, part])


def _draw(rng: np.random.Generator, weights: dict[str, float], names: list[str], n: int
          ) -> np.ndarray:
    keys = list(weights)
    picks = rng.choice(len(keys), size=n, p=np.array([weights[k] for k in keys]))
    index = np.array([names.index(k) for k in keys], dtype=np.int32)
    return index[picks]


def assign_devices(scn: Scenario) -> Devices:
    kinds = sorted({k for p in scn.populations for k in mix_weights(p.hardware)})
    apps = [a.name for a in scn.applications]
    pop, hw, app = [], [], []
    for i, p in enumerate(scn.populations):
        rng = rng_for(scn, STREAM_DEVICES, i)
        pop.append(np.full(p.count, i, dtype=np.int32))
        hw.append(_draw(rng, mix_weights(p.hardware), kinds, p.count))
        app.append(_draw(rng, mix_weights(p.applications), apps, p.count))
    return Devices(np.concatenate(pop), np.concatenate(hw), np.concatenate(app), kinds)


def mobility(scn: Scenario, devices: Devices) -> Timeline:
    """Every device's place over the run (see :mod:`edgeweave.sim.mobility`)."""
    names = [p.name for p in scn.places]
    attract = [p.attractiveness for p in scn.places]
    dwell = [p.dwell_s for p in scn.places]
    parts = []
    for i, p in enumerate(scn.populations):
        ids = np.flatnonzero(devices.population == i)
        allowed = [names.index(n) for n in p.places] if p.places else list(range(len(names)))
        parts.append(nomadic(ids, allowed, attract, dwell, scn.duration_s,
                             rng_for(scn, STREAM_MOBILITY, i)))
    d, t, v = (np.concatenate([x[k] for x in parts]) for k in range(3))
    return Timeline.build(d, t, v, len(devices))


def on_off_periods(n: int, active_s: float, idle_s: float, duration_s: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Active periods of ``n`` devices as arrays (device, start, end) within [0, duration_s).
    Each device starts active with the stationary probability active / (active + idle)."""
    if idle_s == 0:
        return np.arange(n), np.zeros(n), np.full(n, duration_s)
    active = rng.random(n) < active_s / (active_s + idle_s)
    t = np.zeros(n)
    live = np.arange(n)
    dev, start, end = [], [], []
    while len(live):
        a = active[live]
        length = rng.exponential(np.where(a, active_s, idle_s))
        stop = np.minimum(t[live] + length, duration_s)
        on = live[a]
        dev.append(on)
        start.append(t[on])
        end.append(stop[a])
        t[live] = stop
        active[live] = ~a
        live = live[stop < duration_s]
    return np.concatenate(dev), np.concatenate(start), np.concatenate(end)


def requests(scn: Scenario, devices: Devices) -> Requests:
    """All requests of the run, sorted by time (ties by device)."""
    ts, ds = [], []
    for i, app in enumerate(scn.applications):
        ids = np.flatnonzero(devices.app == i)
        rng = rng_for(scn, STREAM_REQUESTS, i)
        dev, start, end = on_off_periods(len(ids), app.active_s, app.idle_s, scn.duration_s,
                                         rng)
        counts = rng.poisson((end - start) / app.interval_s)
        owner = np.repeat(np.arange(len(dev)), counts)
        ts.append(np.repeat(start, counts) + rng.random(len(owner)) * np.repeat(end - start,
                                                                                  counts))
        ds.append(ids[dev[owner]])
    t = np.concatenate(ts) if ts else np.zeros(0)
    d = np.concatenate(ds) if ds else np.zeros(0, dtype=np.int64)
    order = np.lexsort((d, t))
    return Requests(t[order], d[order].astype(np.int32))
