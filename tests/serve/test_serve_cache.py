"""The semantic cache: the H-kNN vote, the cache's reuse rule, entries from elsewhere, eviction,
the LSH index, radius calibration and the settings' checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeweave.errors import ServeError
from edgeweave.serve.cache.config import CacheConfig
from edgeweave.serve.cache.embed import PixelEmbedder, make_embedder, unit_keys
from edgeweave.serve.cache.eviction import make_policy
from edgeweave.serve.cache.knn import calibrate_radius, hknn_vote
from edgeweave.serve.cache.lsh import LSHIndex, recall_at, width_for_radius
from edgeweave.serve.cache.semantic import CacheEntry, SemanticCache
from edgeweave.serve.stage import MODEL, Verdict

SHAPE = (1, 1, 4, 4)


def cache(**cfg) -> SemanticCache:
    return SemanticCache(PixelEmbedder(SHAPE), SHAPE, 3, CacheConfig(**cfg), name="c")


def keys(n: int, seed: int = 0, dim: int = 16) -> np.ndarray:
    return unit_keys(np.random.default_rng(seed).normal(size=(n, dim)))


# ---- the vote ------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 2), st.integers(0, 3)), min_size=0, max_size=12),
       st.integers(1, 6), st.floats(0, 2))
def test_vote_is_the_weighted_share_among_the_k_nearest_within_radius(pairs, k, radius):
    dist = np.array([p[0] for p in pairs], dtype=float)
    labels = np.array([p[1] for p in pairs], dtype=np.int64)
    vote = hknn_vote(dist, labels, k, radius)
    inside = sorted((d, lab) for d, lab in pairs if d <= radius)
    if not inside:
        assert vote is None
        return
    assert vote is not None
    nearest = sorted(range(len(pairs)), key=lambda i: (dist[i], i))
    chosen = [i for i in nearest if dist[i] <= radius][:k]
    weights = {i: 1 / (dist[i] + 1e-3) for i in chosen}
    total = sum(weights.values())
    share = {lab: sum(w for i, w in weights.items() if labels[i] == lab) / total
             for lab in set(labels[chosen].tolist())}
    assert vote.neighbours == len(chosen)
    assert vote.share == pytest.approx(max(share.values()))
    assert share[vote.label] == pytest.approx(max(share.values()))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.floats(0.0, 1.0), st.integers(1, 5),
       st.sampled_from(["exact", "lsh"]))
def test_cache_never_reuses_a_label_below_its_threshold(seed, threshold, k, index):
    rng = np.random.default_rng(seed)
    c = cache(threshold=threshold, k=k, radius=1.2, capacity=40, index=index, seed=seed)
    base = keys(6, seed)
    for _ in range(40):  # clusters of noisy copies, labels mixed on purpose
        key = unit_keys(base[rng.integers(6)][None] + rng.normal(0, 0.3, (1, 16)))[0]
        c.insert(key, int(rng.integers(3)))
    for q in keys(25, seed + 1):
        found = c.lookup_key(q)
        vote, slots, dist = c.vote(q)
        if found is None:
            assert vote is None or vote.share < threshold
            continue
        assert found.score >= threshold and found.stage == "c"
        # recompute the share from the neighbours the cache reports
        inside = np.flatnonzero(dist <= c.radius)
        order = inside[np.argsort(dist[inside], kind="stable")[:k]]
        w = 1 / (dist[order] + 1e-3)
        share = w[c.labels[slots[order]] == found.label].sum() / w.sum()
        assert share == pytest.approx(found.score) and share >= threshold
        true = np.linalg.norm(c.keys[slots[order]] - q, axis=1)
        assert np.allclose(true, dist[order], atol=1e-5)


# ---- inserts, lookups, observe, eviction ----------------------------------------------------

def test_lookup_reuses_a_near_duplicate_and_refuses_a_stranger():
    c = cache(radius=0.3, k=1, threshold=0.5)
    x = torch.rand(1, 4, 4)
    assert c.lookup(x) is None
    c.observe(x, "d", Verdict(2, 0.9, MODEL))
    assert len(c) == 1
    near = x + 0.01 * torch.randn_like(x)
    assert c.lookup(near) == Verdict(2, pytest.approx(1.0), "c")
    assert c.lookup(torch.rand(1, 4, 4)) is None
    c.observe(near, "d", Verdict(2, 1.0, "c"))  # its own answer is not inserted again
    assert len(c) == 1


def test_full_cache_evicts_by_its_policy():
    c = cache(radius=0.01, k=1, threshold=0.5, capacity=3, policy="lru", index="exact")
    ks = keys(4)
    uids = [c.insert(k, 1) for k in ks[:3]]
    assert c.lookup_key(ks[0]) is not None  # ks[0] used: ks[1] is least recently used
    c.insert(ks[3], 2)
    assert len(c) == 3 and not c.holds(uids[1]) and c.holds(uids[0])
    assert c.lookup_key(ks[1]) is None and c.lookup_key(ks[3]).label == 2


@pytest.mark.parametrize(("name", "victim"), [("lru", 1), ("fifo", 0), ("lfu", 1)])
def test_policies_pick_the_expected_victim(name, victim):
    p = make_policy(name)
    for s in range(3):
        p.inserted(s)
    p.used(0)
    p.used(2)
    p.used(0)
    assert p.victim() == victim
    p.removed(victim)
    assert p.victim() != victim


def test_entries_from_elsewhere_are_checked_and_deduplicated():
    c = cache(radius=0.3)
    good = CacheEntry(keys(1)[0], 2, "edge:1")
    assert c.admit(good) and not c.admit(good) and len(c) == 1
    bad = [
        (CacheEntry(keys(1, dim=8)[0], 1, "e:2"), "shape"),
        (CacheEntry(np.full(16, np.nan, dtype=np.float32), 1, "e:3"), "NaN"),
        (CacheEntry(keys(1)[0] * 3, 1, "e:4"), "unit length"),
        (CacheEntry(keys(1)[0], 3, "e:5"), "labels are 0..2"),
        (CacheEntry(keys(1)[0], -1, "e:6"), "labels are 0..2"),
        (CacheEntry(keys(1)[0], True, "e:7"), "label"),
        (CacheEntry(keys(1)[0], 1, ""), "uid"),
    ]
    for entry, words in bad:
        with pytest.raises(ServeError, match=words):
            c.admit(entry)
    assert len(c) == 1


def test_wrong_input_shape_is_named():
    with pytest.raises(ServeError, match=r"shape \(1, 8, 8\).*\(1, 4, 4\)"):
        cache().lookup(torch.rand(1, 8, 8))


@pytest.mark.parametrize(("field", "value", "words"), [
    ("threshold", 1.5, "cache.threshold must be in"),
    ("threshold", -0.1, "cache.threshold must be in"),
    ("threshold", float("nan"), "cache.threshold"),
    ("agreement", 2, "cache.agreement"),
    ("k", 0, "cache.k must be an integer >= 1"),
    ("capacity", 2.5, "cache.capacity"),
    ("radius", 3.0, "cache.radius must be a distance in"),
    ("policy", "mru", "cache.policy must be one of lru, lfu, fifo"),
    ("index", "kd", "cache.index must be one of exact, lsh"),
])
def test_bad_settings_name_their_field(field, value, words):
    with pytest.raises(ServeError, match=words):
        CacheConfig(**{field: value})


def test_unknown_yaml_field_is_named():
    with pytest.raises(ServeError, match=r"unknown field.*treshold"):
        CacheConfig.from_mapping({"treshold": 0.5})
    assert CacheConfig.from_mapping({"k": 7}).k == 7


def test_embedders_give_unit_keys_invariant_to_lighting():
    e = PixelEmbedder((1, 3, 32, 32))
    assert e.dim == 192 and e.name == "pixels/4"
    x = torch.rand(2, 3, 32, 32)
    k = e(x)
    assert np.allclose(np.linalg.norm(k, axis=1), 1, atol=1e-5)
    assert np.allclose(e(0.7 * x + 0.1), k, atol=1e-4)
    from edgeweave.graph.digits import DigitsCNN

    p = make_embedder("prefix:1", DigitsCNN(), (1, 1, 8, 8), dim=32)
    assert p(torch.rand(3, 1, 8, 8)).shape == (3, 32)
    with pytest.raises(ServeError, match="node 'nope'"):
        make_embedder("prefix:nope", DigitsCNN(), (1, 1, 8, 8))
    with pytest.raises(ServeError, match=r"cache.embed"):
        make_embedder("sift", None, SHAPE)


# ---- LSH -----------------------------------------------------------------------------------

def test_width_reaches_the_target_recall_and_no_more_than_needed():
    for tables, bits, radius in [(8, 4, 0.5), (4, 6, 0.2), (16, 2, 1.0)]:
        w = width_for_radius(radius, tables, bits, 0.95)
        assert recall_at(radius, w, tables, bits) >= 0.95
        assert recall_at(radius, 0.9 * w, tables, bits) < 0.95
        assert recall_at(radius / 2, w, tables, bits) > recall_at(radius, w, tables, bits)


def test_lsh_recall_of_exact_nearest_neighbours_on_a_small_set():
    rng = np.random.default_rng(3)
    data = keys(400, 3, dim=32)
    radius = 0.6
    index = LSHIndex(32, tables=8, bits=4, width=width_for_radius(radius, 8, 4, 0.95), seed=1)
    for s, k in enumerate(data):
        index.add(s, k)
    found = total = 0
    for _ in range(300):
        q = unit_keys(data[rng.integers(400)][None] + rng.normal(0, 0.06, (1, 32)))[0]
        d = np.linalg.norm(data - q, axis=1)
        nearest = int(np.argmin(d))
        if d[nearest] <= radius:
            total += 1
            found += nearest in set(index.candidates(q).tolist())
    assert total > 250
    assert found / total >= 0.93  # the index promises 0.95 at the radius, more inside it


def test_lsh_remove_and_rebuild_keep_the_index_consistent():
    data = keys(50, 5)
    index = LSHIndex(16, tables=4, bits=2, width=1.0, seed=0)
    for s, k in enumerate(data):
        index.add(s, k)
    index.remove(7)
    assert 7 not in index.candidates(data[7]).tolist() and len(index) == 49
    index.rebuild(2.0, {s: data[s] for s in range(10)})
    assert len(index) == 10 and 3 in index.candidates(data[3]).tolist()


# ---- radius --------------------------------------------------------------------------------

def test_radius_calibration_separates_clusters_of_different_labels():
    rng = np.random.default_rng(0)
    centres = keys(5, 9)
    ks = unit_keys(np.repeat(centres, 30, axis=0) + rng.normal(0, 0.05, (150, 16)))
    labels = np.repeat(np.arange(5), 30)
    within = max(np.linalg.norm(ks[labels == i][:, None] - ks[labels == i][None], axis=2)
                 .min(axis=1, initial=9, where=~np.eye(30, dtype=bool)).max() for i in range(5))
    r = calibrate_radius(ks, labels, 0.99)
    assert within <= r < np.linalg.norm(centres[:, None] - centres[None], axis=2)[
        ~np.eye(5, dtype=bool)].min()
    assert calibrate_radius(ks[:5], labels[:5], 0.99) == 0.0  # too few keys: reuse nothing


def test_auto_radius_follows_the_entries():
    c = cache(radius=None, recalibrate_every=20, k=1, threshold=0.5, index="lsh")
    assert c.radius == 0.0
    rng = np.random.default_rng(1)
    centres = keys(3, 4)
    for i in range(60):
        c.insert(unit_keys(centres[i % 3][None] + rng.normal(0, 0.05, (1, 16)))[0], i % 3)
    assert c.radius > 0
    q = unit_keys(centres[1][None] + rng.normal(0, 0.05, (1, 16)))[0]
    assert c.lookup_key(q).label == 1
