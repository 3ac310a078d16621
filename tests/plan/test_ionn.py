"""IONN's planner: the best plan over what the edge holds (checked against brute force), and the
upload order, each partition the one that saves the most per byte (checked against every
subset of the layers still missing)."""

import itertools

import pytest
from hypothesis import given, settings

from edgeweave.errors import PlanError
from edgeweave.plan.ionn import best_plan, upload_all_schedule, upload_schedule
from helpers import dag_profiles, make_profile

MB = 1_000_000


def _chain(device, edge, out_bytes, params, mbps=80.0, rtt=2.0):
    n = len(device)
    return make_profile(latencies=list(zip(device, edge, strict=True)), out_bytes=out_bytes,
                        edges=[(i, i + 1) for i in range(n - 1)], links=[(mbps, rtt)],
                        param_bytes=params, tiers=("device", "edge"))


def _brute(profile, held):
    """The cheapest labelling of a chain (execution may switch tiers any number of times),
    with layers that have weights on the edge only if held: every labelling priced by hand."""
    nodes = profile.nodes
    link = profile.links["device-edge"]
    best = float("inf")
    for labels in itertools.product((0, 1), repeat=len(nodes) - 1):
        labels = (0, *labels)  # the input is on the device
        if any(lab and n.param_bytes and n.name not in held
               for n, lab in zip(nodes, labels, strict=True)):
            continue
        cost = sum(n.latency_ms["edge" if lab else "device"]
                   for n, lab in zip(nodes, labels, strict=True))
        cost += sum(link.transfer_ms(nodes[i - 1].out_bytes)
                    for i in range(1, len(nodes)) if labels[i] != labels[i - 1])
        if labels[-1]:
            cost += link.transfer_ms(nodes[-1].out_bytes)
        best = min(best, cost)
    return best


@settings(max_examples=40, deadline=None)
@given(dag_profiles(max_nodes=7, chain=True, n_tiers=2))
def test_best_plan_is_the_cheapest_path_over_what_the_edge_holds(profile):
    names = [n.name for n in profile.nodes]
    nodes = [n.model_copy(update={"param_bytes": 1000 * (i % 3)})
             for i, n in enumerate(profile.nodes)]
    profile = profile.model_copy(update={"nodes": nodes})
    for held in (set(), set(names[1::2]), set(names)):
        got = best_plan(profile, held)
        assert got.total_ms == pytest.approx(_brute(profile, held))
        assert all(profile.nodes[names.index(n)].param_bytes == 0 or n in held
                   for n in got.edge_nodes)


def test_compute_heavy_small_layer_goes_first_and_runs_as_a_sandwich():
    # conv-like n2: 40 ms on the device, 2 ms on the edge, 50 kB of weights; fc-like n4:
    # 30 ms vs 1 ms but 20 MB. Activations are small, so n2 alone pays at once
    # (device -> edge -> device), long before n4's upload does; n1 saves less than shipping
    # the input instead of its output costs.
    p = _chain(device=[0, 2, 40, 1, 30], edge=[0, 1, 2, 0.1, 1],
               out_bytes=[40_000, 10_000, 10_000, 10_000, 400],
               params=[0, 1000, 50_000, 0, 20 * MB])
    s = upload_schedule(p)
    assert s.initial.mode == "device-only"
    assert next(st.nodes for st in s.steps) == ("n2",)
    assert s.steps[0].plan.mode == "device-edge-device"
    assert "n4" in s.steps[-1].nodes
    assert s.steps[-1].plan.total_ms == pytest.approx(best_plan(p, [n.name for n in p.nodes])
                                                     .total_ms)
    at = [st.upload_s for st in s.steps]
    assert at[0] == pytest.approx(50_000 * 8 / 80e6)  # priced at the link's rate


@settings(max_examples=25, deadline=None)
@given(dag_profiles(max_nodes=6, chain=True, n_tiers=2))
def test_each_partition_saves_the_most_per_byte_of_any_set_of_missing_layers(profile):
    nodes = [n.model_copy(update={"param_bytes": 500 + 700 * (i % 4)}) if i else n
             for i, n in enumerate(profile.nodes)]
    profile = profile.model_copy(update={"nodes": nodes})
    layers = [n.name for n in profile.nodes[1:]]
    size = {n.name: n.param_bytes for n in profile.nodes}
    held: set[str] = set()
    current = _brute(profile, held)
    for step in upload_schedule(profile).steps:
        best_ratio = max(((current - _brute(profile, held | set(sub)))
                          / sum(size[n] for n in sub))
                         for k in range(1, len(layers) + 1)
                         for sub in itertools.combinations(sorted(set(layers) - held), k))
        assert step.benefit_ms / step.nbytes == pytest.approx(best_ratio, rel=1e-6)
        assert step.nbytes == sum(size[n] for n in step.nodes)
        held |= set(step.nodes)
        current = _brute(profile, held)
        assert step.plan.total_ms == pytest.approx(current)
    # it stops only when nothing more helps: the last plan is the best one there is
    assert current == pytest.approx(_brute(profile, set(layers)))


def test_nothing_is_uploaded_when_no_plan_beats_the_device():
    p = _chain(device=[0, 1, 1], edge=[0, 0.5, 0.5], out_bytes=[MB, MB, MB],
               params=[0, 10, 10], mbps=1.0)
    s = upload_schedule(p)
    assert s.steps == () and s.first_benefit_s is None and s.initial.mode == "device-only"


def test_the_baseline_uploads_the_whole_model_in_one_partition():
    p = _chain(device=[0, 2, 40, 1, 30], edge=[0, 1, 2, 0.1, 1],
               out_bytes=[40_000, 10_000, 10_000, 10_000, 400],
               params=[0, 1000, 50_000, 0, 20 * MB])
    whole, ionn = upload_all_schedule(p), upload_schedule(p)
    assert len(whole.steps) == 1 and whole.steps[0].nodes == ("n1", "n2", "n4")
    assert whole.steps[0].plan.total_ms == pytest.approx(ionn.steps[-1].plan.total_ms)
    assert whole.first_benefit_s > ionn.first_benefit_s


def test_a_codec_prices_every_crossing_and_is_recorded_on_the_plan():
    p = _chain(device=[0, 2, 40, 1, 30], edge=[0, 1, 2, 0.1, 1],
               out_bytes=[40_000, 10_000, 10_000, 10_000, 400],
               params=[0, 1000, 50_000, 0, 20 * MB])
    nodes = [n.model_copy(update={"codec_bytes": {"int8": n.out_bytes // 4}})
             for n in p.nodes]
    p = p.model_copy(update={"nodes": nodes})
    plain, coded = best_plan(p, ["n2"]), best_plan(p, ["n2"], codecs=("none", "int8"))
    assert coded.codec == "int8" and coded.total_ms < plain.total_ms


def test_a_fleet_without_an_edge_is_refused():
    p = make_profile(latencies=[(0,), (1,)], out_bytes=[1, 1], edges=[(0, 1)], links=[],
                     tiers=("device",))
    with pytest.raises(PlanError, match="device and an edge"):
        upload_schedule(p)
