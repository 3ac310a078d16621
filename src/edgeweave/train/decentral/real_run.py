"""What every real-process method shares: each worker's batch stream, the reference model a
synchronous method must reach, and the result row of a run.

Each worker is a ``spawn`` process that rebuilds the task from the config's seed and draws its
minibatches from its own generator (seed ``cfg.seed * 1009 + node``, as a GoSGD peer does), so
every method sees the same batch stream per node and :func:`reference_sgd`, the mean-gradient
SGD computed in one process on those same batches, is exactly what a synchronous method must
produce: the tests hold the processes to it.

Bytes are the serialized sizes (``ByteSize()``) of every request and reply a node sends: the
real wire load, protobuf framing included (gRPC/HTTP2 headers are not counted).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from edgeweave.train.decentral.peer import PeerRunConfig, build_task
from edgeweave.train.decentral.stack import NodeStack


def worker_stack(cfg: PeerRunConfig, node: int) -> NodeStack:
    """Node ``node``'s stack with its own batch generator (the same as a GoSGD peer's)."""
    return NodeStack(build_task(cfg), batch_size=cfg.batch_size, weight_decay=cfg.weight_decay,
                     seed=cfg.seed * 1009 + node)


def reference_sgd(cfg: PeerRunConfig) -> torch.Tensor:
    """Mean-gradient SGD in one process on exactly the workers' batches: the model every
    synchronous method (ring all-reduce, synchronous parameter server) must end with."""
    stacks = [worker_stack(cfg, i) for i in range(cfg.n)]
    x = stacks[0].init.clone()
    for _ in range(cfg.steps):
        g = torch.stack([s.grads(x.unsqueeze(0), torch.tensor([i]))[0][0]
                         for i, s in enumerate(stacks)])
        x = x - cfg.lr * g.mean(0)
    return x


@dataclass
class RealRunResult:
    """``nodes``: one row per process (plus the server's for the parameter-server methods)."""

    method: str
    model: torch.Tensor
    test_acc: float
    test_loss: float
    objective: float
    wall_s: float
    nodes: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def wire_bytes(self) -> int:
        return sum(int(r["wire_bytes_sent"]) for r in self.nodes)

    @property
    def busiest_bytes(self) -> int:
        """The most any one node sent: the server's link for a parameter server."""
        return max(int(r["wire_bytes_sent"]) for r in self.nodes)


def finish_run(method: str, cfg: PeerRunConfig, stack: NodeStack, model: torch.Tensor,
               wall: float, nodes: list[dict[str, Any]], extra: dict[str, Any]) -> RealRunResult:
    """The run's result: ``model`` evaluated on ``stack``'s test data and objective."""
    loss, acc = stack.evaluate(model)
    return RealRunResult(method=method, model=model, test_acc=acc, test_loss=loss,
                         objective=stack.objective(model), wall_s=wall, nodes=nodes, extra=extra,
                         config=asdict(cfg))
