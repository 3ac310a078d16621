"""The chosen cluster configuration written as a Plan: the single-device plan's JSON with the
placement of the rest of the model and a :class:`~edgeweave.plan.partition.Partition`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeweave.graph.capture import Graph
from edgeweave.graph.layerwise import LayerSplit
from edgeweave.plan.cluster_cost import ClusterModel
from edgeweave.plan.costs import CostModel
from edgeweave.plan.fused_search import FusedChoice
from edgeweave.plan.layerwise_search import reads_input
from edgeweave.plan.medium import Schedule
from edgeweave.plan.overlap_cost import PricedStep
from edgeweave.plan.partition import (
    DeviceLoad,
    FusedStage,
    LayerAssignment,
    Partition,
    StepAssignment,
    TileAssignment,
    global_tiles,
)
from edgeweave.plan.record import Alternative, Plan, predicted_of
from edgeweave.profile.schema import Profile
from edgeweave.topology import Cluster

if TYPE_CHECKING:  # multidevice imports this module
    from edgeweave.plan.fused_candidates import Candidate, Search


def build_plan(graph: Graph, prof: Profile, cm: CostModel, model: ClusterModel,
               cluster: Cluster, names: list[str], best: Candidate, single: Plan,
               alternatives: list[Alternative], objective: str, search: Search,
               spec: str, in_flight: int | None = None) -> Plan:
    one = single.alternative("device-only")
    one_ms = one.total_ms if one.available else None
    predicted: dict[str, Any] = {"latency_ms": best.latency_ms, "fps": best.fps,
                 "one_device_ms": one_ms,
                 "speedup_vs_one": None if one_ms is None else one_ms / best.latency_ms}
    record = {"configs": search.configs, "exact": search.exact,
              "space": _SPACE, "notes": search.notes,
              "infeasible": search.infeasible[:20],
              # what each task costs beyond its FLOP share (plan.cluster_cost); call_ms is
              # the mean, each layer its own block's (the profile's host.tile_call_ms_by_node)
              "task_overhead": {"runtime_ms_per_mb": model.ms_per_mb,
                                "call_ms": {n: model.devices[n].call_ms for n in names},
                                "calibrated": model.calibrated},
              "run_calibration": search.calibration, "blocks": search.blocks,
              # the sub-clusters also searched without the slowest devices (plan.subclusters)
              "subsets": search.subsets}
    base: dict[str, Any] = dict(model=spec, input_shape=list(graph.input_shape),
                                cluster=cluster.name, gateway=cluster.gateway_name,
                                devices=names, medium=cluster.medium, search=record,
                                input_codec=model.input_codec, result_codec=model.result_codec)
    if best.single is not None:
        gateway = model.devices[model.gateway]
        load = [DeviceLoad(name=gateway.name, hardware=gateway.hardware, tasks=1,
                           compute_ms=float(best.single.predicted["tier_compute_ms"]["device"]),
                           in_bytes=0, out_bytes=0,
                           memory_bytes=int(best.single.predicted["device_param_bytes"]),
                           memory_limit_bytes=gateway.limit_bytes)]
        partition = Partition.model_validate({**base, "method": "single", "load": load,
                                              "rest_mode": best.single.mode,
                                              "predicted": predicted})
        return best.single.model_copy(update={"partition": partition, "exact": search.exact,
                                              "alternatives": alternatives})
    rest = best.rest
    assert rest is not None
    if best.staged is not None:
        staged = best.staged
        stages = [FusedStage(depth=end, block_input=c.block.input,
                             block_output=c.block.output.name, grid=c.grid,
                             tiles=_assigned(model, c), reuse=c.reuse)
                  for end, c in zip(staged.ends, staged.stages, strict=True)]
        cluster_part: dict[str, Any] = dict(
            fused_depth=staged.ends[-1], block_input=stages[0].block_input,
            block_output=stages[-1].block_output,
            prefix_nodes=[n for c in staged.stages for n in c.block.names], blocks=stages,
            reuse=any(c.reuse for c in staged.stages),
            load=_tile_load(model, names, global_tiles(stages), staged.memory))
        medium_ms, cluster_ms = staged.schedule.medium_busy_ms, staged.schedule.makespan_ms
    elif best.fused is not None:
        fused = best.fused
        tiles = _assigned(model, fused)
        schedule = fused.schedule
        cluster_part = dict(
            fused_depth=fused.block.depth, block_input=fused.block.input,
            block_output=fused.block.output.name, prefix_nodes=fused.block.names,
            grid=fused.grid, reuse=fused.reuse, tiles=tiles,
            load=_tile_load(model, names, tiles, fused.memory))
        medium_ms, cluster_ms = schedule.medium_busy_ms, schedule.makespan_ms
        price = fused.stealing
        if price is not None:  # work stealing with frames in flight (plan.stealing_price)
            cluster_part.update(
                scheduler="stealing", in_flight=in_flight,
                stealers=[d for d in names if d in price.shares])
            # stealing_tile_ms and stealing_rest_ms: what the price charged each device
            # for each tile and the gateway (and the slowest stage beyond it) for a frame's
            # rest, so that the simulator replays the stream as it was priced (sim.stealing)
            predicted.update(stealing_period_ms=price.period_ms,
                             stealing_medium_ms=price.medium_ms,
                             stealing_shares=dict(price.shares),
                             stealing_tile_ms={d: list(v) for d, v in price.tile_ms.items()},
                             stealing_rest_ms={"gateway": rest.device_ms,
                                               "other": rest.other_stages_ms})
    else:
        layers = best.layers
        assert layers is not None
        steps = layers.steps or [()] * len(layers.splits)
        assigned = [_layer(graph, model, layers.devices, s, sched, mine)
                    for s, sched, mine in zip(layers.splits, layers.schedules, steps,
                                              strict=True)]
        cluster_part = dict(prefix_nodes=layers.prefix, layers=assigned,
                            layer_split=layers.scheme,
                            load=_layer_load(model, layers.devices, assigned, layers.memory))
        medium_ms = sum(s.medium_busy_ms for s in layers.schedules)
        cluster_ms = sum(s.makespan_ms for s in layers.schedules) + layers.gateway_ms
    predicted.update(cluster_ms=cluster_ms, rest_ms=rest.latency_ms, medium_busy_ms=medium_ms)
    partition = Partition.model_validate({**base, **cluster_part, "method": best.method,
                                          "rest_mode": rest.mode, "predicted": predicted})
    totals = predicted_of(rest.breakdown, cm.tiers, prof.hop_names())
    totals.update(total_ms=best.latency_ms, throughput_fps=best.fps,
                  scope="total_ms and throughput_fps: the whole frame on the cluster; the other "
                        "figures describe the rest of the model on the gateway's path")
    return Plan(**prof.model_dump(), objective=objective,
                placement=cm.placement_of(rest.labels.tolist()), cuts=cm.cuts, predicted=totals,
                alternatives=alternatives, exact=search.exact, mode=f"cluster-{best.method}",
                algorithm=f"multi-device partition optimiser ({best.note})",
                constraints={"slo_ms": None, "device_mem_mb": None},
                profile_digest=prof.digest(), partition=partition)


_SPACE = ("single-device plan; fused tiles: every fused depth x every grid up to 6x6 that fits "
          "x reuse on/off, tiles to devices exhaustively when few, else greedy + local moves; "
          "several consecutive fused blocks (DeeperThings, up to max_blocks): every block "
          "between two cuts priced alone, then the blocks chosen by dynamic programming; "
          "layer-wise: MoDNN's speed-biased split (or the --layer-split asked for) over the "
          "gateway and the k fastest devices for every k, at every cut where one tensor "
          "crosses")


def _layer(graph: Graph, model: ClusterModel, devices: list[str], split: LayerSplit,
           schedule: Schedule, steps: tuple[PricedStep, ...]) -> LayerAssignment:
    """A split layer as the plan writes it; in an overlapped run (``steps``) each part's
    compute and bytes are its steps' sums (what its device computes and moves for it)."""
    parts = range(len(split.parts))
    if steps:
        compute = [sum(s.compute_ms for s in steps if s.step.part == p) for p in parts]
        wire = [(sum(s.in_bytes for s in steps if s.step.part == p),
                 sum(s.out_bytes for s in steps if s.step.part == p)) for p in parts]
    else:
        compute = [model.compute_ms(devices[p.device], p.fractions) for p in split.parts]
        wire = [model.part_bytes(p, reads_input(graph, split)) for p in split.parts]
    return LayerAssignment(
        unit=list(split.unit), kind=split.kind,  # type: ignore[arg-type]
        row_bounds=list(split.row_bounds), col_bounds=list(split.col_bounds),
        devices=[devices[p.device] for p in split.parts], compute_ms=compute,
        in_bytes=[b[0] for b in wire], out_bytes=[b[1] for b in wire],
        makespan_ms=schedule.makespan_ms, resident=split.resident,
        steps=[StepAssignment(part=s.step.part, device=s.device, rows=s.step.rows,
                              compute_ms=s.compute_ms, in_bytes=s.in_bytes,
                              out_bytes=s.out_bytes, after=list(s.after)) for s in steps])


