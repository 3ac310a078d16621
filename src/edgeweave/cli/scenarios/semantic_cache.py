"""Semantic cache (FoggyCache, Cachier, Precog) on a correlated workload of real digits, in process.

The served model is digits-cnn, trained here on sklearn's digits training split plus varied
views of it (so it labels varied views consistently). Workloads (printed in full in the JSON):
a warm-up one from the validation-split images (radius calibration and Cachier's size choice)
and the measured one from the test-split images: devices that see the same objects again and
again, across time and across devices, each view varied (shift, rotation, lighting, noise).

Configurations: the model alone on the device, and caches in front of it on the device; the
model on the edge (every input offloaded), and an edge cache (Cachier), two levels (a device
cache per device and the edge cache shared by all, FoggyCache), and two levels with Precog's
Markov prefetching, over threshold and k sweeps. Per configuration: hit rate, reuse taken
(of the inputs whose nearest cached neighbour has the model's label, the fraction a cache
answered), agreement (cache answers equal to the model's answer on the same input), p50/p95
latency and the same without cache. Also: the cache size and policy chosen by Cachier's
expected-latency model, and lookup time against cache size.

Latency is EMULATED in process: compute is this thread's CPU time, the device's stretched by
the time-dilation factor host GFLOP/s / device GFLOP/s (as `edgeweave.runtime` dilates a
device), the edge's at this host's speed; links are the fleet's device-edge link's transfer
time (RTT/2 + bytes/bandwidth) each way, not a real network.

Run by ``benchmarks/semantic_cache.py`` and ``edgeweave front cache`` (which may add a row with
the user's own cache settings: ``--front FILE`` or ``--cache k=3,threshold=0.7``).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from rich.table import Table
from torch import nn

from edgeweave.adapt.datasets import digits
from edgeweave.adapt.fit import fit
from edgeweave.graph import capture_spec, load_model
from edgeweave.profile import profile_graph
from edgeweave.runtime.session import device_dilation
from edgeweave.serve.cache.cachier import LookupCost, choose, measure_lookup_ms, radius_by_replay
from edgeweave.serve.cache.config import CacheConfig
from edgeweave.serve.cache.embed import make_embedder
from edgeweave.serve.cache.index import INDEXES
from edgeweave.serve.cache.prefetch import MarkovPredictor, Prefetcher
from edgeweave.serve.cache.semantic import SemanticCache
from edgeweave.serve.cache.two_level import Tiers
from edgeweave.serve.workloads import Variation, recurring_images
from edgeweave.serve.workloads.variation import augment
from edgeweave.topology import DEFAULT_FLEET, load_fleet

SHAPE = (1, 1, 8, 8)
SWEEP = [(1, 0.5), (3, 0.5), (3, 0.7), (5, 0.7), (5, 0.9), (5, 1.0)]


def train_model(seed: int, epochs: int) -> tuple[torch.nn.Module, float]:
    d = digits(seed=seed)
    views = augment(d.x_train[:, 0].numpy(), Variation(), copies=4, seed=seed + 11)
    x = torch.cat([d.x_train, torch.from_numpy(views).unsqueeze(1)])
    y = torch.cat([d.y_train, d.y_train.repeat_interleave(4)])
    model = fit(load_model("digits-cnn").module, x, y, epochs=epochs, seed=seed)
    with torch.no_grad():
        acc = float((model(d.x_test).argmax(1) == d.y_test).float().mean())
    return model, acc


def run(tiers: Tiers, work: Any, model_labels: np.ndarray, embedder: Any) -> dict[str, Any]:
    """Serve the workload; measure against the model's label on every input."""
    lat, levels, answers, opportunity = [], [], [], []
    for i in range(len(work)):
        x, source = work.inputs[i], work.devices[i]
        key = embedder(x.unsqueeze(0))[0]
        found = [c.nearest(key) for c in (tiers.devices.get(source), tiers.edge_cache) if c]
        near = [n for n in found if n is not None]
        opportunity.append(bool(near) and min(near)[1] == model_labels[i])
        served = tiers.request(source, x)
        lat.append(served.latency_ms)
        levels.append(served.level)
        answers.append(served.answer.label)
    answers_a, opp = np.array(answers), np.array(opportunity)
    hit = np.array([lv != "model" for lv in levels])
    agree = answers_a == model_labels
    lat_a = np.array(lat)
    return {
        "hit_rate": float(hit.mean()),
        "device_hit_rate": float(np.mean([lv == "device" for lv in levels])),
        "edge_hit_rate": float(np.mean([lv == "edge" for lv in levels])),
        "reuse_taken": float((hit & opp).sum() / max(1, opp.sum())),
        "opportunities": float(opp.mean()),
        "agreement": float(agree[hit].mean()) if hit.any() else float("nan"),
        "agreement_all": float(agree.mean()),
        "p50_ms": float(np.percentile(lat_a, 50)),
        "p95_ms": float(np.percentile(lat_a, 95)),
        "mean_ms": float(lat_a.mean()),
        "insert_ms_mean": float(np.mean(tiers.insert_ms)),
        "pushed_bytes": tiers.pushed_bytes,
    }


