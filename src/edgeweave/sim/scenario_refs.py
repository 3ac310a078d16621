"""A scenario's cross-references, checked once its fields parsed: names unique per section,
every access point, place, population, application, server and training reference naming
something the scenario (or its fleet) has. The first problem comes back as
``field.path: message``, which `scenario.parse_scenario` reports with the file's name."""

from __future__ import annotations

from typing import Any

from edgeweave.sim.apps import sources
from edgeweave.sim.scenario import Scenario, mix_weights
from edgeweave.topology import CATALOG


def _unique(items: list[Any], field: str) -> str | None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.name in seen:
            return (f"{field}[{i}].name: duplicate name {item.name!r} (already "
                    f"{field}[{seen[item.name]}])")
        seen[item.name] = i
    return None


def reference_problem(scn: Scenario) -> str | None:
    """The first cross-reference problem as ``field.path: message``, or None."""
    for field in ("access_points", "places", "populations", "applications"):
        problem = _unique(getattr(scn, field), field)
        if problem:
            return problem
    edges = [n.name for n in scn.fleet.nodes_in("edge")]
    for i, ap in enumerate(scn.access_points):
        if ap.edge not in edges:
            return (f"access_points[{i}].edge: {ap.edge!r} is not an edge node of fleet "
                    f"{scn.fleet.name!r} (edge nodes: {', '.join(edges) or 'none'})")
    aps = {ap.name for ap in scn.access_points}
    for i, place in enumerate(scn.places):
        if place.access_point is not None and place.access_point not in aps:
            return (f"places[{i}].access_point: unknown access point {place.access_point!r} "
                    f"(known: {', '.join(sorted(aps))})")
    places = {p.name for p in scn.places}
    apps = {a.name for a in scn.applications}
    kinds = sorted({n.name for n in scn.fleet.nodes_in("device")} | set(CATALOG))
    for i, pop in enumerate(scn.populations):
        for name in mix_weights(pop.hardware):
            if name not in kinds:
                return (f"populations[{i}].hardware: unknown hardware {name!r} (a device node "
                        f"of the fleet or a catalog name: {', '.join(kinds)})")
        for name in mix_weights(pop.applications):
            if name not in apps:
                return (f"populations[{i}].applications: unknown application {name!r} "
                        f"(known: {', '.join(sorted(apps))})")
        for j, name in enumerate(pop.places or []):
            if name not in places:
                return (f"populations[{i}].places[{j}]: unknown place {name!r} "
                        f"(known: {', '.join(sorted(places))})")
    tiers = {"edge", "cloud"}
    nodes = {n.name for n in scn.fleet.nodes if n.tier in tiers}
    for key in scn.servers:
        if key not in tiers | nodes:
            return (f"servers.{key}: not a tier (edge, cloud) or an edge/cloud node of the "
                    f"fleet ({', '.join(sorted(nodes))})")
    from edgeweave.sim.policies import list_policies

    if scn.policy.name not in list_policies():
        return (f"policy.name: unknown policy {scn.policy.name!r} "
                f"(known: {', '.join(list_policies())})")
    for i, app in enumerate(scn.applications):
        for src in sources(app.plan):
            if src.plan.tiers[0] != "device":
                role = "" if src.role == "plan" else f" ({src.role})"
                return f"applications[{i}].plan: the plan's first tier must be 'device'{role}"
    if scn.training is not None:
        return _training_problem(scn)
    return None


def _training_problem(scn: Scenario) -> str | None:
    tr = scn.training
    assert tr is not None
    pops = {p.name: p for p in scn.populations}
    if tr.population is not None and tr.population not in pops:
        return (f"training.population: unknown population {tr.population!r} "
                f"(known: {', '.join(pops)})")
    have = pops[tr.population].count if tr.population is not None else scn.devices
    want = tr.experiment.data.clients
    if want > have:
        where = f"population {tr.population!r}" if tr.population else "the scenario"
        return (f"training.experiment.data.clients: {want} clients but {where} has only "
                f"{have} devices")
    if tr.start_s >= scn.duration_s:
        return f"training.start_s: {tr.start_s:g} is not before duration_s {scn.duration_s:g}"
    return None
