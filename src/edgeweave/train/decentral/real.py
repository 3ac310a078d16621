"""Real-process versions of the server and ring methods: ring all-reduce SGD, the synchronous
parameter server and SSP asynchronous SGD over gRPC on loopback (GoSGD peers: :mod:`.peer`).

Each worker is a ``spawn`` process that rebuilds the task from the config's seed and draws its
minibatches from its own generator (seed ``cfg.seed * 1009 + node``, as a GoSGD peer does), so
every method sees the same batch stream per node and :func:`reference_sgd`, the mean-gradient
SGD computed in one process on those same batches, is exactly what a synchronous method must
produce: the tests hold the processes to it.

Ring all-reduce (Patarasuk & Yuan 2009): each step every worker computes its gradient, then runs
the reduce-scatter and all-gather of :func:`~.allreduce.ring_allreduce` for real, 2(n-1)
``Chunk`` RPCs of about D/n floats each to its ring successor; a received chunk waits in an inbox
keyed by (step, hop) until the worker's loop consumes it, so a fast worker one hop ahead never
blocks its successor's server thread. The finished chunks are copied, not re-added, in the
all-gather, so all workers end with bit-identical models.

Parameter server (Li et al. 2014): the server runs in the launcher process (it evaluates the
final model there anyway) and serves ``PushGrad``/``PullModel``. Synchronous mode holds every
push until all n gradients of the version have arrived and averages them in worker order.
SSP mode (Ho et al. 2013) applies each gradient on arrival and records its staleness tau
(versions applied since that worker's pull); the bound is the rule of :mod:`.async_sgd`: worker
w's clock counts its applied pushes, and its pull is answered only while
``clock_w - min_u clock_u <= s``. A worker more than s steps ahead of the slowest waits inside
``PullModel``. The slowest worker never waits, so the run cannot deadlock.

Bytes are the serialized sizes (``ByteSize()``) of every request and reply a node sends: the
real wire load, protobuf framing included (gRPC/HTTP2 headers are not counted).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
import numpy as np
import torch

from edgeweave.security import generate_token
from edgeweave.train.decentral.peer import (
    PeerRunConfig,
    build_task,
    exchange_addresses,
    gather,
    pull_node,
    reap,
    run_peers,
    serve_loopback,
)
from edgeweave.train.decentral.stack import NodeStack
from edgeweave.train.types import TrainError
from edgeweave.train.wire import peer_pb2, peer_pb2_grpc
from edgeweave.train.wire.auth import auth_metadata
from edgeweave.train.wire.messages import decode_like, params_to_msgs, payload_bytes

#: methods with a real-process version (names as in :data:`.methods.METHODS`)
REAL_METHODS = {
    "gosgd": "GoSGD peers pushing models to random neighbours",
    "allreduce-sgd": "synchronous SGD, ring all-reduce of the gradients between the workers",
    "param-server": "synchronous SGD through a parameter server",
    "ssp": "asynchronous parameter-server SGD with bounded staleness (SSP)",
    "ssp-sa": "as ssp, with each step divided by its gradient's staleness",
}


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


def chunk_bounds(dim: int, n: int) -> list[tuple[int, int]]:
    """The ring's n chunks of a D-vector, as :func:`~.allreduce.ring_allreduce` cuts it."""
    sizes = [len(c) for c in np.array_split(np.arange(dim), n)]
    lo = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    return [(int(lo[c]), int(lo[c + 1])) for c in range(n)]


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


