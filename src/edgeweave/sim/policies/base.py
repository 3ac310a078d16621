"""The offloading policy protocol and its registry: a policy decides, for each request, which
placement runs it (priced as a :class:`~edgeweave.sim.pricing.Work`) and on which edge server.

A new policy is one small file: subclass :class:`Policy`, give it a ``name`` and ``@register``
it; the scenario's ``policy: NAME`` (or ``{name: NAME, params: {...}}``) picks it up. Policies
see the simulation only through :class:`PolicyContext` (no private engine state), so they read
like the orchestrators in EdgeCloudSim's ``EdgeOrchestrator``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

import numpy as np

from edgeweave.errors import SimError
from edgeweave.sim.pricing import Pricing, Work


class LoadedServer(Protocol):
    load_factor: float

    def load(self) -> float: ...


class PolicyContext(Protocol):
    """What a policy may ask of the running simulation."""

    pricing: Pricing
    rng: np.random.Generator
    device_app: list[int]  # per device, its application (`app_of`, for the hot path)

    def hardware_of(self, device: int) -> str: ...

    def app_of(self, device: int) -> int: ...

    def ap_name(self, ap: int) -> str: ...

    def ap_edge(self, ap: int) -> str: ...

    def server(self, name: str) -> LoadedServer: ...

    def cloud_of(self, edge: str) -> str | None: ...

    def neighbours(self, edge: str) -> list[str]: ...

    def estimate_mbps(self, device: int) -> float | None: ...

    def ap_mbps(self, ap: int, now: float) -> float: ...

    def probe(self, device: int, ap: int, now: float) -> None: ...

    def occupy_device(self, device: int, seconds: float) -> None: ...


#: what a policy returns: the placement to run and the edge server it runs on (None: the
#: device's own edge); a policy returns None for a request it cannot place (no coverage)
Choice = tuple[Work, str | None]


class Policy(ABC):
    name: str = "policy"

    def __init__(self, ctx: PolicyContext, **params: Any) -> None:
        if params:
            raise SimError(f"policy {self.name}: unknown parameter(s) {', '.join(sorted(params))}")
        self.ctx = ctx

    def counts(self) -> tuple[int, int]:
        """Re-plan checks and placement switches so far (a fixed policy makes none)."""
        return 0, 0

    @property
    def replans(self) -> int:
        return self.counts()[0]

    @property
    def switches(self) -> int:
        return self.counts()[1]

    @abstractmethod
    def decide(self, device: int, ap: int, now: float) -> Choice | None:
        """The placement for a request ``device`` issues at ``now`` from access point ``ap``
        (-1: out of coverage)."""


class ModePolicy(Policy):
    """Every request runs one inference mode's best placement (EdgeCloudSim's fixed
    orchestrators: everything local, everything on the edge, everything in the cloud)."""

    mode: str = "device-only"

    def __init__(self, ctx: PolicyContext, **params: Any) -> None:
        super().__init__(ctx, **params)
        self._cache: dict[tuple[int, str, int, str], Work | None] = {}

    def work_for(self, app: int, hardware: str, ap: int, mode: str) -> Work | None:
        """The mode's placement of the application's primary Plan (`sim.apps.sources`) for
        this device at ``ap`` (-1: priced at the first access point; only device-only runs
        there, and it uses no link)."""
        key = (app, hardware, ap, mode)
        if key in self._cache:
            return self._cache[key]
        name = self.ctx.ap_name(max(ap, 0))
        pricing = self.ctx.pricing
        src = pricing.primary(app)
        labels = pricing.mode_labels(src, hardware, name, mode)
        work = None if labels is None else pricing.work(src, hardware, name, labels)
        self._cache[key] = work
        return work

    def decide(self, device: int, ap: int, now: float) -> Choice | None:
        if ap < 0 and self.mode != "device-only":
            return None
        work = self.work_for(self.ctx.app_of(device), self.ctx.hardware_of(device), ap,
                             self.mode)
        return None if work is None else (work, None)


POLICIES: dict[str, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    POLICIES[cls.name] = cls
    return cls


def list_policies() -> list[str]:
    from edgeweave.sim import policies  # noqa: F401  (importing the package registers them all)

    return sorted(POLICIES)


def make_policy(name: str, ctx: PolicyContext, params: dict[str, Any] | None = None) -> Policy:
    known = list_policies()
    cls = POLICIES.get(name)
    if cls is None:
        raise SimError(f"policy {name!r} is unknown; known: {', '.join(known)}")
    return cls(ctx, **(params or {}))
