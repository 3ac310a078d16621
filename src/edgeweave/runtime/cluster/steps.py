"""The gateway's side of an overlapped run of resident layers (graph.overlap): one frame's
steps issued as their inputs arrive, not layer by layer.

Each device runs its steps in the run's order, so a step with nothing to wait for (an
interior, a device's next layer) is handed to it at once and queues behind the device's last
one; a step that reads halo (an edge) is handed over once the steps it reads (``Step.after``)
have returned their rows here. The gateway's own steps run in that order on one local thread,
dilated to its hardware, while it keeps forwarding the others' rows. What the devices return
is held as :class:`~edgeweave.runtime.cluster.halo.Rows`, one map per split layer, from which
every halo is sliced; the run's last split returns all its rows, and its map is the run's
output. A device lost mid-run (it dies, fails a step or sends a bad result) stops the run: the
gateway computes the run from its input, which it holds, so the frame is still answered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from edgeweave.codec import CodecError
from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import Graph
from edgeweave.graph.blocks import chain_block
from edgeweave.graph.layerwise import LayerSplit
from edgeweave.graph.overlap import Run, Step, overlap_runs
from edgeweave.plan.layerwise_search import reads_input
from edgeweave.plan.partition import Partition
from edgeweave.runtime import dilation, tensors
from edgeweave.runtime.cluster.blueprint import Spec
from edgeweave.runtime.cluster.frames import TaskCosts
from edgeweave.runtime.cluster.gateway import GATEWAY_LOCAL
from edgeweave.runtime.cluster.halo import (
    Rows,
    decoded,
    flat,
    pack,
    placed,
    recompute,
    region_input,
    task_values,
)
from edgeweave.runtime.proto import cluster_pb2 as cpb

if TYPE_CHECKING:
    from edgeweave.runtime.cluster.layers import LayerGateway
    from edgeweave.runtime.cluster.prefix import PrefixRun

log = logging.getLogger("edgeweave.runtime.cluster")


def plan_runs(graph: Graph, part: Partition) -> dict[int, Run]:
    """The plan's runs of resident layers cut into steps, by their first split layer: each
    part cut into interior and edges where the plan cut it (``LayerAssignment.steps``; every
    part when the plan lists no steps), and an error if the plan's steps are not the ones its
    geometry gives."""
    ids = {name: k for k, name in enumerate(part.devices)}
    splits: list[LayerSplit] = [replace(placed(graph, la, ids), resident=la.resident)
                                for la in part.layers]
    listed = any(la.steps for la in part.layers)
    counts = Counter((i, s.part) for i, la in enumerate(part.layers) for s in la.steps)
    runs = overlap_runs(graph, splits, (lambda i, p: counts[(i, p)] > 1) if listed else None)
    if listed:
        planned = [(i, s.part, part.devices.index(s.device) if s.device in part.devices
                    else -1, tuple(s.rows)) for i, la in enumerate(part.layers)
                   for s in la.steps]
        made = [(s.split, s.part, s.device, s.rows) for run in runs for s in run.steps]
        if planned != made:
            raise EdgeWeaveError("the plan's layer-wise steps are not the ones its split "
                                 "layers give (a plan edited by hand, or from another "
                                 "version); plan it again")
    return {run.first: run for run in runs}


class StepRun:
    """One frame's pass through one run (module docstring): ``go(x)`` returns the run's last
    split layer's whole output."""

    def __init__(self, gw: LayerGateway, run: Run, prefix: PrefixRun, local: ThreadPoolExecutor):
        self.gw, self.run, self.prefix, self.local = gw, run, prefix, local
        part = gw.part
        self.devices = [part.devices[s.device] for s in run.steps]
        self.held: dict[int, Rows] = {}
        self.done: set[int] = set()
        self.failed = ""
        self.cond = threading.Condition()
        self.compute: defaultdict[str, float] = defaultdict(float)
        self.tasks: Counter = Counter()
        self.bytes = 0
        self.costs = TaskCosts()
        self._ids = gw.task_ids

    def go(self, x: torch.Tensor) -> torch.Tensor:
        gw, run, steps = self.gw, self.run, self.run.steps
        start = time.perf_counter()
        queues: dict[str, list[int]] = {}
        for sid, device in enumerate(self.devices):
            queues.setdefault(device, []).append(sid)
        nxt = dict.fromkeys(queues, 0)
        while True:
            with self.cond:
                ready: list[int] = []
                while True:
                    if self.failed or len(self.done) == len(steps):
                        break
                    for device, order in queues.items():
                        while nxt[device] < len(order) and all(
                                a in self.done for a in steps[order[nxt[device]]].after):
                            ready.append(order[nxt[device]])
                            nxt[device] += 1
                    if ready:
                        break
                    self.cond.wait()
                if not ready:
                    break
            for sid in ready:
                self._issue(sid, x)
        self.local.submit(lambda: None).result()  # the gateway's own steps are finished
        self._account(start)
        last = self.held.get(run.last)
        if not self.failed and (last is None or not bool(last.have.all())):
            self.failed = "rows of the run's last split layer never came back"
        if self.failed:  # a device is gone: the gateway computes the run itself
            log.info("frame %d: %s; the gateway computes split layers %d-%d itself",
                     self.prefix.frame, self.failed, run.first, run.last)
            mark = dilation.start()
            out = recompute(gw.graph, gw.local, gw.specs, run.first, run.last, x)
            self.prefix.compute[GATEWAY_LOCAL] += dilation.finish(mark, gw.dilation,
                                                                  spin=gw.spin)
            self.prefix.tasks[GATEWAY_LOCAL] += 1
            self.prefix.rerun += 1
            return out
        assert last is not None
        return last.map

    def _rows(self, i: int, like: torch.Tensor) -> Rows:
        found = self.held.get(i)
        if found is None:
            shape = chain_block(self.gw.graph, self.gw.specs[i].unit).output.shape
            found = self.held[i] = Rows.empty(like, shape)
        return found

    def _source(self, step: Step, x: torch.Tensor) -> torch.Tensor | Rows | None:
        """What the step's input rows come from: the run's input, or the rows of the split
        before held here (None: none yet)."""
        return x if step.split == self.run.first else self.held.get(step.split - 1)

    def _input(self, step: Step, x: torch.Tensor) -> torch.Tensor | None:
        """The step's whole input rows, as the gateway holds them (None: some are missing)."""
        source = self._source(step, x)
        return None if source is None else region_input(source, step.tile.input)

    def _issue(self, sid: int, x: torch.Tensor) -> None:
        step, device, gw = self.run.steps[sid], self.devices[sid], self.gw
        if device == gw.gateway:
            self.local.submit(self._local, sid, x)
            return
        msg = cpb.Task(task=next(self._ids), frame=str(self.prefix.frame), tile=step.part,
                       layer=step.split, return_codec=gw.part.result_codec,
                       out_r0=step.rows[0], out_r1=step.rows[1], keep=step.kept)
        if step.kept:
            msg.back.extend(flat(step.back))
        with self.cond:
            values = task_values(self._source(step, x), step.tile.input, step.keep, msg)
        if values is None:
            self._fail(f"the rows step {sid} reads are not at the gateway")
            return
        codec = gw.part.input_codec if step.split == self.run.first and reads_input(
            gw.graph, gw.specs[step.split].split()) else gw.part.result_codec
        nbytes, encode_ms = pack(msg, values, codec, gw.dilation, gw.spin)
        dtype = gw.local.specs(step.split, step.part)[1][0]
        rows = sum(b - a for a, b in step.back)
        spec = (dtype, (x.shape[0], chain_block(gw.graph, gw.specs[step.split].unit)
                        .output.shape[0], rows, step.tile.output.width))
        if gw.pool.send(device, msg, nbytes, gw.gateway,
                        lambda dev, result, ms: self._result(sid, spec, dev, result,
                                                             ms + encode_ms, nbytes),
                        (self, sid)):
            with self.cond:
                self.bytes += nbytes
        else:
            self._fail(f"device {device} is gone")

    def _local(self, sid: int, x: torch.Tensor) -> None:
        """A gateway step, on the local thread (its inputs are here: ``after`` is done)."""
        step, gw = self.run.steps[sid], self.gw
        if self.failed:
            return
        with self.cond:
            crop = self._input(step, x)
        if crop is None:
            self._fail(f"the rows step {sid} reads are not at the gateway")
            return
        mark = dilation.start()
        out = gw.local.run(step.split, step.part, crop, step.rows)
        ms = dilation.finish(mark, gw.dilation, spin=gw.spin)
        with self.cond:
            self._rows(step.split, out).put(step.rows[0], out)  # all of it: it stays here
            self.compute[gw.gateway] += ms
            self.tasks[gw.gateway] += 1
            self.done.add(sid)
            self.cond.notify_all()

    def _result(self, sid: int, spec: Spec, device: str, result: cpb.TaskResult,
                overhead_ms: float, carried: int) -> None:
        start = time.perf_counter()
        step = self.run.steps[sid]
        try:
            out = decoded(result, spec, self.gw.dilation, self.gw.spin)
        except (CodecError, ValueError) as e:
            self._fail(f"device {device} sent a bad result for step {sid}: {e}")
            return
        with self.cond:
            rows = self._rows(step.split, out)
            at = 0
            for a, b in step.back:
                rows.put(a, out[:, :, at:at + b - a])
                at += b - a
            self.compute[device] += result.compute_ms
            self.tasks[device] += 1
            nbytes = tensors.payload_bytes([result.output])
            self.bytes += nbytes
            if overhead_ms == overhead_ms:  # measured (not NaN: it did not queue)
                self.costs.note(overhead_ms + (time.perf_counter() - start) * 1e3,
                                carried + nbytes, result)
            self.done.add(sid)
            self.cond.notify_all()

    def lost(self, sid: int) -> None:
        self._fail(f"device {self.devices[sid]} was lost with step {sid}")

    def _fail(self, why: str) -> None:
        with self.cond:
            self.failed = self.failed or why
            self.cond.notify_all()

    def _account(self, start: float) -> None:
        run = self.prefix
        with self.cond:
            run.add(self.compute, self.tasks, self.bytes, self.costs)
            # delivery: the run's time less its busiest device's compute
            run.delivery_ms += max(0.0, (time.perf_counter() - start) * 1000.0 - max(
                self.compute.values(), default=0.0))
