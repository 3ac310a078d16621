"""The experiment YAML's control sections, and which of them combine.

    fleet: two-edges              # a fleet file or built-in name; or {source: ..., assign, jitter}
    fedcs: {deadline_s: 2.0}      # FedCS selection (Nishio & Yonetani 2019)
    adaptive_frequency: {budget: 200, step_cost: 1, agg_cost: 10}   # Wang et al. 2019
    hierarchy: {edge_rounds: 4}   # HierFAVG: 4 edge aggregations per cloud aggregation

``fleet`` places client i on the fleet's device node i mod D (file order; ``assign: random``
draws one instead): its seconds per local epoch come from the node's hardware and the model's
FLOPs, its seconds per upload from the node's link to its edge
(:mod:`edgeweave.train.control.fleet_clients`), and in hierarchical FL its edge is the node's
``edge`` (or its fastest-linked edge). The sections are checked together here so that a
combination the code cannot honour is refused before anything trains, naming the fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    # as config._Strict (not imported: config imports this module)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class FleetSection(_Section):
    """The fleet the clients run on (``fleet: NAME`` is ``fleet: {source: NAME}``)."""

    source: str = Field(min_length=1)
    assign: Literal["cycle", "random"] = "cycle"
    # sigma of a log-normal factor on each client's compute time (identical boards still differ)
    jitter: float = Field(0.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _name_alone(cls, v: Any) -> Any:
        return {"source": v} if isinstance(v, str) else v


class FedCSSection(_Section):
    """Deadline-aware client selection: of a random ``request_fraction`` of the clients, the
    greedy schedule that fits the most uploads within ``deadline_s`` (``policy: random`` is the
    paper's FedLim baseline)."""

    deadline_s: float = Field(gt=0)
    request_fraction: float = Field(1.0, gt=0, le=1)
    max_clients: int | None = Field(None, ge=1)
    policy: Literal["greedy", "random"] = "greedy"


class AdaptiveFrequencySection(_Section):
    """Wang et al.'s adaptive local steps under a resource ``budget``: each round's tau local
    steps cost ``step_cost`` each plus ``agg_cost`` for the aggregation (the budget's unit:
    seconds, joules...); tau is re-chosen every round, and training stops when the budget is
    spent."""

    budget: float = Field(gt=0)
    step_cost: float = Field(1.0, gt=0)
    agg_cost: float = Field(1.0, ge=0)
    tau_init: int = Field(1, ge=1)
    tau_max: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _taus(self) -> AdaptiveFrequencySection:
        if self.tau_init > self.tau_max:
            raise ValueError(f"tau_init ({self.tau_init}) must be <= tau_max ({self.tau_max})")
        return self


class HierarchySection(_Section):
    """HierFAVG: each edge aggregates its devices every round of local work (k1: ``fit.epochs``
    or ``fit.local_steps``) and the cloud aggregates the edges every ``edge_rounds`` (k2) edge
    rounds; ``rounds`` counts cloud rounds. The fleet says which edge each device is under."""

    edge_rounds: int = Field(1, ge=1)


def control_problem(cfg: Any) -> str | None:
    """The first combination of ``cfg``'s sections that cannot run, as ``field: problem``."""
    sa, privacy = cfg.secure_aggregation, cfg.privacy
    dp = privacy.dp_fedavg if privacy is not None else None
    local_dp = privacy.local_dp if privacy is not None else None
    if cfg.fleet is not None and cfg.speeds is not None:
        return ("speeds: the fleet already gives every client its speed; give `fleet` or "
                "`speeds`, not both")
    if cfg.fedcs is not None:
        if cfg.fleet is None and cfg.speeds is None:
            return ("fedcs: needs each client's compute and upload times: give `fleet` (from "
                    "its hardware and links) or `speeds`")
        if cfg.adaptive_frequency is not None:
            return ("fedcs: cannot be combined with adaptive_frequency (one chooses who trains "
                    "under a deadline, the other how long they train under a budget); choose "
                    "one")
        if dp is not None:
            return ("fedcs: cannot be combined with privacy.dp_fedavg: its privacy accounting "
                    "assumes its own Poisson sampling of the clients")
    if cfg.adaptive_frequency is not None:
        if cfg.fit.local_steps is not None:
            return ("adaptive_frequency: chooses fit.local_steps itself every round; remove "
                    "fit.local_steps")
        for name, given in (("privacy.dp_fedavg", dp), ("secure_aggregation", sa)):
            if given is not None:
                return (f"adaptive_frequency: cannot be combined with {name}: it estimates the "
                        "loss's smoothness from each client's own update")
    return _hierarchy_problem(cfg, dp, local_dp, sa)


def _hierarchy_problem(cfg: Any, dp: Any, local_dp: Any, sa: Any) -> str | None:
    if cfg.hierarchy is None:
        return None
    if cfg.fleet is None:
        return "hierarchy: needs `fleet`, which says the edge each device trains under"
    refused = {"adaptive_frequency": cfg.adaptive_frequency, "secure_aggregation": sa,
               "privacy.dp_fedavg": dp, "privacy.local_dp": local_dp,
               "deadline_s": cfg.deadline_s, "up_codec": cfg.up_codec,
               "down_codec": cfg.down_codec,
               "over_select": None if cfg.over_select == 1 else cfg.over_select}
    for name, given in refused.items():
        if given is not None:
            return (f"hierarchy: cannot be combined with {name} yet (the edges run plain "
                    "synchronous rounds; `codec` compresses both tiers)")
    return None
