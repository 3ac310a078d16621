"""A cluster device worker: one process per emulated device, serving gRPC (ClusterWorker).

``Setup`` hands it the plan's partition as plain data plus the weights of the layers it runs
(runtime.cluster.blueprint); it builds everything itself (:mod:`.setup`) from its own trusted
registry (:class:`~edgeweave.runtime.models.TrustedModels`: never a file a peer names) and
refuses a plan whose tile regions differ from its own. ``Work`` is one stream per gateway: the
worker says hello, then answers each task in order (a hello or a result is the idle device
asking for its next task under work stealing). A peer may be hostile even with a valid token, so
everything it claims is checked before any work: the task's tile and reused neighbours, every
tensor's codec, dtype and shape (against what this worker expects, before a byte is decoded),
the arrival stamp (bounded wait), the number of tasks waiting (bounded) and the Setup's size and
duration.

Compute is dilated to emulate the device (``--dilation``, from its hardware profile vs this
host): a task is answered when its thread-CPU time x the dilation has passed. Several workers
share this host's cores, so the stretch sleeps instead of spinning
(:mod:`edgeweave.runtime.dilation`): K emulated devices need the sum of 1/dilation of a core
(0.6 of one for four rpi4 and two rpi3 on a 66 GFLOP/s host), not K cores. A task whose compute
waited for a core longer than the stretch ran slower than the device would: it is counted in
``Stats`` (``overrun_tasks``), as is the time other processes took the core (``core_wait_ms``).
``Stats`` reports the process's memory: RSS when it
started, after the last Setup (weights loaded), now, and its peak since that Setup (the peak
less the RSS after Setup is what the device's tasks took).

    python -m edgeweave.runtime.cluster.worker --name pi4-1 --token-file T [--dilation 9.1]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import queue
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import torch

from edgeweave.codec import CodecError
from edgeweave.errors import EdgeWeaveError, GraphError
from edgeweave.heap import keep_heap
from edgeweave.rpc import RateLimitedLog
from edgeweave.runtime import dilation, tensors
from edgeweave.runtime.cluster.executors import TileExecutor, TileStages
from edgeweave.runtime.cluster.layer_exec import LayerExecutor
from edgeweave.runtime.cluster.setup import build_executor, invalid
from edgeweave.runtime.flight import arrive
from edgeweave.runtime.models import TrustedModels
from edgeweave.runtime.node import (
    ServeOptions,
    add_tolerant_service,
    build_server,
    log_to_stderr,
    serve_forever,
    warn_plaintext,
)
from edgeweave.runtime.proto import cluster_pb2 as cpb
from edgeweave.runtime.proto import cluster_pb2_grpc as cpb_grpc
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.requests import Malformed, Refused
from edgeweave.security import load_token

log = logging.getLogger("edgeweave.runtime.cluster")
MB = 1 << 20
_END = object()


@dataclass
class WorkerConfig:
    name: str
    dilation: float = 1.0
    threads: int = 1
    models: tuple[str, ...] = ()
    max_setup_mb: float = 2048.0  # the weights one Setup may upload
    max_setup_s: float = 900.0  # the longest a Setup stream may run
    max_arrival_wait_s: float = 30.0  # the longest a task's arrival stamp may hold it
    max_queue: int = 256  # tasks one Work stream may have waiting
    cache_dir: str | None = None
    spin: bool = False  # busy-wait the dilation (one device per host only)
    role: str = "worker"
    next_target: str | None = None

    @property
    def workers(self) -> int:
        """Server threads: one Work stream and its reader, a Setup, Health/Stats, spares."""
        return 8


def _rss_mb(key: str) -> float:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return float("nan")
    match = re.search(rf"{key}:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else float("nan")


def _reset_peak() -> None:
    """Start the kernel's peak-RSS counter afresh (Linux; elsewhere the peak keeps counting)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


