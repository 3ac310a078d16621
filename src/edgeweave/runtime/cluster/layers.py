"""The gateway of a layer-wise plan (MoDNN, Mao et al. 2017): every split layer scattered to
its devices and gathered before the next.

The gateway (MoDNN's group owner) holds the frame and runs the model's prefix layer by layer.
At a split convolution or pooling layer it sends each device the input rows its output rows need
(halo included) and stitches the rows that come back; at a split fully connected layer it sends
each device the input vector and concatenates the neurons that come back (each device holds only
its rows of the weights). Layers that are not split, and the parts the plan gives the gateway,
run on the gateway itself, in-process and dilated to its hardware (its parts once the others
are sent: shipped to its own worker over loopback they cost 410-530 ms a frame of encoding and
RPC when vgg16's every part stayed on the gateway). Transfers share the one medium, as in the
plan. A device that dies mid-layer has its part computed by the gateway (it holds the whole
model), so the frame is still answered.
Frames run one after another: the split is for latency, each layer waits for the last.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from edgeweave.codec import CodecError
from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import Graph
from edgeweave.graph.blocks import chain_block
from edgeweave.graph.layerwise import unit_tiles
from edgeweave.graph.resident import rows_count
from edgeweave.graph.tile_exec import stitch
from edgeweave.plan import Plan
from edgeweave.plan.layerwise_search import reads_input
from edgeweave.runtime import dilation, tensors
from edgeweave.runtime.client import ClientOptions
from edgeweave.runtime.cluster.blueprint import (
    LayerSpec,
    Spec,
    cluster_spec,
    layer_recipe,
    layer_specs,
    layer_weights,
    setup_stream,
)
from edgeweave.runtime.cluster.frames import FrameFuture, TaskCosts
from edgeweave.runtime.cluster.gateway import GATEWAY_LOCAL, FrameResult
from edgeweave.runtime.cluster.halo import (
    Rows,
    decoded,
    flat,
    local_input,
    pack,
    plan_hops,
    recompute,
    send_values,
)
from edgeweave.runtime.cluster.layer_exec import LayerExecutor
from edgeweave.runtime.cluster.medium import SharedMedium
from edgeweave.runtime.cluster.pool import OnDone, WorkerPool
from edgeweave.runtime.cluster.prefix import PrefixRun
from edgeweave.runtime.cluster.rest import RestRunner
from edgeweave.runtime.cluster.steps import StepRun, plan_runs
from edgeweave.runtime.proto import cluster_pb2 as cpb
from edgeweave.runtime.recipe import package
from edgeweave.security import ClientTLS

log = logging.getLogger("edgeweave.runtime.cluster")


class _Parts:
    """The parts of one split layer in flight: results by part, and the parts to recompute."""

    def __init__(self, count: int):
        self.outputs: dict[int, torch.Tensor] = {}
        self.lost: list[int] = []
        self.compute: defaultdict[str, float] = defaultdict(float)
        self.tasks: Counter = Counter()
        self.bytes = 0  # results that crossed the medium
        self.part_ms: dict[int, float] = {}  # each part's emulated compute
        # each part's runtime cost besides compute and the medium (encoding, the RPC,
        # decoding) and the bytes it carried both ways, loopback included: the calibration
        # prices the runtime's cost per MiB from them, as for fused tiles
        self.costs = TaskCosts()
        self.cond = threading.Condition()
        self.count = count

    def settled(self) -> bool:
        return len(self.outputs) + len(self.lost) == self.count


class LayerGateway:
    """``join(device, target)`` each worker, then ``submit(x)`` frames (futures of
    :class:`~edgeweave.runtime.cluster.gateway.FrameResult`); ``close()`` at the end;
    ``time_scale`` as in :class:`~edgeweave.runtime.cluster.gateway.TileGateway`."""

    def __init__(self, graph: Graph, plan: Plan, *, token: str | None = None,
                 tls: ClientTLS | None = None, gateway_dilation: float = 1.0,
                 edge_target: str | None = None, rest_options: ClientOptions | None = None,
                 spin: bool = False, task_timeout_s: float = 300.0, time_scale: float = 1.0,
                 overlap: bool | None = None):
        part = plan.partition
        if part is None or part.method != "layer-wise":
            raise EdgeWeaveError("the plan has no layer-wise partition")
        self.graph, self.part, self.gateway = graph, part, part.gateway
        whole = [LayerSpec(tuple(la.unit), la.kind, tuple(la.row_bounds), tuple(la.col_bounds),
                           tuple(range(len(la.devices)))) for la in part.layers]
        # the gateway can compute any part itself (a device died): it holds the whole model
        self.local = LayerExecutor(graph, whole, {s.name: t for s, t in
                                                  layer_weights(graph, whole)})
        self.specs = whole
        self.hops = plan_hops(graph, part)
        # overlapped runs of resident layers (graph.overlap; the layer_split "overlap"): a
        # run's steps are issued as their inputs arrive, its later layers pass through here
        if overlap is None:
            overlap = part.layer_split == "overlap"
        self.runs = plan_runs(graph, part) if overlap else {}
        self.in_run = {k for r in self.runs.values() for k in range(r.first + 1, r.last + 1)}
        self._steps = ThreadPoolExecutor(1, thread_name_prefix="cluster-gateway-steps")
        self.first = {la.unit[0]: i for i, la in enumerate(part.layers)}
        # a unit's later layers are computed with it: each takes the value of the one before
        # (graph.layerwise.SplitRunner)
        self.inner = {n: before for la in part.layers for before, n in itertools.pairwise(la.unit)}
        prefix = set(part.prefix_nodes)
        self.last = next(i.name for i in reversed(graph.nodes) if i.name in prefix)
        # the prefix's values the rest of the model reads
        self.needed = {p for info in graph.nodes if info.name not in prefix
                       for p in info.inputs if p in prefix} | (set(graph.outputs) & prefix)
        self.dilation, self.spin = gateway_dilation, spin
        self.medium = SharedMedium(part.medium.mbps, part.medium.rtt_ms, time_scale)
        self.pool = WorkerPool(self.medium, self.gateway, lambda _: None, self._on_gone,
                               token=token, tls=tls, task_timeout_s=task_timeout_s)
        self.rest = RestRunner(graph, plan, part.prefix_nodes, edge_target=edge_target,
                               token=token, tls=tls, dilation=gateway_dilation,
                               options=rest_options)
        self.task_ids = itertools.count(1)
        self._ids = itertools.count()
        self._frames: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="cluster-layers")
        self._thread.start()

    def join(self, device: str, target: str) -> cpb.SetupReply:
        if device not in self.part.devices:
            raise EdgeWeaveError(f"device {device!r} is not in the plan's cluster "
                                 f"({', '.join(self.part.devices)})")
        mine = layer_specs(self.part, device)
        pkg = package(layer_recipe(self.part.model, self.part.input_shape, mine),
                      layer_weights(self.graph, mine))
        return self.pool.connect(device, target, setup_stream(cluster_spec(self.part, device),
                                                              pkg))

    def _on_gone(self, device: str, lost: list[Any], why: str) -> None:
        for parts, p in lost:
            if isinstance(parts, StepRun):
                parts.lost(p)
                continue
            with parts.cond:
                parts.lost.append(p)
                parts.cond.notify_all()

    def submit(self, x: torch.Tensor, source: str | None = None) -> FrameFuture:
        if source not in (None, self.gateway):
            raise EdgeWeaveError(f"a layer-wise plan takes frames from its gateway "
                                 f"{self.gateway!r} only, not {source!r}")
        want = tuple(self.part.input_shape)
        if tuple(x.shape) != want:
            raise EdgeWeaveError(f"frame has shape {list(x.shape)}; the plan takes {list(want)}")
        future = FrameFuture()  # taken once the gateway starts it (frames run in turn)
        self._frames.put((next(self._ids), x, future))
        return future

    def _loop(self) -> None:
        while True:
            item = self._frames.get()
            if item is None:
                return
            frame_id, x, future = item
            future.taken.set()
            try:
                future.set_result(self._frame(frame_id, x))
            except Exception as e:  # the frame fails with its cause; the gateway goes on
                future.set_exception(e)

    def _frame(self, frame_id: int, x: torch.Tensor) -> FrameResult:
        start = time.perf_counter()
        run = PrefixRun(self, frame_id)
        run.prefix(x)
        given = {name: run.values[name] for name in self.needed}
        stitched = time.perf_counter()
        result = self.rest.run(x, given)
        end = time.perf_counter()
        return FrameResult(frame_id, self.gateway, result.output, (end - start) * 1000.0,
                           (stitched - start) * 1000.0, (end - stitched) * 1000.0,
                           run.medium_bytes, dict(run.tasks), dict(run.compute), 0, run.rerun,
                           result.note, run.delivery_ms, run.costs.ms, run.costs.nbytes,
                           run.costs.codec_ms)

    def split_layer(self, i: int, source: torch.Tensor | Rows, run: PrefixRun
                    ) -> torch.Tensor | Rows:
        """Scatter layer ``i``'s parts to their devices, gather and stitch them. With resident
        rows (graph.resident) a part reads the rows its device kept (``source`` is then the
        :class:`Rows` the gateway holds) and returns only the rows others read, and the
        layer's output is left as Rows too."""
        la, spec = self.part.layers[i], self.specs[i]
        hop_in = self.hops[i] if isinstance(source, Rows) else None
        hop_out = self.hops[i + 1] if i + 1 < len(self.hops) else None
        if hop_out is not None and not isinstance(source, Rows):
            run.chain = (i, source)  # a run of resident layers starts from rows held here
        codec = self.part.input_codec if reads_input(self.graph, spec.split()) \
            else self.part.result_codec
        tiles = unit_tiles(self.graph, spec.split()) if spec.kind == "rows" else []
        parts = _Parts(len(la.devices))
        start = time.perf_counter()
        for p, device in enumerate(la.devices):
            if device == self.gateway:
                continue  # computed here, below, while the devices compute theirs
            encoding = time.perf_counter()
            msg = cpb.Task(task=next(self.task_ids), frame=str(run.frame), tile=p, layer=i,
                           return_codec=self.part.result_codec)
            if hop_out is not None:  # the device keeps its rows, returns its edges
                msg.keep = True
                msg.back.extend(flat(hop_out.back[p]))
            values = send_values(source, tiles, p, hop_in, msg)
            if values is None:  # a halo the gateway lacks: recomputed below
                parts.lost.append(p)
                continue
            nbytes, _ = pack(msg, values, codec, self.dilation, self.spin)
            encode_ms = (time.perf_counter() - encoding) * 1000.0  # the halo's slicing too
            out_spec = self.local.specs(i, p)[1]
            if hop_out is not None:
                dtype, shape = out_spec
                out_spec = (dtype, (*shape[:2], rows_count(hop_out.back[p]), shape[3]))
            if self.pool.send(device, msg, nbytes, self.gateway,
                              self._on_part(parts, p, out_spec, encode_ms, nbytes), (parts, p)):
                run.medium_bytes += nbytes
            else:
                parts.lost.append(p)
        whole = {p for p, device in enumerate(la.devices) if device == self.gateway}
        for p in sorted(whole):
            crop = local_input(source, tiles, p)
            if crop is None:
                with parts.cond:
                    parts.lost.append(p)
                continue
            mark = dilation.start()
            out = self.local.run(i, p, crop)
            ms = dilation.finish(mark, self.dilation, spin=self.spin)
            with parts.cond:
                parts.outputs[p], parts.part_ms[p] = out, ms
                parts.compute[self.gateway] += ms
                parts.tasks[self.gateway] += 1
        with parts.cond:
            parts.cond.wait_for(parts.settled)
        # delivery: the layer's scatter-to-gather time less its slowest part's compute
        run.delivery_ms += max(0.0, (time.perf_counter() - start) * 1000.0 - max(
            parts.part_ms.values(), default=0.0))
        for p in parts.lost:  # the device is gone: the gateway computes its part
            run.rerun += 1
            crop = local_input(source, tiles, p)
            mark = dilation.start()
            if crop is None:  # its device kept rows of its input and died: start the run over
                assert run.chain is not None
                first, x = run.chain
                full = recompute(self.graph, self.local, self.specs, first, i, x)
                parts.compute[GATEWAY_LOCAL] += dilation.finish(mark, self.dilation,
                                                                spin=self.spin)
                parts.tasks[GATEWAY_LOCAL] += 1
                self._account(run, parts)
                return full  # the next layer scatters its rows afresh
            parts.outputs[p] = self.local.run(i, p, crop)
            whole.add(p)
            parts.compute[GATEWAY_LOCAL] += dilation.finish(mark, self.dilation, spin=self.spin)
            parts.tasks[GATEWAY_LOCAL] += 1
        self._account(run, parts)
        if spec.kind == "neurons":
            return torch.cat([parts.outputs[p] for p in range(len(la.devices))], dim=-1)
        block = chain_block(self.graph, spec.unit)
        if hop_out is None:
            return stitch(block, tiles, {t.index: parts.outputs[p] for p, t in enumerate(tiles)})
        held = Rows.empty(parts.outputs[0], block.output.shape)
        for p, t in enumerate(tiles):
            if p in whole:
                held.put(t.output.r0, parts.outputs[p])
                continue
            at = 0
            for a, b in hop_out.back[p]:
                held.put(a, parts.outputs[p][:, :, at:at + b - a])
                at += b - a
        return held

    @staticmethod
    def _account(run: PrefixRun, parts: _Parts) -> None:
        run.add(parts.compute, parts.tasks, parts.bytes, parts.costs)

    def _on_part(self, parts: _Parts, p: int, out_spec: Spec, encode_ms: float = 0.0,
                 carried: int = 0) -> OnDone:
        """The pool's callback for part ``p`` of a split layer (``out_spec`` what it returns,
        ``encode_ms`` its input took to encode, ``carried`` its payload's bytes)."""
        return lambda device, result, ms: self._done(parts, p, out_spec, device, result,
                                                     ms + encode_ms, carried)

    def _done(self, parts: _Parts, p: int, out_spec: Spec, device: str,
              result: cpb.TaskResult, overhead_ms: float = float("nan"), carried: int = 0
              ) -> None:
        start = time.perf_counter()
        try:
            out = decoded(result, out_spec, self.dilation, self.spin)
        except (CodecError, ValueError) as e:
            log.warning("device %s sent a bad result for part %d: %s", device, p, e)
            with parts.cond:
                parts.lost.append(p)
                parts.cond.notify_all()
            return
        with parts.cond:
            parts.outputs[p] = out
            parts.part_ms[p] = result.compute_ms
            parts.compute[device] += result.compute_ms
            parts.tasks[device] += 1
            nbytes = tensors.payload_bytes([result.output])
            if device != self.gateway:
                parts.bytes += nbytes
            if overhead_ms == overhead_ms:  # measured (not NaN)
                parts.costs.note(overhead_ms + (time.perf_counter() - start) * 1e3,
                                 carried + nbytes, result)
            parts.cond.notify_all()

    def close(self) -> None:
        self._frames.put(None)
        self.pool.close()
        self._thread.join(timeout=10)
        self._steps.shutdown(wait=False, cancel_futures=True)
