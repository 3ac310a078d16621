"""Federated training on the simulated fleet, driven by the existing server loop and strategies.

`FleetBackend` is a training backend (`train.backends.base.Backend`) whose clients are devices
of the simulation. It wraps the experiment's own backend (sequential or vectorized), which does
the arithmetic, and adds what the fleet decides:

* **availability**: a client is available when its device has coverage at the round's start;
* **speed**: its local epoch takes the device's training FLOPs at its hardware's speed
  (`train.control.fleet_clients`: 3 forward passes per sample), slowed while the device also
  serves inference (the device's processor is shared: half speed while both run, so
  ``1 / (1 - u/2)`` with ``u`` the inference busy fraction over the previous round);
* **transfers**: the global model comes down and the update goes up over the device's access
  point at the rate left by inference traffic (the link's busy fraction over the previous
  round);
* **dropouts**: a client whose device moves to another access point (hierarchical: away from
  its edge) before its upload ends drops out of the round; one finishing after the server's
  deadline is late.

In the other direction, the training load enters the simulation: the device computes at half
speed for its inference requests while it trains, and the model download and update upload are
transfers on the access point's queues that inference requests wait behind.

Simulated time advances at round boundaries: the server loop (flat `Server`, or
`HierarchicalTrainer` for devices -> edges -> cloud) asks for the available clients at the start
of every round, and the backend first runs the simulation to the end of the previous round. The
edges of a hierarchical round train concurrently: each edge keeps its own clock from the round's
start, and the round ends when the slowest edge has also sent its model over the WAN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from edgeweave.errors import SimError
from edgeweave.sim.engine import Simulation
from edgeweave.sim.links import LinkQueue
from edgeweave.train.backends.base import Backend
from edgeweave.train.control.fleet_clients import TRAIN_FLOPS_PER_FORWARD
from edgeweave.train.server import simulated_time
from edgeweave.train.types import ClientInfo, FitConfig, Params, Updates

#: a link or device never counts as more than this busy when pricing a client's round
MAX_BUSY = 0.9
#: a round takes at least this long (selection, aggregation, evaluation on the server), so a
#: round in which no client is available still moves the fleet on
MIN_ROUND_S = 1.0
FLAT = "all"


@dataclass
class FitLog:
    """What one fit call cost in simulated time (one per edge per step in hierarchical runs)."""

    round: int  # the server loop's round (cloud round when hierarchical)
    step: int  # the round number the strategy was given (hierarchical: the global edge step)
    group: str
    start_s: float
    end_s: float
    selected: int
    trained: int
    dropped_mobility: int
    late: int


@dataclass
class _Window:
    """Inference load over the previous round, for pricing the next one."""

    t: float = 0.0
    dev_busy: list[float] = field(default_factory=list)
    link_busy: dict[int, float] = field(default_factory=dict)


class FleetBackend(Backend):
    """Clients ``0..n-1`` live on simulation devices ``devices[i]`` (see the module doc)."""

    name = "fleet"

    def __init__(self, sim: Simulation, inner: Backend, devices: list[int], model_bytes: int,
                 flops_per_sample: int, start_s: float = 0.0,
                 groups: dict[str, list[int]] | None = None,
                 edge_cloud_s: dict[str, float] | None = None,
                 deadline_s: float | None = None) -> None:
        self.sim, self.inner = sim, inner
        self.devices = list(devices)
        self.model_bytes = model_bytes
        self.flops = flops_per_sample
        self.deadline_s = deadline_s
        self.hierarchical = groups is not None  # edges ask before each of their rounds
        self.groups = groups or {FLAT: list(range(len(devices)))}
        self.group_of = {c: g for g, ids in self.groups.items() for c in ids}
        self.edge_cloud_s = edge_cloud_s or {}
        self.sizes = [c.num_examples for c in inner.available_clients()]
        self.next_start = start_s
        self.cursor: dict[str, float] = {}
        self.log: list[FitLog] = []
        self.rounds: list[dict[str, float]] = []  # per server round: start, end, available
        self._training_busy: dict[int, float] = {}  # access point -> uplink s spent training
        self._window = _Window(dev_busy=list(sim.dev_busy))

    # ---- simulated time -------------------------------------------------------------------

    def advance(self, t: float) -> None:
        env = self.sim.env
        if t > env.now:
            env.run(until=t)

    def _inference_link_busy(self) -> dict[int, float]:
        """Seconds each access point's uplink has spent on inference (not on training)."""
        return {q.index: q.up.busy_s - self._training_busy.get(q.index, 0.0)
                for q in self.sim.world.access_points}

    def _busy(self, now: float) -> tuple[list[float], dict[int, float]]:
        """Each device's and access point's inference busy fraction since the last round."""
        w = self._window
        span = max(now - w.t, 1e-9)
        dev = [min(MAX_BUSY, (b - a) / span)
               for a, b in zip(w.dev_busy, self.sim.dev_busy, strict=True)]
        links = {ap: min(MAX_BUSY, (busy - w.link_busy.get(ap, 0.0)) / span)
                 for ap, busy in self._inference_link_busy().items()}
        return dev, links

    # ---- Backend -----------------------------------------------------------------------------

    def available_clients(self) -> list[ClientInfo]:
        """Flat: a round starts (:meth:`begin_round`). Hierarchical: the edges ask before each
        edge round, inside the cloud round :class:`CloudRounds` began; a device is listed when
        it has coverage at its own edge's clock."""
        if not self.hierarchical or not self.rounds:
            return self.begin_round()
        return self._covered()

    def _covered(self) -> list[ClientInfo]:
        """The clients whose device has coverage at its group's clock."""
        infos = []
        for cid, dev in enumerate(self.devices):
            ap = self.sim.ap_of(dev, self.cursor.get(self.group_of[cid], self.sim.env.now))
            if ap >= 0:
                infos.append(self._info(cid, dev, ap))
        return infos

    def begin_round(self) -> list[ClientInfo]:
        """A round starts: run the fleet to the end of the last round, then list the clients
        whose device has coverage, priced at the load of the previous round."""
        if self.rounds:
            self.rounds[-1]["end_s"] = self.next_start
        self.advance(self.next_start)
        now = self.sim.env.now
        self._dev_u, self._link_u = self._busy(now)
        self._window = _Window(now, list(self.sim.dev_busy), self._inference_link_busy())
        self.cursor = dict.fromkeys(self.groups, now)
        infos = self._covered()
        self.rounds.append({"start_s": now, "end_s": now + MIN_ROUND_S,
                            "available": len(infos)})
        self.next_start = now + MIN_ROUND_S
        return infos

    def close_round(self) -> None:
        """The last round has ended (the server loop does not ask for clients again)."""
        if self.rounds:
            self.rounds[-1]["end_s"] = self.next_start

    def _info(self, cid: int, dev: int, ap: int) -> ClientInfo:
        hw = self.sim.scn.hardware(self.sim.hardware_of(dev))
        per_sample = TRAIN_FLOPS_PER_FORWARD * self.flops / (hw.gflops * 1e9)
        compute = per_sample * self.sizes[cid] / (1 - self._dev_u[dev] / 2)
        q = self.sim.world.access_points[ap]
        return ClientInfo(cid, self.sizes[cid], compute_s_per_epoch=compute,
                          upload_s=self._transfer_s(q.up, self._link_u[ap]), device=str(dev))

    def _transfer_s(self, link: LinkQueue, busy: float) -> float:
        rate = link.rate_at(self.sim.env.now) * (1 - busy)
        return self.model_bytes * 8 / (rate * 1e6) + link.half_rtt_s

    def fit(self, round_num: int, global_params: Params, client_ids: list[int],
            config: FitConfig) -> Updates:
        group = self.group_of[client_ids[0]] if client_ids else FLAT
        start = self.cursor.get(group, self.sim.env.now)
        ends, failed = self._schedule(client_ids, group, start, config)
        keep = [c for c in client_ids if c in ends]
        if keep:
            updates = self.inner.fit(round_num, global_params, keep, config)
        else:
            from edgeweave.train.backends.sequential import empty_updates

            updates = empty_updates(global_params, {})
        self._record(round_num, group, start, client_ids, ends, failed, len(updates))
        failed.update(updates.metrics.get("failed", {}))
        updates.metrics["failed"] = failed
        return updates

    def _record(self, round_num: int, group: str, start: float, client_ids: list[int],
                ends: dict[int, float], failed: dict[int, str], trained: int) -> None:
        end = max(ends.values(), default=start)
        self.cursor[group] = end
        self.next_start = max(self.next_start, end + self.edge_cloud_s.get(group, 0.0))
        reasons = list(failed.values())
        self.log.append(FitLog(len(self.rounds), round_num, group, start, end,
                               len(client_ids), trained,
                               sum(r.startswith("moved") for r in reasons),
                               sum(r.startswith("late") for r in reasons)))

    def _schedule(self, client_ids: list[int], group: str, start: float, config: FitConfig
                  ) -> tuple[dict[int, float], dict[int, str]]:
        """Each client's round from ``start``: download, compute, upload, with the clients of
        one shared access point taking turns on it (FIFO, at the rate inference leaves). The
        load goes into the simulation whether or not the client then drops out."""
        sim = self.sim
        failed: dict[int, str] = {}
        plans = []  # (cid, dev, ap, compute_s)
        for cid in client_ids:
            dev = self.devices[cid]
            ap = sim.ap_of(dev, start)
            if ap < 0:
                failed[cid] = "moved away (no coverage at the round's start)"
                continue
            info = self._info(cid, dev, ap)
            plans.append((cid, dev, ap, simulated_time(info, config) - info.upload_s))
        down = self._turns([(c, ap, start) for c, _, ap, _ in plans], "down")
        ready = {c: down[c] + compute for c, _, _, compute in plans}
        up = self._turns([(c, ap, ready[c]) for c, _, ap, _ in plans], "up")
        ends: dict[int, float] = {}
        for cid, dev, ap, _ in plans:
            q = sim.world.access_points[ap]
            sim.dev_training[dev] = (down[cid], ready[cid])
            self._send_at(q.down, dev, start)
            self._send_at(q.up, dev, ready[cid], ap)
            end = up[cid]
            if self._moved(dev, ap, group, start, end):
                failed[cid] = "moved away (left its access point before its upload ended)"
            elif self.deadline_s is not None and end - self._window.t > self.deadline_s:
                failed[cid] = "late (simulated round time past the deadline)"
            else:
                ends[cid] = end
        return ends, failed

    def _turns(self, transfers: list[tuple[int, int, float]], direction: str
               ) -> dict[int, float]:
        """When each client's model transfer (client, access point, ready time) arrives, the
        clients of a shared access point going first come, first served."""
        out: dict[int, float] = {}
        free: dict[int, float] = {}
        for cid, ap, ready in sorted(transfers, key=lambda x: (x[2], x[0])):
            q = self.sim.world.access_points[ap]
            link = q.up if direction == "up" else q.down
            busy = self._link_u[ap] if direction == "up" else 0.0
            seconds = self._transfer_s(link, busy) - link.half_rtt_s
            begin = max(ready, free.get(ap, ready)) if q.spec.shared else ready
            free[ap] = begin + seconds
            out[cid] = begin + seconds + link.half_rtt_s
        return out

    def _moved(self, dev: int, ap: int, group: str, start: float, end: float) -> bool:
        aps = self.sim.aps_visited(dev, start, end)
        if group == FLAT:
            return aps != {ap}
        return {self.sim.ap_edge(a) if a >= 0 else None for a in aps} != {group}

    def _send_at(self, link: LinkQueue, dev: int, t: float, ap: int | None = None) -> None:
        """Put one model transfer on ``link`` at ``t`` (an uplink's is booked to ``ap``)."""
        env = self.sim.env

        def send(_ev: Any) -> None:
            before = link.busy_s
            link.send(env.now, self.model_bytes, dev)
            if ap is not None:
                self._training_busy[ap] = self._training_busy.get(ap, 0.0) + link.busy_s - before

        ev = env.timeout(max(0.0, t - env.now))
        ev.callbacks.append(send)

    def state(self) -> dict[str, Any]:
        return self.inner.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.inner.load_state(state)


