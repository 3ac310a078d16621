"""Heterogeneous clients from a fleet: how long each client's local epoch and upload take.

Client i runs on one of the fleet's device nodes (round robin in file order, or at random), so a
simulated federation of 100 clients on the ``multi-device`` fleet is a mix of Raspberry Pi 3s,
Pi 4s and Jetson Nanos with their own uplinks. Times come from the same figures the co-inference
planner uses: the device's sustained GFLOP/s (``HardwareProfile.gflops``) and the device->edge
link through :func:`edgeweave.topology.transfer_ms`, the single definition of transfer time.

Training costs about 3x the forward FLOPs per sample (forward, plus backward through activations
and weights, each about one forward; Kaplan et al. 2020 use the same 2x-backward rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeweave.errors import EdgeWeaveError
from edgeweave.topology import Fleet, Link, Node
from edgeweave.train.backends.base import Backend
from edgeweave.train.types import ClientInfo, FitConfig, Params, TrainError, Updates

#: forward + backward (activation grads + weight grads) ~ 3 forward passes
TRAIN_FLOPS_PER_FORWARD = 3.0


def model_costs(model: nn.Module, sample_shape: Sequence[int]) -> tuple[int, int]:
    """(forward FLOPs for one sample, bytes of the float parameters a client uploads)."""
    from edgeweave.graph import capture

    try:
        graph = capture(model, (1, *sample_shape), name=type(model).__name__)
    except EdgeWeaveError as e:
        raise TrainError(f"fleet clients: cannot count the model's FLOPs: {e}") from None
    nbytes = sum(v.numel() * v.element_size() for v in model.state_dict().values()
                 if torch.is_floating_point(v))
    return int(graph.total_flops), int(nbytes)


def uplink(fleet: Fleet, device: Node) -> tuple[Link, Node]:
    """The link a device uploads its update over and the node at its other end: the link to its
    edge (:meth:`~edgeweave.topology.Fleet.edge_of`: the one it names, else the fastest-linked),
    or the fastest link to a cloud when no edge serves the device."""
    edge = fleet.edge_of(device.name)
    if edge is not None:
        link = fleet.link(device.name, edge.name)
        assert link is not None  # the fleet validates that a named edge is linked
        return link, edge
    links = [(lk, fleet.node(lk.other_end(device.name))) for lk in fleet.links
             if device.name in (lk.src, lk.dst)]
    links = [(lk, n) for lk, n in links if n.tier == "cloud"]
    if links:
        return max(links, key=lambda p: p[0].mbps)
    raise TrainError(f"fleet {fleet.name!r}: device {device.name!r} has no link to an edge or "
                     "cloud node to upload its update over")


def _placement(fleet: Fleet, n: int, assign: str, rng: np.random.Generator) -> list[Node]:
    devices = fleet.nodes_in("device")
    if not devices:
        raise TrainError(f"fleet {fleet.name!r}: no device nodes to place clients on")
    if assign not in ("cycle", "random"):
        raise TrainError(f"fleet clients: assign must be 'cycle' or 'random', got {assign!r}")
    which = np.arange(n) % len(devices) if assign == "cycle" else rng.integers(0, len(devices), n)
    return [devices[int(j)] for j in which]


def client_devices(fleet: Fleet, n: int, assign: str = "cycle", seed: int = 0) -> list[Node]:
    """The device node each of clients 0..n-1 runs on (as :func:`fleet_clients` places them):
    ``"cycle"`` takes the fleet's devices in file order (client i on device i mod D),
    ``"random"`` draws one per client from ``seed``."""
    return _placement(fleet, n, assign, np.random.default_rng(seed))


def edge_groups(fleet: Fleet, n: int, assign: str = "cycle",
                seed: int = 0) -> dict[str, list[int]]:
    """Clients 0..n-1 by the edge node their device trains under (hierarchical FL's groups),
    edges in the fleet's file order, those without clients left out. Every client needs an
    edge: the cloud aggregates edges, not devices."""
    by_edge: dict[str, list[int]] = {e.name: [] for e in fleet.nodes_in("edge")}
    for cid, dev in enumerate(client_devices(fleet, n, assign, seed)):
        edge = fleet.edge_of(dev.name)
        if edge is None:
            raise TrainError(f"fleet {fleet.name!r}: device {dev.name!r} (client {cid}) is "
                             "linked to no edge node; in hierarchical FL every device trains "
                             "under an edge (link it to one)")
        by_edge[edge.name].append(cid)
    return {name: ids for name, ids in by_edge.items() if ids}


@dataclass(frozen=True)
class FleetClients:
    """Where each simulated client lives: its device node, the server it uploads to, and the
    resulting :class:`ClientInfo` (what FedCS and the server's deadline logic read)."""

    infos: list[ClientInfo]
    device: list[str]
    edge: list[str]
    flops_per_sample: int
    model_bytes: int

    @property
    def compute_s_per_epoch(self) -> list[float]:
        return [c.compute_s_per_epoch for c in self.infos]

    @property
    def upload_s(self) -> list[float]:
        return [c.upload_s for c in self.infos]

    def groups(self) -> dict[str, list[int]]:
        """Client ids by the edge (or cloud) node they upload to: hierarchical FL's groups."""
        out: dict[str, list[int]] = {}
        for i, e in enumerate(self.edge):
            out.setdefault(e, []).append(self.infos[i].client_id)
        return out


def fleet_clients(fleet: Fleet, num_examples: Sequence[int], model: nn.Module,
                  sample_shape: Sequence[int], assign: str = "cycle", seed: int = 0,
                  jitter: float = 0.0) -> FleetClients:
    """Map clients 0..N-1 (with these data sizes) onto the fleet's device nodes.

    ``assign="cycle"`` takes devices in file order, ``"random"`` draws one per client.
    ``jitter`` (sigma of a log-normal factor on compute time) spreads clients that share a device
    type: identical boards still differ under thermal throttling and background load, and a
    federation of exact clones would make every selection policy look the same.
    """
    if jitter < 0:
        raise TrainError(f"fleet clients: jitter must be >= 0, got {jitter}")
    rng = np.random.default_rng(seed)
    n = len(num_examples)
    placed = _placement(fleet, n, assign, rng)
    flops, nbytes = model_costs(model, sample_shape)
    slow = rng.lognormal(0.0, jitter, n) if jitter > 0 else np.ones(n)
    ups = {d.name: uplink(fleet, d) for d in fleet.nodes_in("device")}
    infos, names, servers = [], [], []
    for i, (size, dev) in enumerate(zip(num_examples, placed, strict=True)):
        link, server = ups[dev.name]
        compute = TRAIN_FLOPS_PER_FORWARD * flops * int(size) / (dev.hardware.gflops * 1e9)
        infos.append(ClientInfo(
            client_id=i, num_examples=int(size), compute_s_per_epoch=compute * float(slow[i]),
            upload_s=link.transfer_ms(nbytes) / 1000.0, device=dev.name,
        ))
        names.append(dev.name)
        servers.append(server.name)
    return FleetClients(infos, names, servers, flops, nbytes)


class FleetSpeeds(Backend):
    """``inner``'s clients with the fleet's speeds, for backends whose clients report only their
    sample count (real devices over gRPC): client i takes ``speeds[i] = (seconds per example
    and epoch, seconds per upload)`` times its registered examples, so FedCS and the deadline
    logic see the fleet's hardware and links. Everything else is ``inner``'s."""

    def __init__(self, inner: Backend, speeds: Mapping[int, tuple[float, float]]) -> None:
        self.inner, self.speeds = inner, dict(speeds)
        self.name = inner.name

    def available_clients(self) -> list[ClientInfo]:
        out = []
        for c in self.inner.available_clients():
            per_example, upload = self.speeds.get(c.client_id, (0.0, 0.0))
            out.append(replace(c, compute_s_per_epoch=per_example * c.num_examples,
                               upload_s=upload))
        return out

    def fit(self, round_num: int, global_params: Params, client_ids: list[int],
            config: FitConfig) -> Updates:
        return self.inner.fit(round_num, global_params, client_ids, config)

    def state(self) -> dict[str, Any]:
        return self.inner.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.inner.load_state(state)

    def close(self) -> None:
        self.inner.close()
