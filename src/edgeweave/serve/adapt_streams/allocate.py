"""Choose every stream's configuration (frame rate x resolution x variant) within the server's
capacity, maximising the streams' total quality.

A stream's options are its configurations (:mod:`.configs`) at each candidate frame rate: cost
``fps * ms_per_frame`` (ms of compute per second), value the same quality metric the stem
scheduler maximises (:func:`edgeweave.serve.stems.quality.quality`: event recall by default).
Two allocators:

* ``exact``: the multiple-choice knapsack solved exactly (Pareto frontiers,
  :func:`edgeweave.serve.stems.knapsack.best_pick`);
* ``greedy``, VideoStorm's scheduler (Zhang et al., NSDI 2017): every stream starts at its
  cheapest option, then the upgrade with the highest marginal quality per marginal cost, along
  each stream's upper convex hull of (cost, quality), is applied while it fits.

``fixed`` is the baseline: every stream at one configuration; when they need more than the
capacity, the server sheds frames evenly (each stream's effective rate scaled down by
capacity / demand), as a server without adaptation does under overload.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeweave.serve.adapt_streams.configs import StreamConfig
from edgeweave.serve.stems.errors import TenancyError
from edgeweave.serve.stems.knapsack import best_pick
from edgeweave.serve.stems.quality import DEFAULT_EVENT_S, check_metric, check_positive, quality
from edgeweave.serve.stems.schedule import check_rates

METHODS = ("exact", "greedy")


@dataclass(frozen=True)
class Stream:
    """A camera the server analyses; ``event_s`` as in the stem scheduler's event metric."""

    name: str
    event_s: float = DEFAULT_EVENT_S

    def __post_init__(self) -> None:
        if not self.name:
            raise TenancyError("stream name: expected a non-empty name")
        check_positive(self.event_s, f"stream {self.name!r} event_s", "seconds")


@dataclass(frozen=True)
class Knob:
    """One stream's setting: a configuration sampled at ``fps``, its cost and quality."""

    config: StreamConfig
    fps: float
    cost: float
    quality: float

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.name, "fps": self.fps, "cost_ms_per_s": self.cost,
                "quality": self.quality}


@dataclass(frozen=True)
class Allocation:
    method: str
    capacity_ms_per_s: float
    knobs: dict[str, Knob] = field(default_factory=dict)

    @property
    def cost(self) -> float:
        return sum(k.cost for k in self.knobs.values())

    @property
    def value(self) -> float:
        return sum(k.quality for k in self.knobs.values())

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "capacity_ms_per_s": self.capacity_ms_per_s,
                "cost_ms_per_s": self.cost, "value": self.value,
                "knobs": {s: k.to_dict() for s, k in self.knobs.items()}}


@dataclass(frozen=True)
class Space:
    """The choices every stream has: measured configurations and candidate frame rates."""

    configs: tuple[StreamConfig, ...]
    rates: tuple[float, ...]
    native_fps: float
    metric: str = "event"

    def __post_init__(self) -> None:
        if not self.configs:
            raise TenancyError("configs: expected at least one measured configuration")
        check_metric(self.metric)
        # streams are independent, so any rate a sampler can keep will do (no nesting)
        object.__setattr__(self, "rates", check_rates(self.rates, self.native_fps,
                                                      nested=False))

    def knob(self, stream: Stream, config: StreamConfig, fps: float) -> Knob:
        return Knob(config, fps, fps * config.ms_per_frame,
                    quality(self.metric, config.accuracy, fps, self.native_fps, stream.event_s))

    def options(self, stream: Stream) -> list[Knob]:
        return [self.knob(stream, c, r) for c in self.configs for r in self.rates]


def _check_streams(streams: Sequence[Stream]) -> None:
    names = [s.name for s in streams]
    if not names:
        raise TenancyError("streams: expected at least one stream")
    if len(set(names)) != len(names):
        raise TenancyError(f"streams: names must be unique, got {names}")


def allocate(streams: Sequence[Stream], space: Space, capacity_ms_per_s: float,
             method: str = "exact") -> Allocation:
    """Every stream's knob within ``capacity_ms_per_s``; a TenancyError when even the cheapest
    knobs of all streams exceed it."""
    capacity = check_positive(capacity_ms_per_s, "capacity", "ms of compute per second")
    _check_streams(streams)
    if method not in METHODS:
        raise TenancyError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    options = [space.options(s) for s in streams]
    floor = sum(min(k.cost for k in opts) for opts in options)
    if floor > capacity * (1 + 1e-9):
        raise TenancyError(f"capacity: {capacity:.4g} ms of compute per second cannot serve "
                           f"{len(streams)} streams even at their cheapest settings (they need "
                           f"{floor:.4g}); raise the capacity or serve fewer streams")
    if method == "exact":
        pick = best_pick([[(k.cost, k.quality) for k in opts] for opts in options], capacity)
        assert pick is not None  # the floor fits
        chosen = [opts[i] for opts, i in zip(options, pick.indices, strict=True)]
    else:
        chosen = _greedy(options, capacity)
    return Allocation(method, capacity, {s.name: k for s, k in zip(streams, chosen, strict=True)})


def _hull(options: list[Knob]) -> list[Knob]:
    """The upper convex hull of (cost, quality), cheapest first: the options a marginal-gain
    greedy ever moves between."""
    pts: list[Knob] = []
    for k in sorted(options, key=lambda k: (k.cost, -k.quality)):
        if pts and k.quality <= pts[-1].quality:
            continue
        while len(pts) >= 2 and _slope(pts[-2], pts[-1]) <= _slope(pts[-1], k):
            pts.pop()
        pts.append(k)
    return pts


def _slope(a: Knob, b: Knob) -> float:
    return (b.quality - a.quality) / (b.cost - a.cost) if b.cost > a.cost else math.inf


def _greedy(options: list[list[Knob]], capacity: float) -> list[Knob]:
    hulls = [_hull(opts) for opts in options]
    at = [0] * len(hulls)
    spent = sum(h[0].cost for h in hulls)
    while True:
        best, gain = -1, 0.0
        for i, h in enumerate(hulls):
            if at[i] + 1 < len(h):
                step = h[at[i] + 1].cost - h[at[i]].cost
                if spent + step <= capacity * (1 + 1e-9):
                    slope = _slope(h[at[i]], h[at[i] + 1])
                    if slope > gain:
                        best, gain = i, slope
        if best < 0:
            return [h[i] for h, i in zip(hulls, at, strict=True)]
        spent += hulls[best][at[best] + 1].cost - hulls[best][at[best]].cost
        at[best] += 1


def fixed(streams: Sequence[Stream], space: Space, capacity_ms_per_s: float,
          config: StreamConfig, fps: float) -> Allocation:
    """Every stream at ``config`` and ``fps``; over capacity, frames are shed evenly."""
    capacity = check_positive(capacity_ms_per_s, "capacity", "ms of compute per second")
    _check_streams(streams)
    demand = len(streams) * fps * config.ms_per_frame
    served = fps * min(1.0, capacity / demand) if demand > 0 else fps
    return Allocation("fixed", capacity, {s.name: space.knob(s, config, served)
                                          for s in streams})
