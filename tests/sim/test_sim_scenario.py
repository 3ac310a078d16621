"""Scenario YAML: a valid file loads with its fleet, plans and traces resolved relative to it;
every mistake is one SimError naming the file and the field path, in the user's words."""

from __future__ import annotations

import json

import pytest
import yaml
from sim_helpers import toy_plan

from edgeweave.errors import SimError
from edgeweave.sim.scenario import load_scenario


@pytest.fixture
def base(tmp_path):
    (tmp_path / "plan.json").write_text(json.dumps(toy_plan().to_json()))
    return {
        "name": "campus", "seed": 3, "duration_s": 600, "fleet": "pi4-wifi-edge-cloud",
        "access_points": [{"name": "ap1", "edge": "edge", "mbps": 54, "rtt_ms": 5}],
        "places": [{"name": "library", "access_point": "ap1", "attractiveness": 2,
                    "dwell_s": 300}, {"name": "street"}],
        "populations": [{"name": "phones", "count": 20, "hardware": {"phone": 3, "rpi4": 1},
                         "applications": "detect"}],
        "applications": [{"name": "detect", "plan": "plan.json", "deadline_ms": 500}],
    }


def write(tmp_path, doc, name="s.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return path


def error(tmp_path, doc) -> str:
    path = write(tmp_path, doc)
    with pytest.raises(SimError) as e:
        load_scenario(path)
    msg = str(e.value)
    assert msg.startswith(str(path)), msg
    assert "Traceback" not in msg and "pydantic" not in msg
    return msg


def test_a_valid_scenario_resolves_fleet_plan_and_trace(tmp_path, base):
    (tmp_path / "wifi.csv").write_text("t_seconds,mbps\n0,50\n10,5\n")
    base["access_points"][0] = {"name": "ap1", "edge": "edge", "trace": "wifi.csv"}
    scn = load_scenario(write(tmp_path, base))
    assert scn.fleet.name == "pi4-wifi-edge-cloud"
    assert scn.applications[0].plan.mode == toy_plan().mode
    assert scn.access_points[0].uplink_mbps == pytest.approx(27.5)
    assert scn.devices == 20 and scn.policy.name == "edgeweave"
    assert scn.with_devices(101).devices == 101


def test_a_typo_in_a_field_name(tmp_path, base):
    base["places"][0]["dwel_s"] = 5
    assert "places[0].dwel_s: unexpected field (check the spelling)" in error(tmp_path, base)


def test_a_bad_value_names_its_field(tmp_path, base):
    base["populations"][0]["count"] = -3
    assert "populations[0].count: " in error(tmp_path, base)
    base["populations"][0]["count"] = 3
    base["populations"][0]["speed"] = 0  # a device's calibrated speed: a multiple above 0
    assert "populations[0].speed: Input should be greater than 0, got 0" in error(tmp_path, base)
    base["populations"][0]["speed"] = 0.8
    assert load_scenario(write(tmp_path, base)).populations[0].speed == 0.8
    base["duration_s"] = 0
    assert "duration_s: " in error(tmp_path, base)
    base["duration_s"] = 60
    # a spread is a cv or measured times: a negative time is named, a cv or times load
    base["applications"][0]["overhead_cv"] = [3.0, -1.0]
    assert "applications[0].overhead_cv" in error(tmp_path, base)
    for spread in (0.4, [3.0, 4.5, 9.0]):
        base["applications"][0]["overhead_cv"] = spread
        assert load_scenario(write(tmp_path, base)).applications[0].overhead_cv == spread


@pytest.mark.parametrize("path,value,expect", [
    (("access_points", 0, "edge"), "cloud",
     "access_points[0].edge: 'cloud' is not an edge node of fleet 'pi4-wifi-edge-cloud' "
     "(edge nodes: edge)"),
    (("places", 0, "access_point"), "ap9", "places[0].access_point: unknown access point 'ap9'"),
    (("populations", 0, "hardware"), {"iphone": 1},
     "populations[0].hardware: unknown hardware 'iphone'"),
    (("populations", 0, "applications"), "track",
     "populations[0].applications: unknown application 'track'"),
    (("populations", 0, "places"), ["library", "moon"],
     "populations[0].places[1]: unknown place 'moon'"),
    (("populations", 0, "hardware"), {}, "populations[0].hardware: an empty mix"),
    (("applications", 0, "plan"), "missing.json", "applications[0].plan: "),
    (("fleet",), "no-such-fleet", "fleet: unknown fleet 'no-such-fleet'"),
    (("servers",), {"gpu-box": {"cores": 2}}, "servers.gpu-box: not a tier"),
    (("policy",), "teleport", "policy.name: unknown policy 'teleport' (known: cloud-only"),
    (("access_points", 0), {"name": "ap1", "edge": "edge"},
     "access_points[0]: give mbps or a bandwidth trace"),
])
def test_a_bad_reference_names_the_field_and_what_is_known(tmp_path, base, path, value,
                                                           expect):
    node = base
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert expect in error(tmp_path, base)


def test_a_duplicate_name(tmp_path, base):
    base["places"].append({"name": "library"})
    assert "places[2].name: duplicate name 'library' (already places[0])" in error(tmp_path,
                                                                                 base)


def test_a_bad_trace_file_is_named_with_its_line(tmp_path, base):
    (tmp_path / "bad.csv").write_text("0,50\n1,-4\n")
    base["access_points"][0] = {"name": "ap1", "edge": "edge", "trace": "bad.csv"}
    msg = error(tmp_path, base)
    assert "access_points[0].trace: " in msg and "bad.csv:2" in msg


def test_training_needs_enough_devices_and_a_valid_experiment(tmp_path, base):
    base["training"] = {"experiment": {"model": "mlp:64,10", "data": {"clients": 50}}}
    assert ("training.experiment.data.clients: 50 clients but the scenario has only 20 "
            "devices") in error(tmp_path, base)
    base["training"] = {"experiment": {"strategy": {"name": "fedbogus"}}}
    assert "training.experiment: " in error(tmp_path, base)


def test_not_yaml_not_a_mapping_and_missing_files(tmp_path):
    assert "not valid YAML" in error(tmp_path, "a: [1,\n")
    assert "expected a mapping of scenario fields" in error(tmp_path, "- 1\n")
    with pytest.raises(SimError, match="scenario file not found"):
        load_scenario(tmp_path / "nope.yaml")


def test_the_shipped_scenarios_load_and_are_the_issues_campus_and_city():
    """examples/sim: a campus (several access points and edge servers, 100-2,000 devices that
    move between places) and a city of 10,000+ devices; the city is exercised only by the
    benchmark, so a field it uses that changed would otherwise surface there first. Both
    replay the planner's Plan JSON, a chain scan's (alexnet) and a min-cut's (mobilenet_v2)."""
    from pathlib import Path

    from edgeweave.sim.run import simulate

    examples = Path(__file__).parents[2] / "examples" / "sim"
    campus, city = (load_scenario(examples / f"{n}.yaml") for n in ("campus", "city"))
    assert 100 <= campus.devices <= 2000 and city.devices >= 10_000
    for scn in (campus, city):
        assert len(scn.access_points) >= 2 and len(scn.fleet.nodes_in("edge")) >= 2
        assert len(scn.places) >= 2  # somewhere to move to
        algorithms = {a.plan.algorithm for a in scn.applications}
        assert any("chain scan" in a for a in algorithms), algorithms
        assert any("min s-t cut" in a for a in algorithms), algorithms
    run = simulate(city.with_devices(40).model_copy(update={"duration_s": 60.0}),
                   training=False)
    assert run.summary["requests"] > 0 and run.summary["served"] > 0
