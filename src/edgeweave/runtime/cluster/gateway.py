"""The gateway of a fused-tile plan (DeepThings, Zhao et al. 2018): frames in, answers out.

Data sources (the gateway's device and any other cluster device producing frames) submit
frames; each frame's tiles become jobs for the scheduler (work stealing, DeepThings' centralized
work sharing, or the plan's static assignment, :mod:`~edgeweave.runtime.cluster.scheduler`),
which the gateway dispatches to idle device workers; it also routes each task's bytes as its
scheduler would (stealing: victim to thief; sharing: source to gateway to device;
:mod:`~edgeweave.runtime.cluster.routing`).
For each task it crops the frame by the tile's input region, cuts the reused halo
pieces from its :class:`~edgeweave.graph.tile_exec.ShareStore` (a level-1 tile dispatched before
all its neighbours finished reuses only theirs and computes the rest,
:func:`~edgeweave.graph.reuse.level1_tile`), and puts it on the shared medium. Results are
checked (shapes before decoding), kept, and stitched when a frame is complete; with several
fused blocks (DeeperThings) each block's tiles are stitched and the next block's tiles cut from
the stitched map and scheduled like the first's (runtime.cluster.stages); the rest of the
model then runs where the plan says (:mod:`~edgeweave.runtime.cluster.rest`), one frame at a
time, on the device the frame was gathered at, which runs no tile meanwhile. A frame is taken
once its source's queue has nothing a device could take: every tile of its first block handed
out or waiting for the neighbours whose halo it reuses (its future's ``taken``;
runtime.cluster.drive).

No frame is lost: a device that dies hands its unfinished tiles back to the scheduler and they
run on another device; with no device left the gateway computes them itself. A device that joins
late is set up and starts asking for work like the others.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import torch

from edgeweave.codec import CodecError
from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import Graph
from edgeweave.graph.tiles import Tile
from edgeweave.plan import Plan
from edgeweave.plan.medium_codecs import ratios
from edgeweave.runtime import dilation, tensors
from edgeweave.runtime.client import ClientOptions
from edgeweave.runtime.cluster.blueprint import (
    block_recipe,
    cluster_spec,
    module_weights,
    setup_stream,
)
from edgeweave.runtime.cluster.frames import Frame, FrameFuture, FrameResult, TaskTiming
from edgeweave.runtime.cluster.medium import SharedMedium
from edgeweave.runtime.cluster.pool import WorkerPool
from edgeweave.runtime.cluster.rest import RestLanes, RestRunner
from edgeweave.runtime.cluster.routing import TaskRoutes
from edgeweave.runtime.cluster.scheduler import Job, make_scheduler
from edgeweave.runtime.cluster.stages import GatewayStages
from edgeweave.runtime.proto import cluster_pb2 as cpb
from edgeweave.runtime.recipe import package
from edgeweave.security import ClientTLS

log = logging.getLogger("edgeweave.runtime.cluster")

#: Who computed a tile when no device worker was left.
GATEWAY_LOCAL = "gateway (local)"


__all__ = ["GATEWAY_LOCAL", "FrameResult", "TileGateway"]


class TileGateway:
    """``join(device, target)`` each worker, then ``submit(x, source)`` frames (futures of
    :class:`FrameResult`); ``close()`` at the end. ``graph`` holds the model's weights.
    ``time_scale`` > 1 is a slow-motion run (runtime.cluster.session): the medium is that much
    slower, and the caller multiplied every dilation by it. Results are gathered, and the rest
    runs, at the gateway, as the plan prices it and as DeepThings' gateway does (it merges
    every source's tiles and runs the remaining layers); ``gather_at_source`` makes work
    stealing gather a frame at its data source and run its rest there instead (not when the
    rest goes to the edge or cloud). ``dilations`` (device -> its dilation on this host) are
    each device's pace before its first task is measured (scheduler.Pace: who would finish a
    tile first) and the dilation of a rest run on a device other than the gateway."""

    def __init__(self, graph: Graph, plan: Plan, *, scheduler: str = "stealing",
                 prefetch: int = 0, token: str | None = None, tls: ClientTLS | None = None,
                 gateway_dilation: float = 1.0, edge_target: str | None = None,
                 rest_options: ClientOptions | None = None, spin: bool = False,
                 task_timeout_s: float = 300.0, time_scale: float = 1.0,
                 dilations: Mapping[str, float] | None = None,
                 gather_at_source: bool | None = None):
        part = plan.partition
        if part is None or part.method != "fused-tiles":
            raise EdgeWeaveError("the plan has no fused-tile partition (plan it with "
                                 "plan_cluster and method fused-tiles)")
        self.part = part
        self.gateway = part.gateway
        self.dilations = dict(dilations or {})
        self.input_ratio, result_ratio = ratios(graph, part.input_codec, part.result_codec)
        self.stages = GatewayStages(graph, part, self.input_ratio, result_ratio,
                                    self.dilations)
        self.block = self.stages.last
        self.digest = self.stages.digest
        self.sources_of = self.stages.sources_of
        self.assignment = self.stages.assignment
        self.first_tasks = len(self.stages.order(0))  # the first block's (Frame.hand)
        self.dilation, self.spin = gateway_dilation, spin
        self.medium = SharedMedium(part.medium.mbps, part.medium.rtt_ms, time_scale)
        self.pool = WorkerPool(self.medium, self.gateway, self._on_ready, self._on_gone,
                               token=token, tls=tls, task_timeout_s=task_timeout_s)
        self.cost = self.stages.cost
        self.rest = RestRunner(graph, plan, part.prefix_nodes, edge_target=edge_target,
                               token=token, tls=tls, dilation=gateway_dilation,
                               options=rest_options)
        # a rest's time on the device it runs on, measured (the plan's until one has run)
        self._rest_ms = float(part.predicted.get("rest_ms") or 0.0) * time_scale
        # a plan priced as stealing across frames in flight counts on every stealer's share,
        # and its gateway on the rests it owes the frames in flight (with one frame at a time
        # that frame's own rest, which cannot start before its tiles, kept the gateway from
        # the tiles the plan gave it)
        eager = part.scheduler == "stealing" and part.in_flight > 1
        self.scheduler = make_scheduler(
            scheduler, prefetch, self.dilations, self._transfer_ms, eager=eager,
            backlog=self._backlog_ms if eager and not self.rest.remote else None)
        self._graph, self._plan = graph, plan
        # stealing may gather a frame at its source, which runs the rest itself; not when the
        # rest goes to the edge or cloud (one client, the gateway's, deploys it)
        self.routes = TaskRoutes(part, self.stages, self.medium, self.input_ratio,
                                 central=scheduler == "sharing",  # tiles go via the gateway
                                 at_source=scheduler == "stealing" and not self.rest.remote
                                 and bool(gather_at_source))
        self.home = self.routes.home
        blocks = [x.block for x in self.stages.blocks]
        self.package = package(block_recipe(part.model, part.input_shape, blocks),
                               module_weights(graph, [n for b in blocks for n in b.names]))
        self._lock = threading.RLock()
        self._frames: dict[int, Frame] = {}
        self._ids = itertools.count()
        self._task_ids = itertools.count(1)
        self._local_running = False
        self._runners: dict[str, RestRunner] = {self.gateway: self.rest}
        self.rests = RestLanes(self._run_rest, self.pool.held, self._on_ready, self._answer)

    # ---- devices --------------------------------------------------------------------------

    def join(self, device: str, target: str) -> cpb.SetupReply:
        """Set up the worker at ``target`` as cluster device ``device``; it starts asking for
        work (a late joiner too)."""
        if device not in self.part.devices:
            raise EdgeWeaveError(f"device {device!r} is not in the plan's cluster "
                                 f"({', '.join(self.part.devices)})")
        spec = cluster_spec(self.part, device, self.digest)
        return self.pool.connect(device, target, setup_stream(spec, self.package))

    def _on_ready(self, device: str) -> None:
        with self._lock:
            self._pump()

    def _on_gone(self, device: str, lost: list[Any], why: str) -> None:
        with self._lock:
            live = self.pool.alive()
            self.scheduler.leave(device, live)
            again = []
            for frame_id, job in lost:
                frame = self._frames.get(frame_id)
                if frame is not None:
                    frame.running.discard(job.tile)
                if frame is not None and job.tile not in frame.outputs:
                    frame.rerun += 1
                    again.append(job)
            self.scheduler.requeue(again, live)
            self._pump()
        self.rests.wake()

    # ---- frames ---------------------------------------------------------------------------

    def submit(self, x: torch.Tensor, source: str | None = None) -> FrameFuture:
        """Queue a frame from data source ``source`` (a cluster device; the gateway by
        default); the future's result is a :class:`FrameResult`, its ``taken`` is set once
        every tile of its first fused block has been handed out or waits for its neighbours'
        halo (:meth:`_nothing_to_take`)."""
        source = source or self.gateway
        if source not in self.part.devices:
            raise EdgeWeaveError(f"data source {source!r} is not a device of the plan's "
                                 f"cluster ({', '.join(self.part.devices)})")
        want = tuple(self.part.input_shape)
        if tuple(x.shape) != want:
            raise EdgeWeaveError(f"frame has shape {list(x.shape)}; the plan takes {list(want)}")
        future = FrameFuture()
        with self._lock:
            frame = Frame(next(self._ids), source, x, self.stages.stores(), future)
            self._frames[frame.id] = frame
            if self.routes.central:
                self.routes.relay_to_gateway(frame)
            self._add_block(frame, 0, source)
            self._pump()
        return future

    def _add_block(self, frame: Frame, b: int, source: str) -> None:
        """Block ``b``'s tiles of ``frame`` to the scheduler, in ``source``'s queue (where
        the block's input is: the frame's source for the first block, then where the frame
        is gathered)."""
        self.scheduler.add([Job(frame.id, task, self.stages.level(task), source,
                                self.assignment[task], self.cost[task])
                            for task in self.stages.order(b)], self.pool.alive())

    def _transfer_ms(self, device: str, job: Job) -> float:
        frame = self._frames.get(job.frame)
        return 0.0 if frame is None else self.routes.transfer_ms(device, frame, job)

    def _backlog_ms(self, device: str) -> float:
        """The rests ``device`` will run for the frames in flight gathered on it (scheduler.
        Pace: a device runs one thing at a time) (caller holds the lock)."""
        waiting = sum(1 for f in self._frames.values() if self.home(f) == device)
        return waiting * self._rest_ms

    def _ready(self, job: Job) -> bool:
        """A level-1 tile goes out once the level-0 tiles it reuses are done, under every
        scheduler (the plan's schedule; DeepThings queues level 1 behind level 0). Taken
        earlier it computes their halo again: vgg16 on two devices, the gateway redid half its
        neighbour's work and two devices ran no faster than one; taken while its neighbours
        were still queued (the plan's preference put it first), it computed the halo and the
        neighbours then ran anyway. Its neighbours are always in some queue or on a device
        (a dead device's go back), so it never waits forever."""
        return self.stages.can_start(job.tile, self._frames[job.frame].level0_done)

    def _pump(self) -> None:
        """Give idle devices work (caller holds the lock); not a device running a rest."""
        resting = self.rests.resting()
        free = {d: self.scheduler.limit() - self.pool.held(d) for d in self.pool.ready()
                if d not in resting}
        for device, job in self.scheduler.dispatch(free, self._ready, self._started):
            if not self._dispatch(device, job):
                self.scheduler.finished(device, job)
                self._frames[job.frame].running.discard(job.tile)
                self.scheduler.requeue([job], self.pool.alive())
        for frame in self._frames.values():
            if not frame.future.taken.is_set() and self._nothing_to_take(frame):
                frame.future.taken.set()
        if self.scheduler.pending() and not self.pool.alive() and not self._local_running:
            self._local_running = True
            threading.Thread(target=self._run_locally, daemon=True,
                             name="cluster-local").start()

    def _nothing_to_take(self, frame: Frame) -> bool:
        """Whether every tile of the frame's first block is handed out or waits for the level-0
        tiles whose halo it reuses (:meth:`_ready`): its source's queue has nothing an idle
        device could take, so the source may send its next frame (DeepThings' source does
        once its queue is empty; ours keeps a level-1 tile until it can reuse, so its source
        would otherwise idle the devices until the frame's level 0 is done)."""
        return self.stages.taken(frame.handed, frame.level0_done)

    def _started(self, device: str, job: Job) -> None:
        """A tile is running from the moment the scheduler hands it out (the next tile it
        chooses in the same round must see that); its frame is taken once all its tiles were."""
        frame = self._frames[job.frame]
        frame.running.add(job.tile)
        frame.hand(job.tile, self.first_tasks)

    def _task(self, frame: Frame, job: Job
              ) -> tuple[Tile, dict[str, torch.Tensor], list[int]]:
        """The tile as dispatched now (reusing the neighbours done so far), its input values
        (crop and reused pieces), and those neighbours."""
        done = [k for k in self.sources_of.get(job.tile, ()) if k in frame.level0_done]
        b = self.stages.block_of(job.tile)
        source = frame.x if b == 0 or frame.stage_input is None else frame.stage_input
        return (*self.stages.inputs(job.tile, done, source, frame.stores[b]), done)

    def _dispatch(self, device: str, job: Job) -> bool:
        start = time.perf_counter()
        frame = self._frames[job.frame]
        tile, values, done = self._task(frame, job)
        msg, nbytes, carried = self.routes.message(next(self._task_ids), device, frame, job,
                                                   values, done)
        encode_ms = (time.perf_counter() - start) * 1000.0
        sent = self.pool.send(device, msg, nbytes, device if nbytes == 0 else "medium",
                              lambda dev, res, ms: self._done(dev, res, frame.id, job, tile,
                                                              ms + encode_ms, carried, start),
                              (frame.id, job), reply_to=self.home(frame),
                              not_before=frame.at_gateway.get(job.tile, 0.0))
        if sent:
            frame.medium_bytes += nbytes
        return sent

    def _done(self, device: str, result: cpb.TaskResult, frame_id: int, job: Job,
              tile: Tile, overhead_ms: float = float("nan"), carried: int = 0,
              sent: float = 0.0) -> None:
        """A worker's result, arrived: checked against the tile's shapes, then kept."""
        start = time.perf_counter()
        mark = dilation.start()  # decoding is a device's CPU's work (at the gateway's pace)
        try:
            out, shares = self.stages.blocks[self.stages.block_of(job.tile)].decode(tile,
                                                                                   result)
        except (CodecError, ValueError) as e:
            log.warning("device %s sent a bad result for tile %d: %s; running it elsewhere",
                        device, job.tile, e)
            with self._lock:
                frame = self._frames.get(frame_id)
                if frame is not None:
                    frame.running.discard(job.tile)
                self.scheduler.finished(device, job)
                self.scheduler.requeue([job], self.pool.alive())
                self._pump()
            return
        dilation.finish(mark, self.dilation, spin=self.spin)
        with self._lock:
            frame = self._frames.get(frame_id)
            nbytes = tensors.payload_bytes([result.output, *result.shares])
            if frame is not None:
                frame.medium_bytes += nbytes if device != self.home(frame) else 0
                if overhead_ms == overhead_ms:  # measured (not NaN)
                    frame.costs.note(overhead_ms + (time.perf_counter() - start) * 1e3,
                                     carried + nbytes, result)
                if job.tile not in frame.outputs:
                    frame.timeline.append(TaskTiming(
                        job.tile, device, frame.ms(sent or frame.submitted),
                        frame.ms(time.perf_counter()), result.wait_ms, result.compute_ms))
                self._accept(frame, job, device, out, shares, result.compute_ms)
            self._pump()
        self.rests.wake()

    def _accept(self, frame: Frame, job: Job, device: str, out: torch.Tensor,
                shares: Mapping[str, torch.Tensor], compute_ms: float) -> None:
        frame.running.discard(job.tile)
        self.scheduler.finished(device, job, compute_ms)
        if job.tile in frame.outputs:
            return  # a re-run raced the original: keep the first
        frame.outputs[job.tile] = out
        by_layer: dict[str, list[torch.Tensor]] = {}
        for name in sorted(shares, key=lambda n: (n.rsplit("/", 1)[0],
                                                  int(n.rsplit("/", 1)[1]))):
            by_layer.setdefault(name.rsplit("/", 1)[0], []).append(shares[name])
        b = self.stages.block_of(job.tile)
        if by_layer:
            frame.stores[b].keep(job.tile - self.stages.offsets[b], by_layer)
        if self.stages.level(job.tile) == 0:
            frame.level0_done.add(job.tile)
        frame.tasks[device] += 1
        frame.compute[device] += compute_ms
        frame.stolen += device != frame.source
        if not self.stages.complete(b, frame.outputs):
            return
        stitched = self.stages.stitched(b, frame.outputs)
        if b + 1 < len(self.stages.blocks):  # the sync point: the next block from this map
            frame.stage_input = stitched
            self._add_block(frame, b + 1, self.home(frame))
            return
        frame.stitched = time.perf_counter()
        frame.block_out = stitched
        self.rests.put(self.home(frame), frame)

    def _run_locally(self) -> None:
        """No device left: the gateway computes the waiting tiles itself (dilated to its own
        hardware), so every frame is still answered."""
        while True:
            with self._lock:
                job = self.scheduler.drain() if not self.pool.alive() else None
                if job is None:
                    self._local_running = False
                    self._pump()
                    return
                frame = self._frames[job.frame]
                frame.hand(job.tile, self.first_tasks)
                tile, values, _ = self._task(frame, job)
                local = self.stages.blocks[self.stages.block_of(job.tile)]
            mark = dilation.start()
            out, shares = local.run(tile, values)
            ms = dilation.finish(mark, self.dilation, spin=self.spin)
            with self._lock:
                self._accept(frame, job, GATEWAY_LOCAL, out, shares, ms)

    def _run_rest(self, home: str, frame: Frame) -> tuple[Any, str]:
        """A frame's rest on ``home`` (its lane, runtime.cluster.rest.RestLanes), dilated to
        that device's hardware."""
        if home not in self._runners:
            self._runners[home] = RestRunner(self._graph, self._plan, self.part.prefix_nodes,
                                             dilation=self.dilations.get(home, self.dilation))
        assert frame.block_out is not None
        result = self._runners[home].run(frame.x, {self.block.output.name: frame.block_out})
        return result.output, result.note

    def _answer(self, home: str, frame: Frame, output: Any, note: str, start: float,
                wait_ms: float) -> None:
        if isinstance(output, Exception):
            frame.future.set_exception(output)
        else:
            frame.future.set_result(frame.result(output, time.perf_counter(), start, note,
                                                 home, wait_ms))
        with self._lock:
            self._frames.pop(frame.id, None)
            if not isinstance(output, Exception) and not self.rest.remote:
                self._rest_ms = (time.perf_counter() - start) * 1000.0

    def close(self) -> None:
        self.rests.close()
        self.pool.close()

