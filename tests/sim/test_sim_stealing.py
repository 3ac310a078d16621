"""A plan priced as work stealing across frames in flight (plan.stealing_price), replayed: its
tiles go to whichever stealer takes them, not to their planned device (sim.stealing). One tile
a frame on three stealers: the stream runs at about the plan's priced frames/s, where pinning
every frame's tile to its planned device runs it at that one device's rate; every stealer
gets tiles, the slow one fewest; a plan without stealing, or written before the price said
what a tile costs each device, replays statically as before."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeweave.errors import SimError
from edgeweave.graph import capture_spec
from edgeweave.plan import load_plan
from edgeweave.plan.multidevice import plan_cluster
from edgeweave.profile import analytic_profile
from edgeweave.sim.cluster import frame_of
from edgeweave.sim.engine import OK, Simulation
from edgeweave.sim.scenario import load_scenario
from edgeweave.sim.stream import replay_stream
from edgeweave.topology import Fleet

IN_FLIGHT = 12
FRAMES = 200


def trio(edge: bool = False) -> dict:
    """Two rpi4 and an rpi3 on a fast shared medium (the gateway ``g`` one of the rpi4), an
    edge behind the gateway when a scenario needs one."""
    nodes = [{"name": "g", "tier": "device", "hardware": "rpi4"},
             {"name": "slow", "tier": "device", "hardware": "rpi3"},
             {"name": "h", "tier": "device", "hardware": "rpi4"}]
    links = []
    if edge:
        nodes.append({"name": "edge", "tier": "edge", "hardware": "edge-server"})
        links.append({"from": "g", "to": "edge", "mbps": 100, "rtt_ms": 5})
    return {"name": "trio", "nodes": nodes, "links": links,
            "clusters": [{"name": "c", "devices": ["g", "slow", "h"], "gateway": "g",
                          "medium": {"mbps": 1e6, "rtt_ms": 0.01}}]}


def whole_frames(fleet: dict, in_flight: int | None = IN_FLIGHT):
    """digits-cnn's deepest fused block as one tile a frame, for frames/s (stealing across
    ``in_flight`` frames; None: the tile's fixed assignment)."""
    graph = capture_spec("digits-cnn")
    fl = Fleet.from_dict(fleet)
    return plan_cluster(graph, analytic_profile(graph, fl), fl, objective="throughput",
                        methods=("fused-tiles",), grid=(1, 1), reuse=False,
                        in_flight=in_flight)


@pytest.fixture(scope="module")
def stolen():
    return whole_frames(trio())


def test_one_tile_a_frame_streams_at_the_stealing_price_not_one_devices_rate(stolen):
    part = stolen.partition
    assert part.scheduler == "stealing" and part.stealers == ["g", "slow", "h"]
    assert len(part.tiles) == 1
    predicted = part.predicted["fps"]
    run = replay_stream(part, FRAMES)
    assert run.stealing and len(run.latencies_ms) == FRAMES
    assert run.fps == pytest.approx(predicted, rel=0.1)
    # the same frames pinned to the tile's planned device: that one device's rate
    pinned = replay_stream(part.model_copy(update={"scheduler": "static"}), FRAMES)
    assert not pinned.stealing
    assert pinned.tasks == {part.tiles[0].device: FRAMES, **{
        d: 0 for d in part.devices if d != part.tiles[0].device}}
    assert pinned.fps < 0.6 * predicted
    # Little's law: no more frames/s than frames in flight per median latency (with slack
    # for the spread of latencies around the median); and fewer than the frames in flight
    # allowed wait, since the source sends a frame only once its last was handed out (the
    # stealers hold two tiles each at most, beside the frames gathered for their rests)
    assert run.fps <= 1.5 * IN_FLIGHT * 1000.0 / run.median_ms
    assert run.median_ms < 0.9 * IN_FLIGHT * 1000.0 / run.fps


