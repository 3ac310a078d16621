"""Where a fused-tile task's bytes come from and go to, and the task message that carries them.

Split from :mod:`edgeweave.runtime.cluster.gateway` (which keeps the frames, the scheduler and
the workers): the gateway asks this module where a frame is gathered, where a task's crop
comes from, how long its bytes would be on the shared medium on a given device (the
scheduler's choice of device), and for the encoded :class:`cpb.Task` with the bytes it puts on
the medium. One place for the routing rules, so the scheduler's estimate and what is sent
agree:

* a frame is gathered (its tile results kept, its rest run) at the gateway, as DeepThings'
  gateway merges every source's results, or under work stealing with ``gather_at_source`` at
  the frame's source;
* the first block's crop comes from the frame's source (from the gateway under work sharing,
  once the source handed it there), a later block's from where the frame is gathered (its
  input is the previous block's stitched map);
* reused halo pieces come from, and results go back to, where the frame is gathered; bytes
  between a device and itself never cross the medium.
"""

from __future__ import annotations

from typing import Protocol

import torch

from edgeweave.plan.partition import Partition
from edgeweave.runtime import tensors
from edgeweave.runtime.cluster.frames import Frame
from edgeweave.runtime.cluster.medium import SharedMedium
from edgeweave.runtime.cluster.scheduler import Job
from edgeweave.runtime.cluster.stages import GatewayStages
from edgeweave.runtime.proto import cluster_pb2 as cpb
from edgeweave.topology import serialize_ms


class Sourced(Protocol):
    """A frame as routing sees it: the data source that holds it (a runtime Frame, or a
    forecast's simulated one, runtime.cluster.forecast)."""

    source: str


class TaskRoutes:
    """The routing rules of one gateway (module docstring). ``central``: work sharing (tiles
    reach devices through the gateway); ``at_source``: frames gathered at their source."""

    def __init__(self, part: Partition, stages: GatewayStages, medium: SharedMedium,
                 input_ratio: float, *, central: bool, at_source: bool):
        self.part, self.stages, self.medium = part, stages, medium
        self.gateway = part.gateway
        self.input_ratio = input_ratio
        self.central, self.at_source = central, at_source

    def home(self, frame: Sourced) -> str:
        """Where a frame's tile results are gathered and its rest runs: the gateway
        (DeepThings' gateway collects and merges every source's results), or under work
        stealing with ``gather_at_source`` the frame's source (its own tiles' results never
        cross the medium, but it runs the rest the plan priced on the gateway)."""
        return frame.source if self.at_source else self.gateway

    def origin(self, frame: Sourced, job: Job) -> str:
        """Where a task's crop comes from: the frame's source (the gateway under work sharing,
        once it got there) for the first block, where the frame is gathered for later ones."""
        if self.stages.block_of(job.tile):
            return self.home(frame)
        return self.gateway if self.central else frame.source

    def moved(self, device: str, frame: Sourced, job: Job) -> tuple[int, int]:
        """The bytes ``job`` puts on the medium if ``device`` runs it, (to it, back): the
        plan's bytes, the crop from where the frame's tiles wait and the reused pieces from
        where it is gathered, and the result back there."""
        crop, pieces, result = self.stages.moves[job.tile]
        into = (crop if self.origin(frame, job) != device else 0) + (
            pieces if self.home(frame) != device else 0)
        return into, result if self.home(frame) != device else 0

    def transfer_ms(self, device: str, frame: Sourced, job: Job) -> float:
        """The ms ``job``'s bytes would be on the medium if ``device`` ran it (:meth:`moved`),
        for the scheduler's choice of device."""
        return serialize_ms(sum(self.moved(device, frame, job)), self.medium.mbps)

    def relay_to_gateway(self, frame: Frame) -> None:
        """Work sharing: the source hands every first-block tile's crop to the gateway (one
        hop each, on the medium unless the source is the gateway); a task leaves the gateway
        no earlier than its crop got there (``frame.at_gateway``)."""
        x = frame.x
        for task in self.stages.order(0):
            tile = self.stages.tile(task, ())
            nbytes = round(tile.input.area * x.shape[0] * x.shape[1] * x.element_size() *
                           self.input_ratio)
            frame.at_gateway[task] = self.medium.relay(nbytes, frame.source, self.gateway)
            frame.medium_bytes += nbytes if frame.source != self.gateway else 0

    def message(self, task_id: int, device: str, frame: Frame, job: Job,
                values: dict[str, torch.Tensor], done: list[int]) -> tuple[cpb.Task, int, int]:
        """The task for ``device``: its crop in the input codec (a later block's in the result
        codec: it is a computed map) and the reused pieces in the result codec; with the bytes
        it puts on the medium and the bytes it carries in all."""
        b = self.stages.block_of(job.tile)
        base = self.stages.offsets[b]
        msg = cpb.Task(task=task_id, frame=str(frame.id), tile=job.tile - base, block=b,
                       reused_from=[d - base for d in done],
                       return_codec=self.part.result_codec)
        crop_codec = self.part.input_codec if b == 0 else self.part.result_codec
        msg.crop.CopyFrom(tensors.encode(values, ["crop"], crop_codec)[0])
        names = [n for n in values if n != "crop"]
        msg.pieces.extend(tensors.encode(values, names, self.part.result_codec))
        pieces = tensors.payload_bytes(msg.pieces)
        nbytes = (len(msg.crop.payload) if self.origin(frame, job) != device else 0) + (
            pieces if self.home(frame) != device else 0)
        return msg, nbytes, len(msg.crop.payload) + pieces
