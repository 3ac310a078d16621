"""The Plan: a profile plus where each node runs and what that is predicted to cost.

Its JSON is the contract other tools (runtime, simulator, plots) read; a plan carries the whole
profile so `predicted.total_ms` can be re-derived from the file alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from edgeweave import formats
from edgeweave.errors import PlanError
from edgeweave.plan.costs import Breakdown, CostModel
from edgeweave.plan.partition import Partition
from edgeweave.profile.schema import Profile


class Alternative(BaseModel):
    mode: str
    available: bool
    total_ms: float | None = None
    energy_j: float | None = None
    throughput_fps: float | None = None
    meets_constraints: bool | None = None
    placement: dict[str, str] | None = None
    note: str = ""


class Plan(Profile):
    objective: str
    placement: dict[str, str]
    cuts: dict[str, str] = Field(default_factory=dict)  # hop -> activation codec
    predicted: dict[str, Any]
    alternatives: list[Alternative]
    exact: bool
    mode: str
    algorithm: str
    constraints: dict[str, float | None]
    profile_digest: str
    partition: Partition | None = None  # several devices share the inference (plan.multidevice)

    def to_json(self) -> dict[str, Any]:
        doc = {**self.model_dump(mode="json"), formats.FIELD: formats.PLAN}
        for alt in doc["alternatives"]:
            alt.pop("placement", None)  # the chosen placement is the one that matters on disk
        return doc

    def priced(self, profile: Profile | None = None, mode: str | None = None) -> Plan:
        """This plan re-priced: on `profile` (new link rates, or load-scaled latencies) and/or
        as one of its alternatives (`mode`, e.g. "device-only"), so `predicted` always
        describes the placement and network it is run with."""
        prof = profile or self
        placement = self.placement if mode is None else self.alternative(mode).placement
        if placement is None:
            raise PlanError(f"plan alternative {mode!r} has no placement (loaded from JSON)")
        cm = CostModel(prof, cuts=self.cuts)
        bd = cm.evaluate(cm.labels_of(placement))
        return self.model_copy(update={
            "links": prof.links, "placement": placement, "mode": mode or self.mode,
            "predicted": {**self.predicted, **predicted_of(bd, cm.tiers, prof.hop_names())}})

    def alternative(self, mode: str) -> Alternative:
        for alt in self.alternatives:
            if alt.mode == mode:
                return alt
        raise PlanError(f"plan has no alternative {mode!r}")


def predicted_of(bd: Breakdown, tiers: list[str], hops: list[str]) -> dict[str, Any]:
    return {
        "total_ms": bd.total_ms,
        "compute_ms": bd.compute_ms,
        "transfer_ms": bd.transfer_ms,
        "energy_j": bd.energy_j,
        "energy_scope": "end device: compute + radio on the first hop + idle while waiting",
        "fleet_energy_j": bd.fleet_energy_j,
        "throughput_fps": bd.throughput_fps,
        "bottleneck": bd.bottleneck,
        "tier_compute_ms": dict(zip(tiers, bd.tier_compute_ms, strict=True)),
        "hops": {
            h: {
                "up_bytes": bd.up_bytes[k],
                "down_bytes": bd.down_bytes[k],
                "up_ms": bd.hop_up_ms[k],
                "down_ms": bd.hop_down_ms[k],
            }
            for k, h in enumerate(hops)
        },
        "device_param_bytes": bd.device_param_bytes,
    }


def load_plan(path: str | Path) -> Plan:
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
        return Plan.model_validate(raw)
    except FileNotFoundError:
        raise PlanError(f"{p}: no such plan file") from None
    except json.JSONDecodeError as e:
        raise PlanError(f"{p}: not valid JSON (line {e.lineno}: {e.msg})") from None
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise PlanError(f"{p}: {loc}: {err['msg']}") from None
