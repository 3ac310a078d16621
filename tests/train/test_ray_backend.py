"""The ray backend on a local Ray instance: four clients on a pool of actors give the sequential
reference's model; a client whose training raises, and a killed actor, fail only their clients."""

from __future__ import annotations

import pytest
import torch

from edgeweave.train.backends.sequential import SequentialBackend
from edgeweave.train.data import make_task
from edgeweave.train.server import Server, ServerConfig
from edgeweave.train.strategies import FedAvg
from edgeweave.train.types import FitConfig

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install "
                                        "'edgeweave[ray]')")

from edgeweave.train.backends.ray_backend import RayBackend  # noqa: E402

SPEC = "mlp:64,64,10"
pytestmark = pytest.mark.slow  # a local Ray and its torch-importing actors start in ~10 s


@pytest.fixture(scope="module")
def task():
    return make_task("digits", "iid", 4, SPEC, seed=0)


@pytest.fixture(scope="module")
def backend(task):
    """One local Ray for the module: starting it and its torch-importing actors takes seconds."""
    b = RayBackend(task, num_cpus=2, round_timeout_s=120)
    yield b
    b.close()
    assert not ray.is_initialized()


def test_four_clients_on_ray_reproduce_the_sequential_backend(task, backend):
    assert backend.num_actors == 2
    assert [c.client_id for c in backend.available_clients()] == [0, 1, 2, 3]
    got = Server(task, FedAvg(), backend, ServerConfig(rounds=2))
    records = got.run()
    ref = Server(task, FedAvg(), SequentialBackend(task), ServerConfig(rounds=2))
    ref_records = ref.run()
    assert [r.clients for r in records] == [4, 4]
    assert records[-1].test_acc > 0.3  # chance is 0.1
    assert records[-1].test_acc == pytest.approx(ref_records[-1].test_acc)
    for k, v in ref.params.items():
        assert torch.allclose(got.params[k], v, atol=1e-6), k


def test_a_subset_of_clients_in_the_callers_order(task, backend):
    params = task.init_params()
    u = backend.fit(3, params, [3, 0], FitConfig())
    v = SequentialBackend(task).fit(3, params, [3, 0], FitConfig())
    assert u.client_ids == [3, 0] and u.metrics["failed"] == {}
    assert torch.allclose(u.params["0.weight"], v.params["0.weight"], atol=1e-6)
    assert torch.equal(u.num_examples, v.num_examples)


def test_failures_stay_with_their_clients(task, backend):
    params = task.init_params()
    bad = dict(params)
    bad["0.weight"] = torch.zeros(3, 3)  # every client's forward pass raises
    u = backend.fit(4, bad, [1, 2], FitConfig())
    assert u.client_ids == []
    assert set(u.metrics["failed"]) == {1, 2}
    assert "RuntimeError" in u.metrics["failed"][1]
    # the actor holding clients 1 and 3 dies for good: they fail this round, the others do not;
    # a new actor takes over their shards and the next round is whole and exact again
    ray.kill(backend._actors[backend._owner[1]], no_restart=True)
    u = backend.fit(5, params, [0, 1, 2, 3], FitConfig())
    assert u.client_ids == [0, 2]
    assert set(u.metrics["failed"]) == {1, 3}
    assert "its Ray actor failed" in u.metrics["failed"][3]
    u = backend.fit(6, params, [0, 1, 2, 3], FitConfig())
    v = SequentialBackend(task).fit(6, params, [0, 1, 2, 3], FitConfig())
    assert u.client_ids == [0, 1, 2, 3] and not u.metrics["failed"]
    assert torch.allclose(u.params["2.bias"], v.params["2.bias"], atol=1e-6)