@dataclass(frozen=True)
class Options:
    """The scenario's knobs (the benchmark's flags). ``user``: a cache configuration to run as
    two levels in addition to the sweep (``edgeweave front cache --front/--cache``)."""

    devices: int = 4
    requests: int = 500  # per device
    epochs: int = 8
    seed: int = 0
    agreement: float = 0.95  # radius calibration: hits' agreement on the warm-up replay
    user: CacheConfig | None = None


def workloads(model: nn.Module, devices: int, requests: int, seed: int
              ) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """The warm-up stream (validation digits) and the measured one (test digits), each
    recurring across time and devices, with the model's answer for every input: the same
    for the in-process scenario and the one on node processes."""
    d = digits(seed=seed)
    warm = recurring_images(d.x_val, d.y_val, devices=devices, requests_per_device=requests,
                            seed=seed + 1, source="sklearn digits (validation split)")
    work = recurring_images(d.x_test, d.y_test, devices=devices, requests_per_device=requests,
                            seed=seed + 2, source="sklearn digits (test split)")
    with torch.no_grad():
        answers = [model(w.inputs).argmax(1).numpy() for w in (warm, work)]
    return warm, work, answers[0], answers[1]


def first_device(warm: Any) -> np.ndarray:
    """The warm-up requests of its first device: one device cache's view of the stream."""
    return np.array([s == warm.devices[0] for s in warm.devices])


def device_radius(embedder: Any, keys: np.ndarray, labels: np.ndarray, cfg: CacheConfig,
                  agreement: float) -> float:
    """The cache's radius: one device's warm-up trace (``keys``, its embedded inputs, and the
    model's ``labels``) replayed at each radius, the widest whose hits keep ``agreement``."""
    def make(c: CacheConfig, name: str = "cache") -> SemanticCache:
        return SemanticCache(embedder, SHAPE, 10, c, name=name)

    return radius_by_replay(keys, labels, make, cfg, agreement)


