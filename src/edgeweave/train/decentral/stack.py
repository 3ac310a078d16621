"""N node models as ONE (N, D) tensor: the engine every simulated decentralized method runs on.

Gossip, all-reduce and parameter-server training all reduce to arithmetic on the matrix X whose
row i is node i's flattened model: a D-PSGD mix is ``W @ X``, an all-reduce is a column mean, a
GoSGD push is a weighted row merge. Gradients for any subset of nodes come from one
``vmap(grad(loss))`` over ``functional_call`` (as :mod:`edgeweave.train.backends.vectorized`
does for FL clients), so 100 simulated nodes cost a few batched kernels per step.

Minibatches are drawn with replacement from each node's shard (one seeded generator for the
run): shards differ in size, and sampling with replacement gives every node a full batch with a
single indexing op. ``batch_size=None`` uses each node's whole shard (padded and masked), the
deterministic full-gradient setting of the convergence test. ``weight_decay`` is an L2 term in
the loss, so logistic regression is strongly convex with a unique optimum.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from edgeweave.train.task import Task
from edgeweave.train.types import Params, TrainError


class NodeStack:
    def __init__(self, task: Task, batch_size: int | None = 16, weight_decay: float = 0.0,
                 seed: int = 0) -> None:
        if task.data is None:
            raise TrainError("decentralized simulation: the task has no client data")
        if batch_size is not None and batch_size < 1:
            raise TrainError(f"decentralized simulation: batch_size must be >= 1, got "
                             f"{batch_size}")
        self.task, self.data = task, task.data
        self.n = self.data.num_clients
        self.model = task.model_fn()
        init = task.init_params()
        named = dict(self.model.named_parameters())
        if set(init) != set(named):
            raise TrainError("decentralized simulation: models with buffers (BatchNorm) are not "
                             f"supported; buffers {sorted(set(init) - set(named))}")
        self.names = list(init)
        self.shapes = [init[k].shape for k in self.names]
        self.numels = [int(math.prod(s)) for s in self.shapes]
        self.dim = sum(self.numels)
        self.init = self.flatten(init)
        self.batch_size, self.weight_decay = batch_size, float(weight_decay)
        self.gen = torch.Generator().manual_seed(seed)
        self.sizes = self.data.sizes()
        if bool((self.sizes == 0).any()):
            raise TrainError(f"decentralized simulation: node "
                             f"{int((self.sizes == 0).nonzero()[0])} has no training data")
        self._grad = vmap(grad(self._loss, has_aux=True))
        self.layers = _linear_stack(self.model)

    # -- flat <-> state dict ------------------------------------------------------------------
    def flatten(self, params: Params) -> torch.Tensor:
        return torch.cat([params[k].reshape(-1).float() for k in self.names])

    def unflatten(self, flat: torch.Tensor) -> Params:
        parts = torch.split(flat, self.numels, dim=-1)
        lead = flat.shape[:-1]
        return OrderedDict((k, p.reshape(*lead, *s))
                           for k, p, s in zip(self.names, parts, self.shapes, strict=True))

    def replicate(self, flat: torch.Tensor | None = None) -> torch.Tensor:
        """(n, D): every node starting from the same model (the task's initial one)."""
        return (self.init if flat is None else flat).unsqueeze(0).repeat(self.n, 1)

    # -- gradients ----------------------------------------------------------------------------
    def _loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor):
        out = functional_call(self.model, self.unflatten(flat), (x,))
        ce = nn.functional.cross_entropy(out, y, reduction="none")
        data = (ce * m).sum() / m.sum()
        loss = data + self.weight_decay / 2 * (flat * flat).sum() if self.weight_decay else data
        return loss, data

    def batch(self, nodes: torch.Tensor):
        off = self.data.offsets[nodes].unsqueeze(1)
        size = self.sizes[nodes].unsqueeze(1)
        if self.batch_size is None:
            cols = torch.arange(int(size.max())).unsqueeze(0)
            mask = (cols < size).float()
            idx = off + torch.minimum(cols, size - 1)
        else:
            r = torch.rand(len(nodes), self.batch_size, generator=self.gen)
            idx = off + (r * size).long().clamp_max(size - 1)
            mask = torch.ones(idx.shape)
        return self.data.x[idx], self.data.y[idx], mask

    def grads(self, X: torch.Tensor, nodes: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients (k, D) and data losses (k,) of rows ``X`` for nodes ``nodes`` (default all;
        row r of X belongs to node nodes[r])."""
        if nodes is None:
            nodes = torch.arange(self.n)
        if len(nodes) == 0:
            return torch.zeros(0, self.dim), torch.zeros(0)
        x, y, m = self.batch(nodes)
        if self.layers is not None:
            return self._mlp_grads(self.layers, X, x, y, m)
        g, loss = self._grad(X, x, y, m)
        return g.detach(), loss.detach()

    def _mlp_grads(self, layers: list[tuple[str, str]], X, x, y, m
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear/ReLU stacks: batched matmuls and ONE backward of the summed per-node losses
        (nodes are independent, so d(sum)/d(row i) is node i's gradient). Several times faster
        than vmap(grad) for the small models gossip experiments use."""
        X = X.detach().requires_grad_(True)
        p = self.unflatten(X)
        h = x.reshape(x.shape[0], x.shape[1], -1)
        for j, (wname, bname) in enumerate(layers):
            if j:
                h = torch.relu(h)
            h = torch.baddbmm(p[bname].unsqueeze(1), h, p[wname].transpose(1, 2))
        ce = nn.functional.cross_entropy(h.reshape(-1, h.shape[-1]), y.reshape(-1),
                                         reduction="none").reshape(m.shape)
        data = (ce * m).sum(1) / m.sum(1)
        loss = data + self.weight_decay / 2 * (X * X).sum(1) if self.weight_decay else data
        (g,) = torch.autograd.grad(loss.sum(), X)
        return g, data.detach()

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self, flat: torch.Tensor) -> tuple[float, float]:
        """Test (loss, accuracy) of one flat model."""
        with torch.no_grad():
            out = functional_call(self.model, self.unflatten(flat), (self.task.test_x,))
            loss = float(nn.functional.cross_entropy(out, self.task.test_y))
            acc = float((out.argmax(1) == self.task.test_y).float().mean())
        return loss, acc

    def objective(self, flat: torch.Tensor) -> float:
        """The global training objective at ``flat``: the sample-weighted mean loss over all
        nodes' data plus the L2 term (what every method here minimises)."""
        with torch.no_grad():
            out = functional_call(self.model, self.unflatten(flat), (self.data.x,))
            loss = float(nn.functional.cross_entropy(out, self.data.y))
        return loss + self.weight_decay / 2 * float((flat * flat).sum())

    @property
    def model_bytes(self) -> int:
        return self.dim * 4  # float32 on the wire


def _linear_stack(model: nn.Module) -> list[tuple[str, str]] | None:
    """(weight, bias) names of a Sequential of Linear layers with ReLU between, else None."""
    if not isinstance(model, nn.Sequential):
        return None
    out: list[tuple[str, str]] = []
    for i, layer in enumerate(model):
        if isinstance(layer, nn.Linear) and layer.bias is not None:
            if len(out) != (i + 1) // 2 or i % 2:
                return None
            out.append((f"{i}.weight", f"{i}.bias"))
        elif not (isinstance(layer, nn.ReLU) and i % 2):
            return None
    return out or None
