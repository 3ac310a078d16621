"""A plan made into what the device client deploys: its stages, the route a request carries
(each hop's stage, the values it needs, codec and link), and the packages (recipe + weights)
the nodes build their stages from. Kept apart from `runtime.client`, which sends them."""

from __future__ import annotations

from collections.abc import Set
from typing import Any

import torch

from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import Graph, split
from edgeweave.plan import Plan
from edgeweave.runtime.client_data import ClientOptions, Deployment, stage_id
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.recipe import StageError, package_stage

#: The stage key of prefix nodes computed outside the client (never deployed, never run).
PREFIX = "prefix"


def prepare(graph: Graph, chosen: Plan, network: dict[str, tuple[float, float]],
            prefix: Set[str], opts: ClientOptions) -> Deployment:
    """The stages and route of `chosen`; `network` is each hop's emulated (Mbit/s, RTT ms)
    and `prefix` the nodes whose values the caller computes (a cluster's partitioned
    prefix): no stage runs them."""
    placement, order = chosen.placement, tuple(chosen.tiers)
    if prefix:
        placement = {n: PREFIX if n in prefix or graph.node(n).kind == "placeholder" else t
                     for n, t in placement.items()}
        order = (PREFIX, *order)
    stages = {s.key: s for s in split(graph, placement, order) if s.key != PREFIX}
    dep = Deployment(chosen, stages, stage_ids={k: stage_id(graph.name, s)
                                                 for k, s in stages.items()})
    tier_of = {n: chosen.tiers.index(t) for n, t in chosen.placement.items()}
    top = max((tier_of[n] for s in stages.values() for n in s.nodes), default=0)
    for level in range(1, top + 1):
        needs = sorted({v for s in stages.values() if chosen.tiers.index(s.key) >= level
                        for v in s.inputs if tier_of[v] < level})
        hop_name = chosen.hop_names()[level - 1]
        mbps, rtt = network[hop_name]
        codec = opts.codec or chosen.cuts.get(hop_name, "none")
        dep.route.append(pb.Hop(stage="", needs=needs, codec=codec, link_mbps=mbps,
                                link_rtt_ms=rtt, shape_bandwidth=opts.shape_bandwidth))
    dep.want = [o for o in graph.outputs if tier_of[o] > 0]
    return dep


def package_remote(graph: Graph, dep: Deployment, example: torch.Tensor,
                   given: dict[str, torch.Tensor] | None) -> None:
    """Package every stage off the device (run on `example` to learn its inputs) and name it
    in the route, once per stage (a re-deploy reuses the package)."""
    env: dict[str, Any] = {graph.placeholders[0]: example, **(given or {})}
    for key in dep.plan.tiers:
        stage = dep.stages.get(key)
        if stage is None:
            continue
        args = tuple(env[n] for n in stage.inputs)
        with torch.no_grad():
            env.update(zip(stage.outputs, stage.module(*args), strict=True))
        level = dep.plan.tiers.index(key)
        if level > 0:
            try:
                dep.packages[key] = dep.packages.get(key) or package_stage(graph, stage, args)
            except StageError as e:
                raise EdgeWeaveError(f"cannot deploy the {key} stage: {e}") from None
            dep.route[level - 1].stage = dep.packages[key].digest
