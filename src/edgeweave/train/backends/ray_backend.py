"""The ray backend: clients trained by a pool of Ray actors, locally or on a cluster.

Each actor holds the data shards of the clients assigned to it (client ``i`` lives on actor
``i % actors``) from the start, so a round ships only the global model (put once in the object
store and shared by every actor) and the client ids; the data never moves again. Actors run the
reference :func:`~edgeweave.train.local.train_client` one client after another, so the result
equals the sequential backend's. A dead actor is restarted by Ray (its shards come back from the
object store); the clients it was training fail that round with the reason and the round goes on.

On a cluster (``address``: ``"auto"``, ``"HOST:6379"`` or ``"ray://HOST:10001"``) the actors are
spread over the nodes (Ray's SPREAD placement), one per CPU of the whole cluster by default.
Training is a pure function of (model, shard, config, round, client id), so where an actor runs
does not change the model. The simulated drops (``drop_prob``) and per-client speeds are the
:class:`~edgeweave.train.backends.sequential.SimulatedFleet`'s, drawn on the driver exactly as
the sequential and vectorized backends draw them: a dropped client is never sent to an actor.

Ray moves Python objects between its own processes with its own serialiser; that is inside one
trusted cluster. Devices outside it use the grpc backend, whose wire never unpickles.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import torch

from edgeweave.errors import first_line
from edgeweave.train.backends.base import Backend
from edgeweave.train.backends.sequential import SimulatedFleet, empty_updates
from edgeweave.train.local import train_client
from edgeweave.train.task import Task
from edgeweave.train.types import ClientInfo, FitConfig, Params, TrainError, Updates

log = logging.getLogger(__name__)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise TrainError("ray backend: ray is not installed; pip install 'edgeweave[ray]' "
                         "(ray>=2.40)") from None
    return ray


class _ClientPool:
    """One actor: a model and the (x, y) shards of its clients."""

    def __init__(self, model_fn: Any, shards: dict[int, tuple[torch.Tensor, torch.Tensor]],
                 threads: int) -> None:
        torch.set_num_threads(threads)  # actors share the node's cores; do not oversubscribe
        self.model = model_fn()
        self.shards = shards

    def fit(self, round_num: int, global_params: Params, client_ids: list[int],
            config: FitConfig) -> list[tuple[int, Params | None, int, float, str | None]]:
        out: list[tuple[int, Params | None, int, float, str | None]] = []
        for cid in client_ids:
            x, y = self.shards[cid]
            try:
                params, loss = train_client(self.model, global_params, x, y, config, round_num,
                                            cid)
            except Exception as e:  # one client's failure must not lose the others' results
                out.append((cid, None, 0, 0.0, f"client {cid} failed: {type(e).__name__}: {e}"))
                continue
            out.append((cid, params, len(y), loss, None))
        return out

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())


class RayBackend(Backend):
    """Train the task's clients on Ray actors.

    Args:
        task: the task; its client data is split over the actors once.
        address: a Ray cluster (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``); None starts
            a local Ray.
        num_cpus: CPUs of the local Ray instance (ignored with ``address``).
        actors: pool size (default: one per CPU of the cluster, at most one per client).
        round_timeout_s: clients whose actor has not answered by then fail the round.
        drop_prob, seed, compute_s_per_epoch, upload_s: the simulated fleet, as for the
            sequential backend.
    """

    name = "ray"

    def __init__(self, task: Task, address: str | None = None, num_cpus: int = 2,
                 actors: int | None = None, round_timeout_s: float | None = None,
                 drop_prob: float = 0.0, seed: int = 0,
                 compute_s_per_epoch: Sequence[float] | None = None,
                 upload_s: Sequence[float] | None = None) -> None:
        if task.data is None:
            raise TrainError(f"ray backend: task {task.name!r} has no client data (the clients "
                             "hold it; use the grpc backend)")
        self.fleet = SimulatedFleet("ray", task.data.num_clients, drop_prob, seed,
                                    compute_s_per_epoch, upload_s)
        ray = self.ray = _ray()
        self.task, self.data = task, task.data
        self.round_timeout_s = round_timeout_s
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            _connect(ray, address, num_cpus)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        n = self.data.num_clients
        self.num_actors = max(1, min(n, actors or cpus))
        per_actor = min(1.0, cpus / self.num_actors)
        owner = [i % self.num_actors for i in range(n)]
        self._owner = owner
        # Local training is a pure function of its inputs, so re-running it on a restarted actor
        # gives exactly the result the dead one would have: retrying is safe.
        self._remote = ray.remote(max_restarts=3, max_task_retries=2)(_ClientPool)
        self._per_actor = per_actor
        self._shard_refs = []  # kept so a restarted actor can fetch its shards again
        for a in range(self.num_actors):
            shards = {i: tuple(t.clone() for t in self.data.client(i)) for i in range(n)
                      if owner[i] == a}
            self._shard_refs.append(ray.put(shards))
        self._actors = [self._start(a) for a in range(self.num_actors)]

    def _start(self, a: int) -> Any:
        # SPREAD: on a cluster, actors go to different nodes rather than filling the first one
        opts = self._remote.options(num_cpus=self._per_actor, scheduling_strategy="SPREAD")
        return opts.remote(self.task.model_fn, self._shard_refs[a], max(1, int(self._per_actor)))

    def available_clients(self) -> list[ClientInfo]:
        return self.fleet.clients(self.data.sizes().tolist())

    def nodes(self) -> list[str]:
        """The Ray node id each actor runs on (one entry per actor)."""
        return list(self.ray.get([a.node.remote() for a in self._actors]))

    def fit(self, round_num: int, global_params: Params, client_ids: list[int],
            config: FitConfig) -> Updates:
        ray = self.ray
        for cid in client_ids:
            if not 0 <= cid < self.data.num_clients:
                raise TrainError(f"ray backend: no client {cid} (have {self.data.num_clients})")
        failed = self.fleet.failures(round_num, client_ids)
        batches: dict[int, list[int]] = {}
        for cid in client_ids:
            if cid not in failed:
                batches.setdefault(self._owner[cid], []).append(cid)
        if not batches:
            return empty_updates(global_params, failed)
        params_ref = ray.put(global_params)
        refs = {self._actors[a].fit.remote(round_num, params_ref, ids, config): (a, ids)
                for a, ids in batches.items()}
        ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=self.round_timeout_s)
        results: dict[int, tuple[Params, int, float]] = {}
        for ref in late:
            ray.cancel(ref, force=False)
            for cid in refs[ref][1]:
                failed[cid] = (f"client {cid}: no result within round_timeout_s="
                               f"{self.round_timeout_s}")
        for ref in ready:
            a, ids = refs[ref]
            try:
                for cid, params, n, loss, err in ray.get(ref):
                    if err is None:
                        results[cid] = (params, n, loss)
                    else:
                        failed[cid] = err
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
                why = first_line(e)
                for cid in ids:
                    failed[cid] = f"client {cid}: its Ray actor failed: {why}"
                if isinstance(e, ray.exceptions.RayActorError):
                    # dead for good (restarts used up): a fresh actor serves these clients
                    log.warning("ray actor %d died (%s); starting a new one", a, why)
                    ray.kill(self._actors[a])
                    self._actors[a] = self._start(a)
        ids = [c for c in client_ids if c in results]
        if not ids:
            return empty_updates(global_params, failed)
        updates = Updates.stack(ids, [results[c][0] for c in ids], [results[c][1] for c in ids],
                                [results[c][2] for c in ids])
        updates.metrics["failed"] = failed
        return updates

    def close(self) -> None:
        for a in getattr(self, "_actors", []):
            self.ray.kill(a)
        self._actors = []
        if getattr(self, "_owns_ray", False):
            self.ray.shutdown()
            self._owns_ray = False


def _connect(ray: Any, address: str | None, num_cpus: int) -> None:
    """Start a local Ray (``address`` None) or join the cluster at ``address``; a cluster that
    cannot be reached is one error naming the address, not Ray's traceback."""
    t0 = time.perf_counter()
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address is None:
        kw["num_cpus"] = num_cpus
    else:
        _probe(address)
    try:
        ray.init(address=address or "local", **kw)  # "local": a new one, never a stray
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as e:
        if ray.is_initialized():
            ray.shutdown()
        raise TrainError(f"ray backend: cannot join the Ray cluster at address {address!r} "
                         f"({first_line(e)})") from None
    log.info("ray %s in %.1f s", "started" if address is None else f"joined at {address}",
             time.perf_counter() - t0)


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) that accepts no TCP connection fails here within
    ``timeout_s``: ray.init would retry it for minutes before giving up."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise TrainError(f"ray backend: cannot join the Ray cluster at address {address!r} "
                         f"(no connection to {host}:{port}: {first_line(e)})") from None

