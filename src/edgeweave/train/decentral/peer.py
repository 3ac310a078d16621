"""Real decentralized training: GoSGD peers as separate processes gossiping over gRPC.

Each node is a process holding its own model and data shard and serving the ``Peer`` service of
``wire/peer.proto``. After each local step it halves its sum-weight and pushes (model, weight)
to one random neighbour of the peer graph (Blot et al. 2016); the receiving server thread merges
it under a lock while the node keeps training: nothing waits for anything, exactly the
asynchrony the simulation models. A push that fails (the neighbour is gone or overloaded) is
merged back into the sender, so the total weight, and with it the meaning of the weighted
average, is never lost. Every RPC carries a bearer token checked by
:class:`edgeweave.security.TokenAuthInterceptor`; an incoming model is checked against the
node's own names, dtypes and shapes and for NaN/Inf before it is decoded (the FL wire's
:func:`~edgeweave.train.wire.messages.decode_like`).

:func:`run_peers` starts n such processes on loopback ('spawn': no inherited torch threads or
locks), tells each the others' ports, waits until all have done their steps, then collects
every node's model and counters through the same authenticated ``Pull`` RPC. Every node trains
until ALL have done ``steps`` local steps (the fast ones do more; their counts are reported),
then all stop together and no push is left in flight when the models are collected.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import queue
import threading
import time
from concurrent import futures
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
import numpy as np
import torch

from edgeweave.rpc import server_options
from edgeweave.security import TokenAuthInterceptor, generate_token
from edgeweave.train.decentral.graphs import make_graph
from edgeweave.train.decentral.stack import NodeStack
from edgeweave.train.task import Task
from edgeweave.train.types import TrainError
from edgeweave.train.wire import peer_pb2, peer_pb2_grpc
from edgeweave.train.wire.auth import auth_metadata
from edgeweave.train.wire.messages import decode_like, params_to_msgs, payload_bytes

PUSH_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PeerRunConfig:
    """``problem``: "convex" (generated logistic regression) or "digits" (iid split, ``model``)."""

    n: int = 4
    problem: str = "convex"
    model: str = "mlp:64,64,10"
    graph: str = "ring"
    steps: int = 100
    lr: float = 0.1
    batch_size: int | None = 16
    weight_decay: float = 0.0
    seed: int = 0
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.n < 2:
            raise TrainError(f"peer run: need at least 2 peers, got {self.n}")
        if self.steps < 1 or not self.lr > 0 or not self.timeout_s > 0:
            raise TrainError(f"peer run: need steps >= 1, lr > 0, timeout_s > 0; got "
                             f"{self.steps}, {self.lr}, {self.timeout_s}")
        if self.problem not in ("convex", "digits"):
            raise TrainError(f"peer run: problem must be 'convex' or 'digits', got "
                             f"{self.problem!r}")


def build_task(cfg: PeerRunConfig) -> Task:
    """The same task in every process, from the config's seed."""
    if cfg.problem == "convex":
        from edgeweave.train.decentral.problems import convex_task

        return convex_task(cfg.n, seed=cfg.seed)
    from edgeweave.train.data import make_task

    return make_task("digits", "iid", cfg.n, cfg.model, seed=cfg.seed)