def run_scenario(args: Options) -> tuple[list[Table], dict[str, Any]]:
    """Train the model, build the workloads, run every configuration; the tables and the JSON
    document (rows with the issue's keys)."""
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model, model_acc = train_model(args.seed, args.epochs)
    fleet = load_fleet(DEFAULT_FLEET)
    link = fleet.tier_path().links[0]
    profile = profile_graph(capture_spec("digits-cnn"), fleet, repeats=5)
    factor = device_dilation(profile, fleet)
    warm, work, warm_labels, labels = workloads(model, args.devices, args.requests, args.seed)
    embedder = make_embedder("pixels", model, SHAPE)
    warm_keys = embedder(warm.inputs)

    def make(cfg: CacheConfig, name: str = "cache") -> SemanticCache:
        return SemanticCache(embedder, SHAPE, 10, cfg, name=name)

    dev0 = first_device(warm)
    probe = CacheConfig(k=3, threshold=0.7, capacity=400, index="exact", seed=args.seed)
    radius = device_radius(embedder, warm_keys[dev0], warm_labels[dev0], probe, args.agreement)
    base = replace(probe, radius=radius)

    # ---- costs this host measures --------------------------------------------------------
    model_ms = cost_ms(lambda: model(torch.rand(SHAPE)))
    embed_ms = cost_ms(lambda: embedder(torch.rand(SHAPE)))
    offload_ms = link.transfer_ms(4 * 64) + link.transfer_ms(16)
    sizes = [100, 250, 500, 1000, 2000, 4000]
    lookup = {ix: measure_lookup_ms(make, replace(base, index=ix), warm_keys, warm_labels,
                                    sizes, seed=args.seed) for ix in INDEXES}
    fits = {ix: LookupCost.fit(sizes, lookup[ix]) for ix in INDEXES}

    # ---- Cachier: index, size and policy per level ---------------------------------------
    device_choice = choose(warm_keys[dev0], warm_labels[dev0], make, base,
                           [25, 50, 100, 200, 400], ["lru", "lfu", "fifo"],
                           lambda ix, n: (embed_ms + fits[ix](n)) * factor,
                           offload_ms + model_ms)
    edge_choice = choose(warm_keys, warm_labels, make, base, [250, 500, 1000, 2000],
                         ["lru", "lfu", "fifo"], lambda ix, n: embed_ms + fits[ix](n), model_ms)
    dev_cfg = replace(base, capacity=device_choice.best.size, policy=device_choice.best.policy,
                      index=device_choice.best.index)
    edge_cfg = replace(base, capacity=edge_choice.best.size, policy=edge_choice.best.policy,
                       index=edge_choice.best.index)

    def tiers(kind: str, k: int = 3, thr: float = 0.7, **extra: Any) -> Tiers:
        dc = replace(dev_cfg, k=k, threshold=thr, **extra)
        ec = replace(edge_cfg, k=k, threshold=thr, **extra)
        device_cache = (lambda s: make(dc, "device")) if kind != "edge-cache" else None
        if kind == "device":
            return Tiers(model, SHAPE, device_cache, model_at="device", device_factor=factor)
        edge = make(ec, "edge")
        pre = Prefetcher(edge, MarkovPredictor(10), top=2, budget=16) \
            if kind == "prefetch" else None
        return Tiers(model, SHAPE, device_cache, edge, link=link, device_factor=factor,
                     prefetcher=pre)

    rows: list[dict[str, Any]] = []
    nocache_dev = run(Tiers(model, SHAPE, model_at="device", device_factor=factor), work,
                      labels, embedder)
    nocache_edge = run(Tiers(model, SHAPE, link=link, device_factor=factor), work, labels,
                       embedder)
    rows.append({"config": "device-only, no cache", **nocache_dev,
                 "p50_ms_no_cache": nocache_dev["p50_ms"]})
    rows.append({"config": "offload to edge, no cache", **nocache_edge,
                 "p50_ms_no_cache": nocache_edge["p50_ms"]})
    plan = [("device-only cache", "device", SWEEP, nocache_dev),
            ("edge cache (Cachier)", "edge-cache", [(3, 0.7)], nocache_edge),
            ("two-level", "two-level", SWEEP, nocache_edge),
            ("two-level + prefetch", "prefetch", [(3, 0.7)], nocache_edge)]
    for label, kind, sweep, baseline in plan:
        for k, thr in sweep:
            r = run(tiers(kind, k, thr), work, labels, embedder)
            rows.append({"config": f"{label}, k={k}, threshold={thr:g}", "k": k,
                         "threshold": thr, **r, "p50_ms_no_cache": baseline["p50_ms"]})
    r = run(tiers("two-level", radius=None), work, labels, embedder)
    rows.append({"config": "two-level, k=3, threshold=0.7, radius auto", **r,
                 "p50_ms_no_cache": nocache_edge["p50_ms"]})
    if args.user is not None:
        u = args.user
        mine = Tiers(model, SHAPE, lambda s: make(u, "device"), make(u, "edge"), link=link,
                     device_factor=factor)
        r = run(mine, work, labels, embedder)
        shown = "auto" if u.radius is None else f"{u.radius:g}"
        rows.append({"config": f"two-level, your settings (k={u.k}, threshold={u.threshold:g}, "
                               f"radius {shown}, {u.index} {u.policy} {u.capacity})", "k": u.k,
                     "threshold": u.threshold, **r, "p50_ms_no_cache": nocache_edge["p50_ms"]})

    for r in rows:  # FoggyCache's point: >= 90% of reuse opportunities at >= 95% agreement,
        # with a median 3x lower than without the cache
        r["goal_met"] = bool(r["reuse_taken"] >= 0.9 and r["agreement"] >= 0.95
                             and r["p50_ms_no_cache"] / r["p50_ms"] >= 3.0)
    tables = [results_table(rows), cachier_table("device", device_choice),
              cachier_table("edge", edge_choice),
              lookup_table(sizes, lookup, factor)]
    doc = {
        "model": "digits-cnn", "model_test_accuracy": model_acc, "epochs": args.epochs,
        "seed": args.seed, "workload": work.description, "warmup_workload": warm.description,
        "embedding": embedder.name, "radius": radius, "radius_agreement_target": args.agreement,
        "device_dilation": factor, "link": {"mbps": link.mbps, "rtt_ms": link.rtt_ms},
        "model_ms_host": model_ms, "embed_ms_host": embed_ms, "offload_link_ms": offload_ms,
        "cachier": {"device": choice_doc(device_choice), "edge": choice_doc(edge_choice)},
        "lookup_ms_by_size": {ix: dict(zip(map(str, sizes), v, strict=True))
                              for ix, v in lookup.items()},
        "rows": rows, "seconds": time.perf_counter() - t0,
        "note": ("latency EMULATED in process: thread CPU time, the device's x "
                 f"{factor:.2f} (host GFLOP/s / rpi4 GFLOP/s, the runtime's time dilation), the "
                 "edge at this host's speed; link = the fleet's pi-edge link transfer time "
                 "(RTT/2 + bytes/bandwidth) each way; inserts and prefetch pushes happen after "
                 "the answer and are not in the latency"),
    }
    return tables, doc


