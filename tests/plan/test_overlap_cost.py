"""The layer-wise scheme ``overlap`` (plan.overlap_cost): a run of resident split layers priced
as one task graph of steps on the shared medium, each part's interior computed while its
neighbours' edge rows cross, instead of a barrier at every split layer."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from edgeweave.graph import capture, capture_spec
from edgeweave.graph.layerwise import layer_units, layerwise_splits
from edgeweave.graph.overlap import run_bounds, run_steps
from edgeweave.plan.cluster_cost import MIB, ClusterModel, layer_tasks
from edgeweave.plan.costs import CostModel
from edgeweave.plan.fused_candidates import Search
from edgeweave.plan.layerwise_search import layerwise_choices, reads_input
from edgeweave.plan.medium import Task
from edgeweave.plan.multidevice import plan_cluster
from edgeweave.plan.overlap_cost import price_run
from edgeweave.plan.rest import Rest, place_rest
from edgeweave.profile import analytic_profile, retarget
from edgeweave.topology import Fleet, load_fleet


def pi_cluster(n: int) -> Fleet:
    """The first ``n`` devices of the builtin pi-cluster on its shared Wi-Fi, no edge or
    cloud (the papers' setup: every frame stays on the devices)."""
    base = load_fleet("pi-cluster")
    cluster = base.cluster()
    names = cluster.devices[:n]
    return Fleet.from_dict({
        "name": f"pi-local-{n}",
        "nodes": [{"name": x, "tier": "device", "hardware": base.node(x).hardware.name}
                  for x in names],
        "clusters": [{"name": cluster.name, "devices": names, "gateway": names[0],
                      "medium": cluster.medium.model_dump()}]})


@pytest.fixture(scope="module")
def vgg16():
    return capture_spec("vgg16")


@pytest.mark.parametrize("n", [3, 4])
def test_vgg16_overlapped_beats_the_per_layer_barrier(vgg16, n):
    fleet = pi_cluster(n)
    profile = analytic_profile(vgg16, fleet)
    plans = {split: plan_cluster(vgg16, profile, fleet, methods=("layer-wise",),
                                 layer_split=split)
             for split in ("resident", "overlap")}
    barrier, overlap = plans["resident"], plans["overlap"]
    assert overlap.predicted["total_ms"] < barrier.predicted["total_ms"]
    part = overlap.partition
    assert part is not None and part.layer_split == "overlap"
    assert len({d for la in part.layers for d in la.devices}) > 1
    assert any(la.steps for la in part.layers)
    # the run's makespan is attributed to its layers: the gateway's own time (the cluster's
    # minus the layers', what the simulator and the run calibration take) is left whole
    spent = sum(la.makespan_ms for la in part.layers)
    assert 0 <= part.predicted["cluster_ms"] - spent < part.predicted["cluster_ms"] / 2
    for la in part.layers:  # a part's compute and bytes are its steps' sums
        for p, device in enumerate(la.devices):
            mine = [st for st in la.steps if st.part == p]
            if mine:
                assert {st.device for st in mine} == {device}
                assert la.compute_ms[p] == pytest.approx(sum(st.compute_ms for st in mine))
                assert la.in_bytes[p] == sum(st.in_bytes for st in mine)


@pytest.fixture(scope="module")
def conv_stack():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()).eval()
    return capture(model, (1, 3, 48, 48), "conv-stack")