def test_every_stealer_takes_tiles_the_slow_one_fewest(stolen):
    part = stolen.partition
    run = replay_stream(part, FRAMES)
    assert sum(run.tasks.values()) == FRAMES and set(run.tasks) == set(part.stealers)
    assert all(n > 0 for n in run.tasks.values())
    assert run.tasks["slow"] < min(run.tasks["g"], run.tasks["h"])
    # in about the proportions the price split them
    for device, share in part.predicted["stealing_shares"].items():
        assert run.tasks[device] / FRAMES == pytest.approx(share, abs=0.1)


def test_a_plan_without_stealing_or_written_before_its_tile_costs_replays_statically(stolen):
    fixed = whole_frames(trio(), in_flight=None).partition
    assert fixed.scheduler == "static" and not frame_of(fixed).stealers
    run = replay_stream(fixed, 20, in_flight=4)
    assert not run.stealing and run.tasks[fixed.tiles[0].device] == 20
    # an older plan's JSON: priced as stealing, but without what a tile costs each stealer
    doc = json.loads(stolen.model_dump_json())
    del doc["partition"]["predicted"]["stealing_tile_ms"]
    old = stolen.model_validate(doc).partition
    assert not frame_of(old).stealers
    pinned = replay_stream(part_static(stolen), FRAMES)
    again = replay_stream(old, FRAMES)
    assert again.fps == pytest.approx(pinned.fps, rel=1e-9) and again.tasks == pinned.tasks


def part_static(plan):
    return plan.partition.model_copy(update={"scheduler": "static"})


def test_the_tile_costs_round_trip_through_the_plans_json(stolen, tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(stolen.model_dump_json())
    part = load_plan(path).partition
    frame = frame_of(part)
    assert frame is not None and frame.stealers == (0, 1, 2)
    tile = frame.groups[0][0]
    # the tile's planned device costs what the plan wrote on it (no runtime cost per MiB)
    assert tile.on[tile.device] == pytest.approx(tile.compute_s)
    assert tile.on[1] > max(tile.on[0], tile.on[2])  # the rpi3 is the slow one


@pytest.mark.parametrize("kwargs, word", [(dict(frames=0), "frames"),
                                          (dict(frames=5, in_flight=0), "in_flight")])
def test_a_bad_stream_gets_one_clear_error(stolen, kwargs, word):
    with pytest.raises(SimError, match=f"a replayed stream's {word} must be a whole number"):
        replay_stream(stolen.partition, **kwargs)


# ---- in a fleet scenario (sim.engine) ---------------------------------------------------


def scenario(tmp_path, plan):
    (tmp_path / "plan.json").write_text(plan.model_dump_json())
    doc = {"name": "stealing", "duration_s": 600, "fleet": trio(edge=True),
           "access_points": [{"name": "ap", "edge": "edge", "rtt_ms": 5, "shared": False,
                              "mbps": 100}],
           "places": [{"name": "lab", "access_point": "ap"}],
           "populations": [{"name": "d", "count": 1, "hardware": "rpi4",
                            "applications": "app"}],
           # the device keeps as many frames under way as the plan priced
           "applications": [{"name": "app", "plan": "plan.json", "in_flight": IN_FLIGHT}]}
    (tmp_path / "s.yaml").write_text(json.dumps(doc))
    return load_scenario(tmp_path / "s.yaml")


def test_a_burst_of_frames_in_a_scenario_is_stolen_by_every_stealer(tmp_path):
    plan = whole_frames(trio(edge=True))
    part = plan.partition
    assert part.scheduler == "stealing" and len(part.stealers) == 3
    scn = scenario(tmp_path, plan)
    # one frame on an idle cluster: its tile on its planned device, the predicted latency
    alone = Simulation(scn, arrivals=(np.array([1.0]), np.array([0]))).run()
    assert (alone.status == OK).all()
    np.testing.assert_allclose((alone.done - alone.t) * 1000.0, plan.predicted["total_ms"],
                               rtol=1e-9)
    sim = Simulation(scn, arrivals=(np.full(30, 1.0), np.zeros(30, dtype=int)))
    out = sim.run()
    assert (out.status == OK).all()
    ran = sim._clusters[0].steal.ran
    assert sum(ran) == 30 and all(n > 0 for n in ran)
