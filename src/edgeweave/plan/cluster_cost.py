"""What fused tiles and layer-wise splits cost on a cluster, from the same profile the
single-device planner uses.

Each cluster device gets every node's latency on its own hardware (the profile's host figures
scaled by the device's effective GFLOP/s, as :func:`edgeweave.profile.retarget` does for tiers).
A tile or a layer part computes a fraction of each layer's output pixels (or neurons), and is
priced as that fraction of the layer's latency: the rule behind the FLOPs of every fusable layer
(graph.costs), applied to time. Transfers and their contention are the shared medium's
(:mod:`edgeweave.plan.medium`). Memory is what a device must hold: the weights of the layers it
computes and the largest feature maps alive while it runs one task.

A task also costs more than its FLOP share: every tile or part calls each of its layers on its
own, so the fixed part of a call is paid once per task (``c_l x (1 - f)`` more per layer l it
computes a fraction f of; c_l measured on this host, on the consecutive block that holds layer
l, by :func:`edgeweave.profile.tile_calibration.calibrate_tiles` and scaled to each device like
a latency), and the runtime spends ``ms_per_mb`` on each MiB a task carries, in and out
(cropping, encoding, the RPC, decoding, whether or not it crosses the medium: measured by a
run, ``ClusterRun.runtime_ms_per_mb``; per byte because a task moving 13 MiB cost 49 ms and
one moving 0.3 MiB 3 ms). Without them the planner took resnet18's tiles for a speedup that
ran 30% slower than one device.

What crosses the medium may travel in a codec (:mod:`edgeweave.plan.medium_codecs`): the
frame's crops in the input codec (a camera's frame is 8-bit to begin with, so ``int8`` crops
lose next to nothing), computed feature maps (tile outputs, shared halo, layer-wise scatter and
gather) in the result codec.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from edgeweave.errors import PlanError
from edgeweave.graph.blocks import FusedBlock
from edgeweave.graph.capture import Graph
from edgeweave.graph.layerwise import LayerPart, LayerSplit
from edgeweave.graph.regions import EMPTY
from edgeweave.graph.tiles import (
    Tile,
    input_bytes,
    peak_activation_bytes,
    received_bytes,
    sent_bytes,
)
from edgeweave.plan.medium import Schedule, Task, simulate
from edgeweave.plan.medium_codecs import ratios
from edgeweave.profile.build import latencies_on
from edgeweave.profile.schema import Profile
from edgeweave.profile.tile_calibration import tile_call_costs, tile_call_ms
from edgeweave.topology import Cluster, Fleet

MIB = 2**20
def mib(nbytes: float) -> str:
    """Bytes as MiB for a message, to three significant digits."""
    return f"{nbytes / MIB:.3g} MiB"


@dataclass(frozen=True)
class ClusterDevice:
    """One device as priced: its layer latencies and the memory a model may use on it."""

    name: str
    hardware: str
    gflops: float
    node_ms: dict[str, float]
    limit_bytes: float
    call_ms: float = 0.0  # the fixed cost of one layer call, paid again by every task
    node_call_ms: Mapping[str, float] = field(default_factory=dict)  # per layer, when measured

    def call_of(self, name: str) -> float:
        """Layer ``name``'s per-call cost on this device (its own if calibrated, else the
        host's mean)."""
        return self.node_call_ms.get(name, self.call_ms)


@dataclass(frozen=True)
class TileWork:
    """A tile's device-independent cost: the share of each layer it computes, its traffic,
    the tiles whose shared halo it waits for, and its peak feature-map bytes."""

    index: int
    level: int
    fractions: dict[str, float]
    in_bytes: int
    out_bytes: int
    after: tuple[int, ...]
    peak_bytes: int
    crop_bytes: int = 0  # the part of in_bytes that is the frame's crop (the rest: reused)


