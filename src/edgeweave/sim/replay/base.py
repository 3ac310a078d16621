"""What a replay is: the placement (a :class:`~edgeweave.sim.pricing.Work`) one application's
device runs each request with, decided from the application's Plans as the runtime's client
would, and how many re-plan checks and switches that took."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from edgeweave.sim.pricing import Work

if TYPE_CHECKING:
    from edgeweave.sim.policies.base import PolicyContext

#: the runtime client's defaults (`runtime.client.ClientOptions`): a 10% bandwidth move, a 20%
#: load move, and a 5% predicted gain before switching
BANDWIDTH_CHANGE = 0.1
LOAD_CHANGE = 0.2
MIN_GAIN = 0.05


class Replay(ABC):
    """One application's requests, replayed from its Plans (see the subclasses)."""

    def __init__(self, ctx: PolicyContext) -> None:
        self.ctx = ctx
        self.replans = 0
        self.switches = 0
        self._local: dict[tuple[int, str], Work] = {}

    def counts(self) -> tuple[int, int]:
        """Re-plan checks (state changes for Edgent) and placement switches so far."""
        return self.replans, self.switches

    @abstractmethod
    def decide(self, device: int, ap: int, now: float) -> Work | None:
        """The placement for a request ``device`` issues at ``now`` from access point ``ap``
        (-1: out of coverage; a replay then runs on the device, the runtime's fallback)."""

    def local(self, src: int, device: int, cluster: bool = False) -> Work:
        """Source ``src`` entirely on the device (a partition: its frame, then the rest on
        the gateway), the runtime client's fallback when the edge is out of reach."""
        ctx = self.ctx
        hw = ctx.hardware_of(device)
        work = self._local.get((src, hw))
        if work is None:
            name = ctx.ap_name(0)
            labels = ctx.pricing.mode_labels(src, hw, name, "device-only")
            assert labels is not None
            work = self._local[(src, hw)] = ctx.pricing.work(src, hw, name, labels,
                                                             cluster=cluster)
        return work


def make_replay(ctx: PolicyContext, app: int, params: dict[str, Any]) -> Replay:
    """The replay of application ``app`` by its kind, with the policy's parameters."""
    from edgeweave.plan import Plan
    from edgeweave.sim.apps import EdgentApp
    from edgeweave.sim.replay.biglittle import BigLittleReplay
    from edgeweave.sim.replay.edgent import EdgentReplay
    from edgeweave.sim.replay.plan import PlanReplay

    spec = ctx.pricing.scn.applications[app].plan
    srcs = ctx.pricing.app_sources[app]
    if isinstance(spec, EdgentApp):
        return EdgentReplay(ctx, spec, srcs, adapt=params.get("adapt", True),
                            switch_s=params.get("switch_s", 0.0))
    if isinstance(spec, Plan) or not spec.pair:
        return PlanReplay(ctx, srcs[0], cluster=isinstance(spec, Plan)
                          and ctx.pricing.frame(srcs[0]) is not None, **params)
    return BigLittleReplay(ctx, little=srcs[1], big=PlanReplay(ctx, srcs[0], **params),
                           escalation_rate=float(spec.outcome.escalation_rate))