# -- ring all-reduce ------------------------------------------------------------------------------
class RingWorker(peer_pb2_grpc.PeerServicer):
    """One ring worker: its model, inbox of chunks from its predecessor and counters."""

    def __init__(self, node: int, cfg: PeerRunConfig, token: str) -> None:
        self.node, self.cfg = node, cfg
        self.stack = worker_stack(cfg, node)
        self.x = self.stack.init.clone()
        self.bounds = chunk_bounds(self.stack.dim, cfg.n)
        self.inbox: dict[tuple[int, int], tuple[int, torch.Tensor]] = {}
        self.cv = threading.Condition()
        self.steps = self.sent = self.received = 0
        self.wire_sent = self.wire_received = self.payload_sent = 0
        self.done = False
        self.server, self.port = serve_loopback(self, token,
                                                peer_pb2_grpc.add_PeerServicer_to_server)

    def Chunk(self, request: peer_pb2.ChunkRequest, context: grpc.ServicerContext
              ) -> peer_pb2.ChunkReply:
        n = self.cfg.n
        if request.sender != (self.node - 1) % n:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"ring worker {self.node}: chunks come from worker "
                          f"{(self.node - 1) % n}, not {request.sender}")
        if not (0 <= request.chunk < n and 0 <= request.hop < 2 * (n - 1)):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"ring worker {self.node}: chunk {request.chunk} / hop {request.hop} "
                          f"out of range for {n} workers")
        lo, hi = self.bounds[request.chunk]
        try:
            part = decode_like([request.part], OrderedDict(chunk=torch.zeros(hi - lo)),
                               context=f"chunk from worker {request.sender}")["chunk"]
        except TrainError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        key = (request.round, request.hop)
        with self.cv:
            # in a synchronous ring a predecessor's chunk is for the step we are in (steps + 1)
            # or, once it has finished that step, the next one: a claim of any other step
            # would only fill the inbox
            if not self.steps + 1 <= request.round <= self.steps + 2:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"ring worker {self.node}: a chunk for step {request.round}, but "
                              f"this worker is at step {self.steps}")
            if key in self.inbox:
                context.abort(grpc.StatusCode.ALREADY_EXISTS,
                              f"ring worker {self.node}: step {key[0]} hop {key[1]} sent twice")
            self.inbox[key] = (request.chunk, part)
            self.received += 1
            self.wire_received += request.ByteSize()
            self.cv.notify_all()
        return peer_pb2.ChunkReply()

    def Pull(self, request: peer_pb2.PullRequest, context: grpc.ServicerContext
             ) -> peer_pb2.PullReply:
        with self.cv:
            x = self.x.clone()
            counters: dict[str, Any] = dict(
                steps=self.steps, pushes=self.sent, merged=self.received,
                wire_bytes_sent=self.wire_sent, payload_bytes_sent=self.payload_sent,
                done=self.done)
        return peer_pb2.PullReply(node=self.node, weight=1.0 / self.cfg.n,
                                  params=params_to_msgs(self.stack.unflatten(x)), **counters)

    def _send(self, stub: Any, meta: Any, rnd: int, hop: int, chunk: int,
              part: torch.Tensor) -> None:
        req = peer_pb2.ChunkRequest(sender=self.node, round=rnd, hop=hop, chunk=chunk,
                                    part=params_to_msgs(OrderedDict(chunk=part))[0])
        stub.Chunk(req, metadata=meta, timeout=self.cfg.timeout_s)
        with self.cv:
            self.sent += 1
            self.wire_sent += req.ByteSize()
            self.payload_sent += len(req.part.data)

    def _take(self, rnd: int, hop: int, chunk: int) -> torch.Tensor:
        with self.cv:
            if not self.cv.wait_for(lambda: (rnd, hop) in self.inbox, self.cfg.timeout_s):
                raise TrainError(f"ring worker {self.node}: no chunk from worker "
                                 f"{(self.node - 1) % self.cfg.n} for step {rnd} hop {hop} "
                                 f"within {self.cfg.timeout_s} s")
            got, part = self.inbox.pop((rnd, hop))
        if got != chunk:
            raise TrainError(f"ring worker {self.node}: step {rnd} hop {hop} carried chunk "
                             f"{got}, expected {chunk}")
        return part

    def allreduce(self, g: torch.Tensor, rnd: int, stub: Any, meta: Any) -> torch.Tensor:
        """The mean over the ring of every worker's ``g``."""
        n, i = self.cfg.n, self.node
        parts = [g[lo:hi].clone() for lo, hi in self.bounds]
        for s in range(n - 1):  # reduce-scatter: afterwards chunk (i + 1) mod n is complete here
            self._send(stub, meta, rnd, s, (i - s) % n, parts[(i - s) % n])
            parts[(i - 1 - s) % n] += self._take(rnd, s, (i - 1 - s) % n)
        for s in range(n - 1):  # all-gather: pass the finished chunks on
            self._send(stub, meta, rnd, n - 1 + s, (i + 1 - s) % n, parts[(i + 1 - s) % n])
            parts[(i - s) % n] = self._take(rnd, n - 1 + s, (i - s) % n)
        return torch.cat(parts) / n

    def train(self, addresses: list[str], token: str) -> None:
        succ = peer_pb2_grpc.PeerStub(grpc.insecure_channel(addresses[(self.node + 1)
                                                                      % self.cfg.n]))
        meta = auth_metadata(token)
        me = torch.tensor([self.node])
        for step in range(1, self.cfg.steps + 1):
            g, _ = self.stack.grads(self.x.unsqueeze(0), me)
            mean = self.allreduce(g[0], step, succ, meta)
            with self.cv:
                self.x = self.x - self.cfg.lr * mean
                self.steps = step
        with self.cv:
            self.done = True