def group_by_home_edge(sim: Simulation, devices: list[int], at: float) -> dict[str, list[int]]:
    """Clients grouped by the edge of their device's access point at ``at`` (a device out of
    coverage then joins the edge of the first access point it visits)."""
    groups: dict[str, list[int]] = {}
    for cid, dev in enumerate(devices):
        ap = sim.ap_of(dev, at)
        if ap < 0:
            ap = max(sim.first_ap(dev), 0)
        groups.setdefault(sim.ap_edge(ap), []).append(cid)
    return groups


def check_synchronous(strategy: Any) -> None:
    if getattr(strategy, "asynchronous", False):
        raise SimError("training.experiment.strategy: the simulator trains synchronous "
                       f"strategies; {strategy.name!r} is asynchronous")


def time_to_accuracy(rounds: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """The first round (and its simulated end time) at which test accuracy reached ``target``."""
    for r in rounds:
        acc = r.get("test_acc")
        if acc is not None and not math.isnan(acc) and acc >= target:
            return {"target": target, "round": r["round"], "sim_s": r["sim_end_s"]}
    return {"target": target, "round": None, "sim_s": None}


class CloudRounds(Backend):
    """The cloud server's backend in a hierarchical run: ``edges`` (the trainer's
    ``EdgesBackend``), with every cloud round beginning a simulated round on ``fleet`` (the edges
    ask the fleet for devices once per edge round, which must not start a new one)."""

    name = "cloud-rounds"

    def __init__(self, edges: Backend, fleet: FleetBackend) -> None:
        self.edges, self.fleet = edges, fleet

    def available_clients(self) -> list[ClientInfo]:
        self.fleet.begin_round()
        return self.edges.available_clients()

    def fit(self, round_num: int, global_params: Params, client_ids: list[int],
            config: FitConfig) -> Updates:
        return self.edges.fit(round_num, global_params, client_ids, config)

    def state(self) -> dict[str, Any]:
        return self.edges.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.edges.load_state(state)