class PeerNode(peer_pb2_grpc.PeerServicer):
    """One node: its model (flat), sum-weight, counters and gRPC server."""

    def __init__(self, node: int, cfg: PeerRunConfig, token: str) -> None:
        self.node, self.cfg = node, cfg
        self.stack = NodeStack(build_task(cfg), batch_size=cfg.batch_size,
                               weight_decay=cfg.weight_decay, seed=cfg.seed * 1009 + node)
        self.template = self.stack.unflatten(self.stack.init)
        self.x = self.stack.init.clone()
        self.alpha = 1.0 / cfg.n
        self.lock = threading.Lock()
        self.steps = self.pushes = self.merged = 0
        self.wire_sent = self.payload_sent = 0
        self.done = False
        self.server, self.port = serve_loopback(self, token,
                                                peer_pb2_grpc.add_PeerServicer_to_server)

    # -- RPCs ---------------------------------------------------------------------------------
    def Push(self, request: peer_pb2.PushRequest, context: grpc.ServicerContext
             ) -> peer_pb2.PushReply:
        w = request.weight
        if not (math.isfinite(w) and 0 < w <= 1):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"peer {self.node}: push weight must be in (0, 1], got {w}")
        try:
            params = decode_like(request.params, self.template,
                                 context=f"push from peer {request.sender}")
        except TrainError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        incoming = self.stack.flatten(params)
        with self.lock:
            self.x = (self.alpha * self.x + w * incoming) / (self.alpha + w)
            self.alpha += w
            self.merged += 1
            return peer_pb2.PushReply(weight=self.alpha)

    def Pull(self, request: peer_pb2.PullRequest, context: grpc.ServicerContext
             ) -> peer_pb2.PullReply:
        with self.lock:
            x, a = self.x.clone(), self.alpha
            counters: dict[str, Any] = dict(
                steps=self.steps, pushes=self.pushes, merged=self.merged,
                wire_bytes_sent=self.wire_sent, payload_bytes_sent=self.payload_sent,
                done=self.done)
        return peer_pb2.PullReply(node=self.node, weight=a,
                                  params=params_to_msgs(self.stack.unflatten(x)), **counters)

    # -- training -----------------------------------------------------------------------------
    def train(self, addresses: list[str], token: str, reached: Any = None,
              halt: Any = None) -> None:
        """Local steps with a push after each. At least ``cfg.steps`` of them; with ``halt`` (an
        event) the node reports ``reached()`` at ``cfg.steps`` and goes on until ``halt`` is set,
        so that every node keeps training until all have done their steps. Otherwise the
        fastest nodes would stop first and the final steps of the weighted average would follow
        only the slow nodes' data, a bias that depends on scheduling."""
        nbrs = make_graph(self.cfg.graph, self.cfg.n, seed=self.cfg.seed).neighbours()[self.node]
        stubs = {j: peer_pb2_grpc.PeerStub(grpc.insecure_channel(addresses[j])) for j in nbrs}
        meta = auth_metadata(token)
        rng = np.random.default_rng([self.cfg.seed, self.node, 41])
        me = torch.tensor([self.node])
        step = 0
        while step < self.cfg.steps or (halt is not None and not halt.is_set()):
            step += 1
            if step == self.cfg.steps and reached is not None:
                reached()
            with self.lock:
                snapshot = self.x.clone()
            g, _ = self.stack.grads(snapshot.unsqueeze(0), me)
            with self.lock:
                self.x -= self.cfg.lr * g[0]
                self.steps = step
                self.alpha /= 2
                w, payload = self.alpha, self.x.clone()
            j = int(nbrs[rng.integers(len(nbrs))])
            req = peer_pb2.PushRequest(sender=self.node, weight=w, step=step,
                                       params=params_to_msgs(self.stack.unflatten(payload)))
            try:
                stubs[j].Push(req, metadata=meta, timeout=PUSH_TIMEOUT_S)
            except grpc.RpcError:
                with self.lock:  # keep the weight: merge the unsent half back
                    self.x = (self.alpha * self.x + w * payload) / (self.alpha + w)
                    self.alpha += w
                continue
            with self.lock:
                self.pushes += 1
                self.wire_sent += req.ByteSize()
                self.payload_sent += payload_bytes(req.params)
        with self.lock:
            self.done = True


@dataclass
class Mesh:
    """The queues and events between a launcher (:func:`run_mesh`) and its node processes:
    each node puts ``(node, port)`` on ``ports``, reads the address table from ``addrs``,
    puts ``(node, error or None)`` on ``done`` when it has done its steps (and, if the
    launcher halts the run, on ``stopped`` once it stopped training after ``halt``), then
    serves its model until ``stop``."""

    ports: Any
    addrs: Any
    done: Any
    stopped: Any
    halt: Any
    stop: Any


def _peer_main(node: int, cfg: PeerRunConfig, token: str, mesh: Mesh) -> None:
    torch.set_num_threads(1)
    peer = PeerNode(node, cfg, token)
    mesh.ports.put((node, peer.port))
    addresses = mesh.addrs.get(timeout=cfg.timeout_s)
    told = []

    def reached() -> None:
        told.append(True)
        mesh.done.put((node, None))

    error = None
    try:
        peer.train(addresses, token, reached, mesh.halt)
    except Exception as e:  # reported to the launcher, which names the node
        error = f"{type(e).__name__}: {e}"
    if not told:
        mesh.done.put((node, error))
    mesh.stopped.put((node, error))
    mesh.stop.wait(cfg.timeout_s)
    peer.server.stop(grace=1).wait()


@dataclass
class PeerRunResult:
    peers: list[dict[str, Any]]
    model: torch.Tensor
    weight_sum: float
    test_acc: float
    test_loss: float
    objective: float
    wall_s: float
    config: dict[str, Any] = field(default_factory=dict)


