"""The sequential backend: trains the selected clients one after another with
:func:`~edgeweave.train.local.train_client`, the reference every other backend is checked
against. Slow for thousands of clients, but it runs any model.

Failure simulation: with ``drop_prob`` each selected client independently fails in a round. The
draw comes from a generator seeded by (seed, round) and nothing else, so a resumed run drops
exactly the clients the uninterrupted run dropped, and the drops do not disturb any other
randomness (client batch orders, server sampling).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from edgeweave.train.backends.base import Backend
from edgeweave.train.local import train_client
from edgeweave.train.task import Task
from edgeweave.train.types import ClientInfo, FitConfig, Params, TrainError, Updates


def empty_updates(global_params: Params, failed: dict[int, str]) -> Updates:
    """A round in which no client result arrived (the server keeps the model)."""
    return Updates(
        client_ids=[],
        params={k: v.new_empty((0, *v.shape)) for k, v in global_params.items()},
        num_examples=torch.zeros(0, dtype=torch.float64),
        train_loss=torch.zeros(0, dtype=torch.float64),
        metrics={"failed": dict(failed)},
    )


def simulated_failures(seed: int, round_num: int, client_ids: Sequence[int],
                       drop_prob: float) -> dict[int, str]:
    """Which of ``client_ids`` fail this round (independent Bernoulli(drop_prob) per client)."""
    if drop_prob <= 0 or not client_ids:
        return {}
    rng = np.random.default_rng([seed, round_num, 0xD809])
    drops = rng.random(len(client_ids)) < drop_prob
    return {int(c): "dropped (simulated failure)" for c, d in zip(client_ids, drops, strict=True)
            if d}


class SimulatedFleet:
    """What the simulated backends (sequential, vectorized, ray) simulate about their clients,
    in one place: independent drops with ``drop_prob`` (:func:`simulated_failures`) and each
    client's ``compute_s_per_epoch`` and ``upload_s`` (reported in :meth:`clients` for
    deadline-aware selection and straggler simulation; nothing is slowed down)."""

    def __init__(self, backend: str, n: int, drop_prob: float = 0.0, seed: int = 0,
                 compute_s_per_epoch: Sequence[float] | None = None,
                 upload_s: Sequence[float] | None = None) -> None:
        if not 0 <= drop_prob < 1:
            raise TrainError(f"{backend} backend: drop_prob must be in [0, 1), got {drop_prob}")
        for label, vals in (("compute_s_per_epoch", compute_s_per_epoch),
                            ("upload_s", upload_s)):
            if vals is not None and len(vals) != n:
                raise TrainError(f"{backend} backend: {label} has {len(vals)} values, "
                                 f"expected one per client ({n})")
        self.drop_prob, self.seed = float(drop_prob), seed
        self.compute = list(compute_s_per_epoch) if compute_s_per_epoch is not None else [0.0] * n
        self.upload = list(upload_s) if upload_s is not None else [0.0] * n

    def clients(self, sizes: Sequence[int]) -> list[ClientInfo]:
        return [ClientInfo(i, int(sizes[i]), float(self.compute[i]), float(self.upload[i]))
                for i in range(len(sizes))]

    def failures(self, round_num: int, client_ids: Sequence[int]) -> dict[int, str]:
        return simulated_failures(self.seed, round_num, client_ids, self.drop_prob)


class ClientFailed(Exception):
    """Raised by :meth:`SequentialBackend._train_one` for a client that cannot train this round
    (the reason goes into the round's ``failed``)."""


class SequentialBackend(Backend):
    """Runs ``train_client`` per client on the task's packed data.

    ``drop_prob``, ``seed``, ``compute_s_per_epoch`` and ``upload_s`` (one value per client, e.g.
    from the fleet's device speeds) are the :class:`SimulatedFleet`'s.
    """

    name = "sequential"

    def __init__(self, task: Task, drop_prob: float = 0.0, seed: int = 0,
                 compute_s_per_epoch: Sequence[float] | None = None,
                 upload_s: Sequence[float] | None = None) -> None:
        if task.data is None:
            raise TrainError(f"sequential backend: task {task.name!r} has no client data "
                             "(the clients hold it; use the grpc backend)")
        self.task = task
        self.data = task.data
        self.fleet = SimulatedFleet("sequential", task.data.num_clients, drop_prob, seed,
                                    compute_s_per_epoch, upload_s)
        self.drop_prob, self.seed = self.fleet.drop_prob, seed
        self.model = task.model_fn()

    def available_clients(self) -> list[ClientInfo]:
        return self.fleet.clients(self.data.sizes().tolist())

    def fit(self, round_num: int, global_params: Params, client_ids: list[int],
            config: FitConfig) -> Updates:
        failed = self.fleet.failures(round_num, client_ids)
        ids, results, counts, losses = [], [], [], []
        for cid in client_ids:
            if cid in failed:
                continue
            x, y = self.data.client(cid)
            try:
                params, loss = self._train_one(cid, global_params, x, y, config, round_num)
            except ClientFailed as e:
                failed[cid] = str(e)
                continue
            ids.append(cid)
            results.append(params)
            counts.append(len(y))
            losses.append(loss)
        if not ids:
            return empty_updates(global_params, failed)
        updates = Updates.stack(ids, results, counts, losses)
        updates.metrics["failed"] = failed
        return updates

    def _train_one(self, cid: int, global_params: Params, x: torch.Tensor, y: torch.Tensor,
                   config: FitConfig, round_num: int) -> tuple[Params, float]:
        """One client's local training (subclasses change how: DP-SGD); ClientFailed skips it."""
        return train_client(self.model, global_params, x, y, config, round_num, cid)
