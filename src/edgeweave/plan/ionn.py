"""Incremental model upload (IONN, Jeong et al. 2018): which layers to upload to the edge first,
and the best plan a device can run with only the layers that have arrived.

A model's weights may take minutes to reach the edge (AlexNet's 244 MB at 5 Mbit/s: 6.5 min), so
IONN uploads them in partitions, the one that cuts the query latency most per byte first, while
the device keeps answering queries with the best plan over what the edge already holds.

Plans are IONN's execution-graph paths: every node runs on the device or on the edge, and a
query may cross the link as often as that pays: device -> edge -> device is a plan (the edge
runs a middle segment and sends its activation back), which is what lets compute-heavy early
layers pay off long before the model's large last layers have arrived. The cost is the
co-inference cost model's (`costs.py`), along the topological order: node compute on its tier,
and at every switch the tensors live at that position cross the first hop (rtt/2 +
serialisation, at the cut codec's measured bytes either way); a query ending on the edge
returns the model's outputs raw. Exact for chains; for a DAG a switch ships every tensor live at
that position, a superset of what the segment needs, so its price is an upper bound. The
shortest path is a two-state dynamic program over positions, run for many candidate uploads
at once (numpy rows).

Upload order (IONN's partitioning): from what the edge holds, try every set of layers still
missing (every subset while few are; for larger models runs of consecutive layers in
topological order, and the layers the best full plan still lacks); take the one whose best
plan saves the most milliseconds per uploaded byte, trimmed to the layers that plan runs on
the edge. Repeat until no upload lowers the latency: the edge receives only weights a plan
uses. A byte is a byte as uploaded: with a weight codec (fp16 or per-channel int8,
`codec.weights`) each layer is priced at its encoded size (``upload_bytes``), and
`plan.upload_codec` chooses the codec.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeweave.errors import PlanError
from edgeweave.plan.costs import CostModel
from edgeweave.plan.scan import crossing_bytes
from edgeweave.profile.schema import Profile

#: While at most this many layers are missing, every subset of them is tried: IONN's greedy
#: exactly (AlexNet has 8 layers with weights, VGG-16 16).
EXHAUSTIVE = 12
#: Beyond that, runs of at most this many consecutive layers are tried in the middle of the
#: model (prefixes and suffixes always): a 300-layer model's search stays a few thousand rows.
MAX_RUN = 24
DEVICE, EDGE = 0, 1


@dataclass(frozen=True)
class SegmentPlan:
    """A query's path: consecutive segments of the topological order, each on one tier."""

    segments: tuple[tuple[str, tuple[str, ...]], ...]  # (tier, node names in order)
    total_ms: float
    codec: str  # activation codec of every crossing but the model's outputs (returned raw)

    @property
    def edge_nodes(self) -> frozenset[str]:
        return frozenset(n for tier, nodes in self.segments[1:] for n in nodes
                         if tier != self.segments[0][0])

    @property
    def offloads(self) -> bool:
        return len(self.segments) > 1

    @property
    def mode(self) -> str:
        """The tiers a query visits: ``device-only``, ``device-edge``, ``device-edge-device``."""
        tiers = [tier for tier, _ in self.segments]
        return f"{tiers[0]}-only" if len(tiers) == 1 else "-".join(tiers)

    def keys(self) -> list[str]:
        """One stage key per segment, in order (``split`` cuts the graph by them)."""
        return [f"{k}:{tier}" for k, (tier, _) in enumerate(self.segments)]

    def placement(self) -> dict[str, str]:
        return {n: key for key, (_, nodes) in zip(self.keys(), self.segments, strict=True)
                for n in nodes}

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "total_ms": self.total_ms, "codec": self.codec,
                "segments": [{"tier": t, "nodes": list(n)} for t, n in self.segments]}


@dataclass(frozen=True)
class UploadStep:
    """One partition: the layers it uploads, what that costs and the plan once it has landed."""

    nodes: tuple[str, ...]
    nbytes: int
    upload_s: float  # at the link's planned rate, the link to itself
    benefit_ms: float  # per query, against the plan before it landed
    plan: SegmentPlan

    def to_json(self) -> dict[str, Any]:
        return {"nodes": list(self.nodes), "bytes": self.nbytes, "upload_s": self.upload_s,
                "benefit_ms": self.benefit_ms, "plan": self.plan.to_json()}


@dataclass(frozen=True)
class UploadSchedule:
    """The partitions in upload order, each priced, and the plan before any has landed."""

    model: str
    strategy: str  # "incremental" (IONN's order) or "whole" (everything, then offload)
    link_mbps: float
    initial: SegmentPlan
    steps: tuple[UploadStep, ...]
    weight_codec: str = "none"  # how the weights travel (edgeweave.codec.weights)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.steps)

    @property
    def first_benefit_s(self) -> float | None:
        """When the first partition lands, if the link is the upload's alone (None: never)."""
        return self.steps[0].upload_s if self.steps else None

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "strategy": self.strategy, "link_mbps": self.link_mbps,
                "weight_codec": self.weight_codec, "bytes": self.nbytes,
                "predicted_first_benefit_s": self.first_benefit_s,
                "initial": self.initial.to_json(), "steps": [s.to_json() for s in self.steps]}


