"""Edgent's dynamic mode: a configuration map built offline, a selector that follows bandwidth.

Offline, the bandwidth a link shows (a trace) is quantised into a few *states* and static Edgent
is solved once per state, giving the configuration map "state -> (exit, cut)". Online, the
selector turns observed transfer throughputs into a state and switches configuration when the
state changes (Li et al. 2018, Edgent's dynamic environment). Two choices here, and why:

* States are log-spaced: a transfer's cost is bytes / bandwidth, so 1 -> 2 Mbit/s matters as
  much as 50 -> 100 Mbit/s.
* Each state is planned at its LOWEST bandwidth (for the bottom state, the lowest the trace
  shows): a configuration then meets the requirement for every bandwidth in its state, instead
  of only at the state's middle.

A state change is a change point: it is accepted after ``confirm`` consecutive estimates in the
same new state, so a single noisy throughput sample does not flip the configuration. The
selector takes throughputs as numbers, or any estimator with ``observe(nbytes, seconds)`` and an
``mbps`` attribute (the runtime's :class:`BandwidthEstimator` is one), since plan may not import
the runtime.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgeweave.errors import PlanError
from edgeweave.plan.edgent import (
    EdgentOption,
    ExitBranch,
    meets,
    option_plan,
    plan_edgent,
    price_all,
)
from edgeweave.plan.record import Plan


class ThroughputEstimator(Protocol):
    """What the selector needs from a bandwidth estimator (structural: no import needed)."""

    mbps: float | None

    def observe(self, nbytes: float, seconds: float) -> bool: ...


@dataclass(frozen=True)
class BandwidthState:
    index: int
    low_mbps: float  # lower edge, 0 for the bottom state
    high_mbps: float  # upper edge, inf for the top state
    plan_mbps: float  # the bandwidth this state is planned at (see module doc)

    def contains(self, mbps: float) -> bool:
        return self.low_mbps <= mbps < self.high_mbps

    def label(self) -> str:
        hi = "inf" if math.isinf(self.high_mbps) else f"{self.high_mbps:.3g}"
        return f"[{self.low_mbps:.3g}, {hi}) Mbit/s"


def bandwidth_states(samples: Sequence[float], n_states: int = 4) -> list[BandwidthState]:
    """Quantise the observed bandwidths into ``n_states`` log-spaced states between the
    smallest and largest sample."""
    values = np.asarray(samples, dtype=float)
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise PlanError("samples: need at least one finite bandwidth > 0 Mbit/s to quantise")
    if n_states < 1:
        raise PlanError(f"n_states: expected >= 1, got {n_states}")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo * (1 + 1e-9):
        n_states = 1
    inner = np.geomspace(lo, hi, n_states + 1)[1:-1].tolist()
    lows = [0.0, *inner]
    highs = [*inner, math.inf]
    plans = [lo, *inner]
    return [BandwidthState(i, a, b, p)
            for i, (a, b, p) in enumerate(zip(lows, highs, plans, strict=True))]


@dataclass(frozen=True)
class MapEntry:
    state: BandwidthState
    option: EdgentOption
    feasible: bool  # False: nothing meets the requirement here; option is the fastest one
    plan: Plan | None = None  # the option as the Plan the runtime runs (`edgent.option_plan`)


@dataclass(frozen=True)
class ConfigMap:
    """Bandwidth state -> best (exit, cut), for one latency requirement."""

    slo_ms: float
    entries: list[MapEntry]

    def state_of(self, mbps: float) -> int:
        for e in self.entries:
            if e.state.contains(mbps):
                return e.state.index
        raise PlanError(f"mbps: bandwidth {mbps!r} is outside every state (need > 0)")

    def lookup(self, mbps: float) -> MapEntry:
        return self.entries[self.state_of(mbps)]

    def to_json(self) -> dict[str, Any]:
        """The map as JSON: per state its bounds (``high_mbps`` null for the top one), the
        option, and the option's Plan, so a reader (the simulator) needs nothing else."""
        states = []
        for e in self.entries:
            doc = {"state": e.state.index, "range": e.state.label(),
                   "low_mbps": e.state.low_mbps,
                   "high_mbps": None if math.isinf(e.state.high_mbps) else e.state.high_mbps,
                   "plan_mbps": e.state.plan_mbps, "feasible": e.feasible, **e.option.to_json()}
            if e.plan is not None:
                doc["plan"] = e.plan.to_json()
            states.append(doc)
        return {"slo_ms": self.slo_ms, "states": states}

    @staticmethod
    def from_json(doc: Any, where: str = "config_map") -> ConfigMap:
        """The map :meth:`to_json` wrote, with its Plans; PlanError naming the field at fault
        (``config_map.states[2].plan: ...``)."""
        if not isinstance(doc, dict) or not isinstance(doc.get("states"), list) \
                or not doc["states"]:
            raise PlanError(f"{where}: expected {{slo_ms, states: [...]}} with at least one "
                            "state")
        entries: list[MapEntry] = []
        for i, st in enumerate(doc["states"]):
            entry = _entry_from_json(st, i, f"{where}.states[{i}]")
            low = 0.0 if i == 0 else entries[-1].state.high_mbps
            if entry.state.low_mbps != low or not entry.state.high_mbps > low:
                raise PlanError(f"{where}.states[{i}]: the states must cover [0, inf) in order "
                                f"(this one should start at {low:g} Mbit/s and end above it)")
            entries.append(entry)
        if not math.isinf(entries[-1].state.high_mbps):
            raise PlanError(f"{where}.states[{len(entries) - 1}].high_mbps: the last state "
                            "must be unbounded (null)")
        return ConfigMap(_number(doc, "slo_ms", where, 1e-12), entries)