def test_a_run_is_one_task_graph_whose_edges_wait_for_their_halo(conv_stack):
    graph = conv_stack
    fleet = pi_cluster(3)
    subset = fleet.cluster().devices
    model = ClusterModel(analytic_profile(graph, fleet), fleet, fleet.cluster(),
                         input_codec="int8", result_codec="fp16", ms_per_mb=7.0)
    splits = layerwise_splits(graph, [model.devices[d].gflops for d in subset], "overlap")
    (first, last), = run_bounds(splits)
    assert (first, last) == (0, len(splits) - 1)
    price = price_run(graph, model, subset, splits, first, last, True)
    # the task graph by hand: every step on its device, its bytes in the plan's codecs (the
    # frame's crop in the input codec), the runtime's cost per MiB off the gateway
    tasks = []
    for s in run_steps(graph, splits, first, last).steps:
        device = subset[s.device]
        ratio = model.input_ratio if s.split == first else model.result_ratio
        nin, nout = round(s.in_bytes * ratio), round(s.out_bytes * model.result_ratio)
        extra = 0.0 if device == model.gateway else 7.0 * (nin + nout) / MIB
        tasks.append(Task(device, model.compute_ms(device, s.fractions) + extra, nin, nout,
                          s.after))
    assert price.schedule == model.simulate(tasks)
    assert any(t.after for t in tasks)
    # without the dependencies an edge would not wait for its halo: the graph is not that one
    free = model.simulate([replace(t, after=()) for t in tasks])
    assert free.makespan_ms < price.schedule.makespan_ms
    # each layer's share of the run: they add up to the run's makespan
    assert len(price.per_split) == len(price.steps) == last - first + 1
    assert sum(s.makespan_ms for s in price.per_split) == pytest.approx(
        price.schedule.makespan_ms)
    assert all(s.makespan_ms >= 0 for s in price.per_split)
    # the run's last layer is gathered whole: its steps return every row it computes
    block_rows = sum(st.step.rows[1] - st.step.rows[0] for st in price.steps[-1])
    assert block_rows == splits[last].row_bounds[-1]
    assert all(st.step.back == (st.step.rows,) for st in price.steps[-1])
    # and the barrier (each layer scattered, computed and gathered before the next) is slower
    barrier = sum(model.simulate(layer_tasks(model, s, subset, reads_input(graph, s)))
                  .makespan_ms for s in splits)
    assert price.schedule.makespan_ms < barrier


def test_a_cut_inside_a_run_prices_the_run_up_to_it_its_last_layer_gathered(conv_stack):
    """A prefix may end inside a run of resident layers: the run is priced up to the cut (its
    last layer returns every row: the layer after it is not in the plan), and the layers
    before it keep the steps they have in the whole run."""
    graph = conv_stack
    fleet = pi_cluster(3)
    profile = retarget(analytic_profile(graph, fleet), fleet.tier_path("pi4-0"), fleet.name)
    cm = CostModel(profile)
    model = ClusterModel(profile, fleet, fleet.cluster())
    names = fleet.cluster().devices
    # the third convolution, with the pool that reads it, inside the run
    cut = [u[-1] for u in layer_units(graph, blocks=True)][2]

    def rest_after(prefix: list[str]) -> Rest | None:
        return place_rest(cm, prefix, "latency") if prefix[-1] == cut else None

    choice, = layerwise_choices(graph, cm, model, names, "latency", rest_after, Search(),
                                "overlap", count=3)
    assert choice.prefix[-1] == cut and len(choice.splits) == len(choice.steps) == 3
    last = choice.steps[-1]
    assert sum(st.step.rows[1] - st.step.rows[0] for st in last) == \
        choice.splits[-1].row_bounds[-1]
    assert all(st.step.back == (st.step.rows,) and st.out_bytes > 0 for st in last)
    # the layers before the cut: the steps the whole run gives them (the devices' order is the
    # planner's: the gateway between two devices)
    subset = choice.devices
    splits = layerwise_splits(graph, [model.devices[d].gflops for d in subset], "overlap")
    whole = price_run(graph, model, subset, splits, 0, len(splits) - 1, True)
    assert [[st.step for st in steps] for steps in choice.steps[:2]] == \
        [[st.step for st in steps] for steps in whole.steps[:2]]
    assert choice.latency_ms == pytest.approx(
        sum(s.makespan_ms for s in choice.schedules) + choice.gateway_ms
        + choice.rest.latency_ms)
    assert sum(s.makespan_ms for s in choice.schedules) == pytest.approx(
        price_run(graph, model, subset, splits, 0, 2, True).schedule.makespan_ms)


