"""What an application runs: the file a scenario names in ``applications[i].plan``.

Every kind is read from what the planner's commands write, one Plan JSON format throughout
(DESIGN.md: the Plan goes to the runtime and to the simulator alike):

* a Plan JSON (`edgeweave plan --json`): chain scan or min-cut, one Edgent option, or a
  multi-device partition (a Plan with ``partition``; `plan --cluster`);
* an Edgent record (`edgeweave adapt edgent --json`): the configuration map, one Plan per bandwidth
  state plus the exit's accuracy (or, without ``--trace``, the one static choice and its Plan);
* a model selection record (`edgeweave adapt select --json`): the chosen variant's Plan and its
  accuracy, or a big/little pair's two Plans and its escalation rate.

Each becomes a list of :class:`Source` (a Plan the simulator prices, with the accuracy of its
answers); the `edgeweave` policy then replays the application by its kind (`sim.replay`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from edgeweave.errors import EdgeWeaveError, PlanError, SimError
from edgeweave.plan import Plan
from edgeweave.plan.edgent import KIND as EDGENT_KIND
from edgeweave.plan.edgent import EdgentOption
from edgeweave.plan.edgent_dynamic import BandwidthState, ConfigMap, MapEntry
from edgeweave.plan.select import KIND as SELECTION_KIND
from edgeweave.plan.select import Selection

KINDS = ("a Plan JSON (edgeweave plan --json), an Edgent record (edgeweave adapt edgent "
         "--json) or a model selection record (edgeweave adapt select --json)")


class EdgentApp(BaseModel):
    """An Edgent record: the configuration map (bandwidth state -> exit, cut, Plan), switched
    on the device's measured bandwidth by `EdgentSelector` (``confirm`` estimates in a new
    state before it switches, the runtime's default)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    kind: Literal["edgent"] = "edgent"
    cmap: ConfigMap
    initial: int  # the state of the record's own bandwidth (its static choice)
    confirm: int = 2


class SelectionApp(BaseModel):
    """A model selection record: the chosen candidate and its Plans (``model``, or ``little``
    and ``big`` for a big/little pair)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["selection"] = "selection"
    selection: Selection

    @property
    def outcome(self) -> Any:
        out = self.selection.chosen_outcome
        assert out is not None
        return out

    @property
    def pair(self) -> bool:
        return "big" in self.selection.plans


AppPlan = Plan | EdgentApp | SelectionApp


@dataclass(frozen=True)
class Source:
    """One Plan the simulator prices for an application, the accuracy of its answers (None:
    not recorded), and its role (``plan``; ``exit k cut c``; ``little``, ``big``)."""

    plan: Plan
    accuracy: float | None
    role: str = "plan"


def sources(app: AppPlan) -> list[Source]:
    """The Plans of an application, its primary one first: what fixed-mode policies
    (device-only, edge-only, ...) run, the record's own choice (for a big/little pair, the
    big model)."""
    if isinstance(app, Plan):
        return [Source(app, None)]
    if isinstance(app, EdgentApp):
        first = app.cmap.entries[app.initial]
        entries = [first, *(e for e in app.cmap.entries if e is not first)]
        seen: dict[tuple[int, int], Source] = {}
        for e in entries:
            if e.option.key not in seen:
                assert e.plan is not None
                seen[e.option.key] = Source(e.plan, e.option.accuracy,
                                            f"exit {e.option.exit} cut {e.option.cut}")
        return list(seen.values())
    plans = app.selection.plans
    acc = app.outcome.accuracy
    if app.pair:
        return [Source(plans["big"], acc, "big"), Source(plans["little"], acc, "little")]
    return [Source(plans["model"], acc, "model")]


# ---- reading the file ---------------------------------------------------------------------


def load_app_plan(path: Path) -> AppPlan:
    """The application file at ``path`` as one of the kinds above (SimError naming the file
    and what it is not)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SimError(f"{path}: no such plan file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SimError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise SimError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    try:
        return parse_app_plan(doc)
    except EdgeWeaveError as e:
        raise SimError(f"{path}: {e}") from None


def parse_app_plan(doc: Any) -> AppPlan:
    """A parsed application document (see the module doc) as its kind."""
    if isinstance(doc, Plan | EdgentApp | SelectionApp):
        return doc
    if not isinstance(doc, dict):
        raise SimError(f"expected {KINDS}, got a {type(doc).__name__}")
    kind = doc.get("kind")
    if kind == EDGENT_KIND or (kind is None and "options" in doc and "chosen" in doc):
        return _edgent(doc)
    if kind == SELECTION_KIND or (kind is None and "outcomes" in doc and "rule" in doc):
        return _selection(doc)
    if "placement" in doc and "nodes" in doc:
        try:
            return Plan.model_validate(doc)
        except ValidationError as e:
            err = e.errors()[0]
            raise SimError(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None
    raise SimError(f"not {KINDS}")


def _edgent(doc: dict[str, Any]) -> EdgentApp:
    if "config_map" in doc:
        cmap = ConfigMap.from_json(doc["config_map"])
    else:  # a static decision: one configuration for every bandwidth
        if "plan" not in doc:
            raise SimError("plan: missing (an Edgent record written by an older EdgeWeave: "
                           "re-run `edgeweave adapt edgent --json` to get the choice's Plan)")
        try:
            option = EdgentOption(**{k: v for k, v in doc["chosen"].items() if k != "where"})
            chosen = Plan.model_validate(doc["plan"])
        except (TypeError, ValueError) as e:
            raise SimError(f"chosen: {str(e).splitlines()[0]}") from None
        mbps = float(doc.get("mbps") or chosen.links[chosen.hop_names()[0]].mbps)
        cmap = ConfigMap(float(doc["slo_ms"]),
                         [MapEntry(BandwidthState(0, 0.0, math.inf, mbps), option, True, chosen)])
    rate = doc.get("mbps")
    initial = 0
    if isinstance(rate, int | float) and rate > 0:
        try:
            initial = cmap.state_of(float(rate))
        except PlanError:
            initial = 0
    for i, entry in enumerate(cmap.entries):
        assert entry.plan is not None
        if entry.plan.tiers[0] != "device" or len(entry.plan.tiers) < 2:
            raise SimError(f"config_map.states[{i}].plan: an Edgent plan runs on a device and "
                           f"an edge; got tiers {entry.plan.tiers}")
    return EdgentApp(cmap=cmap, initial=initial)


def _selection(doc: dict[str, Any]) -> SelectionApp:
    try:
        sel = Selection.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        raise SimError(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None
    if sel.chosen is None:
        raise SimError("chosen: null (no candidate met the constraints, so there is nothing "
                       "to run; relax them and re-run `edgeweave adapt select --json`)")
    roles = set(sel.plans)
    if roles not in ({"model"}, {"little", "big"}):
        raise SimError(f"plans: expected 'model', or 'little' and 'big', got "
                       f"{sorted(roles) or 'none'} (a record written by an older EdgeWeave?)")
    out = sel.outcome(sel.chosen)
    if "big" in roles and out.escalation_rate is None:
        raise SimError(f"outcomes: {sel.chosen!r} is a big/little pair without an "
                       "escalation_rate")
    return SelectionApp(selection=sel)