def _number(doc: dict[str, Any], key: str, where: str, lo: float = 0.0) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= lo:
        raise PlanError(f"{where}.{key}: expected a number >= {lo:g}, got {value!r}")
    return float(value)


_OPTION_FIELDS = ("exit", "cut", "n_ops", "split_after", "accuracy", "latency_ms", "device_ms",
                  "edge_ms", "transfer_ms", "up_bytes", "down_bytes")


def _entry_from_json(st: Any, index: int, where: str) -> MapEntry:
    if not isinstance(st, dict):
        raise PlanError(f"{where}: expected a state object, got {type(st).__name__}")
    missing = [k for k in ("low_mbps", "plan_mbps", "plan", *_OPTION_FIELDS) if k not in st]
    if missing:
        why = (" (written by an older EdgeWeave: re-run `edgeweave adapt edgent --json` to get one "
               "Plan per configuration)" if "plan" in missing or "low_mbps" in missing else "")
        raise PlanError(f"{where}: missing {', '.join(missing)}{why}")
    high = st.get("high_mbps")
    state = BandwidthState(index, _number(st, "low_mbps", where),
                           math.inf if high is None else _number(st, "high_mbps", where),
                           _number(st, "plan_mbps", where, 1e-12))
    try:
        option = EdgentOption(**{k: st[k] for k in _OPTION_FIELDS})
        chosen = Plan.model_validate(st["plan"])
    except (TypeError, ValueError) as e:
        raise PlanError(f"{where}: {str(e).splitlines()[0]}") from None
    if chosen.algorithm != "edgent":
        raise PlanError(f"{where}.plan: not an Edgent option's plan (algorithm "
                        f"{chosen.algorithm!r})")
    return MapEntry(state, option, bool(st.get("feasible", True)), chosen)


def build_config_map(branches: Sequence[ExitBranch], states: Sequence[BandwidthState],
                     slo_ms: float) -> ConfigMap:
    """Static Edgent at each state's planning bandwidth; where nothing meets ``slo_ms`` the
    fastest option stands in, marked infeasible (the device must still do something). Each
    entry carries its option's Plan, planned at the state's bandwidth (what the runtime's
    `EdgentClient` runs and the simulator replays)."""
    by_exit = {b.exit: b for b in branches}
    entries = []
    for st in states:
        try:
            option, feasible = plan_edgent(branches, slo_ms, st.plan_mbps).chosen, True
        except PlanError:
            option = min(price_all(branches, st.plan_mbps),
                         key=lambda o: (o.latency_ms, -o.accuracy))
            feasible = False
        entries.append(MapEntry(st, option, feasible,
                                option_plan(by_exit[option.exit], option, st.plan_mbps,
                                            slo_ms)))
    return ConfigMap(float(slo_ms), entries)


