"""Generated problems for decentralized training, rebuilt identically from a seed in every
process (the real peer processes build their own shard instead of receiving data).

``convex_task``: multinomial logistic regression on Gaussian class blobs, split evenly over the
nodes. With the L2 term of :class:`~edgeweave.train.decentral.stack.NodeStack` the objective is
strongly convex, so it has one optimum, which :func:`centralised_optimum` finds with full-batch
L-BFGS on all the data pooled: the point every decentralized method must reach.
"""

from __future__ import annotations

import numpy as np
import torch

from edgeweave.train.models import build_model
from edgeweave.train.task import FederatedData, Task
from edgeweave.train.types import TrainError


def convex_task(n_nodes: int, dim: int = 8, classes: int = 3, per_node: int = 40,
                test: int = 600, seed: int = 0) -> Task:
    if n_nodes < 1 or dim < 1 or classes < 2 or per_node < 1:
        raise TrainError(f"convex task: need n_nodes, dim, per_node >= 1 and classes >= 2, got "
                         f"{n_nodes}, {dim}, {classes}, {per_node}")
    rng = np.random.default_rng([seed, 31])
    centres = rng.normal(0, 1.0, size=(classes, dim))

    def draw(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = rng.integers(classes, size=k)
        x = centres[y] + rng.normal(0, 1.0, size=(k, dim))
        return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long)

    x, y = draw(n_nodes * per_node)
    tx, ty = draw(test)
    offsets = torch.arange(n_nodes + 1) * per_node
    spec = f"logreg:{dim},{classes}"
    return Task(model_fn=lambda: build_model(spec), data=FederatedData(x, y, offsets),
                test_x=tx, test_y=ty, name=f"convex-{n_nodes}x{per_node}", init_seed=seed)


def centralised_optimum(task: Task, weight_decay: float, iters: int = 200) -> torch.Tensor:
    """The flat minimiser of mean cross-entropy over all nodes' data + weight_decay/2 ||w||^2."""
    from edgeweave.train.decentral.stack import NodeStack

    stack = NodeStack(task, batch_size=None, weight_decay=weight_decay)
    w = stack.init.clone().double().requires_grad_(True)
    x, y = task.data.x.double(), task.data.y  # type: ignore[union-attr]
    model = task.model_fn().double()
    opt = torch.optim.LBFGS([w], lr=1, max_iter=iters, tolerance_grad=1e-12,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        out = torch.func.functional_call(model, stack.unflatten(w), (x,))
        loss = torch.nn.functional.cross_entropy(out, y) + weight_decay / 2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().float()
