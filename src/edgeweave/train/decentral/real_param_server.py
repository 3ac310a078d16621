"""The parameter server, synchronous or SSP, with real worker processes over gRPC on loopback.

Parameter server (Li et al. 2014): the server runs in the launcher process (it evaluates the
final model there anyway) and serves ``PushGrad``/``PullModel``. Synchronous mode holds every
push until all n gradients of the version have arrived and averages them in worker order.
SSP mode (Ho et al. 2013) applies each gradient on arrival and records its staleness tau
(versions applied since that worker's pull); the bound is the rule of :mod:`.async_sgd`: worker
w's clock counts its applied pushes, and its pull is answered only while
``clock_w - min_u clock_u <= s``. A worker more than s steps ahead of the slowest waits inside
``PullModel``. The slowest worker never waits, so the run cannot deadlock.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import threading
import time
from typing import Any

import grpc
import numpy as np
import torch

from edgeweave.security import generate_token
from edgeweave.train.decentral.peer import PeerRunConfig, build_task, gather, reap, serve_loopback
from edgeweave.train.decentral.real_run import RealRunResult, finish_run, worker_stack
from edgeweave.train.decentral.stack import NodeStack
from edgeweave.train.types import TrainError
from edgeweave.train.wire import peer_pb2, peer_pb2_grpc
from edgeweave.train.wire.auth import auth_metadata
from edgeweave.train.wire.messages import decode_like, params_to_msgs, payload_bytes


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
    return finish_run(method, cfg, server.stack, model, wall, nodes, extra)


def _wait_s(limit_s: float, context: grpc.ServicerContext) -> float:
    """The server's own bound on a wait, shortened to the caller's deadline when it has one
    (a peer that hangs up early must not hold a server thread for the whole bound)."""
    remaining = context.time_remaining()
    return limit_s if remaining is None else max(0.0, min(limit_s, remaining))