class ClusterModel:
    """A fleet's cluster with every device's layer latencies, ready to price tasks."""

    def __init__(self, profile: Profile, fleet: Fleet, cluster: Cluster,
                 input_codec: str = "none", result_codec: str = "none",
                 ms_per_mb: float = 0.0, compute_scale: Mapping[str, float] | None = None,
                 graph: Graph | None = None) -> None:
        """``ms_per_mb``: the runtime's measured cost per MiB a task carries (module
        docstring); the per-call cost comes from the profile's tile calibration (none: 0).
        ``compute_scale``: device -> how much longer its tasks ran than this model priced them
        (plan.run_calibration: measured on the running devices); every layer latency and call
        cost of that device is multiplied by it. ``graph``: the model, which a compressing
        codec's ratio is measured on (plan.medium_codecs)."""
        if not ms_per_mb >= 0:
            raise PlanError(f"the runtime's task overhead must be >= 0 ms per MiB, got "
                            f"{ms_per_mb}")
        scale = dict(compute_scale or {})
        bad = {n: k for n, k in scale.items() if not 0 < k < float("inf")}
        if bad:
            raise PlanError(f"a device's compute scale must be a positive number, got {bad}")
        self.compute_scale = scale
        self.cluster = cluster
        self.ms_per_mb = ms_per_mb
        measured_call = tile_call_ms(profile)
        self.calibrated = measured_call is not None
        host_call = measured_call or 0.0
        host_calls = tile_call_costs(profile)
        host_gflops = float(((profile.model_extra or {}).get("host") or {}).get("gflops", 0.0))
        self.input_codec, self.result_codec = input_codec, result_codec
        self.input_ratio, self.result_ratio = ratios(graph, input_codec, result_codec)
        self.gateway = cluster.gateway_name
        self.medium = cluster.medium
        self.devices: dict[str, ClusterDevice] = {}
        for name in cluster.devices:
            node = fleet.node(name)
            k = scale.get(name, 1.0)
            # a call's fixed cost scales to the device as a latency does
            to_device = k * host_gflops / node.hardware.gflops if host_gflops else 0.0
            self.devices[name] = ClusterDevice(
                name, node.hardware.name, node.hardware.gflops,
                {n: ms * k for n, ms in latencies_on(profile, node.hardware).items()},
                cluster.limit_mb(node) * MIB,
                host_call * to_device, {n: c * to_device for n, c in host_calls.items()})

        # each layer's call cost on each device, looked up once (compute_ms is hot)
        self._calls = {name: {n: dev.call_of(n) for n in dev.node_ms}
                       for name, dev in self.devices.items()}

    @property
    def names(self) -> list[str]:
        return list(self.devices)

    def task_bytes(self, work: TileWork) -> tuple[int, int]:
        """What a tile puts on the medium, in and out, in the plan's codecs."""
        reused = work.in_bytes - work.crop_bytes
        return (round(work.crop_bytes * self.input_ratio + reused * self.result_ratio),
                round(work.out_bytes * self.result_ratio))

    def part_bytes(self, part: LayerPart, frame_input: bool) -> tuple[int, int]:
        """What a layer-wise part puts on the medium: its input rows (the frame's when the
        split layer reads the model's input; its halo only when its device kept the rest,
        graph.resident) and its output (or the rows of it others read)."""
        ratio = self.input_ratio if frame_input else self.result_ratio
        return round(part.wire_in * ratio), round(part.wire_out * self.result_ratio)

    def compute_ms(self, device: str, fractions: Mapping[str, float]) -> float:
        """A task's compute on ``device``: its FLOP share of each layer and the fixed call
        cost each layer it computes part of pays again."""
        ms, calls = self.devices[device].node_ms, self._calls[device]
        return sum(ms[name] * share + calls[name] * (1.0 - share)
                   for name, share in fractions.items() if share > 0)

    def runtime_ms(self, in_bytes: int, out_bytes: int) -> float:
        """What the runtime spends on a task carrying these bytes (its wire bytes, in the
        plan's codecs), besides compute and the medium."""
        return self.ms_per_mb * (in_bytes + out_bytes) / MIB

    def task(self, device: str, compute_ms: float, in_bytes: int, out_bytes: int,
             after: tuple[int, ...] = ()) -> Task:
        """A task for the medium's simulation: compute plus the runtime's cost for its bytes."""
        return Task(device, compute_ms + self.runtime_ms(in_bytes, out_bytes), in_bytes,
                    out_bytes, after)

    def simulate(self, tasks: Sequence[Task]) -> Schedule:
        return simulate(tasks, self.gateway, self.medium.mbps, self.medium.rtt_ms)


