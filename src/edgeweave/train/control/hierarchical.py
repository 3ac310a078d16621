"""Hierarchical federated learning: devices -> edge aggregators -> cloud (HierFAVG, Liu et al.
2020, "Client-Edge-Cloud Hierarchical Federated Learning"; HierTrain in SYSTEMS.md sec. 6).

Each cloud round, every edge server starts from the cloud model and runs ``edge_rounds`` rounds
of ordinary FL with its own devices (any Strategy; :mod:`edgeweave.train.control.edge_rounds`),
then the cloud aggregates the edge models (FedAvg by default, weighting an edge by the examples
its devices trained on). Devices talk only to their nearby edge over cheap local links; the
expensive wide-area edge->cloud hop is crossed once per cloud round instead of once per device
per round, which is the point: ``edge_rounds = k`` divides the WAN traffic for the same number of
device updates by k. Bytes are counted per tier so that saving is measured, not assumed.

The cloud here is the ordinary server loop (:class:`~edgeweave.train.server.Server`, with its
checkpoints, resume and metrics) whose clients are the edges: :class:`EdgesBackend` plays them
in this process. A real deployment has the same shape: ``fl server`` is that loop with the edges
as gRPC clients, and each ``fl edge`` process runs the same edge rounds over its own devices.

In a cloud round's record, ``bytes_up``/``bytes_down`` are what crossed the WAN (edge models up,
the cloud model down: what a flat server's record counts for its devices), ``clients`` the edges
that reported; ``device_edge_up``/``device_edge_down`` and ``device_updates`` are the device
tier. With one edge and ``edge_rounds = 1`` this is exactly flat FL: same clients, same seeds,
and the cloud average of a single edge model is that model.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgeweave.topology import Fleet
from edgeweave.train.backends.base import Backend
from edgeweave.train.backends.sequential import empty_updates
from edgeweave.train.claims import DEFAULT_MAX_CLIENT_EXAMPLES
from edgeweave.train.control.edge_rounds import EdgeRounds
from edgeweave.train.server import Server, ServerConfig
from edgeweave.train.strategies.base import Strategy
from edgeweave.train.strategies.fedavg import FedAvg
from edgeweave.train.task import Task
from edgeweave.train.types import (
    ROUND_EXTRA,
    ClientInfo,
    FitConfig,
    Params,
    RoundRecord,
    TrainError,
    Updates,
)


@dataclass(frozen=True)
class HierConfig:
    cloud_rounds: int
    edge_rounds: int = 1
    seed: int = 0
    eval_every: int = 1
    codec: str | None = None  # as ServerConfig.codec: compresses every model and update sent
    max_client_examples: int = DEFAULT_MAX_CLIENT_EXAMPLES  # as ServerConfig's, per device

    def __post_init__(self) -> None:
        if self.cloud_rounds < 1 or self.edge_rounds < 1 or self.eval_every < 1:
            raise TrainError(f"hierarchical: cloud_rounds, edge_rounds and eval_every must be "
                             f">= 1, got {self.cloud_rounds}, {self.edge_rounds}, "
                             f"{self.eval_every}")


def edge_uplink_s(fleet: Fleet, edges: Sequence[str], model_bytes: int) -> dict[str, float]:
    """Seconds for each edge to send one model to its fastest-linked cloud (0 for an edge
    that is itself the top of the hierarchy, e.g. a device linked straight to the cloud)."""
    out = {}
    for name in edges:
        node = fleet.node(name)
        if node.tier == "cloud":
            out[name] = 0.0
            continue
        links = [lk for lk in fleet.links if name in (lk.src, lk.dst)
                 and fleet.node(lk.other_end(name)).tier == "cloud"]
        if not links:
            raise TrainError(f"fleet {fleet.name!r}: edge {name!r} has no link to a cloud node")
        out[name] = max(links, key=lambda lk: lk.mbps).transfer_ms(model_bytes) / 1000.0
    return out


def check_groups(groups: Mapping[str, Sequence[int]]) -> None:
    """At least one edge, each with devices, no device under two edges."""
    if not groups or any(len(v) == 0 for v in groups.values()):
        raise TrainError("hierarchical: need at least one edge group, each with clients")
    seen: set[int] = set()
    for name, ids in groups.items():
        dup = seen.intersection(int(i) for i in ids)
        if dup:
            raise TrainError(f"hierarchical: clients {sorted(dup)[:5]} are in more than one "
                             f"edge group (again under {name!r})")
        seen.update(int(i) for i in ids)


def cloud_claim_cap(max_client_examples: int, edge_rounds: int,
                    groups: Mapping[str, Sequence[int]]) -> int:
    """The most examples one edge's model may claim at the cloud: every device of the largest
    edge at the per-device cap, in every edge round (the edges' own caps bound the devices)."""
    return max_client_examples * edge_rounds * max(len(v) for v in groups.values())


class EdgesBackend(Backend):
    """The edges of a hierarchy as the cloud server's clients, in this process: client ``i`` is
    the ``i``-th group of ``groups`` (edge name -> device ids), trained by :class:`EdgeRounds`
    over ``devices``. ``edge_strategy`` is a Strategy (deep-copied per edge, so stateful ones
    such as FedAvgM keep one state per edge) or a factory called with the edge name.
    ``edge_cloud_s`` (edge name -> seconds per model upload, e.g. from :func:`edge_uplink_s`)
    adds the WAN hop to the simulated round time."""

    name = "edges"

    def __init__(self, devices: Backend, groups: Mapping[str, Sequence[int]],
                 edge_strategy: Strategy | Callable[[str], Strategy], edge_rounds: int,
                 seed: int = 0, codec: str | None = None,
                 max_client_examples: int = DEFAULT_MAX_CLIENT_EXAMPLES,
                 edge_cloud_s: Mapping[str, float] | None = None) -> None:
        check_groups(groups)
        self.devices, self.edge_rounds = devices, edge_rounds
        self.edges = [
            EdgeRounds(name, i, ids, copy.deepcopy(edge_strategy)
                       if isinstance(edge_strategy, Strategy) else edge_strategy(name),
                       edge_rounds, seed, codec, max_client_examples)
            for i, (name, ids) in enumerate(groups.items())]
        self.edge_cloud_s = dict(edge_cloud_s or {})

    def available_clients(self) -> list[ClientInfo]:
        """One client per edge with devices available; its sample count is what its devices
        hold, once per edge round (what the edge's model is weighted by at most)."""
        sizes = {c.client_id: c.num_examples for c in self.devices.available_clients()}
        return [ClientInfo(e.index, self.edge_rounds * sum(sizes.get(m, 0) for m in e.members),
                           device=e.name)
                for e in self.edges if any(m in sizes for m in e.members)]

    def fit(self, round_num: int, global_params: Params, client_ids: list[int],
            config: FitConfig) -> Updates:
        """Each edge's rounds from the cloud model; ``config`` is the cloud's and unused: the
        edges train their devices with their own strategy's configuration."""
        by_index = {e.index: e for e in self.edges}
        ids, models, examples, losses = [], [], [], []
        failed: dict[int, str] = {}
        tier = {"device_edge_up": 0, "device_edge_down": 0, "device_updates": 0}
        sim = 0.0
        for cid in client_ids:
            edge = by_index.get(cid)
            if edge is None:
                failed[cid] = f"no edge has index {cid}"
                continue
            res = edge.run(self.devices, round_num, global_params)
            tier["device_edge_up"] += res.dev_up
            tier["device_edge_down"] += res.dev_down
            tier["device_updates"] += res.updates
            if res.examples <= 0:
                failed[cid] = (f"edge {edge.name!r}: no device update arrived in its "
                               f"{self.edge_rounds} edge round(s)")
                continue
            ids.append(cid)
            models.append(res.params)
            examples.append(res.examples)
            losses.append(res.train_loss)
            sim = max(sim, res.sim_s + self.edge_cloud_s.get(edge.name, 0.0))
        updates = (Updates.stack(ids, models, examples, losses) if ids  # type: ignore[arg-type]
                   else empty_updates(global_params, failed))
        updates.metrics["failed"] = failed
        updates.metrics[ROUND_EXTRA] = {**tier, "edge_rounds": self.edge_rounds,
                                        "sim_round_s": sim}
        return updates

    def identity(self) -> str:
        """The edges' settings, for the cloud's checkpoint digest (ServerConfig.identity)."""
        return json.dumps([e.identity() for e in self.edges], sort_keys=True)

    def state(self) -> dict[str, Any]:
        return {"edges": {e.name: e.state() for e in self.edges},
                "devices": self.devices.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        for e in self.edges:
            e.load_state((state.get("edges") or {}).get(e.name) or {})
        self.devices.load_state(state.get("devices") or {})


class HierarchicalTrainer:
    """Runs ``config.cloud_rounds`` cloud rounds over ``groups`` (edge name -> client ids): the
    server loop over :class:`EdgesBackend` (see its arguments), aggregating the edges with
    ``cloud_strategy`` (FedAvg over every edge by default)."""

    def __init__(self, task: Task, backend: Backend, groups: Mapping[str, Sequence[int]],
                 edge_strategy: Strategy | Callable[[str], Strategy],
                 config: HierConfig, cloud_strategy: Strategy | None = None,
                 edge_cloud_s: Mapping[str, float] | None = None) -> None:
        self.edges = EdgesBackend(backend, groups, edge_strategy, config.edge_rounds,
                                  config.seed, config.codec, config.max_client_examples,
                                  edge_cloud_s)
        cap = cloud_claim_cap(config.max_client_examples, config.edge_rounds, groups)
        self.server = Server(task, cloud_strategy or FedAvg(), self.edges, ServerConfig(
            rounds=config.cloud_rounds, seed=config.seed, eval_every=config.eval_every,
            codec=config.codec, max_client_examples=min(cap, 2**62),
            identity=self.edges.identity()))

    @property
    def params(self) -> Params:
        return self.server.params

    @property
    def edge(self) -> dict[str, Strategy]:
        """Each edge's strategy, by edge name."""
        return {e.name: e.strategy for e in self.edges.edges}

    def run(self, progress: Callable[[RoundRecord], object] | None = None) -> list[RoundRecord]:
        return self.server.run(progress)

