"""Ring all-reduce SGD as real worker processes over gRPC on loopback.

Ring all-reduce (Patarasuk & Yuan 2009): each step every worker computes its gradient, then runs
the reduce-scatter and all-gather of :func:`~.allreduce.ring_allreduce` for real, 2(n-1)
``Chunk`` RPCs of about D/n floats each to its ring successor; a received chunk waits in an inbox
keyed by (step, hop) until the worker's loop consumes it, so a fast worker one hop ahead never
blocks its successor's server thread. The finished chunks are copied, not re-added, in the
all-gather, so all workers end with bit-identical models.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import grpc
import numpy as np
import torch

from edgeweave.security import generate_token
from edgeweave.train.decentral.peer import (
    Mesh,
    PeerRunConfig,
    build_task,
    run_mesh,
    serve_loopback,
)
from edgeweave.train.decentral.real_run import RealRunResult, finish_run, worker_stack
from edgeweave.train.decentral.stack import NodeStack
from edgeweave.train.types import TrainError
from edgeweave.train.wire import peer_pb2, peer_pb2_grpc
from edgeweave.train.wire.auth import auth_metadata
from edgeweave.train.wire.messages import decode_like, params_to_msgs


def chunk_bounds(dim: int, n: int) -> list[tuple[int, int]]:
    """The ring's n chunks of a D-vector, as :func:`~.allreduce.ring_allreduce` cuts it."""
    sizes = [len(c) for c in np.array_split(np.arange(dim), n)]
    lo = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    return [(int(lo[c]), int(lo[c + 1])) for c in range(n)]



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


def _ring_main(node: int, cfg: PeerRunConfig, token: str, mesh: Mesh) -> None:
    torch.set_num_threads(1)
    worker = RingWorker(node, cfg, token)
    mesh.ports.put((node, worker.port))
    addresses = mesh.addrs.get(timeout=cfg.timeout_s)
    error = None
    try:
        worker.train(addresses, token)
    except Exception as e:  # reported to the launcher, which names the worker
        error = f"{type(e).__name__}: {e}"
    mesh.done.put((node, error))
    mesh.stop.wait(cfg.timeout_s)
    worker.server.stop(grace=1).wait()


def run_ring(cfg: PeerRunConfig, token: str | None = None) -> RealRunResult:
    """Ring all-reduce SGD with ``cfg.n`` worker processes on loopback."""
    replies, wall = run_mesh(cfg, token or generate_token(), _ring_main, "ring all-reduce")
    stack = NodeStack(build_task(cfg), batch_size=cfg.batch_size, weight_decay=cfg.weight_decay)
    template = stack.unflatten(stack.init)
    models = [stack.flatten(decode_like(r.params, template, context=f"ring worker {r.node}"))
              for r in replies]
    spread = max(float((m - models[0]).abs().max()) for m in models)
    nodes = [{"node": r.node, "role": "worker", "steps": r.steps, "messages": r.pushes,
              "wire_bytes_sent": r.wire_bytes_sent, "payload_bytes_sent": r.payload_bytes_sent}
             for r in replies]
    return finish_run("allreduce-sgd", cfg, stack, models[0], wall, nodes,
                   {"max_model_spread": spread})