class _Paths:
    """The shortest-path program over one profile's first hop, for many candidate uploads."""

    def __init__(self, profile: Profile, codecs: Sequence[str],
                 upload_bytes: Mapping[str, int] | None = None):
        if len(profile.tiers) < 2:
            raise PlanError(f"{profile.model}: incremental upload needs a device and an edge "
                            f"tier; the fleet has {profile.tiers}")
        if not codecs:
            raise PlanError("--codec: give at least one codec")
        self.profile = profile
        self.tiers = (profile.tiers[0], profile.tiers[1])
        hop = profile.hop_names()[0]
        self.link = profile.links[hop]
        self.codecs = tuple(codecs)
        cms = [CostModel(profile, cuts={hop: c}) for c in self.codecs]
        cm = self.cm = cms[0]
        self.order = np.asarray(cm.order)
        self.names = [cm.names[u] for u in self.order]
        self.dev_ms = cm.lat[self.order, DEVICE]
        self.edge_ms = cm.lat[self.order, EDGE]
        self.param_bytes = cm.param_bytes[self.order]
        if upload_bytes is not None:  # each layer at its size as uploaded (a weight codec's)
            self.param_bytes = np.array([upload_bytes.get(n, 0) if b > 0 else 0 for n, b
                                         in zip(self.names, self.param_bytes, strict=True)])
        fixed = np.zeros(cm.n, dtype=bool)
        fixed[cm.inputs] = True  # the input is produced on the device
        self.edge_ok = ~fixed[self.order] & np.isfinite(self.edge_ms)
        # a codec prices the tensors crossing a switch either way (IONN's returns are cuts too)
        self.cross_ms = np.stack([self._transfer_ms(crossing_bytes(c, c.order, c.hop_bytes[0])
                                                    [: cm.n]) for c in cms])
        self.final_ms = self.link.transfer_ms(sum(cm.out_bytes[o] for o in cm.outputs))
        self.position = {n: p for p, n in enumerate(self.names)}

    def _transfer_ms(self, nbytes: np.ndarray) -> np.ndarray:
        """The link's transfer time of each entry (the one formula, applied elementwise)."""
        return np.asarray(self.link.transfer_ms(nbytes), dtype=float)  # type: ignore[arg-type]

    def needs_upload(self) -> np.ndarray:
        return self.param_bytes > 0

    def solve(self, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each row of ``allowed`` (which positions may run on the edge): the best
        latency over the codecs, the codec's index and the tier of every position."""
        best = np.full(allowed.shape[0], np.inf)
        best_codec = np.zeros(allowed.shape[0], dtype=int)
        best_labels = np.zeros(allowed.shape, dtype=int)
        for c in range(len(self.codecs)):
            total, labels = self._solve(allowed, self.cross_ms[c])
            better = total < best - 1e-9
            best = np.where(better, total, best)
            best_codec[better] = c
            best_labels[better] = labels[better]
        return best, best_codec, best_labels

    def _solve(self, allowed: np.ndarray, cross_ms: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        rows, n = allowed.shape
        dev, edge = np.zeros(rows), np.full(rows, np.inf)
        came_up = np.zeros((n, rows), dtype=bool)  # edge state entered from the device here
        came_down = np.zeros((n, rows), dtype=bool)
        for p in range(n):
            to_dev, to_edge = edge + cross_ms[p], dev + cross_ms[p]
            came_down[p], came_up[p] = to_dev < dev, to_edge < edge
            dev, edge = np.minimum(dev, to_dev), np.minimum(edge, to_edge)
            dev = dev + self.dev_ms[p]
            edge = np.where(allowed[:, p], edge + self.edge_ms[p], np.inf)
        end_edge = edge + self.final_ms
        state = np.where(end_edge < dev, EDGE, DEVICE)
        total = np.minimum(dev, end_edge)
        labels = np.zeros((rows, n), dtype=int)
        for p in range(n - 1, -1, -1):  # walk the choices back
            labels[:, p] = state
            state = np.where((state == DEVICE) & came_down[p], EDGE,
                             np.where((state == EDGE) & came_up[p], DEVICE, state))
        return total, labels

    def plan_of(self, labels: np.ndarray, total: float, codec: int) -> SegmentPlan:
        segments: list[tuple[str, list[str]]] = []
        for name, lab in zip(self.names, labels, strict=True):
            tier = self.tiers[int(lab)]
            if segments and segments[-1][0] == tier:
                segments[-1][1].append(name)
            else:
                segments.append((tier, [name]))
        return SegmentPlan(tuple((t, tuple(ns)) for t, ns in segments), float(total),
                           self.codecs[codec])

    def base_allowed(self, uploaded: Iterable[str]) -> np.ndarray:
        allowed = self.edge_ok & ~self.needs_upload()
        for name in uploaded:
            p = self.position[name]
            allowed[p] = self.edge_ok[p]
        return allowed

    def best(self, allowed: np.ndarray) -> tuple[SegmentPlan, np.ndarray]:
        total, codec, labels = self.solve(allowed[None, :])
        return self.plan_of(labels[0], total[0], codec[0]), labels[0]


def best_plan(profile: Profile, uploaded: Iterable[str], codecs: Sequence[str] = ("none",)
              ) -> SegmentPlan:
    """The fastest plan using only ``uploaded`` layers (and layers without weights) on the
    edge."""
    paths = _Paths(profile, codecs)
    return paths.best(paths.base_allowed(uploaded))[0]


def upload_schedule(profile: Profile, codecs: Sequence[str] = ("none",),
                    uploaded: Iterable[str] = (), upload_bytes: Mapping[str, int] | None = None,
                    weight_codec: str = "none") -> UploadSchedule:
    """IONN's upload order from what the edge already holds (``uploaded``); see module doc.
    ``upload_bytes``: each layer's bytes as uploaded with ``weight_codec`` (default: the
    profile's raw parameter bytes)."""
    paths = _Paths(profile, codecs, upload_bytes)
    held = set(uploaded)
    allowed = paths.base_allowed(held)
    current, _ = paths.best(allowed)
    initial = current
    _, full_labels = paths.best(paths.edge_ok.copy())
    steps = []
    while True:
        missing = np.flatnonzero(paths.needs_upload() & paths.edge_ok & ~allowed)
        rows = _candidates(allowed, missing, full_labels == EDGE)
        if not len(rows):
            break
        total, codec, labels = paths.solve(rows)
        new = (labels == EDGE) & ~allowed[None, :]
        nbytes = new @ paths.param_bytes
        benefit = current.total_ms - total
        useful = (benefit > 1e-9 * max(1.0, current.total_ms)) & (nbytes > 0)
        if not useful.any():
            break
        ratio = np.where(useful, benefit / np.maximum(nbytes, 1), -np.inf)
        k = int(np.lexsort((-benefit, -ratio))[0])  # most per byte; then most saved
        plan = paths.plan_of(labels[k], total[k], codec[k])
        nodes = tuple(paths.names[p] for p in np.flatnonzero(new[k]))
        steps.append(UploadStep(nodes, int(nbytes[k]), _upload_s(nbytes[k], paths.link.mbps),
                                float(benefit[k]), plan))
        allowed = allowed | new[k]
        current = plan
    return UploadSchedule(profile.model, "incremental", paths.link.mbps, initial, tuple(steps),
                          weight_codec)


def upload_all_schedule(profile: Profile, codecs: Sequence[str] = ("none",),
                        upload_bytes: Mapping[str, int] | None = None,
                        weight_codec: str = "none") -> UploadSchedule:
    """The baseline IONN compares with: the whole model in one partition, then the best plan
    (nothing, when no plan beats the one that needs no upload)."""
    paths = _Paths(profile, codecs, upload_bytes)
    initial, _ = paths.best(paths.base_allowed(()))
    final, _ = paths.best(paths.edge_ok.copy())
    needed = paths.needs_upload() & paths.edge_ok
    nodes = tuple(n for n, need in zip(paths.names, needed, strict=True) if need)
    nbytes = int(paths.param_bytes[needed].sum())
    benefit = initial.total_ms - final.total_ms
    step = UploadStep(nodes, nbytes, _upload_s(nbytes, paths.link.mbps), benefit, final)
    pays = nodes and benefit > 1e-9 * max(1.0, initial.total_ms)
    return UploadSchedule(profile.model, "whole", paths.link.mbps, initial,
                          (step,) if pays else (), weight_codec)


def _candidates(allowed: np.ndarray, missing: np.ndarray, in_full: np.ndarray) -> np.ndarray:
    """Rows of ``allowed`` plus one candidate partition each: every subset of the missing
    layers while there are at most EXHAUSTIVE, else runs of consecutive ones (at most MAX_RUN
    long, and every prefix and suffix) and what the best full plan still lacks."""
    m = len(missing)
    if not m:
        return np.zeros((0, len(allowed)), dtype=bool)
    if m <= EXHAUSTIVE:
        masks = (np.arange(1, 2 ** m)[:, None] >> np.arange(m)[None, :]) & 1
        rows = np.repeat(allowed[None, :], len(masks), axis=0)
        rows[:, missing] |= masks.astype(bool)
        return rows
    runs = {(a, b) for a in range(m) for b in range(a, min(m, a + MAX_RUN))}
    runs |= {(0, b) for b in range(m)} | {(a, m - 1) for a in range(m)}
    rows = np.repeat(allowed[None, :], len(runs) + 1, axis=0)
    for r, (a, b) in enumerate(sorted(runs)):
        rows[r, missing[a:b + 1]] = True
    rows[-1] |= in_full
    return rows


def _upload_s(nbytes: float, mbps: float) -> float:
    return float(nbytes) * 8 / (mbps * 1e6)
