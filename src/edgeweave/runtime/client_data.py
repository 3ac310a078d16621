"""The device client's data: its options, a request's result, what a plan deployed, and one
request in progress (kept apart from `runtime.client`, which does the work)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from edgeweave.graph import Stage
from edgeweave.plan import Plan
from edgeweave.plan.costs import CostModel
from edgeweave.profile import Profile
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.recipe import StagePackage
from edgeweave.serve import ServingConfig


@dataclass
class Result:
    output: Any
    total_ms: float
    segments: dict[str, float]
    predicted: dict[str, float]
    fallback: bool = False
    note: str = ""
    bytes_up: int = 0
    plan_mode: str = ""
    predicted_now_ms: float = 0.0  # the plan's total scaled by load factors, made beforehand
    batch: int = 0  # the batch it ran in at the first node (the reply's; 0: none, or local)


@dataclass
class ClientOptions:
    codec: str | None = None  # activation codec on every cut; None: the plan's choice per cut
    return_codec: str = "none"
    device_dilation: float = 1.0  # emulate a device slower than this host
    # busy-wait the dilation's stretch (runtime.dilation); False: sleep it, for a client that
    # shares its process with other work (a cluster gateway's rest beside its dispatching)
    device_spin: bool = True
    shape_bandwidth: bool = True  # False when netlab's kernel shaping is in place
    timeout_s: float = 30.0
    backoff_s: tuple[float, float] = (0.5, 8.0)
    max_message_mb: float = 64.0
    adapt: bool = False  # re-plan when measured bandwidth or tier load moves the optimum
    min_gain: float = 0.05
    load_change: float = 0.2  # a load factor moving this much (relative) triggers a re-plan check
    # run locally even when the edge refuses our token or TLS handshake (default: an error
    # naming the cause; a misconfigured client must not look like a slow edge)
    fallback_local: bool = False
    max_decoded_mb: float = 128.0  # decoded MiB an edge's reply may declare
    # serving: each request's deadline is what is left of this SLO when it is sent (None: no
    # deadline beyond timeout_s); a request that cannot make it runs here
    slo_ms: float | None = None
    priority: int = 0  # 0-9: who an overloaded edge sheds first
    # client-side throttling (runtime.throttle): send an edge at most this many times what it
    # has lately accepted, run the rest here at once (0: off)
    throttle_k: float = 0.0
    serving: ServingConfig | None = None  # batching knobs the stages are deployed with


@dataclass
class Deployment:
    """What one plan put where: its stages, the packages deployed to nodes, the route."""

    plan: Plan
    stages: dict[str, Stage]
    packages: dict[str, StagePackage] = field(default_factory=dict)  # remote stages
    route: list[pb.Hop] = field(default_factory=list)
    want: list[str] = field(default_factory=list)
    device_module: Any = None  # the device stage traced, as nodes run theirs
    stage_ids: dict[str, str] = field(default_factory=dict)  # tier -> id of its stage (load)
    served: int = 0  # requests answered under this deployment


@dataclass
class Run:
    """One request in progress."""

    predicted_now: float
    start: float
    env: dict[str, Any]
    segments: dict[str, float] = field(default_factory=dict)
    req: pb.InferRequest = field(default_factory=pb.InferRequest)
    nbytes: int = 0
    sent: float = 0.0
    batch: int = 0


def stage_id(model: str, stage: Stage) -> str:
    """Names a stage by the nodes it runs, so its load offset survives a re-plan back to it."""
    return f"{model}:{stage.key}:" + hashlib.sha1(",".join(stage.nodes).encode()).hexdigest()[:12]


def plan_cost(p: Plan, prof: Profile) -> float:
    """What `p`'s placement costs on `prof`, by `p`'s objective and with its cut codecs."""
    cm = CostModel(prof, cuts=p.cuts)
    return cm.evaluate(cm.labels_of(p.placement)).value(p.objective)
