"""A node's memory while 4 clients deploy ~470 MiB stages at once (issue 12, finding 4).

Before: Deploy buffered each whole stream (up to 2 GiB) in memory before checking it, outside
the admission limit, and kept every stage forever: 4 concurrent 400 MiB deploys cost +4 GB.
Now an upload is streamed to a temp file, a Deploy holds an admission slot, weights are loaded
only after the digest checks, and resident stages stay under ``--stage-budget-mb``.

A real ``edgeweave serve`` edge process (shipped admission limit and budget) receives, from 4
threads at once, VGG-16's classifier stage (3 FC layers, 471 MiB of weights): four different
stages (one bias differs per client, so each must be built) or the same one four times. The
node's peak RSS (VmHWM, and VmRSS polled) over its idle RSS is what is measured; the staged
bytes on disk are polled from its ``--cache-dir``.

    PYTHONPATH=src .venv/bin/python benchmarks/_harden_deploy.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import grpc
import torch

from edgeweave.graph import capture_spec, split
from edgeweave.runtime.lab import LocalLab
from edgeweave.runtime.node import message_options
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.recipe import StagePackage, deploy_stream, package, package_stage
from edgeweave.security import authed_channel

CLIENTS = 4
MB = 1 << 20


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def classifier_stages(distinct: int) -> list[StagePackage]:
    """VGG-16's classifier as the edge stage of a device/edge split, ``distinct`` variants
    sharing the big tensors (so this process holds one copy)."""
    graph = capture_spec("vgg16")
    first_fc = next(n.name for n in graph.nodes if n.kind == "call_module"
                    and n.target.startswith("classifier"))
    names = [n.name for n in graph.nodes]
    cut = names.index(first_fc)  # the flattened features cross the cut
    placement = {n: "device" if i < cut else "edge" for i, n in enumerate(names)}
    stages = {s.key: s for s in split(graph, placement, ("device", "edge"))}
    env = {graph.placeholders[0]: torch.randn(graph.input_shape)}
    dev = stages["device"]
    with torch.no_grad():
        env.update(zip(dev.outputs, dev.module(*(env[n] for n in dev.inputs)), strict=True))
    edge = stages["edge"]
    base = package_stage(graph, edge, [env[n] for n in edge.inputs])
    out = [base]
    for k in range(1, distinct):
        weights = [(spec, t + k if spec.name.endswith("6.bias") else t)
                   for spec, t in base.weights]
        out.append(package(base.recipe, weights))
    return out


def _deploy_all(target: str, token: str, packages: list[StagePackage]) -> list[str]:
    results: list[str] = [""] * len(packages)

    def one(i: int) -> None:
        stub = pb_grpc.NodeStub(authed_channel(target, token=token,
                                               options=message_options(64)))
        try:
            reply = stub.Deploy(deploy_stream(packages[i], f"vgg16:classifier#{i}", 0),
                                timeout=900)
            results[i] = "cached" if reply.cached else "built"
        except grpc.RpcError as e:
            results[i] = e.code().name

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(packages))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def measure(scenario: str, packages: list[StagePackage]) -> dict:
    with tempfile.TemporaryDirectory(prefix="edgeweave-bench-") as cache, \
            LocalLab(roles=("edge",), extra_args={"edge": ["--cache-dir", cache]}) as lab:
        pid = lab.nodes["edge"].process.pid
        time.sleep(1.0)
        idle_kb = _status_kb(pid, "VmRSS")
        peak = {"rss_kb": idle_kb, "disk": 0}
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                peak["rss_kb"] = max(peak["rss_kb"], _status_kb(pid, "VmRSS"))
                staged = sum(p.stat().st_size for p in Path(cache).glob("*") if p.is_file())
                peak["disk"] = max(peak["disk"], staged)
                time.sleep(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        start = time.perf_counter()
        outcomes = _deploy_all(lab.edge_target, lab.token, packages)
        seconds = time.perf_counter() - start
        done.set()
        poller.join()
        hwm_kb = _status_kb(pid, "VmHWM")
        final_kb = _status_kb(pid, "VmRSS")
    accepted = sum(o in ("built", "cached") for o in outcomes)
    return {"scenario": scenario, "clients": len(packages),
            "stage_mib": round(packages[0].nbytes / MB, 1),
            "accepted": accepted, "refused": len(outcomes) - accepted, "outcomes": outcomes,
            "idle_rss_mb": round(idle_kb / 1024, 1),
            "peak_rss_growth_mb": round((max(hwm_kb, peak["rss_kb"]) - idle_kb) / 1024, 1),
            "final_rss_growth_mb": round((final_kb - idle_kb) / 1024, 1),
            "peak_staged_on_disk_mb": round(peak["disk"] / MB, 1),
            "seconds": round(seconds, 1),
            "node_flags": "serve defaults: --max-concurrency 4, --stage-budget-mb 1024"}


def run() -> list[dict]:
    packages = classifier_stages(CLIENTS)
    return [measure("4 different stages", packages),
            measure("the same stage 4 times", [packages[0]] * CLIENTS)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = run()
    cols = ("scenario", "stage_mib", "accepted", "refused", "peak_rss_growth_mb",
            "final_rss_growth_mb", "peak_staged_on_disk_mb", "seconds")
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    doc = json.dumps(rows, indent=1)
    print(doc)
    if args.json:
        args.json.write_text(doc)


if __name__ == "__main__":
    main()
