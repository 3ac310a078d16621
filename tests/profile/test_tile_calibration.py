"""The per-call cost of a tile, measured on this host (profile.tile_calibration): what it
records, that the fit is the least-squares one over what it measured, that the planner finds
it in the profile, and its errors. Correctness only: the figure itself is this host's."""

from __future__ import annotations

import math

import pytest
import torch.nn as nn

from edgeweave.errors import ProfileError
from edgeweave.graph import capture, capture_spec
from edgeweave.graph.blocks import cut_depths
from edgeweave.profile import Profile, analytic_profile
from edgeweave.profile.tile_calibration import calibrate_tiles, fit_call_ms, tile_call_ms
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


def test_calibration_records_its_points_and_the_least_squares_fit() -> None:
    graph = capture_spec("digits-cnn")
    profile = measured_like(graph)
    assert tile_call_ms(profile) is None
    calibrated = calibrate_tiles(graph, profile, repeats=1)
    call = tile_call_ms(calibrated)
    assert call is not None and math.isfinite(call) and call >= 0
    record = calibrated.model_extra["host"]["tile_calibration"]
    assert record["fused_depth"] in cut_depths(graph) and record["whole_block_ms"] > 0
    points = record["points"]
    assert {(tuple(p["grid"]), p["reuse"]) for p in points} == {((1, 1), False)} | {
        (g, r) for g in ((2, 2), (3, 3), (4, 4)) for r in (False, True)}
    for p in points:
        assert p["measured_ms"] > 0
        whole = tuple(p["grid"]) == (1, 1)
        assert (p["calls"] == 0) == whole and (p["flop_share"] == pytest.approx(1.0)) == whole
        assert p["flop_share"] >= 1.0 - 1e-9  # the halo: never less than the whole block
    assert (record["whole_block_ms"], call) == pytest.approx(fit_call_ms(points))
    # the host's other figures are kept; the planner reads the cost from the profile
    assert calibrated.model_extra["host"]["gflops"] == 50.0
    assert tile_call_ms(Profile.model_validate_json(calibrated.model_dump_json())) == call


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