def _ring_main(node: int, cfg: PeerRunConfig, token: str, ports: Any, addrs: Any, done: Any,
               stop: Any) -> None:
    torch.set_num_threads(1)
    worker = RingWorker(node, cfg, token)
    ports.put((node, worker.port))
    addresses = addrs.get(timeout=cfg.timeout_s)
    error = None
    try:
        worker.train(addresses, token)
    except Exception as e:  # reported to the launcher, which names the worker
        error = f"{type(e).__name__}: {e}"
    done.put((node, error))
    stop.wait(cfg.timeout_s)
    worker.server.stop(grace=1).wait()


def run_ring(cfg: PeerRunConfig, token: str | None = None) -> RealRunResult:
    """Ring all-reduce SGD with ``cfg.n`` worker processes on loopback."""
    token = token or generate_token()
    ctx = mp.get_context("spawn")
    ports, addrs, done, stop = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_ring_main, args=(i, cfg, token, ports, addrs, done, stop),
                         daemon=True) for i in range(cfg.n)]
    t0 = time.monotonic()
    deadline = t0 + cfg.timeout_s
    for p in procs:
        p.start()
    try:
        table = exchange_addresses(ports, addrs, procs, deadline)
        errors = {i: e for i, e in gather(done, cfg.n, deadline, "completion", procs).items()
                  if e}
        if errors:
            raise TrainError(f"ring all-reduce run: workers failed: {errors}")
        wall = time.monotonic() - t0
        replies = [pull_node(table[i], token) for i in range(cfg.n)]
    except BaseException:
        stop.set()
        reap(procs, grace_s=0)
        raise
    stop.set()
    reap(procs)
    stack = NodeStack(build_task(cfg), batch_size=cfg.batch_size, weight_decay=cfg.weight_decay)
    template = stack.unflatten(stack.init)
    models = [stack.flatten(decode_like(r.params, template, context=f"ring worker {r.node}"))
              for r in replies]
    spread = max(float((m - models[0]).abs().max()) for m in models)
    nodes = [{"node": r.node, "role": "worker", "steps": r.steps, "messages": r.pushes,
              "wire_bytes_sent": r.wire_bytes_sent, "payload_bytes_sent": r.payload_bytes_sent}
             for r in replies]
    return _finish("allreduce-sgd", cfg, stack, models[0], wall, nodes,
                   {"max_model_spread": spread})