class WorkerService(cpb_grpc.ClusterWorkerServicer):
    def __init__(self, config: WorkerConfig):
        self.cfg = config
        self.models = TrustedModels(config.models)
        self.executor: TileStages | LayerExecutor | None = None
        self.digest = ""
        self._setup_lock = threading.Lock()
        self._work = threading.BoundedSemaphore(1)
        self._rejections = RateLimitedLog(log)
        self.stats = {"base_rss_mb": _rss_mb("VmRSS"), "tasks": 0.0, "compute_ms": 0.0,
                      "setup_ms": 0.0, "weights_mb": 0.0, "refused": 0.0,
                      "overrun_tasks": 0.0, "core_wait_ms": 0.0}
        if config.cache_dir:
            self.cache_dir = Path(config.cache_dir)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"edgeweave-{config.name}-")
            self.cache_dir = Path(self._tmp.name)
        torch.set_num_threads(config.threads)

    def note(self, r: Refused, context: grpc.ServicerContext) -> None:
        self.stats["refused"] += 1
        self._rejections.log(r.level, r.reason, "%s refused a request from %s: %s %s",
                             self.cfg.name, context.peer(), r.code.name, r.details[:300])

    # ---- Setup ----------------------------------------------------------------------------

    def Setup(self, request_iterator: Iterator[cpb.SetupRequest],
              context: grpc.ServicerContext) -> cpb.SetupReply:
        timer = threading.Timer(self.cfg.max_setup_s, context.cancel)  # a stalled uploader
        timer.daemon = True
        timer.start()
        try:
            if not self._setup_lock.acquire(blocking=False):
                raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{self.cfg.name} is already "
                              "being set up; try again when that Setup ends", "busy",
                              logging.INFO)
            try:
                start = time.perf_counter()
                self.executor = None  # the old plan's modules go before the new ones load
                executor, digest, nbytes = build_executor(
                    request_iterator, self.models, self.cache_dir, self.cfg.max_setup_mb)
                self.executor, self.digest = executor, digest
                gc.collect()
                self.stats.update(setup_ms=(time.perf_counter() - start) * 1000.0,
                                  weights_mb=nbytes / MB, setup_rss_mb=_rss_mb("VmRSS"))
                _reset_peak()
                return cpb.SetupReply(digest=digest, tasks=executor.tasks,
                                      build_ms=self.stats["setup_ms"])
            finally:
                self._setup_lock.release()
        except Refused as r:
            self.note(r, context)
            context.abort(r.code, r.details)
            raise  # unreachable: abort raises
        except grpc.RpcError:  # the uploader broke the stream off
            context.abort(grpc.StatusCode.CANCELLED, "Setup stream broken off")
            raise
        finally:
            timer.cancel()

    # ---- Work -----------------------------------------------------------------------------

    def Work(self, request_iterator: Iterator[cpb.Task | Malformed],
             context: grpc.ServicerContext) -> Iterator[cpb.TaskResult]:
        executor = self.executor
        if executor is None:
            r = Refused(grpc.StatusCode.FAILED_PRECONDITION, f"{self.cfg.name} has no plan; "
                        "call Setup first", "no_setup", logging.INFO)
            self.note(r, context)
            context.abort(r.code, r.details)
            return
        if not self._work.acquire(blocking=False):
            r = Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{self.cfg.name} already serves a "
                        "Work stream (one gateway at a time)", "busy", logging.INFO)
            self.note(r, context)
            context.abort(r.code, r.details)
        inbox: queue.Queue = queue.Queue(self.cfg.max_queue)  # full: gRPC flow control waits

        def read() -> None:
            try:
                for msg in request_iterator:
                    inbox.put(msg)
            except Exception:  # the gateway went away
                pass
            finally:
                inbox.put(_END)

        threading.Thread(target=read, daemon=True, name="work-reader").start()
        try:
            yield cpb.TaskResult(hello=True)
            while True:
                msg = inbox.get()
                if msg is _END:
                    return
                yield self._task(executor, msg, context)
        finally:
            self._work.release()

    def _task(self, ex: TileStages | LayerExecutor, msg: cpb.Task | Malformed,
              context: grpc.ServicerContext) -> cpb.TaskResult:
        task_id = getattr(msg, "task", 0)
        try:
            if isinstance(msg, Malformed):
                raise msg.refusal()
            return self._run(ex, msg)
        except Refused as r:
            self.note(r, context)
            return cpb.TaskResult(task=task_id, error_code=r.code.name, error=r.details)
        except (GraphError, CodecError, ValueError, RuntimeError) as e:
            bad = invalid(f"task {task_id}: {str(e).splitlines()[0][:300]}", "bad_task")
            self.note(bad, context)
            return cpb.TaskResult(task=task_id, error_code=bad.code.name, error=bad.details)

    def _run(self, stages: TileStages | LayerExecutor, msg: cpb.Task) -> cpb.TaskResult:
        tensors.activation_codec(msg.return_codec)
        ex = stages.stage(msg.block) if isinstance(stages, TileStages) else stages
        if msg.crop.name != "crop" and not msg.resident:
            raise invalid(f"the task's crop is named {msg.crop.name[:40]!r}; expected 'crop'")
        if isinstance(ex, TileExecutor):
            if msg.resident or msg.keep or msg.back or msg.out_r0 or msg.out_r1:
                raise invalid(f"task {msg.task}: fused tiles keep no rows between tasks")
            tile = ex.tile(msg.tile, list(msg.reused_from))
            expected = ex.expected(tile)
        else:
            expected = ex.expected(msg)
        # resident rows: the halo pieces alone, the rest of the input was kept here
        messages = list(msg.pieces) if msg.resident else [msg.crop, *msg.pieces]
        unknown = [m.name for m in messages if m.name not in expected]
        if unknown:
            raise invalid(f"task {msg.task} carries {unknown[0][:80]!r}, which tile "
                           f"{msg.tile} does not reuse")
        tensors.check_declared(messages, expected.get, 0)  # codecs, dtypes, shapes, repeats
        if len(messages) != len(expected):
            missing = sorted(set(expected) - {m.name for m in messages})
            raise invalid(f"task {msg.task} lacks {', '.join(missing)[:200]}")
        wait = time.monotonic()
        arrive(msg, max_wait_s=self.cfg.max_arrival_wait_s)
        wait_ms = (time.monotonic() - wait) * 1000.0
        coding = dilation.start()  # the device's CPU decodes and encodes: dilated as compute
        values = tensors.decode(messages, expected.get, 0)
        decode_ms = dilation.finish(coding, self.cfg.dilation, spin=self.cfg.spin)
        # a module built and run once (per tile variant or step) before the clock
        if isinstance(ex, TileExecutor):
            warm_ms = ex.warm(tile, values)
        else:
            crop = ex.crop(msg, values)
            warm_ms = ex.warm(msg, crop)
        mark = dilation.start()
        if isinstance(ex, TileExecutor):
            out, shares = ex.run(tile, values)
        else:
            step = (msg.out_r0, msg.out_r1) if msg.out_r0 or msg.out_r1 else None
            out, shares = ex.run(msg.layer, msg.tile, crop, step), {}
        self._note_host(mark)
        compute_ms = dilation.finish(mark, self.cfg.dilation, spin=self.cfg.spin)
        reply = cpb.TaskResult(task=msg.task, compute_ms=compute_ms, wait_ms=wait_ms,
                               warm_ms=warm_ms, decode_ms=decode_ms)
        if isinstance(ex, LayerExecutor):
            out = ex.answer(msg, out)
        coding = dilation.start()
        reply.output.CopyFrom(tensors.encode({"output": out}, ["output"], msg.return_codec)[0])
        reply.shares.extend(tensors.encode(shares, list(shares), msg.return_codec))
        # set after the fact: the reply is serialised only when it is yielded
        reply.encode_ms = dilation.finish(coding, self.cfg.dilation, spin=self.cfg.spin)
        self.stats["tasks"] += 1  # answered: its result is encoded and on its way
        self.stats["compute_ms"] += compute_ms
        return reply

    def _note_host(self, mark: dilation.Mark) -> None:
        """Count a task this host could not emulate faithfully: its compute waited so long for
        a core that the wall time already passed the dilated target, so the device ran slower
        than its hardware (``overrun_tasks``; ``core_wait_ms``: wall minus CPU time, what the
        host's other processes took from the worker while it computed)."""
        wall_ms, cpu_ms = dilation.elapsed_ms(mark)
        self.stats["core_wait_ms"] += max(0.0, wall_ms - cpu_ms)
        if self.cfg.dilation > 1.0 and wall_ms > cpu_ms * self.cfg.dilation:
            self.stats["overrun_tasks"] += 1

    # ---- Health / Stats -------------------------------------------------------------------

    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext
               ) -> pb.HealthReply:
        ex = self.executor
        return pb.HealthReply(role="worker", status="serving" if ex else "waiting for Setup",
                              stages=0 if ex is None else ex.tasks)

    def Stats(self, request: pb.StatsRequest, context: grpc.ServicerContext) -> pb.StatsReply:
        return pb.StatsReply(values={**self.stats, "rss_mb": _rss_mb("VmRSS"),
                                     "peak_rss_mb": _rss_mb("VmHWM")})


