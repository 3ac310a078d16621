"""Sweeps: seeded points are reproducible, and the same sweep as Ray tasks on a local two-node
Ray cluster gives rows identical to the serial sweep."""

from __future__ import annotations

import pytest
from sim_helpers import scenario

from edgeweave.errors import SimError
from edgeweave.sim.sweep import sweep


def small():
    return scenario(duration_s=30, populations=[
        {"name": "pis", "count": 6, "hardware": {"rpi4": 1, "rpi3": 1}, "applications": "toy"}])


def strip(rows):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def test_a_serial_sweep_is_reproducible_and_in_point_order():
    args = (small(), [3, 8], ["edge-only", "edgeweave"], [1, 2])
    rows = sweep(*args, ray=False)
    assert [(r["devices"], r["policy"], r["seed"]) for r in rows] == [
        (n, p, s) for n in (3, 8) for p in ("edge-only", "edgeweave") for s in (1, 2)]
    assert strip(rows) == strip(sweep(*args, ray=False))
    by_seed = {r["seed"]: r["requests"] for r in rows if r["devices"] == 8}
    assert by_seed[1] != by_seed[2]  # seeds matter
    assert all(r["requests"] > 0 for r in rows)


def test_a_sweep_refuses_unknown_policies_and_empty_axes():
    with pytest.raises(SimError, match="--policies: unknown teleport"):
        sweep(small(), [3], ["teleport"], [1], ray=False)
    with pytest.raises(SimError, match="at least one device count"):
        sweep(small(), [], ["edge-only"], [1], ray=False)


@pytest.mark.slow
def test_ray_sweep_on_a_local_two_node_cluster_equals_the_serial_sweep():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        args = (small(), [3, 8], ["edge-only", "edgeweave"], [1, 2])
        on_ray = sweep(*args, address=cluster.address)
        assert strip(on_ray) == strip(sweep(*args, ray=False))
        assert not ray.is_initialized()  # the sweep shut down the connection it opened
    finally:
        cluster.shutdown()
