"""The vectorized backend: all selected clients train at once, in one process, as one batched model.

Each parameter is stacked over clients, ``(k, ...)``, and one local step of every client is one
``vmap(grad(loss))`` over ``functional_call`` (torch.func) on a batch gathered for all of them
from the packed data with one indexing op. A round of 1,000 clients then costs a handful of
batched kernels per local step instead of 1,000 Python training loops.

It reproduces :func:`~edgeweave.train.local.train_client` exactly (same seeds, same batches, same
SGD arithmetic; ``tests/train/test_vectorized_backend.py`` checks allclose):

* batches come from :class:`~edgeweave.train.backends.schedule.BatchSchedule`, the reference's
  permutations laid out step-major with clients sorted by step count, so the clients that take
  step t are a prefix and a client that has finished is never touched;
* a partial batch is padded and masked, and its loss is the mean over its real samples only;
* FedProx's proximal gradient ``mu (w - w_global)``, weight decay and momentum are applied to
  the stacked tensors exactly as the reference applies them to one client's.

Pure Linear/ReLU stacks (logistic regression, MLPs) and plain CNNs (Conv2d, ReLU, MaxPool2d,
Flatten, Linear) take a hand-written batched backward (:mod:`~edgeweave.train.backends.fused_mlp`,
:mod:`~edgeweave.train.backends.fused_cnn`), checked equal to the generic path. Models the
batched path cannot reproduce (BatchNorm's running statistics, dropout's randomness, a layer
vmap refuses) are trained one client at a time with the reference instead, with a warning and
``Updates.metrics["backend_fallback"]`` naming the reason.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from edgeweave.train.backends.base import Backend
from edgeweave.train.backends.fused_cnn import CNNLayout, cnn_grads, cnn_layout
from edgeweave.train.backends.fused_mlp import MLPLayout, mlp_grads, mlp_layout
from edgeweave.train.backends.schedule import BatchSchedule, step_counts
from edgeweave.train.backends.sequential import SequentialBackend, empty_updates
from edgeweave.train.backends.support import unsupported_reason
from edgeweave.train.task import Task
from edgeweave.train.types import ClientInfo, FitConfig, Params, TrainError, Updates

#: bytes of working memory a round may use for stacked parameters and activations, per chunk
DEFAULT_MEMORY_BUDGET = 1 << 30


class VectorizedBackend(Backend):
    """Trains the selected clients together with torch.func; falls back to the reference.

    ``fused=False`` forces the generic ``vmap(grad)`` path even for MLPs and CNNs (to compare).
    ``memory_budget`` bounds the stacked working set: clients are trained in chunks of as many as
    fit. ``drop_prob``/``seed``/``compute_s_per_epoch``/``upload_s`` mean what they mean in
    :class:`~edgeweave.train.backends.sequential.SequentialBackend` (same simulated drops).
    """

    name = "vectorized"

    def __init__(self, task: Task, drop_prob: float = 0.0, seed: int = 0,
                 compute_s_per_epoch: Sequence[float] | None = None,
                 upload_s: Sequence[float] | None = None, fused: bool = True,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 device: str | torch.device = "cpu") -> None:
        self.reference = SequentialBackend(task, drop_prob, seed, compute_s_per_epoch, upload_s)
        if memory_budget < 1:
            raise TrainError(f"vectorized backend: memory_budget must be > 0, got {memory_budget}")
        self.task = task
        self.data = self.reference.data
        self.fleet = self.reference.fleet
        self.memory_budget = memory_budget
        self.device = torch.device(device)
        self.model = task.model_fn().to(self.device)
        self.model.train()
        self.x = self.data.x.to(self.device)
        self.y = self.data.y.to(self.device)
        probe = OrderedDict((k, v.to(self.device)) for k, v in task.init_params().items())
        self.fallback = unsupported_reason(self.model, probe, self.x[:2], self.y[:2])
        if self.fallback:
            warnings.warn(f"vectorized backend: {self.fallback}; training clients one at a time "
                          "with the sequential reference", RuntimeWarning, stacklevel=2)
        self.layout: MLPLayout | None = (
            mlp_layout(self.model, probe) if fused and self.x.dim() == 2 else None)
        self.cnn: CNNLayout | None = (
            cnn_layout(self.model, probe) if fused and self.x.dim() == 4 else None)
        self.frozen = _unused_params(self.model, probe, self.x[:2], self.y[:2])
        self._grad_fns: dict[tuple[bool, bool], object] = {}
        self.shapes = [v.shape for v in probe.values()]

    def available_clients(self) -> list[ClientInfo]:
        return self.reference.available_clients()

    def fit(self, round_num: int, global_params: Params, client_ids: list[int],
            config: FitConfig) -> Updates:
        if self.fallback:
            updates = self.reference.fit(round_num, global_params, client_ids, config)
            updates.metrics["backend_fallback"] = self.fallback
            return updates
        failed = self.fleet.failures(round_num, client_ids)
        ids = [c for c in client_ids if c not in failed]
        bad = [c for c in ids if not 0 <= c < self.data.num_clients] if ids and (
            min(ids) < 0 or max(ids) >= self.data.num_clients) else []
        if bad:
            raise TrainError(f"vectorized backend: no client {bad[0]} "
                             f"(have {self.data.num_clients})")
        if not ids:
            return empty_updates(global_params, failed)
        ids, params, losses = self._train(round_num, global_params, ids, config)
        sizes = self.data.sizes()[torch.as_tensor(ids)]
        updates = Updates(client_ids=ids, params=params, num_examples=sizes.double(),
                          train_loss=losses.double())
        updates.metrics["failed"] = failed
        return updates

    # -- batched training ---------------------------------------------------------------------

    def _train(self, round_num: int, global_params: Params, ids: list[int], config: FitConfig
               ) -> tuple[list[int], dict[str, torch.Tensor], torch.Tensor]:
        """Client ids in training order (most steps first), their stacked new params and mean
        losses. Results stay in training order: putting 1,000 stacked models back in the
        requested order is a full copy, and Updates only needs rows to match ``client_ids``."""
        anchor = {k: v.to(self.device) for k, v in global_params.items()}
        order = self._step_order(ids, config)
        chunk = self._chunk_size(anchor, config)
        done_ids: list[int] = []
        parts: list[dict[str, torch.Tensor]] = []
        losses: list[torch.Tensor] = []
        for lo in range(0, len(ids), chunk):
            chunk_ids = [ids[i] for i in order[lo:lo + chunk].tolist()]
            sched = BatchSchedule.build(self.data.offsets, chunk_ids, config, round_num)
            params, loss = self._train_chunk(sched, anchor, config)
            done_ids.extend(chunk_ids[i] for i in sched.order.tolist())
            parts.append({k: v.to("cpu", global_params[k].dtype) for k, v in params.items()})
            losses.append(loss.cpu())
        if len(parts) == 1:
            return done_ids, parts[0], losses[0]
        return (done_ids, {k: torch.cat([p[k] for p in parts]) for k in global_params},
                torch.cat(losses))

    def _step_order(self, ids: list[int], config: FitConfig) -> torch.Tensor:
        """Positions of ``ids`` by step count, most first: chunks then hold clients of similar
        length, so few of a chunk's steps run with a small prefix of it."""
        idx = torch.as_tensor(ids)
        steps = step_counts(self.data.offsets[idx + 1] - self.data.offsets[idx], config)
        return torch.sort(steps, descending=True, stable=True).indices

    def _chunk_size(self, params: dict[str, torch.Tensor], config: FitConfig) -> int:
        """How many clients' stacked state fits the memory budget: parameters, gradients,
        momentum and update temporaries, plus one batch of activations and their gradients."""
        n_params = sum(v.numel() for v in params.values())
        per_sample = max(int(self.x[0].numel()), 1) * 4 + self._activation_numel
        per_client = 4 * (5 * n_params + 3 * config.batch_size * per_sample)
        return max(1, self.memory_budget // per_client)

    @property
    def _activation_numel(self) -> int:
        if not hasattr(self, "_act"):
            sizes: list[int] = []
            hooks = [m.register_forward_hook(
                lambda _m, _i, o: sizes.append(o.numel() if torch.is_tensor(o) else 0))
                for m in self.model.modules() if not list(m.children())]
            with torch.no_grad():
                self.model(self.x[:1])
            for h in hooks:
                h.remove()
            self._act = sum(sizes)
        return self._act

    def _train_chunk(self, sched: BatchSchedule, anchor: dict[str, torch.Tensor],
                     config: FitConfig) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        k_all = len(sched.order)
        trained = [k for k in anchor if k not in self.frozen]
        # Until its first step every client holds the global model: step 0 runs on the
        # unstacked parameters and its update writes the stacked ones, so the k copies of the
        # model are never made just to be overwritten.
        params: dict[str, torch.Tensor] = {}
        velocity: dict[str, torch.Tensor] = {}
        loss_sum = torch.zeros(k_all, device=self.device)
        index = sched.index.to(self.device)
        count = sched.count.to(self.device)
        mask = sched.mask.to(self.device) if sched.mask is not None else None
        lr, wd, mu, m = config.lr, config.weight_decay, config.prox_mu, config.momentum
        for t in range(sched.max_steps):
            rows, k = sched.step(t)
            idx = index[rows]
            xb = self.x.index_select(0, idx.reshape(-1)).view(*idx.shape, *self.x.shape[1:])
            yb = self.y.index_select(0, idx.reshape(-1)).view(idx.shape)
            mb = mask[rows] if mask is not None else None
            p = anchor if t == 0 else {name: v[:k] for name, v in params.items()}
            grads, loss = self._grads(p, xb, yb, mb, count[rows])
            loss_sum[:k] += loss
            with torch.no_grad():
                if t == 0:
                    params, velocity = _first_update(anchor, grads, trained, k, k_all, config)
                    continue
                for name in trained:
                    w, g = p[name], grads[name]
                    if mu:
                        g = g.add(w - anchor[name], alpha=mu)
                    if wd:
                        g = g.add(w, alpha=wd)
                    if m:
                        g = velocity[name][:k].mul_(m).add_(g)
                    w.sub_(g, alpha=lr)
        if not params:  # no client had a step
            params = {k: v.unsqueeze(0).repeat(k_all, *([1] * v.dim()))
                      for k, v in anchor.items()}
        steps = sched.steps.to(self.device)
        loss = torch.where(steps > 0, loss_sum / steps.clamp(min=1), 0.0)
        return params, loss

    def _grads(self, p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
               mask: torch.Tensor | None, count: torch.Tensor
               ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        if self.layout is not None:
            return mlp_grads(self.layout, p, x, y, mask, count)
        if self.cnn is not None:
            return cnn_grads(self.cnn, p, x, y, mask, count)
        masked, shared = mask is not None, next(iter(p.values())).dim() == len(self.shapes[0])
        fn = self._grad_fns.get((masked, shared))
        if fn is None:
            fn = self._grad_fns[masked, shared] = _vmapped_grad(self.model, masked, shared)
        if masked:
            return fn(p, x, y, mask, count)  # type: ignore[operator]
        return fn(p, x, y)  # type: ignore[operator]


def _first_update(anchor: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
                  trained: list[str], k: int, k_all: int, config: FitConfig
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Stacked params and momentum after step 0, taken by the first ``k`` of ``k_all`` clients
    from ``anchor`` (no proximal term: w == w_global; momentum starts at the gradient)."""
    params, velocity = {}, {}
    for name, a in anchor.items():
        out = a.unsqueeze(0).repeat(k_all, *([1] * a.dim())) if k < k_all else None
        if name not in trained:
            params[name] = out if out is not None else a.unsqueeze(0).repeat(
                k_all, *([1] * a.dim()))
            continue
        g = grads[name]
        if config.weight_decay:
            g = g.add(a, alpha=config.weight_decay)
        if config.momentum:
            velocity[name] = torch.zeros_like(out) if out is not None else g
            if out is not None:
                velocity[name][:k] = g
        if out is None:
            params[name] = torch.sub(a, g, alpha=config.lr)
        else:
            torch.sub(a, g, alpha=config.lr, out=out[:k])
            params[name] = out
    return params, velocity


def _vmapped_grad(model: nn.Module, masked: bool, shared: bool):
    """vmap over clients of grad of one client's mean cross-entropy (over real samples);
    ``shared``: all clients hold the same (unstacked) parameters."""

    def loss_masked(p, x, y, mask, count):
        ce = nn.functional.cross_entropy(functional_call(model, p, (x,)), y, reduction="none")
        loss = (ce * mask).sum() / count
        return loss, loss.detach()

    def loss_full(p, x, y):
        loss = nn.functional.cross_entropy(functional_call(model, p, (x,)), y)
        return loss, loss.detach()

    n_data = 4 if masked else 2
    return vmap(grad(loss_masked if masked else loss_full, has_aux=True),
                in_dims=(None if shared else 0, *([0] * n_data)))


def _unused_params(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor
                   ) -> set[str]:
    """Entries the loss does not depend on: the reference skips them (no weight decay, no
    momentum), so the batched update must too."""
    p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    try:
        loss = nn.functional.cross_entropy(functional_call(model, p, (x,)), y)
        grads = torch.autograd.grad(loss, list(p.values()), allow_unused=True)
    except Exception:  # unsupported models never reach the batched path
        return set()
    return {k for k, g in zip(p, grads, strict=True) if g is None}
