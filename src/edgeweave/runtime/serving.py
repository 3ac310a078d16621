"""The node's serving engine (`edgeweave.serve`) on the wire: deployed stages as served models,
a request's deadline and priority checked, and every shed request turned into a gRPC status.

A stage runs as the node traced it; a batch is its requests' tensors stacked along dim 0
(`serve.batching`). Whether a stage can batch, and how long its batches take, is measured when
it is deployed (`calibrate`, on random inputs of its declared shapes); a stage kept only to
finish requests when the next node fails (deployed with `hops_ahead` > 0) is not measured and
serves batches of one until it is deployed to run here. Emulated hardware (`serve --dilation`)
stretches each batch's compute as it stretched each request's, sleeping through the stretch:
the emulated hardware's compute holds neither a core nor the GIL the node's RPC handlers need
(see `runtime.dilation`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import grpc
import torch

from edgeweave.codec.wire import DTYPES
from edgeweave.errors import ServeError
from edgeweave.runtime import dilation
from edgeweave.runtime.fronts import NodeFronts
from edgeweave.runtime.metrics import ServeMetrics
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.requests import Refused
from edgeweave.runtime.stage_store import DeployedStage
from edgeweave.serve import Answer, Engine, LatencyModel, NodeServing, ServingConfig, Shed, resolve
from edgeweave.serve.batching import Inputs, batch_dims_ok, calibrate, stack, unstack
from edgeweave.serve.config import check_priority
from edgeweave.serve.front import SHARED

log = logging.getLogger("edgeweave.runtime.node")

#: Trailing metadata on a refusal: the node's queued work (ms), as InferReply.queued_ms, and
#: the ms it held the request before refusing it (devices learn their round trips' overhead).
LOAD_KEY = "edgeweave-queued-ms"
NODE_KEY = "edgeweave-node-ms"

#: How a shed request is answered: its status and how loudly it is logged.
_STATUS = {
    "queue_full": (grpc.StatusCode.RESOURCE_EXHAUSTED, "overloaded", logging.INFO),
    "displaced": (grpc.StatusCode.RESOURCE_EXHAUSTED, "overloaded", logging.INFO),
    "deadline": (grpc.StatusCode.DEADLINE_EXCEEDED, "deadline", logging.INFO),
    "late": (grpc.StatusCode.DEADLINE_EXCEEDED, "deadline", logging.INFO),
    "removed": (grpc.StatusCode.FAILED_PRECONDITION, "unknown_stage", logging.INFO),
    "unknown_model": (grpc.StatusCode.FAILED_PRECONDITION, "unknown_stage", logging.INFO),
    "bad_input": (grpc.StatusCode.INVALID_ARGUMENT, "bad_input", logging.WARNING),
    "failed": (grpc.StatusCode.INTERNAL, "internal", logging.ERROR),
    "stopped": (grpc.StatusCode.UNAVAILABLE, "stopping", logging.INFO),
}


def serving_config(msg: pb.ServingConfig) -> ServingConfig:
    return ServingConfig(max_batch=msg.max_batch, max_delay_ms=msg.max_delay_ms,
                         preferred_batch=tuple(msg.preferred_batch), max_queue=msg.max_queue,
                         slo_ms=msg.slo_ms, adaptive=msg.adaptive_batch)


def to_proto(cfg: ServingConfig) -> pb.ServingConfig:
    return pb.ServingConfig(max_batch=cfg.max_batch, max_delay_ms=cfg.max_delay_ms,
                            preferred_batch=list(cfg.preferred_batch), max_queue=cfg.max_queue,
                            slo_ms=cfg.slo_ms, adaptive_batch=cfg.adaptive)


def deadline_of(req: pb.InferRequest, remaining: float | None, now: float) -> float:
    """The instant (monotonic clock) the request must be answered by: its own `deadline_ms`
    from receipt, or the call's deadline, whichever is first; inf for neither."""
    ms = req.deadline_ms
    if not math.isfinite(ms):
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"deadline_ms {ms!r}: expected a "
                      f"finite number of ms (0: no deadline)", "bad_deadline")
    if ms < 0:
        raise Refused(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline_ms {ms:g}: the request's "
                      f"deadline had already passed when it was sent", "deadline",
                      logging.INFO)
    try:
        check_priority(req.priority)
    except ServeError as e:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, str(e), "bad_priority") from None
    grace_of(req)  # checked here, with the deadline
    deadline = now + ms / 1000.0 if ms > 0 else math.inf
    return min(deadline, math.inf if remaining is None else now + remaining)


def grace_of(req: pb.InferRequest) -> float:
    """Seconds past its deadline that an answer is still expected to reach the device in time
    (`grace_ms`: the part of the device's margin kept for the spread of the way back), at most
    the deadline itself (a peer's claim, bounded); 0 without a deadline."""
    ms = req.grace_ms
    if not (math.isfinite(ms) and ms >= 0):
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"grace_ms {ms!r}: expected a finite "
                      f"number of ms, 0 or more", "bad_deadline")
    return min(ms, max(0.0, req.deadline_ms)) / 1000.0


def refusal(shed: Shed, node: str) -> Refused:
    code, reason, level = _STATUS.get(shed.reason, _STATUS["failed"])
    hint = {"removed": "; deploy it again", "unknown_model": "; Deploy first"}.get(shed.reason,
                                                                                 "")
    return Refused(code, f"{node} refused the request: {shed.message}{hint}", reason, level)


