"""Hierarchical federated learning: devices -> edge aggregators -> cloud (HierFAVG, Liu et al.
2020, "Client-Edge-Cloud Hierarchical Federated Learning"; HierTrain in SYSTEMS.md sec. 6).

Each cloud round, every edge server starts from the cloud model and runs ``edge_rounds`` rounds
of ordinary FL with its own devices (any Strategy), then the cloud aggregates the edge models
(any Strategy, FedAvg by default, weighting an edge by the examples its devices trained on).
Devices talk only to their nearby edge over cheap local links; the expensive wide-area
edge->cloud hop is crossed once per cloud round instead of once per device per round, which is
the point: ``edge_rounds = k`` divides the WAN traffic for the same number of device updates by
k. Bytes are counted per tier so that saving is measured, not assumed.

With one edge and ``edge_rounds = 1`` this is exactly flat FL: same clients, same seeds, and the
cloud average of a single edge model is that model.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from edgeweave.topology import Fleet
from edgeweave.train.backends.base import Backend
from edgeweave.train.claims import DEFAULT_MAX_CLIENT_EXAMPLES, bound_examples
from edgeweave.train.server import evaluate, simulated_time
from edgeweave.train.strategies.base import Strategy
from edgeweave.train.strategies.fedavg import FedAvg
from edgeweave.train.task import Task
from edgeweave.train.transfer import Transfer
from edgeweave.train.types import ClientInfo, Params, RoundRecord, TrainError, Updates


@dataclass(frozen=True)
class HierConfig:
    cloud_rounds: int
    edge_rounds: int = 1
    seed: int = 0
    eval_every: int = 1
    codec: str | None = None  # as ServerConfig.codec: compresses every model and update sent
    max_client_examples: int = DEFAULT_MAX_CLIENT_EXAMPLES  # as ServerConfig's

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


@dataclass
class _EdgeResult:
    params: Params
    examples: float
    loss_sum: float
    sim_s: float
    dev_down: int
    dev_up: int
    clients: int


class HierarchicalTrainer:
    """Runs ``config.cloud_rounds`` cloud rounds over ``groups`` (edge name -> client ids).

    ``edge_strategy`` is a Strategy (deep-copied per edge, so stateful ones such as FedAvgM keep
    one state per edge) or a factory called with the edge name. ``edge_cloud_s`` (edge name ->
    seconds per model upload, e.g. from :func:`edge_uplink_s`) adds the WAN hop to the simulated
    round time.
    """

    def __init__(self, task: Task, backend: Backend, groups: Mapping[str, Sequence[int]],
                 edge_strategy: Strategy | Callable[[str], Strategy],
                 config: HierConfig, cloud_strategy: Strategy | None = None,
                 edge_cloud_s: Mapping[str, float] | None = None) -> None:
        if not groups or any(len(v) == 0 for v in groups.values()):
            raise TrainError("hierarchical: need at least one edge group, each with clients")
        seen: set[int] = set()
        for name, ids in groups.items():
            dup = seen.intersection(ids)
            if dup:
                raise TrainError(f"hierarchical: clients {sorted(dup)[:5]} are in more than one "
                                 f"edge group (again under {name!r})")
            seen.update(int(i) for i in ids)
        self.task, self.backend, self.config = task, backend, config
        self.groups = {name: [int(i) for i in ids] for name, ids in groups.items()}
        self.edge = {name: (edge_strategy(name) if not isinstance(edge_strategy, Strategy)
                            else copy.deepcopy(edge_strategy)) for name in self.groups}
        self.cloud = cloud_strategy or FedAvg()
        self.edge_cloud_s = dict(edge_cloud_s or {})
        self.model = task.model_fn()
        self.transfer = Transfer(config.codec)
        self.params: Params = task.init_params()
        self._rngs: dict[int, np.random.Generator] = {}

    def _edge(self, name: str, cloud_round: int, clients: list[ClientInfo],
              params: Params) -> _EdgeResult | None:
        """``edge_rounds`` rounds of FL under edge ``name``, starting from ``params``."""
        strategy, k_rounds = self.edge[name], self.config.edge_rounds
        info = {c.client_id: c for c in clients}
        members = set(self.groups[name])
        mine = [c for c in clients if c.client_id in members]
        res = _EdgeResult(params, 0.0, 0.0, 0.0, 0, 0, 0)
        for k in range(1, k_rounds + 1 if mine else 1):
            t = (cloud_round - 1) * k_rounds + k  # the global step index seeds the clients
            ids, fit = strategy.configure_fit(t, mine, self._rngs[t])
            if not ids:
                continue
            sent, down_bytes = self.transfer.down(params)
            res.dev_down += down_bytes * len(ids)
            upd = self.backend.fit(t, sent, ids, fit)
            if len(upd) == 0:
                continue
            bound_examples(upd, {c: i.num_examples for c, i in info.items()},
                           self.config.max_client_examples, t)
            upd, up_bytes = self.transfer.up(sent, upd)
            res.dev_up += up_bytes
            params = strategy.aggregate(t, params, upd)
            w = upd.num_examples.double()
            res.examples += float(w.sum())
            res.loss_sum += float((upd.train_loss * w).sum())
            res.clients += len(upd)
            res.sim_s += max(simulated_time(info[c], fit) for c in upd.client_ids)
        res.params = params
        return res if res.examples > 0 else None

    def _cloud_round(self, r: int) -> RoundRecord:
        clients = self.backend.available_clients()
        k_rounds = self.config.edge_rounds
        # one generator per global step, shared by the edges in order: with one edge the draws
        # are exactly the flat server's (seeded by (seed, round))
        self._rngs = {t: np.random.default_rng([self.config.seed, t])
                      for t in range((r - 1) * k_rounds + 1, r * k_rounds + 1)}
        at_edges, wan_down_each = self.transfer.down(self.params)  # what the edges receive
        results: dict[str, _EdgeResult] = {}
        for name in self.groups:
            res = self._edge(name, r, clients, at_edges)
            if res is not None:
                results[name] = res
        names = list(results)
        wan_up = 0
        if names:
            edge_updates = Updates(
                client_ids=list(range(len(names))),
                params={k: torch.stack([results[n].params[k] for n in names])
                        for k in self.params},
                num_examples=torch.tensor([results[n].examples for n in names],
                                          dtype=torch.float64),
                train_loss=torch.tensor([results[n].loss_sum / results[n].examples
                                         for n in names], dtype=torch.float64),
            )
            edge_updates, wan_up = self.transfer.up(at_edges, edge_updates)
            self.params = OrderedDict(self.cloud.aggregate(r, self.params, edge_updates))
        total = sum(results[n].examples for n in names)
        dev_up = sum(x.dev_up for x in results.values())
        dev_down = sum(x.dev_down for x in results.values())
        wan_down = wan_down_each * len(self.groups)
        sim = max((results[n].sim_s + self.edge_cloud_s.get(n, 0.0) for n in names), default=0.0)
        return RoundRecord(
            round=r, clients=sum(x.clients for x in results.values()),
            train_loss=sum(x.loss_sum for x in results.values()) / total if total else
            float("nan"),
            test_loss=float("nan"), test_acc=float("nan"),
            bytes_up=dev_up + wan_up, bytes_down=dev_down + wan_down, wall_s=0.0,
            extra={"device_edge_up": dev_up, "device_edge_down": dev_down,
                   "edge_cloud_up": wan_up, "edge_cloud_down": wan_down,
                   "edges": len(names), "edge_rounds": k_rounds, "sim_round_s": sim},
        )

    def run(self, progress: Callable[[RoundRecord], object] | None = None) -> list[RoundRecord]:
        records = []
        for r in range(1, self.config.cloud_rounds + 1):
            t0 = time.perf_counter()
            rec = self._cloud_round(r)
            if r % self.config.eval_every == 0 or r == self.config.cloud_rounds:
                rec.test_loss, rec.test_acc = evaluate(self.model, self.params, self.task.test_x,
                                                       self.task.test_y)
            rec.wall_s = time.perf_counter() - t0
            records.append(rec)
            if progress is not None:
                progress(rec)
        return records
