"""A plan JSON is self-contained: its cost can be re-derived from the file alone, and the
placement it names splits the real model into stages that compute the same output."""

import json

import pytest
import torch

from edgeweave.graph import capture_spec, run_stages, split
from edgeweave.plan import load_plan, plan, plot_plan
from edgeweave.profile import profile_graph
from edgeweave.topology import load_fleet
from helpers import calibration

RANK = {"device": 0, "edge": 1, "cloud": 2}


def recheck_total_ms(doc: dict) -> float:
    """The foundation issue's cost model, written from its text, reading only the JSON."""
    tier = {n: RANK[t] for n, t in doc["placement"].items()}
    lat = {n["name"]: n["latency_ms"] for n in doc["nodes"]}
    size = {n["name"]: n["out_bytes"] for n in doc["nodes"]}
    cuts = doc.get("cuts") or {}
    wire = {h: {n["name"]: (n.get("codec_bytes") or {}).get(c, n["out_bytes"])
                for n in doc["nodes"]} for h, c in cuts.items()}
    total = sum(lat[n][t] for n, t in doc["placement"].items())
    consumers: dict[str, list[str]] = {}
    for a, b in doc["edges"]:
        consumers.setdefault(a, []).append(b)
    hops = list(doc["links"])
    top = max(tier.values())
    for k, hop in enumerate(hops):
        link = doc["links"][hop]
        crossing = [u for u in size if tier[u] <= k < max(
            (tier[v] for v in consumers.get(u, [])), default=-1)]
        up = wire.get(hop, size)
        if top > k:
            total += link["rtt_ms"] / 2 + sum(up[u] for u in crossing) * 8 / (link["mbps"] * 1000)
        if tier[doc["output"]] > k:
            total += link["rtt_ms"] / 2 + size[doc["output"]] * 8 / (link["mbps"] * 1000)
    return total


@pytest.fixture(scope="module")
def resnet_profile():
    graph = capture_spec("resnet18", input_shape=(1, 3, 64, 64))
    return graph, profile_graph(graph, load_fleet("pi4-wifi-edge-cloud"), warmup=1, repeats=2,
                                calibration=calibration())


@pytest.mark.parametrize(("mbps", "codecs"), [(1.0, ("none",)), (20.0, ("none",)),
                                               (1000.0, ("none",)),
                                               (5.0, ("none", "fp16", "int8+zstd"))])
def test_plan_json_rechecks_and_splits_the_real_model(resnet_profile, tmp_path, mbps, codecs):
    graph, prof = resnet_profile
    prof = prof.with_link("device-edge", mbps=mbps)
    result = plan(prof, "latency", codecs=codecs)
    assert set(result.cuts.values()) <= set(codecs)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(result.to_json()))
    doc = json.loads(path.read_text())
    for key in ("model", "fleet", "objective", "input_bytes", "nodes", "edges", "output",
                "links", "placement", "predicted", "alternatives", "exact"):
        assert key in doc
    assert recheck_total_ms(doc) == pytest.approx(doc["predicted"]["total_ms"], rel=1e-9)
    assert load_plan(path).placement == result.placement

    stages = split(graph, result.placement)
    x = torch.randn(graph.input_shape)
    with torch.no_grad():
        assert torch.allclose(run_stages(stages, x), graph.module(x), atol=1e-5)


def test_every_alternative_rechecks(resnet_profile):
    _, prof = resnet_profile
    result = plan(prof, "energy")
    for alt in result.alternatives:
        doc = result.to_json() | {"placement": alt.placement}
        assert recheck_total_ms(doc) == pytest.approx(alt.total_ms, rel=1e-9)


def test_plot_writes_a_png(resnet_profile, tmp_path):
    _, prof = resnet_profile
    out = plot_plan(plan(prof, "latency"), tmp_path / "plan.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compressing_codecs_never_lose_to_raw_and_win_when_bandwidth_is_scarce(resnet_profile):
    _, prof = resnet_profile
    prof = prof.with_link("device-edge", mbps=1.0)
    raw = plan(prof, "latency")
    coded = plan(prof, "latency", codecs=("none", "fp16", "int8", "int8+zstd"))
    assert coded.predicted["total_ms"] <= raw.predicted["total_ms"] + 1e-9
    if coded.mode != "device-only":
        assert coded.cuts["device-edge"] != "none"
