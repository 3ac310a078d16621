"""What a simulated decentralized run records: accuracy against rounds, bytes and simulated time.

One "round" means the same amount of local work in every method: each node computes one
minibatch gradient on average (N gradients in total). For synchronous SGD that is one update of
the shared model; for gossip and D-PSGD one local step per node plus its mixing; for
asynchronous SGD N gradient applications at the server. Bytes are float32 payload bytes (the
model or gradient, 4 bytes per parameter, plus GoSGD's 8-byte weight), counted per sending
node; ``max_node_bytes`` is the busiest node's (or the server's) total, the load on the link
that limits scaling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from edgeweave.train.decentral.stack import NodeStack
from edgeweave.train.types import TrainError


@dataclass(frozen=True)
class RunConfig:
    rounds: int = 100
    lr: float = 0.1
    eval_every: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.eval_every < 1:
            raise TrainError(f"decentralized run: rounds and eval_every must be >= 1, got "
                             f"{self.rounds}, {self.eval_every}")
        if not self.lr > 0:
            raise TrainError(f"decentralized run: lr must be > 0, got {self.lr}")


@dataclass
class Trace:
    method: str
    nodes: int
    points: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    #: the final consensus model and every node's final model (tests; not in the JSON)
    model: torch.Tensor | None = None
    node_models: torch.Tensor | None = None

    def first_reaching(self, acc: float) -> dict[str, Any] | None:
        return next((p for p in self.points if p["test_acc"] >= acc), None)

    @property
    def final(self) -> dict[str, Any]:
        return self.points[-1]

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "nodes": self.nodes, "points": self.points, **self.extra}


class Recorder:
    """Counts bytes per sender and evaluates the consensus model every ``eval_every`` rounds."""

    def __init__(self, method: str, stack: NodeStack, config: RunConfig,
                 server: bool = False) -> None:
        self.stack, self.config = stack, config
        self.trace = Trace(method, stack.n)
        self.sent = np.zeros(stack.n + (1 if server else 0), dtype=np.int64)

    def send(self, node: int | np.ndarray, nbytes: int | np.ndarray) -> None:
        np.add.at(self.sent, node, nbytes)

    def due(self, r: int) -> bool:
        return r % self.config.eval_every == 0 or r == self.config.rounds

    def point(self, r: int, time_s: float, model: torch.Tensor,
              X: torch.Tensor | None = None, **extra: Any) -> None:
        loss, acc = self.stack.evaluate(model)
        p = {"round": r, "time_s": round(float(time_s), 6), "bytes": int(self.sent.sum()),
             "max_node_bytes": int(self.sent.max()), "test_loss": loss, "test_acc": acc}
        if X is not None:
            p["consensus"] = float(((X - model) ** 2).sum(1).mean())
        p.update(extra)
        self.trace.points.append(p)
        self.trace.model = model
        self.trace.node_models = X