def start_worker(config: WorkerConfig, opts: ServeOptions
                 ) -> tuple[grpc.Server, WorkerService, int]:
    """Build and start a worker's server; returns it, its service and the bound port."""
    service = WorkerService(config)
    server, port = build_server(opts, config.name, config.workers, lambda srv: (
        add_tolerant_service(service, srv, cpb_grpc.add_ClusterWorkerServicer_to_server,
                             ("Work",))))
    server.start()
    warn_plaintext(opts)
    return server, service, port


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m edgeweave.runtime.cluster.worker",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="device name in the cluster")
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--token-file", type=Path)
    ap.add_argument("--cert-dir", type=Path)
    ap.add_argument("--dilation", type=float, default=1.0,
                    help="stretch compute to emulate slower hardware (1-10000)")
    ap.add_argument("--model", action="append", default=[],
                    help="install a model file (path/to/net.py:factory; repeatable)")
    ap.add_argument("--max-setup-mb", type=float, default=2048.0)
    ap.add_argument("--max-message-mb", type=float, default=256.0)
    ap.add_argument("--grace-s", type=float, default=2.0)
    args = ap.parse_args(argv)
    if not 1.0 <= args.dilation <= 10000.0:
        raise SystemExit(f"--dilation {args.dilation}: expected 1 to 10000")
    log_to_stderr()
    keep_heap()
    try:
        token = load_token(args.token_file) if args.token_file else None
        config = WorkerConfig(args.name, dilation=args.dilation, models=tuple(args.model),
                              max_setup_mb=args.max_setup_mb)
        opts = ServeOptions(args.listen, token, args.cert_dir, None, args.max_message_mb,
                            args.grace_s)
        serve_forever(config, opts, start=start_worker)  # type: ignore[arg-type]
    except EdgeWeaveError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