def test_a_part_is_cut_only_where_its_halo_wait_outweighs_the_extra_calls(conv_stack):
    """Cutting a part into interior and edges costs a layer call per extra step (a one-row
    edge of a deep layer still reads all its weights); it pays only where the wait it hides
    is longer. With calls free every part whose halo crosses is cut; with calls dearer than
    any transit none is, and the run is priced with whole parts."""
    graph = conv_stack
    fleet = pi_cluster(3)
    subset = fleet.cluster().devices
    model = ClusterModel(analytic_profile(graph, fleet), fleet, fleet.cluster(),
                         input_codec="int8", result_codec="fp16")
    splits = layerwise_splits(graph, [model.devices[d].gflops for d in subset], "overlap")
    (first, last), = run_bounds(splits)
    every_cut = run_steps(graph, splits, first, last)
    cheap = price_run(graph, model, subset, splits, first, last, True)
    assert [st.step for steps in cheap.steps for st in steps] == list(every_cut.steps)
    for name, dev in model.devices.items():  # a call costs a second on every device
        model.devices[name] = replace(dev, call_ms=1000.0)
        model._calls[name] = dict.fromkeys(dev.node_ms, 1000.0)
    dear = price_run(graph, model, subset, splits, first, last, True)
    parts = [(st.step.split, st.step.part) for steps in dear.steps for st in steps]
    assert len(parts) == len(set(parts)) == sum(len(s.parts) for s in splits)
    assert len(parts) < len(every_cut.steps)


def test_shares_balance_each_layers_time_call_costs_included(conv_stack):
    """Shares by speed alone leave a device whose fixed call cost is large with more than its
    part; balanced shares give every device the same time, as the planner prices it, and
    fall back to speeds where nothing is known of calls. The convolutions share one set of
    shares (a band that moved between layers would cross the medium)."""
    from edgeweave.plan.layerwise_search import balanced

    graph = conv_stack
    fleet = pi_cluster(3)
    subset = fleet.cluster().devices
    model = ClusterModel(analytic_profile(graph, fleet), fleet, fleet.cluster())
    unit = layer_units(graph)[1]
    speeds = [model.devices[d].gflops for d in subset]
    free = balanced(graph, model, subset, [unit])(unit)
    assert [f / sum(free) for f in free] == pytest.approx([s / sum(speeds) for s in speeds])
    slow = min(subset, key=lambda d: model.devices[d].gflops)
    k = subset.index(slow)
    whole = sum(model.devices[slow].node_ms[n] for n in unit)

    def calls(fraction: float) -> list[float]:
        """Shares when a call costs ``fraction`` of the slow device's unit (each device's
        call scaled to its speed, as a layer's latency)."""
        for name, dev in model.devices.items():
            cost = whole * fraction / len(unit) * (speeds[0] / dev.gflops)
            model.devices[name] = replace(dev, call_ms=cost)
            model._calls[name] = dict.fromkeys(dev.node_ms, cost)
        return balanced(graph, model, subset, [unit])(unit)

    shares = calls(1 / 40)
    assert sum(shares) == pytest.approx(1.0)
    assert 0 < shares[k] < speeds[k] / sum(speeds)  # less than its speed's share
    times = [model.compute_ms(d, dict.fromkeys(unit, f)) for d, f in zip(subset, shares,
                                                                        strict=True)]
    assert max(times) == pytest.approx(min(times))
    # dearer calls: the slow device's call alone outlasts the others' balanced time
    shares = calls(1 / 10)
    assert shares[k] == 0 and sum(shares) == pytest.approx(1.0)
    convs = [u for u in layer_units(graph)]
    together = balanced(graph, model, subset, convs)
    assert all(together(u) == together(convs[0]) for u in convs)
