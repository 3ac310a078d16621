"""The gateway's connections to its device workers: Setup, one Work stream each, failures.

Each worker gets one authenticated channel (token or mTLS, as every EdgeWeave peer) and one Work
stream: tasks go out through a queue the stream reads, answers come back on a reader thread,
which holds each result until it would have crossed the shared medium and then hands it to the
task's handler. The worker's hello marks it ready (it asks for work). A stream that breaks (the
device died), a worker that fails a task, or one that holds tasks and answers none of them for
``task_timeout_s`` (hung, or a peer that stalls on purpose) marks the worker gone; every task it
still held is handed back to the gateway at once, to run elsewhere.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from edgeweave.errors import EdgeWeaveError
from edgeweave.runtime import tensors
from edgeweave.runtime.cluster.medium import SharedMedium
from edgeweave.runtime.node import message_options
from edgeweave.runtime.proto import cluster_pb2 as cpb
from edgeweave.runtime.proto import cluster_pb2_grpc as cpb_grpc
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.security import ClientTLS, authed_channel

log = logging.getLogger("edgeweave.runtime.cluster")
_END = object()

#: (device, result, overhead ms) -> None, called on the device's reader thread after the
#: result's arrival; overhead: the task's round trip less its compute, its wait for the
#: medium and its result's hold (the RPC both ways, the worker's checks, decoding, encoding),
#: and less a fresh module's warm-up run (``warm_ms``: once per tile variant, not per task);
#: NaN when the task waited behind another on its device (its queueing is not overhead).
OnDone = Callable[[str, cpb.TaskResult, float], None]


@dataclass
class _Link:
    name: str
    target: str
    channel: grpc.Channel
    stub: cpb_grpc.ClusterWorkerStub
    outbox: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    held: dict[int, tuple[OnDone, Any, float, bool, str]] = field(default_factory=dict)
    alive: bool = True
    ready: bool = False
    call: Any = None
    progress: float = field(default_factory=time.monotonic)  # last answer, or first task held
    why: str = ""  # why the gateway cut it off


class WorkerPool:
    """``on_ready(device)`` when a worker asks for work; ``on_gone(device, lost, why)`` when it
    is gone, with the tags of the tasks it held (given to :meth:`send`)."""

    def __init__(self, medium: SharedMedium, gateway: str, on_ready: Callable[[str], None],
                 on_gone: Callable[[str, list[Any], str], None], token: str | None = None,
                 tls: ClientTLS | None = None, max_message_mb: float = 256.0,
                 task_timeout_s: float = 300.0):
        if not task_timeout_s > 0:
            raise EdgeWeaveError(f"task timeout must be positive seconds, got {task_timeout_s}")
        self.medium = medium
        self.task_timeout_s = task_timeout_s
        self.gateway = gateway
        self.on_ready, self.on_gone = on_ready, on_gone
        self.token, self.tls = token, tls
        self.options = message_options(max_message_mb)
        self._links: dict[str, _Link] = {}
        self._lock = threading.Lock()
        self._closing = False
        self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                          name="cluster-watchdog")
        self._watchdog.start()

    def _watch(self) -> None:
        """Cut off a worker that holds tasks and has answered none for ``task_timeout_s``: its
        Work stream is cancelled, so its reader hands the tasks back."""
        period = min(1.0, self.task_timeout_s / 4)
        while not self._closing:
            time.sleep(period)
            now = time.monotonic()
            with self._lock:
                stalled = [lk for lk in self._links.values() if lk.alive and lk.held
                           and now - lk.progress > self.task_timeout_s and not lk.why]
                for link in stalled:
                    link.why = (f"it answered none of its {len(link.held)} task(s) for "
                                f"{self.task_timeout_s:g} s")
            for link in stalled:
                if link.call is not None:
                    link.call.cancel()

    def connect(self, device: str, target: str, setup: Iterator[cpb.SetupRequest],
                timeout_s: float = 300.0) -> cpb.SetupReply:
        """Set the worker at ``target`` up as ``device`` and open its Work stream;
        EdgeWeaveError naming the device and the worker's reason if it refuses."""
        channel = authed_channel(target, token=self.token, tls=self.tls, options=self.options)
        stub = cpb_grpc.ClusterWorkerStub(channel)
        try:
            reply = stub.Setup(setup, timeout=timeout_s)
        except grpc.RpcError as e:
            channel.close()
            raise EdgeWeaveError(f"device {device} ({target}) refused the plan: "
                                 f"{e.code().name}: {e.details()}") from None
        link = _Link(device, target, channel, stub)
        with self._lock:
            old = self._links.get(device)
            if old is not None and old.alive:
                channel.close()
                raise EdgeWeaveError(f"device {device} is already connected ({old.target})")
            self._links[device] = link
        link.call = stub.Work(iter(link.outbox.get, _END))
        threading.Thread(target=self._read, args=(link,), daemon=True,
                         name=f"cluster-{device}").start()
        return reply

    def _read(self, link: _Link) -> None:
        why = "its Work stream ended"
        try:
            for msg in link.call:
                if msg.hello:
                    link.ready = True
                    self.on_ready(link.name)
                    continue
                with self._lock:
                    held = link.held.pop(msg.task, None)
                    link.progress = time.monotonic()
                if held is None:
                    continue  # not a task we sent: ignore it
                if msg.error_code:
                    why = f"it failed task {msg.task}: {msg.error_code}: {msg.error[:200]}"
                    with self._lock:
                        link.held[msg.task] = held  # handed back with the others below
                    link.call.cancel()
                    break
                nbytes = tensors.payload_bytes([msg.output, *msg.shares])
                hold_ms = self.medium.receive(nbytes, link.name, held[4])
                trip_ms = (time.perf_counter() - held[2]) * 1000.0
                held[0](link.name, msg, float("nan") if held[3] else max(
                    0.0, trip_ms - hold_ms - msg.wait_ms - msg.warm_ms - msg.compute_ms))
        except grpc.RpcError as e:
            if link.why:
                why = link.why
            elif e.code() != grpc.StatusCode.CANCELLED or why == "its Work stream ended":
                why = f"{e.code().name}: {e.details()}"
        except Exception:  # a handler's bug must not leave tasks stranded on a dead link
            log.exception("cluster gateway: handling a result from %s failed", link.name)
            why = "the gateway failed to handle its result"
        with self._lock:
            link.alive = link.ready = False
            lost = [held[1] for held in link.held.values()]
            link.held.clear()
        link.channel.close()
        if self._closing:
            return
        log.info("device %s is gone (%s); %d task(s) to run elsewhere", link.name, why,
                 len(lost))
        self.on_gone(link.name, lost, why)

    def send(self, device: str, msg: cpb.Task, nbytes: int, src: str, on_done: OnDone,
             tag: Any, reply_to: str | None = None, not_before: float = 0.0) -> bool:
        """Put ``msg`` on the medium to ``device`` (``nbytes`` from ``src``; free when ``src``
        is the device itself; arriving no earlier than the monotonic ``not_before``); its
        result crosses back to ``reply_to`` (the gateway by default; free when that is the
        device). False if the device is gone."""
        with self._lock:
            link = self._links.get(device)
            if link is None or not link.alive:
                return False
            if not link.held:
                link.progress = time.monotonic()
            link.held[msg.task] = (on_done, tag, time.perf_counter(), bool(link.held),
                                   reply_to or self.gateway)
        self.medium.send(msg, nbytes, src, device, not_before)
        link.outbox.put(msg)
        return True

    def ready(self) -> list[str]:
        """Devices alive and asking for work, in the order they joined."""
        with self._lock:
            return [n for n, lk in self._links.items() if lk.alive and lk.ready]

    def alive(self) -> list[str]:
        with self._lock:
            return [n for n, lk in self._links.items() if lk.alive]

    def held(self, device: str) -> int:
        with self._lock:
            link = self._links.get(device)
            return 0 if link is None else len(link.held)

    def held_tags(self, device: str) -> list[Any]:
        """The tags of the tasks ``device`` holds now (what the caller sent with them), e.g.
        for a fault test to kill a device while it holds a given block's tile."""
        with self._lock:
            link = self._links.get(device)
            return [] if link is None else [held[1] for held in link.held.values()]

    def stats(self, devices: Sequence[str] | None = None, timeout_s: float = 10.0
              ) -> dict[str, dict[str, float]]:
        """Each (alive) worker's Stats: memory and work counters."""
        out = {}
        for name in devices or self.alive():
            link = self._links.get(name)
            if link is None or not link.alive:
                continue
            try:
                out[name] = dict(link.stub.Stats(pb.StatsRequest(), timeout=timeout_s).values)
            except grpc.RpcError:
                continue
        return out

    def close(self) -> None:
        with self._lock:
            self._closing = True
            links = list(self._links.values())
        for link in links:
            link.outbox.put(_END)
            if link.call is not None:
                link.call.cancel()
            link.channel.close()
