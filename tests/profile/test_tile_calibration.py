"""The per-call cost of a tile, measured on this host (profile.tile_calibration): what it
records, that the fit is the least-squares one over what it measured, that the planner finds
it in the profile, and its errors. Correctness only: the figure itself is this host's."""

from __future__ import annotations

import itertools

import pytest
import torch.nn as nn

from edgeweave.errors import ProfileError
from edgeweave.graph import capture, capture_spec
from edgeweave.graph.blocks import cut_depths, fused_block
from edgeweave.profile import Profile, analytic_profile
from edgeweave.profile.tile_calibration import (
    calibrate_tiles,
    fit_call_ms,
    tile_call_costs,
    tile_call_ms,
)
from edgeweave.topology import load_fleet


def measured_like(graph) -> Profile:
    """An analytic profile presented as measured here: each node's host time its MFLOPs."""
    profile = analytic_profile(graph, load_fleet("pi-cluster"))
    doc = profile.model_dump()
    flops = {n.name: n.flops for n in profile.nodes}
    for node in doc["nodes"]:
        node["host_ms"] = flops[node["name"]] / 1e6
    return Profile.model_validate({**doc, "latency_source": "measured",
                                   "host": {"gflops": 50.0}})


def test_calibration_covers_the_prefix_block_by_block_with_least_squares_fits() -> None:
    """Consecutive blocks from the input to the deepest cut, each fitted on its own points;
    every prefix layer gets its block's call cost, their mean prices any other layer."""
    graph = capture_spec("digits-cnn")
    profile = measured_like(graph)
    assert tile_call_ms(profile) is None and tile_call_costs(profile) == {}
    calibrated = calibrate_tiles(graph, profile, repeats=1)
    record = calibrated.model_extra["host"]["tile_calibration"]
    blocks = record["blocks"]
    depths = sorted(cut_depths(graph))
    assert len(blocks) == min(3, len(depths)) and blocks[0]["from_depth"] == 0
    assert blocks[-1]["to_depth"] == depths[-1]
    assert all(a["to_depth"] == b["from_depth"] for a, b in itertools.pairwise(blocks))
    costs = tile_call_costs(calibrated)
    assert set(costs) == set(fused_block(graph, depths[-1]).names)
    for block in blocks:
        assert block["to_depth"] in cut_depths(graph) and block["whole_block_ms"] > 0
        own = set(fused_block(graph, block["to_depth"]).names) - (
            set(fused_block(graph, block["from_depth"]).names) if block["from_depth"] else set())
        assert {costs[n] for n in own} == {block["tile_call_ms"]}
        points = block["points"]
        assert (1, 1) in {tuple(p["grid"]) for p in points}
        for p in points:
            assert p["measured_ms"] > 0
            whole = tuple(p["grid"]) == (1, 1)
            assert (p["calls"] == 0) == whole
            # the halo: never less than the whole block (exactly it when no layer has one)
            assert p["flop_share"] >= 1.0 - 1e-9 and (
                not whole or p["flop_share"] == pytest.approx(1.0))
        assert (block["whole_block_ms"], block["tile_call_ms"]) == pytest.approx(
            fit_call_ms(points))
    assert {(tuple(p["grid"]), p["reuse"]) for p in blocks[0]["points"]} == {((1, 1), False)} | {
        (g, r) for g in ((2, 2), (3, 3), (4, 4)) for r in (False, True)}
    call = tile_call_ms(calibrated)
    assert call == pytest.approx(sum(costs.values()) / len(costs)) and call >= 0
    # the host's other figures are kept; the planner reads the costs from the profile
    assert calibrated.model_extra["host"]["gflops"] == 50.0
    again = Profile.model_validate_json(calibrated.model_dump_json())
    assert tile_call_ms(again) == call and tile_call_costs(again) == costs


def test_calibration_errors() -> None:
    mlp = capture(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), (1, 1, 8, 8), name="mlp")
    with pytest.raises(ProfileError, match="no fusable prefix"):
        calibrate_tiles(mlp, measured_like(capture_spec("digits-cnn")))
    graph = capture_spec("digits-cnn")
    other = measured_like(graph).model_copy(update={"model": "resnet18"})
    with pytest.raises(ProfileError, match="does not match"):
        calibrate_tiles(graph, other)


def test_the_fit_recovers_the_whole_block_and_the_call_cost() -> None:
    """Points made with a whole block of 10 ms and 0.5 ms a call come back as that; a cost
    the data would make negative is 0, the whole block then fitted alone."""
    shapes = [(1.0, 0.0), (1.2, 4.0), (1.5, 11.0), (1.9, 20.0)]
    points = [{"flop_share": s, "calls": k, "measured_ms": 10.0 * s + 0.5 * k}
              for s, k in shapes]
    assert fit_call_ms(points) == pytest.approx((10.0, 0.5))
    cheaper = [{**p, "measured_ms": 10.0 * p["flop_share"] - 0.1 * p["calls"]}
               for p in points]
    whole, call = fit_call_ms(cheaper)
    assert call == 0.0 and whole == pytest.approx(
        sum(p["flop_share"] * p["measured_ms"] for p in cheaper)
        / sum(p["flop_share"] ** 2 for p in cheaper))