def cost_ms(work: Any, repeats: int = 300) -> float:
    """Median thread-CPU ms of one call (inputs made outside the timed part are cheap)."""
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.thread_time()
            work()
            times.append((time.thread_time() - start) * 1000.0)
    return statistics.median(times)


def results_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="semantic cache: correlated workload (latency emulated, see note)")
    cols = ["config", "hit", "device hit", "edge hit", "reuse taken", "agreement",
            "agree all", "p50 ms", "p95 ms", "p50 no cache", "p50 gain", "goal"]
    for c in cols:
        t.add_column(c, justify="left" if c == "config" else "right")
    for r in rows:
        gain = r["p50_ms_no_cache"] / r["p50_ms"]
        t.add_row(r["config"], f"{r['hit_rate']:.3f}", f"{r['device_hit_rate']:.3f}",
                  f"{r['edge_hit_rate']:.3f}", f"{r['reuse_taken']:.3f}",
                  f"{r['agreement']:.4f}", f"{r['agreement_all']:.4f}", f"{r['p50_ms']:.3f}",
                  f"{r['p95_ms']:.3f}", f"{r['p50_ms_no_cache']:.3f}", f"{gain:.2f}x",
                  "met" if r.get("goal_met") else "-")
    return t


def cachier_table(level: str, choice: Any) -> Table:
    b = choice.best
    t = Table(title=f"Cachier expected-latency model, {level} cache (a miss costs "
                    f"{choice.miss_ms:.3f} ms; chosen: {b.index} {b.policy} {b.size})")
    for c in ("index", "policy", "size", "hit rate", "lookup ms", "expected ms"):
        t.add_column(c, justify="right")
    for o in choice.options:
        mark = " *" if o == choice.best else ""
        t.add_row(o.index + mark, o.policy, str(o.size), f"{o.hit_rate:.3f}",
                  f"{o.lookup_ms:.4f}", f"{o.expected_ms:.4f}")
    return t


def lookup_table(sizes: list[int], ms: dict[str, list[float]], factor: float) -> Table:
    t = Table(title="lookup time (the vote, without embedding) vs cache size: median thread "
                    f"CPU ms, this host (device = x{factor:.2f})")
    t.add_column("entries", justify="right")
    for ix in ms:
        t.add_column(f"{ix} (host)", justify="right")
        t.add_column(f"{ix} (device)", justify="right")
    for i, n in enumerate(sizes):
        cells = [c for ix in ms for c in (f"{ms[ix][i]:.4f}", f"{ms[ix][i] * factor:.4f}")]
        t.add_row(str(n), *cells)
    return t


def choice_doc(choice: Any) -> dict[str, Any]:
    return {"best": asdict(choice.best), "miss_ms": choice.miss_ms,
            "options": [asdict(o) for o in choice.options]}

