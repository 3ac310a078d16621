"""Tiny plans and scenarios in a few lines, so simulator tests need no torch model."""

from __future__ import annotations

import itertools
from typing import Any

from edgeweave.plan import Plan, plan
from edgeweave.profile import retarget
from edgeweave.profile.schema import DevicePower, LinkSpec, NodeCost, Profile
from edgeweave.sim.scenario import Scenario, parse_scenario
from edgeweave.topology import Fleet, load_fleet

HOST_GFLOPS = 50.0
#: (name, host ms, output bytes): a small CNN-like chain whose input is big and whose middle
#: activations shrink, so the best cut moves with the bandwidth
CHAIN = [("input", 0.0, 150_000), ("conv1", 20.0, 400_000), ("conv2", 12.0, 40_000),
         ("fc", 4.0, 4_000), ("out", 0.5, 40)]

#: a chain whose best plan uses all three tiers on a Wi-Fi link (device shrinks the input, the
#: edge shrinks the activations, the cloud's GPU runs the heavy tail)
CHAIN3 = [("input", 0.0, 600_000), ("d1", 1.0, 100_000), ("conv1", 2.0, 2_000_000),
          ("conv2", 20.0, 2_000), ("fc", 400.0, 4_000), ("out", 0.5, 40)]


def toy_profile(chain: list[tuple[str, float, int]] = CHAIN) -> Profile:
    """A chain profile with the host figures `profile.retarget` prices from."""
    nodes = [NodeCost(name=name, op="placeholder" if i == 0 else "op",
                      flops=int(ms * HOST_GFLOPS * 1e6), param_bytes=1000 * i, out_bytes=b,
                      latency_ms={"device": ms}, energy_j={"device": 0.0},
                      host_pred_ms=ms, host_ms=ms)
             for i, (name, ms, b) in enumerate(chain)]
    names = [n for n, _, _ in chain]
    return Profile(model="toy", fleet="toy", input_bytes=chain[0][2], tiers=["device"],
                   nodes=nodes, edges=list(itertools.pairwise(names)),
                   output=names[-1], links={},
                   device_power=DevicePower(compute_w=4, idle_w=1, tx_w=2, rx_w=1.5),
                   inputs=[names[0]], host={"gflops": HOST_GFLOPS})


def toy_plan(fleet: Fleet | str = "pi4-wifi-edge-cloud", mbps: float | None = None,
             chain: list[tuple[str, float, int]] = CHAIN) -> Plan:
    fl = load_fleet(fleet) if isinstance(fleet, str) else fleet
    prof = retarget(toy_profile(chain), fl.tier_path(), fl.name)
    if mbps is not None:
        prof = prof.with_link(prof.hop_names()[0], mbps=mbps)
    return plan(prof)


def scenario(**overrides: Any) -> Scenario:
    """One access point at the edge of pi4-wifi-edge-cloud, one place, 10 Pi 4s."""
    fleet = overrides.pop("fleet", "pi4-wifi-edge-cloud")
    doc: dict[str, Any] = {
        "name": "tiny", "seed": 1, "duration_s": 120, "fleet": fleet,
        "access_points": [{"name": "ap", "edge": "edge", "mbps": 18.88, "rtt_ms": 5}],
        "places": [{"name": "lab", "access_point": "ap"}],
        "populations": [{"name": "pis", "count": 10, "hardware": "rpi4",
                         "applications": "toy"}],
        "applications": [{"name": "toy", "plan": overrides.pop("plan", None) or toy_plan(fleet),
                          "active_s": 60, "idle_s": 0, "interval_s": 2.0}],
        "policy": "edgeweave",
    }
    doc.update(overrides)
    return parse_scenario(doc, "tiny.yaml")


def link_spec(mbps: float, rtt_ms: float) -> LinkSpec:
    return LinkSpec(mbps=mbps, rtt_ms=rtt_ms)
