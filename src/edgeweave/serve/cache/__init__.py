"""A semantic cache in front of a served model (FoggyCache, Cachier, Precog): keys, an index,
the H-kNN reuse vote, eviction, the expected-latency size/policy choice, Markov prefetching and
two cache levels (device and edge)."""

from edgeweave.serve.cache.cachier import CacheChoice, LookupCost, choose, radius_by_replay
from edgeweave.serve.cache.config import CacheConfig
from edgeweave.serve.cache.embed import Embedder, make_embedder
from edgeweave.serve.cache.prefetch import MarkovPredictor, Prefetcher
from edgeweave.serve.cache.semantic import CacheEntry, SemanticCache
from edgeweave.serve.cache.two_level import Served, Tiers

__all__ = [
    "CacheChoice",
    "CacheConfig",
    "CacheEntry",
    "Embedder",
    "LookupCost",
    "MarkovPredictor",
    "Prefetcher",
    "SemanticCache",
    "Served",
    "Tiers",
    "choose",
    "make_embedder",
    "radius_by_replay",
]