@dataclass
class EdgentSelector:
    """Online half of dynamic Edgent: observe throughputs, switch on a confirmed state change.

    ``switches`` logs each state change with the old and new configuration (neighbouring
    states may share one, then ``config_changed`` is False)."""

    cmap: ConfigMap
    initial_mbps: float
    estimator: ThroughputEstimator | None = None
    confirm: int = 2
    state: int = field(init=False)
    switches: list[dict[str, Any]] = field(default_factory=list)
    _pending: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.confirm < 1:
            raise PlanError(f"confirm: expected >= 1 observation, got {self.confirm}")
        self.state = self.cmap.state_of(self.initial_mbps)

    @property
    def current(self) -> MapEntry:
        return self.cmap.entries[self.state]

    def observe(self, nbytes: float, seconds: float, t: float | None = None) -> MapEntry:
        """One transfer of ``nbytes`` that took ``seconds``; returns the configuration to use."""
        if nbytes <= 0 or seconds <= 0:
            return self.current
        if self.estimator is None:
            return self.update(nbytes * 8 / seconds / 1e6, t)
        self.estimator.observe(nbytes, seconds)
        return self.current if self.estimator.mbps is None else self.update(
            self.estimator.mbps, t)

    def update(self, mbps: float, t: float | None = None) -> MapEntry:
        """A bandwidth estimate in Mbit/s; returns the configuration to use from now on."""
        new = self.cmap.state_of(mbps)
        if new == self.state:
            self._pending.clear()
            return self.current
        self._pending = [*self._pending, new] if self._pending and self._pending[-1] == new \
            else [new]
        if len(self._pending) >= self.confirm:
            old = self.current
            self.state = new
            self._pending.clear()
            self.switches.append({
                "t_s": t, "estimate_mbps": mbps,
                "old_state": old.state.index, "new_state": new,
                "old": old.option.label(), "new": self.current.option.label(),
                "config_changed": old.option.key != self.current.option.key})
        return self.current


@dataclass(frozen=True)
class TraceOutcome:
    """How one policy fared over a replayed trace (predicted latencies at the actual
    bandwidth of each request)."""

    policy: str
    requests: int
    misses: int
    mean_accuracy: float
    mean_latency_ms: float
    switches: list[dict[str, Any]]

    @property
    def miss_rate(self) -> float:
        return self.misses / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "requests": self.requests, "misses": self.misses,
                "miss_rate": self.miss_rate, "mean_accuracy": self.mean_accuracy,
                "mean_latency_ms": self.mean_latency_ms, "state_changes": len(self.switches),
                "config_switches": sum(s["config_changed"] for s in self.switches),
                "switch_log": self.switches[:20]}


#: Bytes of the heartbeat a device sends when its configuration uploads nothing (device-only),
#: so the selector still sees the link and can move back to offloading when it recovers.
PROBE_BYTES = 1500


def replay(branches: Sequence[ExitBranch], bandwidths: Sequence[float], slo_ms: float,
           policy: EdgentSelector | EdgentOption, name: str,
           times: Sequence[float] | None = None, noise: float = 0.0, seed: int = 0
           ) -> TraceOutcome:
    """Serve one request per entry of ``bandwidths`` (the link's actual Mbit/s then) with a
    fixed option or a selector. Each request costs what the cost model predicts for its
    configuration at the ACTUAL bandwidth; the selector then observes that request's upload
    (or a :data:`PROBE_BYTES` heartbeat), its throughput perturbed by ``noise`` (relative
    standard deviation), and may switch before the next request."""
    rng = np.random.default_rng(seed)
    priced: dict[float, dict[tuple[int, int], EdgentOption]] = {}
    lat, acc, misses = [], [], 0
    for i, mbps in enumerate(bandwidths):
        if mbps not in priced:
            priced[mbps] = {o.key: o for o in price_all(branches, mbps)}
        chosen = policy.current.option if isinstance(policy, EdgentSelector) else policy
        actual = priced[mbps][chosen.key]
        lat.append(actual.latency_ms)
        acc.append(actual.accuracy)
        misses += not meets(actual, slo_ms)
        if isinstance(policy, EdgentSelector):
            seen = max(mbps * (1.0 + noise * float(rng.standard_normal())), 1e-3)
            nbytes = actual.up_bytes or PROBE_BYTES
            policy.observe(nbytes, nbytes * 8 / (seen * 1e6), None if times is None else times[i])
    switches = policy.switches if isinstance(policy, EdgentSelector) else []
    return TraceOutcome(name, len(lat), misses, float(np.mean(acc)) if acc else 0.0,
                        float(np.mean(lat)) if lat else 0.0, list(switches))