def gather(q: Any, n: int, deadline: float, what: str, procs: list) -> dict[int, Any]:
    got: dict[int, Any] = {}
    while len(got) < n:
        try:
            node, value = q.get(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            got[node] = value
        except queue.Empty:
            dead = [i for i, p in enumerate(procs) if p.exitcode not in (None, 0) and i not in got]
            if dead or time.monotonic() > deadline:
                missing = sorted(set(range(n)) - set(got))
                raise TrainError(f"peer run: peers {missing} did not report {what} "
                                 f"(exit codes {[procs[i].exitcode for i in missing]})") from None
    return got


def run_mesh(cfg: PeerRunConfig, token: str, target: Any, what: str, halt: bool = False
             ) -> tuple[list[peer_pb2.PullReply], float]:
    """Run ``cfg.n`` node processes of ``target(node, cfg, token, mesh)`` on loopback ('spawn':
    no inherited torch threads or locks): hand each the address table, wait until every node
    has done its steps (with ``halt``: then tell all to stop training and wait until each has),
    and pull every node's model and counters. Returns the replies and the wall time to the
    end of training; the nodes are reaped on every path, at once when the run fails."""
    ctx = mp.get_context("spawn")
    mesh = Mesh(ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Event())
    procs = [ctx.Process(target=target, args=(i, cfg, token, mesh), daemon=True)
             for i in range(cfg.n)]
    t0 = time.monotonic()
    deadline = t0 + cfg.timeout_s
    for p in procs:
        p.start()
    try:
        table = exchange_addresses(mesh.ports, mesh.addrs, procs, deadline)
        errors = {i: e for i, e in gather(mesh.done, cfg.n, deadline, "completion",
                                          procs).items() if e}
        if halt:
            mesh.halt.set()  # every node has done its steps: all stop training now
            errors.update({i: e for i, e in gather(mesh.stopped, cfg.n, deadline, "stopping",
                                                      procs).items() if e})
        if errors:
            raise TrainError(f"{what} run: nodes failed: {errors}")
        wall = time.monotonic() - t0  # no push is in flight now
        replies = [pull_node(table[i], token) for i in range(cfg.n)]
    except BaseException:
        mesh.stop.set()
        reap(procs, grace_s=0)
        raise
    mesh.stop.set()
    reap(procs)
    return replies, wall


def run_peers(cfg: PeerRunConfig, token: str | None = None) -> PeerRunResult:
    """Run ``cfg.n`` GoSGD peer processes on loopback and collect their models; the weights
    sum to 1 when collected (all halted, no push in flight)."""
    make_graph(cfg.graph, cfg.n, seed=cfg.seed)  # a bad graph fails here, not in n children
    replies, wall = run_mesh(cfg, token or generate_token(), _peer_main, "peer", halt=True)
    return _result(cfg, replies, wall)


def serve_loopback(servicer: Any, token: str, add: Any, workers: int = 4
                   ) -> tuple[grpc.Server, int]:
    """Start `servicer` (registered by its generated `add_*_to_server`) on a loopback port the
    OS picks, every call checked against the run's token; returns the server and its port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                         interceptors=[TokenAuthInterceptor(token)], options=server_options())
    add(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def exchange_addresses(ports: Any, addrs: Any, procs: list, deadline: float) -> list[str]:
    """Collect every node's port, then hand each node the full address table."""
    n = len(procs)
    port = gather(ports, n, deadline, "their port", procs)
    table = [f"127.0.0.1:{port[i]}" for i in range(n)]
    for _ in range(n):
        addrs.put(table)
    return table


def reap(procs: list, grace_s: float = 10.0) -> None:
    """Wait for the node processes to exit, `grace_s` in all; terminate the rest. A run that
    failed or was stopped (SIGTERM, Ctrl-C) passes 0: its nodes are not waited for."""
    deadline = time.monotonic() + grace_s
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(timeout=5)


def pull_node(address: str, token: str) -> peer_pb2.PullReply:
    with grpc.insecure_channel(address) as ch:
        return peer_pb2_grpc.PeerStub(ch).Pull(peer_pb2.PullRequest(sender=-1),
                                               metadata=auth_metadata(token), timeout=30)


def _result(cfg: PeerRunConfig, replies: list[peer_pb2.PullReply], wall: float) -> PeerRunResult:
    stack = NodeStack(build_task(cfg), batch_size=cfg.batch_size, weight_decay=cfg.weight_decay)
    template = stack.unflatten(stack.init)
    models = [stack.flatten(decode_like(r.params, template, context=f"peer {r.node}"))
              for r in replies]
    weights = torch.tensor([r.weight for r in replies], dtype=torch.float64)
    avg = (weights.unsqueeze(1) * torch.stack(models).double()).sum(0) / weights.sum()
    loss, acc = stack.evaluate(avg.float())
    peers = []
    for r, m in zip(replies, models, strict=True):
        _, node_acc = stack.evaluate(m)
        peers.append({"node": r.node, "weight": r.weight, "steps": r.steps, "pushes": r.pushes,
                      "merged": r.merged, "wire_bytes_sent": r.wire_bytes_sent,
                      "payload_bytes_sent": r.payload_bytes_sent, "test_acc": node_acc})
    return PeerRunResult(peers=peers, model=avg.float(), weight_sum=float(weights.sum()),
                         test_acc=acc, test_loss=loss, objective=stack.objective(avg.float()),
                         wall_s=wall, config=asdict(cfg))
