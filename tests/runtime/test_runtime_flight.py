"""Emulated links that overlap the real transfer, and the tiers' load factors."""

import time

import pytest
import torch
from runtime_helpers import TOKEN, three_tier_plan

from edgeweave.errors import ProfileError
from edgeweave.runtime.client import COLD_REQUESTS, ClientOptions, CoInferenceClient
from edgeweave.runtime.flight import arrive, same_clock, stamp
from edgeweave.runtime.load import LoadFactors
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.shaper import CLOCK_ID, LinkShaper
from edgeweave.security import authed_channel
from helpers import calibration

# 8 Mbit/s is 1 MB/s: 100 kB take 100 ms
MB_PER_S = 8.0


def test_reservations_queue_on_the_link_and_add_half_the_rtt():
    link = LinkShaper(MB_PER_S, rtt_ms=20, burst_bytes=1)
    t0 = time.monotonic()
    first, second = link.reserve(100_000), link.reserve(100_000)
    assert 0.1099 <= first - t0 < 0.2  # 100 kB at 1 MB/s, then 10 ms of propagation
    assert second - first == pytest.approx(0.100, abs=1e-6)  # behind the first, not beside it


def test_a_reservation_delays_later_blocking_senders():
    link = LinkShaper(MB_PER_S, rtt_ms=0, burst_bytes=1)
    t0 = time.monotonic()
    link.reserve(100_000)
    link.bucket.consume(1)
    assert time.monotonic() - t0 >= 0.0999


def test_a_stamp_is_waited_for_only_on_the_same_clock():
    msg = pb.InferReply()
    ms = stamp(msg, LinkShaper(MB_PER_S, rtt_ms=0, burst_bytes=1), 50_000)
    assert msg.clock == CLOCK_ID and 30 < ms <= 50
    assert arrive(msg)
    assert time.monotonic() >= msg.deliver_at_ns / 1e9  # not a moment before its instant
    msg.deliver_at_ns = int((time.monotonic() + 3600) * 1e9)  # a stamp is the sender's word
    t0 = time.monotonic()
    assert arrive(msg, max_wait_s=0.05)
    assert time.monotonic() - t0 < 1.0
    msg.clock = "another-host"
    assert not arrive(msg)  # nothing to wait for: its sender (or receiver) shapes it
    assert not same_clock("")


def _raw_request(clock, deliver_at):
    payload = torch.zeros(25_000)  # 100 kB
    return pb.InferRequest(
        request_id="r", want=["x"], deliver_at_ns=int(deliver_at * 1e9), clock=clock,
        tensors=[pb.Tensor(name="x", codec="none", dtype="float32", shape=[25_000],
                           payload=payload.numpy().tobytes())],
        route=[pb.Hop(stage="", needs=["x"], codec="none", link_mbps=1.0,
                      shape_bandwidth=True)])


def _timed_infer(target, clock, ahead_s):
    stub = pb_grpc.NodeStub(authed_channel(target, token=TOKEN))
    stub.Health(pb.HealthRequest(), timeout=5)  # connect first
    t0 = time.monotonic()
    reply = stub.Infer(_raw_request(clock, t0 + ahead_s), timeout=30)
    return time.monotonic() - t0, reply


def test_server_waits_for_a_stamp_on_its_clock_and_shapes_one_from_elsewhere(nodes):
    edge_target, *_ = nodes
    # on our clock, stamped 0.3 s ahead: held until then
    wall, _ = _timed_infer(edge_target, CLOCK_ID, 0.3)
    assert wall >= 0.3
    # on our clock, already arrived: not shaped again (1 Mbit/s would take 0.8 s)
    wall, reply = _timed_infer(edge_target, CLOCK_ID, 0.0)
    assert wall < 0.5
    assert reply.clock == CLOCK_ID and reply.deliver_at_ns > 0  # the reply is stamped too
    # from another clock: the stamp means nothing here, so the link is emulated on receipt
    wall, reply = _timed_infer(edge_target, "another-host", 0.0)
    assert wall >= 0.8 * 0.95
    assert not reply.deliver_at_ns  # and the reply is shaped before it is sent


def test_load_factors_are_an_ewma_of_measured_over_predicted():
    load = LoadFactors(alpha=0.5)
    predicted = {"total_ms": 100.0, "tier_compute_ms": {"device": 40.0, "edge": 20.0,
                                                        "cloud": 0.0}}
    assert load.predict_ms(predicted) == 100.0
    load.observe_request(predicted, {"device_compute": 60.0, "edge_compute": 20.0,
                                     "cloud_compute": 0.3})
    assert load.scaled() == {"device": 1.5, "edge": 1.0}  # cloud: below min_ms, not a sample
    load.observe_request(predicted, {"device_compute": 40.0})
    assert load.factor("device") == pytest.approx(1.25)
    assert load.predict_ms(predicted) == pytest.approx(100.0 + 0.25 * 40.0)
    with pytest.raises(ValueError, match="alpha"):
        LoadFactors(alpha=0)
    with pytest.raises(ValueError, match="offset_alpha"):
        LoadFactors(offset_alpha=1.5)


