"""Cachier's size/policy choice, Precog's Markov prefetching, and the two cache levels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from edgeweave.errors import ServeError
from edgeweave.serve.cache.cachier import (
    LookupCost,
    choose,
    expected_latency_ms,
    radius_by_replay,
    replay,
)
from edgeweave.serve.cache.config import CacheConfig
from edgeweave.serve.cache.embed import PixelEmbedder, unit_keys
from edgeweave.serve.cache.prefetch import MarkovPredictor, Prefetcher
from edgeweave.serve.cache.semantic import SemanticCache
from edgeweave.serve.cache.two_level import Tiers
from edgeweave.serve.stage import MODEL
from edgeweave.topology import Link

SHAPE = (1, 1, 4, 4)
EMB = PixelEmbedder(SHAPE)


def make(cfg: CacheConfig, name: str = "cache") -> SemanticCache:
    return SemanticCache(EMB, SHAPE, 3, cfg, name=name)


def trace(n: int = 300, objects: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Keys of ``objects`` recurring objects (Zipf popularity), each view slightly noisy."""
    rng = np.random.default_rng(seed)
    centres = unit_keys(rng.normal(size=(objects, 16)))
    p = 1 / np.arange(1, objects + 1)
    ids = rng.choice(objects, size=n, p=p / p.sum())
    ks = unit_keys(centres[ids] + rng.normal(0, 0.03, (n, 16)))
    return ks, ids % 3


BASE = CacheConfig(radius=0.3, k=1, threshold=0.5, index="exact")


# ---- Cachier -------------------------------------------------------------------------------

def test_choice_is_the_argmin_of_the_expected_latency_model():
    ks, labels = trace()
    sizes, policies = [5, 10, 20, 40], ["lru", "lfu", "fifo"]
    cost = LookupCost(0.05, 0.004)
    choice = choose(ks, labels, make, BASE, sizes, policies, lambda ix, n: cost(n), 2.0,
                    indexes=["exact"])
    assert len(choice.options) == len(sizes) * len(policies)
    for o in choice.options:
        hit = replay(ks, labels, make(replace(BASE, capacity=o.size, policy=o.policy))).hit_rate
        assert o.hit_rate == hit
        assert o.expected_ms == pytest.approx(expected_latency_ms(cost(o.size), hit, 2.0))
    assert choice.best.expected_ms == min(o.expected_ms for o in choice.options)
    hits = {o.size: o.hit_rate for o in choice.options if o.policy == "lru"}
    assert hits[40] > hits[5]  # the trade-off is real: bigger caches hit more


def test_choice_moves_with_the_costs():
    ks, labels = trace()
    sizes = [5, 10, 20, 40]

    def best(lookup, miss):
        return choose(ks, labels, make, BASE, sizes, ["lru"], lookup, miss,
                      indexes=["exact"]).best.size

    assert best(lambda ix, n: 0.0, 10.0) == 40          # free lookups, costly misses: biggest
    assert best(lambda ix, n: 0.01 * n, 0.0) == 5        # free misses: smallest
    assert best(lambda ix, n: 0.01 * n, 10.0) >= best(lambda ix, n: 0.01 * n, 0.5)


def test_choice_compares_indexes_by_their_lookup_cost():
    ks, labels = trace(120)
    costs = {"exact": LookupCost(0.0, 0.01), "lsh": LookupCost(0.05, 0.0001)}
    choice = choose(ks, labels, make, replace(BASE, index="lsh"), [10, 40], ["lru"],
                    lambda ix, n: costs[ix](n), 1.0)
    assert {o.index for o in choice.options} == {"exact", "lsh"}
    assert choice.best.expected_ms == min(o.expected_ms for o in choice.options)


def test_lookup_cost_fit_and_bad_requests():
    fit = LookupCost.fit([100, 200, 400], [0.02, 0.03, 0.05])
    assert fit(300) == pytest.approx(0.04) and fit.per_entry_ms > 0
    with pytest.raises(ServeError, match="one measured time per cache size"):
        LookupCost.fit([1, 2], [0.1])
    with pytest.raises(ServeError, match="at least one size"):
        choose(*trace(10), make, BASE, [], ["lru"], lambda ix, n: 0.0, 1.0)
    with pytest.raises(ServeError, match="empty"):
        replay(np.zeros((0, 16)), np.zeros(0), make(BASE))


def test_radius_by_replay_keeps_the_hits_agreement():
    ks, _ = trace(200, objects=6, seed=2)
    labels = np.random.default_rng(0).integers(0, 3, 200)  # labels unrelated to the keys
    r = radius_by_replay(ks, labels, make, BASE, 0.99, radii=[0.05, 0.1, 0.3, 1.0])
    agreed = replay(ks, labels, make(replace(BASE, radius=r))) if r > 0 else None
    assert r == 0.0 or agreed.agreement >= 0.99


# ---- Precog --------------------------------------------------------------------------------

def test_markov_predictor_learns_the_usual_successor_across_devices():
    m = MarkovPredictor(4)
    for d in ("a", "b"):
        for label in [0, 0, 1, 1, 2, 3, 0, 1, 2, 0, 1]:
            m.observe(d, label)
    assert m.predict("a", 1) == [2]  # after 1 comes 2 (twice per device), never 1 itself
    assert m.probabilities(0)[1] > 0.9
    assert m.predict("new-device") == []
    with pytest.raises(ServeError, match="outside the model's classes"):
        m.observe("a", 4)


