"""The semantic-cache scenario on local processes (``edgeweave front cache --processes``): a real
edge node process serves digits-cnn with the cache in front of it (``serve --front``), and the
devices of the correlated workload ask it over gRPC on loopback, one request at a time in the
workload's order.

The model is trained here as in the in-process scenario (:mod:`.semantic_cache`) and deployed
whole with its trained weights; the reuse radius is calibrated the same way (replaying the
warm-up workload). Configurations: the node without a front (a second node process), the edge
cache alone (devices keep no cache), and two levels with Precog's push (each device keeps a
small cache, consults it first, and takes the entries the edge pushes with its replies).
Latency is measured, not emulated: the wall clock of each request on this host, lookup and
loopback round trip included; there is no link emulation, so a hit saves the model's compute
and the request's gRPC round trip, not a slow link's transfer time. Reuse opportunities are not
measured here (they need every cache's content); the in-process scenario reports them.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.table import Table

from edgeweave.graph import capture_spec
from edgeweave.runtime.front_client import DEVICE_CACHE, CachedDevice
from edgeweave.runtime.lab import LocalLab
from edgeweave.runtime.whole_model import WholeModel, whole_model
from edgeweave.security import authed_channel
from edgeweave.serve.cache.config import CacheConfig
from edgeweave.serve.cache.embed import make_embedder
from edgeweave.serve.cache.semantic import SemanticCache

from .semantic_cache import SHAPE, device_radius, first_device, train_model, workloads

#: Entries a device keeps, and asks the edge to push with one reply.
DEVICE_CAPACITY, PUSH = 200, 16


@dataclass(frozen=True)
class Options:
    devices: int = 4
    requests: int = 200  # per device
    epochs: int = 8
    seed: int = 0
    agreement: float = 0.95
    user: CacheConfig | None = None  #: the cache's settings (radius None: calibrated here)


def run_processes(args: Options) -> tuple[list[Table], dict[str, Any]]:
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model, model_acc = train_model(args.seed, args.epochs)
    warm, work, warm_labels, labels = workloads(model, args.devices, args.requests, args.seed)
    embedder = make_embedder("pixels", None, SHAPE)
    cfg = args.user or CacheConfig(k=3, threshold=0.7, capacity=1000, seed=args.seed)
    if cfg.radius is None:  # as the in-process scenario calibrates it
        dev0 = first_device(warm)
        cfg = replace(cfg, radius=device_radius(embedder, embedder(warm.inputs)[dev0],
                                                warm_labels[dev0], cfg, args.agreement))
    graph = capture_spec("digits-cnn")
    graph.module.load_state_dict(model.state_dict())
    served = whole_model("digits-cnn", graph=graph)

    rows: list[dict[str, Any]] = []
    with LocalLab(roles=("edge",), extra_args={"edge": ["--summary-s", "0"]}) as lab:
        base = _play(lab, served, work, labels, None)
    rows.append({"config": "edge, no cache (node process)", **base})
    with tempfile.TemporaryDirectory(prefix="edgeweave-front-") as tmp:
        front = Path(tmp) / "front.yaml"
        fields = {k: float(v) if isinstance(v, np.floating) else v
                  for k, v in asdict(cfg).items() if v != getattr(CacheConfig(), k)}
        front.write_text(yaml.safe_dump({"cache": fields, "prefetch": {"budget": PUSH}}))
        args_edge = ["--summary-s", "0", "--front", f"digits-cnn={front}"]
        for name, device_cfg in (("edge cache", None),
                                 ("two-level + prefetch",
                                  replace(cfg, capacity=DEVICE_CAPACITY, index="exact"))):
            with LocalLab(roles=("edge",), extra_args={"edge": args_edge}) as lab:
                r = _play(lab, served, work, labels, device_cfg)
            rows.append({"config": f"{name} (node process), k={cfg.k}, "
                                   f"threshold={cfg.threshold:g}", **r})
    for r in rows:
        r["p50_ms_no_cache"] = base["p50_ms"]
    doc = {
        "model": "digits-cnn", "model_test_accuracy": model_acc, "epochs": args.epochs,
        "seed": args.seed, "workload": work.description, "cache": asdict(cfg),
        "embedding": embedder.name, "rows": rows, "seconds": time.perf_counter() - t0,
        "note": ("measured on local processes: one edge node process (`edgeweave serve "
                 "--front`) per configuration, devices asking it over gRPC on loopback one "
                 "request at a time; latency is each request's wall clock on this host (no "
                 "link emulation); reuse opportunities are not measured here"),
    }
    return [table(rows)], doc


def _play(lab: LocalLab, served: WholeModel, work: Any, labels: np.ndarray,
          device_cfg: CacheConfig | None) -> dict[str, Any]:
    """Deploy the model on the lab's edge and send the workload in order."""
    from edgeweave.runtime.proto import edgeweave_pb2 as pb
    from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc

    channel = authed_channel(lab.edge_target, token=lab.token)
    try:
        stub = pb_grpc.NodeStub(channel)
        stub.Deploy(served.deploy_stream(pb.ServingConfig(max_batch=1)), timeout=120)
        devices: dict[str, CachedDevice] = {}
        lat, by, answers, pushed = [], [], [], 0
        for i in range(len(work)):
            source = str(work.devices[i])
            if source not in devices:
                cache = None if device_cfg is None else SemanticCache(
                    make_embedder("pixels", None, SHAPE), SHAPE, 10, device_cfg,
                    name="device")
                devices[source] = CachedDevice(served, stub, source, cache,
                                               PUSH if cache is not None else 0)
            a = devices[source].infer(work.inputs[i].unsqueeze(0))
            lat.append(a.latency_ms)
            by.append(a.answered_by)
            answers.append(-1 if a.label is None else a.label)
            pushed += a.pushed
    finally:
        channel.close()
    lat_a, agree = np.array(lat), np.array(answers) == labels
    hit = np.array([b in ("cache", DEVICE_CACHE) for b in by])
    return {
        "hit_rate": float(hit.mean()),
        "device_hit_rate": float(np.mean([b == DEVICE_CACHE for b in by])),
        "edge_hit_rate": float(np.mean([b == "cache" for b in by])),
        "agreement": float(agree[hit].mean()) if hit.any() else float("nan"),
        "agreement_all": float(agree.mean()),
        "p50_ms": float(np.percentile(lat_a, 50)),
        "p95_ms": float(np.percentile(lat_a, 95)),
        "pushed_kept": pushed,
        "refused_pushes": sum(dev.refused for dev in devices.values()),
    }


def table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="semantic cache on local processes: an edge node process, devices over "
                    "gRPC (wall clock, loopback)")
    cols = ["config", "hit", "device hit", "edge hit", "agreement", "agree all", "p50 ms",
            "p95 ms", "p50 no cache", "p50 gain", "pushed kept"]
    for c in cols:
        t.add_column(c, justify="left" if c == "config" else "right")
    for r in rows:
        t.add_row(r["config"], f"{r['hit_rate']:.3f}", f"{r['device_hit_rate']:.3f}",
                  f"{r['edge_hit_rate']:.3f}", f"{r['agreement']:.4f}",
                  f"{r['agreement_all']:.4f}", f"{r['p50_ms']:.3f}", f"{r['p95_ms']:.3f}",
                  f"{r['p50_ms_no_cache']:.3f}", f"{r['p50_ms_no_cache'] / r['p50_ms']:.2f}x",
                  str(r["pushed_kept"]))
    return t
