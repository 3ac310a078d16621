"""One edge server's share of a cloud round in hierarchical FL (HierFAVG, Liu et al. 2020): starting
from the cloud model, ``edge_rounds`` rounds of ordinary FL with the devices under this edge.

The same code runs inside the in-process simulation (:class:`~edgeweave.train.control.
hierarchical.EdgesBackend`, devices simulated by any backend) and inside a real edge aggregator
process (:mod:`edgeweave.train.edge`, devices dialling in over gRPC), which is why the two give
the same model for the same seeds. HierFAVG's k1 (local updates between edge aggregations) is
the devices' local work, ``fit.epochs`` or ``fit.local_steps``; k2 is ``edge_rounds``.

Edge round k of cloud round r is global step t = (r - 1) * edge_rounds + k: devices train with
round number t (their batch order is seeded by it) and the edge samples them with a generator of
its own, seeded by (seed, t) for the first edge and (seed, t, index) for edge ``index`` > 0. An
edge process can so draw exactly what the simulation draws without knowing what the other edges
drew, and with one edge and one edge round the draws are the flat server's (seeded by (seed, r)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeweave.train.backends.base import Backend
from edgeweave.train.claims import DEFAULT_MAX_CLIENT_EXAMPLES, bound_examples
from edgeweave.train.server import simulated_time, strategy_hyper
from edgeweave.train.strategies.base import Strategy
from edgeweave.train.transfer import Transfer
from edgeweave.train.types import Params, TrainError


@dataclass
class EdgeResult:
    """What one edge did in one cloud round: its model and the bookkeeping of its devices."""

    params: Params
    examples: float = 0.0  # device examples aggregated, summed over the edge rounds
    loss_sum: float = 0.0  # sum of examples * train loss over the same
    sim_s: float = 0.0  # simulated seconds of the edge rounds (slowest device of each)
    dev_down: int = 0  # bytes edge -> devices
    dev_up: int = 0  # bytes devices -> edge
    updates: int = 0  # device updates aggregated
    selected: int = 0  # device tasks sent
    dropped: int = 0  # device tasks that brought no update back
    failed: dict[int, str] = field(default_factory=dict)  # device -> why its last round failed
    clipped: list[int] = field(default_factory=list)

    @property
    def train_loss(self) -> float:
        return self.loss_sum / self.examples if self.examples > 0 else float("nan")


class EdgeRounds:
    """Edge ``name`` (the ``index``-th edge) over the devices ``members``.

    ``strategy`` aggregates at the edge and selects its devices (FedCS fits here: a deadline per
    edge round). ``codec`` compresses what crosses the device-edge links, as ``ServerConfig.
    codec`` does; ``max_client_examples`` bounds each device's claimed sample count.
    """

    def __init__(self, name: str, index: int, members: Sequence[int], strategy: Strategy,
                 edge_rounds: int, seed: int = 0, codec: str | None = None,
                 max_client_examples: int = DEFAULT_MAX_CLIENT_EXAMPLES) -> None:
        if edge_rounds < 1 or index < 0 or not members:
            raise TrainError(f"edge {name!r}: need edge_rounds >= 1, index >= 0 and at least "
                             f"one device, got {edge_rounds}, {index} and {len(members)}")
        self.name, self.index, self.members = name, index, [int(m) for m in members]
        self.strategy, self.edge_rounds, self.seed = strategy, edge_rounds, seed
        self.codec, self.max_client_examples = codec, max_client_examples
        self.transfer = Transfer(codec)

    def rng(self, step: int) -> np.random.Generator:
        """The generator edge step ``step`` samples devices with (see the module doc)."""
        key = [self.seed, step] if self.index == 0 else [self.seed, step, self.index]
        return np.random.default_rng(key)

    def run(self, devices: Backend, cloud_round: int, params: Params) -> EdgeResult:
        """``edge_rounds`` rounds of FL over ``devices`` from the cloud model ``params``."""
        res = EdgeResult(params)
        mine = set(self.members)
        for k in range(1, self.edge_rounds + 1):
            t = (cloud_round - 1) * self.edge_rounds + k
            clients = [c for c in devices.available_clients() if c.client_id in mine]
            if not clients:
                continue
            ids, fit = self.strategy.configure_fit(t, clients, self.rng(t))
            if not ids:
                continue
            sent, down_bytes = self.transfer.down(params)
            res.dev_down += down_bytes * len(ids)
            res.selected += len(ids)
            upd = devices.fit(t, sent, ids, fit)
            res.failed.update(upd.metrics.get("failed", {}))
            res.dropped += len(ids) - len(upd)
            if len(upd) == 0:
                continue
            info = {c.client_id: c for c in clients}
            res.clipped += bound_examples(upd, {c: i.num_examples for c, i in info.items()},
                                          self.max_client_examples, t)
            upd, up_bytes = self.transfer.up(sent, upd)
            res.dev_up += up_bytes
            params = self.strategy.aggregate(t, params, upd)
            w = upd.num_examples.double()
            res.examples += float(w.sum())
            res.loss_sum += float((upd.train_loss * w).sum())
            res.updates += len(upd)
            res.sim_s += max(simulated_time(info[c], fit) for c in upd.client_ids)
        res.params = params
        return res

    def identity(self) -> dict[str, Any]:
        """What a checkpoint of this edge must match to be resumed."""
        return {"edge": self.name, "index": self.index, "members": self.members,
                "edge_rounds": self.edge_rounds, "seed": self.seed, "codec": self.codec,
                "strategy": self.strategy.name, "hyper": strategy_hyper(self.strategy),
                "fit": asdict(self.strategy.fit_config)}

    def state(self) -> dict[str, Any]:
        return {"strategy": self.strategy.state(), "transfer": self.transfer.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.strategy.load_state(state.get("strategy") or {})
        self.transfer.load_state(state.get("transfer") or {})