# -- parameter server -----------------------------------------------------------------------------
class ParamServerNode(peer_pb2_grpc.ParamServerServicer):
    """The server: the model, its version, every worker's clock, and the staleness record.
    ``staleness=None`` is the synchronous server; a number s (or ``math.inf``) is SSP."""

    def __init__(self, cfg: PeerRunConfig, token: str, staleness: float | None = None,
                 staleness_lr: bool = False) -> None:
        if staleness is not None and not staleness >= 0:
            raise TrainError(f"parameter server: the staleness bound must be >= 0, got "
                             f"{staleness}")
        self.cfg, self.n, self.s, self.staleness_lr = cfg, cfg.n, staleness, staleness_lr
        self.stack = NodeStack(build_task(cfg), batch_size=cfg.batch_size,
                               weight_decay=cfg.weight_decay)
        self.template = self.stack.unflatten(self.stack.init)
        self.x = self.stack.init.clone()
        self.version = 0
        self.clock = np.zeros(cfg.n, dtype=np.int64)
        self.pending: dict[int, torch.Tensor] = {}
        self.cv = threading.Condition()
        self.taus: list[int] = []
        self.gaps: list[int] = []
        self.waits = 0
        self.wire_sent = self.wire_received = self.payload_sent = 0
        self.server, self.port = serve_loopback(
            self, token, peer_pb2_grpc.add_ParamServerServicer_to_server, workers=cfg.n + 4)

    def _worker(self, w: int, context: grpc.ServicerContext) -> None:
        if not 0 <= w < self.n:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"parameter server: worker must be in [0, {self.n}), got {w}")

    def PushGrad(self, request: peer_pb2.GradRequest, context: grpc.ServicerContext
                 ) -> peer_pb2.GradReply:
        w = request.worker
        self._worker(w, context)
        try:
            g = self.stack.flatten(decode_like(request.grad, self.template,
                                               context=f"gradient from worker {w}"))
        except TrainError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        with self.cv:
            self.wire_received += request.ByteSize()
            tau = self.version - request.read_version
            if not 0 <= request.read_version <= self.version:  # a peer's claim: checked
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"parameter server: worker {w} read version "
                              f"{request.read_version}; expected 0..{self.version} (the "
                              f"server's current version)")
            if self.s is None:  # synchronous: wait for all n gradients of this version
                if tau != 0 or w in self.pending:
                    context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                  f"parameter server: worker {w} pushed for version "
                                  f"{request.read_version} twice or late (now {self.version})")
                v = self.version
                self.pending[w] = g
                if len(self.pending) == self.n:
                    mean = torch.stack([self.pending[u] for u in range(self.n)]).mean(0)
                    self.x = self.x - self.cfg.lr * mean
                    self.version += 1
                    self.pending.clear()
                    self.cv.notify_all()
                elif not self.cv.wait_for(lambda: self.version > v,
                                          _wait_s(self.cfg.timeout_s, context)):
                    context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                  f"parameter server: not all {self.n} gradients of version "
                                  f"{v} arrived within {self.cfg.timeout_s} s")
            else:  # SSP: apply on arrival
                lr = self.cfg.lr / max(1, tau) if self.staleness_lr else self.cfg.lr
                self.x = self.x - lr * g
                self.version += 1
            self.taus.append(tau)
            self.clock[w] += 1
            self.cv.notify_all()
            reply = peer_pb2.GradReply(version=self.version, staleness=tau)
            self.wire_sent += reply.ByteSize()
        return reply

    def PullModel(self, request: peer_pb2.ModelRequest, context: grpc.ServicerContext
                  ) -> peer_pb2.ModelReply:
        w = request.worker
        self._worker(w, context)
        with self.cv:
            if request.clock != self.clock[w]:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"parameter server: worker {w} says clock {request.clock}, the "
                              f"server counted {int(self.clock[w])} pushes")
            if self.s is not None:
                def ok() -> bool:
                    return bool(self.clock[w] - self.clock.min() <= self.s)

                if not ok():
                    self.waits += 1
                    if not self.cv.wait_for(ok, self.cfg.timeout_s):
                        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                      f"parameter server: worker {w} waited over "
                                      f"{self.cfg.timeout_s} s for the slowest worker")
                self.gaps.append(int(self.clock[w] - self.clock.min()))
            x, v = self.x.clone(), self.version
        reply = peer_pb2.ModelReply(version=v, params=params_to_msgs(self.stack.unflatten(x)))
        with self.cv:
            self.wire_sent += reply.ByteSize()
            self.payload_sent += payload_bytes(reply.params)
        return reply


def _ps_worker_main(node: int, cfg: PeerRunConfig, token: str, address: str, done: Any) -> None:
    torch.set_num_threads(1)
    try:
        stack = worker_stack(cfg, node)
        template = stack.unflatten(stack.init)
        meta = auth_metadata(token)
        me = torch.tensor([node])
        sent = received = payload = 0
        with grpc.insecure_channel(address) as ch:
            stub = peer_pb2_grpc.ParamServerStub(ch)
            for step in range(cfg.steps):
                rep = stub.PullModel(peer_pb2.ModelRequest(worker=node, clock=step),
                                     metadata=meta, timeout=cfg.timeout_s)
                x = stack.flatten(decode_like(rep.params, template, context="server model"))
                g, _ = stack.grads(x.unsqueeze(0), me)
                req = peer_pb2.GradRequest(worker=node, read_version=rep.version,
                                           grad=params_to_msgs(stack.unflatten(g[0])))
                ack = stub.PushGrad(req, metadata=meta, timeout=cfg.timeout_s)
                sent += req.ByteSize()
                payload += payload_bytes(req.grad)
                received += rep.ByteSize() + ack.ByteSize()
        done.put((node, {"node": node, "role": "worker", "steps": cfg.steps,
                         "wire_bytes_sent": sent, "wire_bytes_received": received,
                         "payload_bytes_sent": payload}))
    except Exception as e:  # reported to the launcher, which names the worker
        done.put((node, f"{type(e).__name__}: {e}"))