class StageRunner:
    """Runs a batch of requests through a deployed stage (see module doc)."""

    def __init__(self, stage: DeployedStage, factor: float):
        self.stage, self.factor = stage, factor

    def fn(self, *args: torch.Tensor) -> Sequence[torch.Tensor]:
        with torch.inference_mode():
            return tuple(self.stage.module(*args))

    def __call__(self, batch: Sequence[Inputs], until: float) -> list[Inputs]:
        stop = time.perf_counter() + max(0.0, until - time.monotonic()) if math.isfinite(
            until) else math.inf
        mark = dilation.start()
        outputs = self.fn(*stack(batch))
        dilation.finish(mark, self.factor, stop, spin=False)
        return unstack(outputs, [1] * len(batch))

    def seconds_of(self, call: Callable[[], object]) -> float:
        """The seconds `call` takes as this runner stretches it (`dilation.emulated_ms`), in
        this host's seconds (the latency model scales them by the factor): how the node
        calibrates a stage, so its estimates are of the batches it then runs."""
        mark = dilation.start()
        call()
        return dilation.emulated_ms(mark, self.factor) / 1000.0 / max(1.0, self.factor)

    def example(self) -> Inputs:
        """Zeros of the stage's declared batch-1 inputs."""
        specs = self.stage.specs
        return tuple(torch.zeros(specs[v][1], dtype=DTYPES[specs[v][0]])
                     for v in self.stage.inputs)


class ServingNode:
    """The NodeService's engine: stages in, answers out, every refusal a status."""

    def __init__(self, name: str, node: NodeServing, factor: float,
                 metrics: ServeMetrics | None = None):
        self.name, self.node, self.factor = name, node, factor
        self.metrics = metrics
        self.engine = Engine(node, metrics).start()
        self.batchable: dict[str, bool] = {}  # measured when deployed to run here
        self.fronts: NodeFronts | None = None  # the operator's --front stages, per model

    def check(self, msg: pb.ServingConfig) -> ServingConfig:
        """A device's knobs, checked against this node's bounds (ServeError names the field)."""
        return resolve(serving_config(msg), self.node)

    def add(self, stage: DeployedStage, name: str, cfg: ServingConfig, here: bool) -> int:
        """Serve `stage` with `cfg` (measured first if it runs here and was not yet); returns
        its batch limit."""
        runner = StageRunner(stage, self.factor)
        latency = None
        if here and stage.digest not in self.batchable:
            latency = self._calibrate(stage, runner, cfg)
        resolved = resolve(cfg, self.node, self.batchable.get(stage.digest, False))
        served = self.engine.add(stage.digest, name or stage.digest[:12], runner, resolved,
                                 latency)
        if self.fronts:
            self.fronts.install(stage, self.engine)
        return served.config.max_batch

    def _calibrate(self, stage: DeployedStage, runner: StageRunner, cfg: ServingConfig
                   ) -> LatencyModel:
        shapes = [stage.specs[v][1] for v in (*stage.inputs, *stage.outputs)]
        max_batch = resolve(cfg, self.node).max_batch if batch_dims_ok(shapes) else 1
        cal = calibrate(runner.fn, runner.example(), max_batch, every_size=True,
                        seconds_of=runner.seconds_of)
        latency = LatencyModel(scale=max(1.0, self.factor))
        for size, seconds in cal.seconds.items():
            latency.seed(size, seconds)
        self.batchable[stage.digest] = cal.batchable
        if not cal.batchable and max_batch > 1:
            log.info("%s: stage %s serves batches of one (%s)", self.name, stage.digest[:12],
                     cal.why)
        return latency

    def remove(self, digest: str, reason: str = "removed", why: str = "it was removed") -> int:
        self.batchable.pop(digest, None)
        if self.fronts is not None:
            self.fronts.forget(digest)
        return self.engine.remove(digest, reason, why)

    def precheck(self, digest: str, deadline: float, priority: int, grace: float = 0.0
                 ) -> None:
        """Refuse now (Refused) a request for stage `digest` that the engine would refuse on
        arrival, before its tensors are decoded (see `Engine.check`); a stage not served yet
        is left to `run`."""
        if digest not in self.engine:
            return
        try:
            self.engine.check(digest, deadline, priority, grace)
        except Shed as s:
            raise self._refused(digest, deadline, s) from None

    def _refused(self, digest: str, deadline: float, s: Shed) -> Refused:
        if self.metrics is not None and math.isfinite(deadline):
            self.metrics.missed(self.model_name(digest))
        return refusal(s, self.name)

    def run(self, stage: DeployedStage, inputs: Inputs, deadline: float,
            priority: int, source: str = SHARED, grace: float = 0.0) -> Answer:
        """``source``: the device or stream the request came from (its front stages' key);
        ``grace``: seconds past the deadline its answer is still of use (see `grace_of`)."""
        if stage.digest not in self.engine:
            self.add(stage, "", ServingConfig(), here=False)
        try:
            return self.engine.wait(self.engine.submit(stage.digest, inputs, deadline,
                                                       priority, source, grace))
        except Shed as s:
            raise self._refused(stage.digest, deadline, s) from None

    def model_name(self, digest: str) -> str:
        m = self.engine.models.get(digest)
        return m.name if m is not None else digest[:12]

    def queued_ms(self) -> float:
        return self.engine.load()[1] * 1000.0

    def stop(self) -> None:
        self.engine.stop()
