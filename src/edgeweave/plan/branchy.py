"""A BranchyNet as Edgent's input: per-exit chain profiles and accuracies, measured once.

The whole branchy network is captured as one graph (its outputs are the exits' logits) and
profiled once: the regression fit and the calibration sweep behind it are the slow part of
profiling, and every exit's sub-model "prefix + head" is a subgraph of that one graph, with the
very same per-node predictions it would get profiled on its own. Accuracy is each exit answering
every sample (Edgent's right-sizing), on held-out data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from edgeweave.adapt.datasets import Split, digits
from edgeweave.adapt.exits import BranchyNet, attach_exits, train_joint
from edgeweave.errors import PlanError
from edgeweave.graph import Graph, capture
from edgeweave.plan.edgent import ExitBranch, branches_from_profile
from edgeweave.profile import Profile, profile_graph
from edgeweave.topology import Fleet

#: Side of the (upsampled) digit images: at 8x8 the input is 256 bytes and uploading it costs
#: nothing next to the link's RTT, so no bandwidth would ever change the choice; at 32x32 (4 KB)
#: the upload costs like a small camera frame's and the device/edge trade-off is real.
DIGITS_SIDE = 32
#: Channels of the first conv stage; 32 makes the whole model cost the emulated Raspberry Pi
#: about twice the Wi-Fi RTT, so running it on the device and offloading it both have a case.
DIGITS_WIDTH = 32
#: Exits after the first and second conv-relu-pool stages; with the backbone's own output that
#: makes three exits.
DIGITS_EXITS = (2, 5)
#: Stage keys of :func:`exit_placement`: nodes of other exits go to a stage never run.
STAGE_ORDER = ("device", "edge", "unused")
#: The model specifier node servers build the branchy net from, as
#: ``digits-branchy:side=32,width=32`` (:func:`branchy_spec`); they receive only its weights.
BRANCHY_MODEL = "digits-branchy"
#: Largest side and width a node builds for a peer: the classifier grows as width x side^2
#: (128 x 128: 67 MB of weights), and the peer picks both.
MAX_SPEC_SIDE = 128
MAX_SPEC_WIDTH = 128


@dataclass(frozen=True)
class BranchyProfile:
    graph: Graph
    profile: Profile
    branches: list[ExitBranch]


def digits_backbone(side: int = DIGITS_SIDE, width: int = DIGITS_WIDTH,
                    num_classes: int = 10) -> nn.Sequential:
    """Three conv-relu-maxpool stages (width, 2 x width, 4 x width channels) and a two-layer
    classifier."""
    if side < 8 or side % 8:
        raise PlanError(f"side: expected a multiple of 8 that is >= 8, got {side}")
    if width < 1:
        raise PlanError(f"width: expected >= 1 channel, got {width}")
    c1, c2, c3 = width, 2 * width, 4 * width
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c3 * (side // 8) ** 2, 128), nn.ReLU(),
        nn.Linear(128, num_classes))


def upsample(x: torch.Tensor, side: int) -> torch.Tensor:
    return x if x.shape[-1] == side else F.interpolate(x, size=(side, side), mode="bilinear",
                                                       align_corners=False)


def branchy_net(side: int = DIGITS_SIDE, width: int = DIGITS_WIDTH) -> BranchyNet:
    """The untrained digits branchy net: :func:`digits_backbone` with its exits attached."""
    return attach_exits(digits_backbone(side, width), DIGITS_EXITS, 10, (1, 1, side, side))


def branchy_spec(side: int = DIGITS_SIDE, width: int = DIGITS_WIDTH) -> str:
    """The specifier a node server builds ``branchy_net(side, width)`` from."""
    return f"{BRANCHY_MODEL}:side={side},width={width}"


def branchy_from_spec(spec: str) -> tuple[BranchyNet, tuple[int, ...]]:
    """The untrained net and input shape a :func:`branchy_spec` string names; a PlanError names
    a malformed or out-of-bounds parameter."""
    name, _, params = spec.partition(":")
    if name != BRANCHY_MODEL:
        raise PlanError(f"model {spec!r} is not a {BRANCHY_MODEL} specifier")
    values: dict[str, int] = {}
    for item in params.split(","):
        key, _, value = item.partition("=")
        if key not in ("side", "width") or key in values or not value.isdigit():
            raise PlanError(f"model {spec!r}: expected {branchy_spec()} (side and width, "
                            f"each once, as integers)")
        values[key] = int(value)
    if set(values) != {"side", "width"}:
        raise PlanError(f"model {spec!r}: expected both side and width, as in {branchy_spec()}")
    side, width = values["side"], values["width"]
    if side > MAX_SPEC_SIDE or width > MAX_SPEC_WIDTH:
        raise PlanError(f"model {spec!r}: nodes build side <= {MAX_SPEC_SIDE} and width <= "
                        f"{MAX_SPEC_WIDTH}")
    return branchy_net(side, width), (1, 1, side, side)


@dataclass(frozen=True)
class TrainedBranchy:
    net: BranchyNet
    data: Split  # images already at ``input_shape``
    input_shape: tuple[int, ...]
    accuracies: list[float]  # each exit alone, on data's test split
    spec: str = ""  # what node servers build the net from (:func:`branchy_spec`)


def digits_branchy(side: int = DIGITS_SIDE, width: int = DIGITS_WIDTH, epochs: int = 6,
                   seed: int = 0) -> TrainedBranchy:
    """The Edgent digits CNN with its three exits, trained jointly (BranchyNet's weighted sum
    of exit losses, adapt's loop) on sklearn's digits at ``side`` x ``side``, fixed seed;
    about ten seconds on one busy CPU core. Accuracies are measured on the test split."""
    torch.manual_seed(seed)
    raw = digits(seed=seed)
    data = Split(*(upsample(t, side) if t.dim() == 4 else t for t in (
        raw.x_train, raw.y_train, raw.x_val, raw.y_val, raw.x_test, raw.y_test)))
    net = branchy_net(side, width)
    train_joint(net, data.x_train, data.y_train, epochs=epochs, seed=seed)
    return TrainedBranchy(net.eval(), data, (1, 1, side, side),
                          exit_accuracies(net, data.x_test, data.y_test),
                          branchy_spec(side, width))


@torch.no_grad()
def exit_accuracies(net: BranchyNet, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Accuracy of each exit answering every sample of ``(x, y)``, early exits first."""
    if len(x) == 0 or len(x) != len(y):
        raise PlanError(f"x/y: need the same positive number of samples, got {len(x)}/{len(y)}")
    net.eval()
    return [float((out.argmax(1) == y).float().mean()) for out in net(x)]


def profile_branchy(net: BranchyNet, fleet: Fleet, accuracies: Sequence[float],
                    input_shape: Sequence[int], device: str | None = None,
                    repeats: int = 5, name: str = "branchy", spec: str | None = None
                    ) -> BranchyProfile:
    """Capture and profile ``net`` once on ``fleet`` (regression latency source), then cut
    the profile into one :class:`ExitBranch` per exit carrying ``accuracies``. ``spec``
    (``TrainedBranchy.spec``) lets the runtime deploy the graph's stages to node servers."""
    graph = capture(net, tuple(input_shape), name=name, spec=spec)
    if len(graph.outputs) != net.num_exits:
        raise PlanError(f"{name}: captured {len(graph.outputs)} outputs, expected one per exit "
                        f"({net.num_exits})")
    prof = profile_graph(graph, fleet, device=device, warmup=1, repeats=repeats)
    return BranchyProfile(graph, prof, branches_from_profile(prof, accuracies))


def exit_placement(graph: Graph, branch: ExitBranch, cut: int) -> dict[str, str]:
    """A placement of the whole branchy graph for ``graph.split(..., STAGE_ORDER)`` that runs
    exit ``branch.exit`` cut after ``cut`` operators: its input and first ``cut`` operators on
    "device", its other operators on "edge", and every node of other exits on "unused" (last,
    so no edge runs backwards; that stage is simply never called)."""
    names = [n.name for n in branch.profile.nodes]
    inputs = {branch.profile.nodes[i].name for i in branch.input_indices()}
    ops = [n for n in names if n not in inputs]
    if not 0 <= cut <= len(ops):
        raise PlanError(f"cut: expected 0..{len(ops)} for exit {branch.exit}, got {cut}")
    placement = {n.name: "unused" for n in graph.nodes}
    placement.update({n: "device" for n in inputs})
    placement.update({n: "device" if i < cut else "edge" for i, n in enumerate(ops)})
    return placement


def exit_graph(graph: Graph, branch: ExitBranch) -> Graph:
    """Exit ``branch.exit`` of the captured branchy ``graph`` as a graph of its own (the chain
    prefix + head, sharing the captured module), for plans made by
    :func:`~edgeweave.plan.edgent.option_plan`: split() and the runtime take it as any model."""
    keep = {n.name for n in branch.profile.nodes}
    return Graph(module=graph.module, nodes=[n for n in graph.nodes if n.name in keep],
                 outputs=[graph.outputs[branch.exit]], input_shape=graph.input_shape,
                 name=f"{graph.name}@exit{branch.exit}", traced=graph.traced,
                 fallback_reason=graph.fallback_reason, spec=graph.spec)