def run_param_server(cfg: PeerRunConfig, staleness: float | None = None,
                     staleness_lr: bool = False, token: str | None = None) -> RealRunResult:
    """A parameter server here and ``cfg.n`` worker processes; ``staleness`` None: synchronous,
    else SSP with that bound."""
    token = token or generate_token()
    server = ParamServerNode(cfg, token, staleness, staleness_lr)
    ctx = mp.get_context("spawn")
    done = ctx.Queue()
    address = f"127.0.0.1:{server.port}"
    procs = [ctx.Process(target=_ps_worker_main, args=(i, cfg, token, address, done),
                         daemon=True) for i in range(cfg.n)]
    t0 = time.monotonic()
    try:
        for p in procs:
            p.start()
        got = gather(done, cfg.n, t0 + cfg.timeout_s, "completion", procs)
        wall = time.monotonic() - t0
        errors = {i: v for i, v in got.items() if isinstance(v, str)}
        if errors:
            raise TrainError(f"parameter-server run: workers failed: {errors}")
    except BaseException:
        reap(procs, grace_s=0)
        server.server.stop(grace=0).wait()
        raise
    reap(procs)
    server.server.stop(grace=1).wait()
    with server.cv:
        model = server.x.clone()
        nodes = [got[i] for i in range(cfg.n)]
        nodes.append({"node": cfg.n, "role": "server", "steps": server.version,
                      "wire_bytes_sent": server.wire_sent,
                      "wire_bytes_received": server.wire_received,
                      "payload_bytes_sent": server.payload_sent})
        extra: dict[str, Any] = {"version": server.version,
                                 "mean_staleness": float(np.mean(server.taus)),
                                 "max_staleness": int(max(server.taus))}
        if staleness is not None:
            extra.update(bound=None if math.isinf(staleness) else int(staleness),
                         max_clock_gap=int(max(server.gaps)), waits=server.waits,
                         staleness=list(server.taus))
    method = "param-server" if staleness is None else ("ssp-sa" if staleness_lr else "ssp")
    return _finish(method, cfg, server.stack, model, wall, nodes, extra)


def _finish(method: str, cfg: PeerRunConfig, stack: NodeStack, model: torch.Tensor, wall: float,
            nodes: list[dict[str, Any]], extra: dict[str, Any]) -> RealRunResult:
    loss, acc = stack.evaluate(model)
    return RealRunResult(method=method, model=model, test_acc=acc, test_loss=loss,
                         objective=stack.objective(model), wall_s=wall, nodes=nodes, extra=extra,
                         config=asdict(cfg))


def run_real(method: str, cfg: PeerRunConfig, staleness: float = 4,
             token: str | None = None) -> RealRunResult:
    """Run ``method`` (a key of :data:`REAL_METHODS`) as real processes on loopback; the
    staleness bound is for ``ssp``/``ssp-sa`` (the default of :func:`.methods.run_method`)."""
    if method == "gosgd":
        res = run_peers(cfg, token=token)
        nodes = [{"node": p["node"], "role": "peer", "steps": p["steps"],
                  "wire_bytes_sent": p["wire_bytes_sent"],
                  "payload_bytes_sent": p["payload_bytes_sent"]} for p in res.peers]
        return RealRunResult(method=method, model=res.model, test_acc=res.test_acc,
                             test_loss=res.test_loss, objective=res.objective, wall_s=res.wall_s,
                             nodes=nodes, extra={"weight_sum": res.weight_sum}, config=res.config)
    if method == "allreduce-sgd":
        return run_ring(cfg, token=token)
    if method == "param-server":
        return run_param_server(cfg, token=token)
    if method in ("ssp", "ssp-sa"):
        return run_param_server(cfg, staleness=staleness, staleness_lr=method == "ssp-sa",
                                token=token)
    raise TrainError(f"real-process method {method!r} is unknown; expected one of "
                     f"{', '.join(REAL_METHODS)}")


def _wait_s(limit_s: float, context: grpc.ServicerContext) -> float:
    """The server's own bound on a wait, shortened to the caller's deadline when it has one
    (a peer that hangs up early must not hold a server thread for the whole bound)."""
    remaining = context.time_remaining()
    return limit_s if remaining is None else max(0.0, min(limit_s, remaining))
