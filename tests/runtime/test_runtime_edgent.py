"""Edgent's dynamic mode on the real runtime: configurations switch as the link's bandwidth
steps, over real gRPC to an in-process edge server, and every answer is the right exit's."""

import pytest
import torch
from runtime_helpers import TOKEN

from edgeweave.plan.branchy import digits_branchy, profile_branchy
from edgeweave.plan.edgent import ExitBranch, price_all
from edgeweave.plan.edgent_dynamic import bandwidth_states, build_config_map
from edgeweave.runtime.client import ClientOptions
from edgeweave.runtime.edgent_client import EdgentClient
from edgeweave.topology import DEFAULT_FLEET, load_fleet


@pytest.fixture(scope="module")
def branchy():
    torch.set_num_threads(1)
    tb = digits_branchy(side=16, width=8, epochs=1)
    bp = profile_branchy(tb.net, load_fleet(DEFAULT_FLEET), tb.accuracies, tb.input_shape,
                         repeats=2, spec=tb.spec)
    # no propagation delay, so the test runs fast and only bandwidth decides
    branches = [ExitBranch(b.exit, b.accuracy, b.profile.with_link("device-edge", rtt_ms=0))
                for b in bp.branches]
    return tb, bp, branches


@pytest.mark.slow
@pytest.mark.parametrize("observe", ["probe", "transfers"])
def test_edgent_client_switches_with_bandwidth_and_answers_right_exit(nodes, branchy, observe):
    tb, bp, branches = branchy
    edge_target = nodes[0]
    priced = {o.key: o for o in price_all(branches, 10.0)}
    slo = priced[(2, 0)].latency_ms  # the final exit on the edge, just fitting at 10 Mbit/s
    cmap = build_config_map(branches, bandwidth_states([1.0, 100.0], 2), slo)
    low, high = cmap.entries
    assert high.option.up_bytes > 0  # offloads while the link is fast
    assert low.option.key != high.option.key

    client = EdgentClient(bp.graph, branches, cmap, edge_target, link_mbps=100.0, token=TOKEN,
                          options=ClientOptions(device_dilation=1.0), observe=observe)
    x = tb.data.x_test[:1]
    with torch.no_grad():
        expected = tb.net(x)
    served = []

    def serve(mbps: float) -> None:
        client.set_link_mbps(mbps)
        entry = client.selector.current
        res = client.infer(x)
        served.append(entry.option.key)
        torch.testing.assert_close(res.output, expected[entry.option.exit])

    for mbps in [100.0] * 3 + [1.0] * 6:
        serve(mbps)
    assert served[0] == high.option.key  # starts offloading at 100 Mbit/s
    assert served[8] == low.option.key  # switched down after the drop
    # and back up: the heartbeat sees the recovery. The estimator needs three samples above its
    # estimate; a 1500-byte heartbeat at 100 Mbit/s is 0.12 ms, so a busy host's scheduling
    # stalls can cost it a few more requests (the bound, not the count, is the claim)
    for _ in range(30):
        serve(100.0)
        if served[-1] == high.option.key:
            break
    assert served[-1] == high.option.key, f"still {served[-1]} after 30 requests at 100 Mbit/s"
    logs = [(s["old_state"], s["new_state"]) for s in client.switches]
    assert logs == [(1, 0), (0, 1)]
    assert all(s["config_changed"] for s in client.switches)