def _assigned(model: ClusterModel, fused: FusedChoice) -> list[TileAssignment]:
    """A block's tiles with their devices and planned costs, by index."""
    tiles = [TileAssignment.of(
        next(t for t in fused.tiles if t.index == w.index), device,
        model.compute_ms(device, w.fractions), *model.task_bytes(w))
        for w, device in zip(fused.work, fused.assignment, strict=True)]
    return sorted(tiles, key=lambda t: t.index)


def _tile_load(model: ClusterModel, names: list[str], tiles: list[TileAssignment],
               memory: dict[str, int]) -> list[DeviceLoad]:
    out = []
    for name in names:
        mine = [t for t in tiles if t.device == name]
        device = model.devices[name]
        out.append(DeviceLoad(name=name, hardware=device.hardware, tasks=len(mine),
                              compute_ms=sum(t.compute_ms for t in mine),
                              in_bytes=0 if name == model.gateway else sum(t.in_bytes
                                                                           for t in mine),
                              out_bytes=0 if name == model.gateway else sum(t.out_bytes
                                                                            for t in mine),
                              memory_bytes=memory.get(name, 0),
                              memory_limit_bytes=device.limit_bytes))
    return out


def _layer_load(model: ClusterModel, names: list[str], layers: list[LayerAssignment],
                memory: dict[str, int]) -> list[DeviceLoad]:
    out = []
    for name in names:
        parts = [(la, k) for la in layers for k, d in enumerate(la.devices) if d == name]
        remote = name != model.gateway
        device = model.devices[name]
        out.append(DeviceLoad(name=name, hardware=device.hardware, tasks=len(parts),
                              compute_ms=sum(la.compute_ms[k] for la, k in parts),
                              in_bytes=sum(la.in_bytes[k] for la, k in parts) if remote else 0,
                              out_bytes=sum(la.out_bytes[k] for la, k in parts) if remote else 0,
                              memory_bytes=memory.get(name, 0),
                              memory_limit_bytes=device.limit_bytes))
    return out