def test_a_stage_keeps_its_own_offset_from_the_shared_tier_factor():
    load = LoadFactors()
    for _ in range(30):  # two stages on one device, one steadily 20% slower than profiled
        head = load.factor("device", "head")  # each predicted before it runs, as a client does
        load.observe("device", 100.0, 100.0, stage="head")
        whole = load.factor("device", "whole")
        load.observe("device", 120.0, 100.0, stage="whole")
    assert head == pytest.approx(1.0, rel=0.03)
    assert whole == pytest.approx(1.2, rel=0.03)
    seen = []
    for _ in range(8):  # the machine slows down by half; only "whole" is being run
        seen.append(load.factor("device", "whole"))
        load.observe("device", 180.0, 100.0, stage="whole")
    assert seen[-1] == pytest.approx(1.8, rel=0.05)
    assert max(seen) <= 1.8  # the step is followed, not counted twice (tier and offset)
    # the stage not run meanwhile follows most of the way (1.0 -> 1.5), on the tier's factor
    assert 1.3 < load.factor("device", "head") < 1.55


def test_profile_with_load_scales_one_tier_and_names_unknown_tiers(digits_graph):
    prof, _ = three_tier_plan(digits_graph)
    slow = prof.with_load({"edge": 3.0})
    for a, b in zip(prof.nodes, slow.nodes, strict=True):
        assert b.latency_ms["edge"] == pytest.approx(3.0 * a.latency_ms["edge"])
        assert b.latency_ms["device"] == a.latency_ms["device"]
    with pytest.raises(ProfileError, match="unknown tiers \\['gpu'\\]"):
        prof.with_load({"gpu": 2.0})


def test_plan_priced_as_an_alternative_predicts_that_alternative(resnet_graph):
    from edgeweave.profile import profile_graph
    from edgeweave.runtime.session import plan_for
    from edgeweave.topology import load_fleet

    fleet = load_fleet("pi4-wifi-edge-cloud")
    _, chosen = plan_for(profile_graph(resnet_graph, fleet, warmup=0, repeats=1,
                                       calibration=calibration()), fleet, mbps=20.0)
    for mode in ("device-only", "edge-only"):
        alt = chosen.priced(mode=mode)
        assert alt.mode == mode and alt.placement == chosen.alternative(mode).placement
        assert alt.predicted["total_ms"] == pytest.approx(chosen.alternative(mode).total_ms)
        tiers = {t for t, ms in alt.predicted["tier_compute_ms"].items() if ms > 0}
        assert tiers == ({"device"} if mode == "device-only" else {"edge"})


def test_client_predicts_with_load_and_moves_work_off_a_loaded_edge(resnet_graph, nodes):
    from edgeweave.profile import profile_graph
    from edgeweave.runtime.session import plan_for
    from edgeweave.topology import load_fleet

    edge_target, *_ = nodes
    fleet = load_fleet("pi4-wifi-edge-cloud")
    prof, chosen = plan_for(profile_graph(resnet_graph, fleet, warmup=0, repeats=2,
                                          calibration=calibration()), fleet, mbps=1000.0)
    edge_only = chosen.priced(mode="edge-only")
    client = CoInferenceClient(resnet_graph, edge_only, edge_target, token=TOKEN, profile=prof,
                               options=ClientOptions(device_dilation=1.0))
    x = torch.randn(resnet_graph.input_shape)
    client.deploy(x)
    first = client.infer(x)
    assert first.segments["device_compute"] == 0.0  # the device stage is only the input
    assert first.predicted_now_ms == pytest.approx(edge_only.predicted["total_ms"])
    for _ in range(COLD_REQUESTS - 1):
        client.infer(x)
    assert not client.load.scaled()  # a fresh stage's first calls teach nothing about load
    client.infer(x)
    assert "edge" in client.load.scaled()
    client.opts.adapt = True
    client.load.factors["edge"] = 1000.0  # the edge is suddenly swamped
    predicted = client.infer(x).predicted_now_ms
    assert predicted > 100 * edge_only.predicted["tier_compute_ms"]["edge"]
    switched = [s for s in client.switches if s["switched"]]
    assert switched, client.switches
    assert switched[0]["load_factors"]["edge"] > 100
    # away from the edge (to the device or the cloud, whichever the network favours)
    assert client.deployment.plan.predicted["tier_compute_ms"]["edge"] == 0.0
    result = client.infer(x)
    assert result.plan_mode == switched[0]["new_mode"] and not result.fallback