def tile_work(block: FusedBlock, tiles: Sequence[Tile], frame_input: bool = True
              ) -> list[TileWork]:
    """Every tile's :class:`TileWork`, level-0 tiles first (the order devices run them).
    ``frame_input``: the block reads the frame (its crops travel in the input codec); a later
    block of several (DeeperThings) reads a computed map, in the result codec."""
    work = []
    for tile in sorted(tiles, key=lambda t: (t.level, t.index)):
        sources = sorted({p.source for pieces in tile.reused.values() for p in pieces})
        work.append(TileWork(
            tile.index, tile.level,
            {n.name: tile.computes.get(n.name, EMPTY).area / n.map_area for n in block.nodes},
            received_bytes(block, tile), sent_bytes(block, tile), tuple(sources),
            peak_activation_bytes(block, tile.holds, tile.computes),
            input_bytes(block, tile) if frame_input else 0))
    return work


def tile_tasks(model: ClusterModel, work: Sequence[TileWork], assignment: Sequence[str],
               table: Mapping[tuple[int, str], float] | None = None) -> list[Task]:
    """Tasks for ``work`` (in its order) with ``assignment[k]`` the device of ``work[k]``;
    ``table`` holds ``(k, device) -> compute ms`` when the caller prices many assignments."""
    position = {w.index: k for k, w in enumerate(work)}
    return [model.task(device, table[(k, device)] if table is not None
                       else model.compute_ms(device, w.fractions), *model.task_bytes(w),
                       tuple(position[s] for s in w.after))
            for k, (w, device) in enumerate(zip(work, assignment, strict=True))]


def compute_table(model: ClusterModel, work: Sequence[TileWork],
                  allowed: Sequence[Sequence[str]]) -> dict[tuple[int, str], float]:
    """Each tile's compute time on each device it may run on."""
    return {(k, name): model.compute_ms(name, w.fractions)
            for k, (w, options) in enumerate(zip(work, allowed, strict=True))
            for name in options}


def layer_tasks(model: ClusterModel, split: LayerSplit, devices: Sequence[str],
                frame_input: bool = False) -> list[Task]:
    """One split layer's parts as tasks; ``devices[p.device]`` runs part ``p``;
    ``frame_input``: the layer reads the model's input (its rows travel in the input codec).
    The gateway computes its own parts in-process (runtime.cluster.layers): they pay no
    runtime cost per MiB."""
    out = []
    for p in split.parts:
        device = devices[p.device]
        compute = model.compute_ms(device, p.fractions)
        nbytes = model.part_bytes(p, frame_input)
        out.append(Task(device, compute, *nbytes) if device == model.gateway
                   else model.task(device, compute, *nbytes))
    return out


def layer_memory(graph: Graph, splits: Sequence[LayerSplit], devices: Sequence[str]
                 ) -> dict[str, int]:
    """Bytes each device holds for a layer-wise split: the whole kernel of every convolution
    it computes rows of, its share of every fully connected layer's neurons, and its largest
    part's input and output."""
    weights = dict.fromkeys(devices, 0)
    largest = dict.fromkeys(devices, 0)
    for split in splits:
        params = sum(graph.node(u).param_bytes for u in split.unit)
        for part in split.parts:
            name = devices[part.device]
            share = part.fractions[split.unit[0]] if split.kind == "neurons" else 1.0
            weights[name] += int(params * share)
            largest[name] = max(largest[name], part.in_bytes + part.out_bytes)
    return {name: weights[name] + largest[name] for name in devices}