def test_prefetcher_pushes_predicted_classes_once():
    edge = make(replace(BASE, capacity=100), "edge")
    ks, labels = trace(60)
    for k, lab in zip(ks, labels, strict=True):
        edge.insert(k, int(lab))
    m = MarkovPredictor(3)
    for lab in [0, 1, 0, 1, 0, 1]:
        m.observe("teacher", lab)
    pre = Prefetcher(edge, m, top=1, budget=5)
    first = pre.after("d", 0)
    assert len(first) == 5 and {e.label for e in first} == {1}
    assert pre.after("d", 0) == []                       # same visit: nothing new
    pre.after("d", 2)
    again = pre.after("d", 0)
    assert not {e.uid for e in again} & {e.uid for e in first}  # never the same entry twice
    with pytest.raises(ServeError, match=r"prefetch.budget"):
        Prefetcher(edge, m, budget=0)


# ---- two levels ----------------------------------------------------------------------------

class Fixed(nn.Module):
    """Label = 1 if the mean pixel is above 0.5, else 0."""

    def forward(self, x):
        up = (x.mean(dim=(1, 2, 3)) > 0.5).float()
        return torch.stack([1 - up, up, torch.zeros_like(up)], dim=1) * 10


LINK = Link.model_validate({"from": "d", "to": "e", "mbps": 10.0, "rtt_ms": 4.0})


def tiers(**kw) -> Tiers:
    cfg = replace(BASE, radius=0.2)
    return Tiers(Fixed(), SHAPE, lambda s: make(cfg, "device"), make(cfg, "edge"), link=LINK,
                 device_factor=5.0, **kw)


def test_requests_flow_device_then_edge_then_model():
    t = tiers()
    x = torch.rand(1, 4, 4)
    first = t.request("d1", x)
    assert first.level == MODEL and first.link_ms >= 4.0 and first.edge_ms > 0
    again = t.request("d1", x + 0.001)
    assert again.level == "device" and again.link_ms == 0 and again.answer == \
        replace(again.answer, label=first.answer.label)
    other = t.request("d2", x + 0.002)                   # another device: the shared edge
    assert other.level == "edge" and other.answer.label == first.answer.label
    assert len(t.edge_cache) == 1                        # only the model's answer was inserted
    assert len(t.devices["d2"]) == 1                     # the edge's answer reached the device
    assert first.latency_ms == pytest.approx(first.device_ms + first.edge_ms + first.link_ms)


def test_device_only_runs_the_model_on_the_device_and_bad_setups_are_named():
    t = Tiers(Fixed(), SHAPE, lambda s: make(BASE, "device"), model_at="device",
              device_factor=3.0)
    served = t.request("d", torch.rand(1, 4, 4))
    assert served.level == MODEL and served.link_ms == 0 and served.edge_ms == 0
    with pytest.raises(ServeError, match="needs the device-edge link"):
        Tiers(Fixed(), SHAPE)
    with pytest.raises(ServeError, match="needs the model on the edge"):
        Tiers(Fixed(), SHAPE, edge_cache=make(BASE), model_at="device")
    with pytest.raises(ServeError, match="model takes"):
        t.request("d", torch.rand(3, 4, 4))


def test_prefetch_fills_the_device_before_it_asks():
    edge_cfg = replace(BASE, radius=0.2, capacity=100)
    edge = make(edge_cfg, "edge")
    pre = Prefetcher(edge, MarkovPredictor(3), top=1, budget=4)
    t = Tiers(Fixed(), SHAPE, lambda s: make(edge_cfg, "device"), edge, link=LINK,
              prefetcher=pre)
    bright, dark = torch.full((1, 4, 4), 0.9), torch.full((1, 4, 4), 0.1)
    bright[0, 0, 0] = dark[0, 0, 0] = 0.5  # not constant, so keys are not all zero
    for _ in range(3):                      # device a alternates classes 1, 0, 1, 0 ...
        t.request("a", bright)
        t.request("a", dark)
    assert t.request("b", bright).level == "edge"   # b's first visit: class 1 from the edge
    assert t.devices["b"].holds(next(e.uid for e in edge.entries({0})))  # 0 pushed ahead
    assert t.request("b", dark).level == "device"   # ... so b's next class hits locally
    assert t.pushed_bytes > 0


def test_a_users_own_model_gets_a_cache_keyed_on_its_first_layers(tmp_path):
    from edgeweave.graph import load_model
    from edgeweave.serve.cache.embed import make_embedder
    from edgeweave.serve.stage import Front, model_answer

    source = tmp_path / "mine.py"
    source.write_text(
        "from torch import nn\n"
        "def build():\n"
        "    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),\n"
        "                        nn.Linear(4 * 6 * 6, 5))\n"
        "    return net, (1, 3, 6, 6)\n")
    spec = load_model(f"{source}:build")
    embed = make_embedder("prefix:1", spec.module, spec.input_shape, dim=16)
    c = SemanticCache(embed, spec.input_shape, 5, CacheConfig(radius=0.2, k=1), name="edge")
    front, runs = Front([c]), []

    def model(x):
        runs.append(1)
        with torch.no_grad():
            return model_answer(spec.module(x)[0])

    x = torch.rand(1, 3, 6, 6)
    first = front.answer(x, "cam", model)
    second = front.answer(x + 1e-4, "cam", model)
    assert first.stage == MODEL and second.stage == "edge" and second.label == first.label
    assert len(runs) == 1
