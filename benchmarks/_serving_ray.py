"""The serving benchmark's workload on Ray Serve, run by ``serving.py`` as a subprocess with the
interpreter that has ``ray[serve]`` (``.venv-peers``: the main venv has Ray but not Serve's web
stack; the peers venv reuses the main venv's packages through a .pth line, see ``run peers``).

Ray Serve runs as its documentation shows for batched model inference: a deployment whose
``__call__`` is wrapped in ``@serve.batch`` (a list of requests in, a list of answers out),
``num_replicas`` replicas of ``num_cpus=1`` each, called through a ``DeploymentHandle`` from the
driver (no HTTP proxy: the handle is the cheapest way in, so Ray is not charged for HTTP), with
``max_queued_requests`` as its load shedding (``BackPressureError``). The model is the one
EdgeWeave's node builds from the same specifier (``model_module``; untrained weights, the same
compute), at
one intra-op thread per replica, as EdgeWeave's workers run. Emulated slower hardware
(``--dilation``) stretches each batch's compute as EdgeWeave's node does (its own
``edgeweave.runtime.dilation``, sleeping through the stretch).

The load is played by EdgeWeave's own load generator (``edgeweave.serve.loadgen``: the same
seeded Poisson arrivals and the same accounting), so only the system under test differs.
Commands come as JSON lines on stdin (``{"rate": r, "duration": d, "seed": s, "slo_s": x}``,
``{"closed": devices, "duration": d, "slo_s": x}`` for a closed loop, or ``{"quit": true}``);
each answer is one JSON line on stdout with every request's record.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import threading
import time

import numpy as np


def model_module(spec: str):
    """The module EdgeWeave's node builds for `spec` (its registry: torchvision or the digits
    tenants' forest), with the weights it starts with: the compute is what matters here."""
    from edgeweave.serve.stems.spec import STEM_MODEL, forest_from_spec

    if spec.partition(":")[0] == STEM_MODEL:
        return forest_from_spec(spec)[0]
    from edgeweave.graph.zoo import load_model

    return load_model(spec).module.eval()


def build(model: str, replicas: int, max_batch: int, wait_s: float, max_queued: int,
          threads: int, factor: float):
    from ray import serve

    @serve.deployment(num_replicas=replicas, ray_actor_options={"num_cpus": 1},
                      max_ongoing_requests=2 * max_batch, max_queued_requests=max_queued)
    class Model:
        def __init__(self) -> None:
            import torch

            from edgeweave.runtime import dilation

            torch.set_num_threads(threads)
            self.torch, self.dilation = torch, dilation
            self.net = model_module(model)

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=wait_s)
        async def __call__(self, xs: list[np.ndarray]) -> list[np.ndarray]:
            mark = self.dilation.start()  # emulated hardware: stretched as EdgeWeave's node does
            with self.torch.inference_mode():
                out = self.net(self.torch.from_numpy(np.concatenate(xs))).numpy()
            self.dilation.finish(mark, factor, spin=False)  # as EdgeWeave's workers do
            return [out[i:i + 1] for i in range(len(xs))]

    return Model.bind()


class RayTarget:
    """A DeploymentHandle as the load generator's target: requests are started on an asyncio
    loop in its own thread, so sending never blocks the schedule."""

    def __init__(self, handle, shape: tuple[int, ...], seed: int):
        rng = np.random.default_rng(seed)
        self.inputs = [rng.standard_normal(shape, dtype=np.float32) for _ in range(4)]
        self.handle = handle
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def send(self, model, client, deadline_s, priority, done) -> None:
        asyncio.run_coroutine_threadsafe(self._one(self.inputs[client % 4], done), self.loop)

    async def _one(self, x, done) -> None:
        from ray.serve.exceptions import BackPressureError

        from edgeweave.serve.loadgen import FAILED, OK, REFUSED, Outcome

        try:
            await self.handle.remote(x)
            done(Outcome(OK))
        except BackPressureError as e:
            done(Outcome(REFUSED, "BACKPRESSURE", str(e)[:200]))
        except Exception as e:  # a replica failure: no answer from Ray
            done(Outcome(FAILED, type(e).__name__, str(e)[:200]))


_SENDER: dict[str, RayTarget] = {}


def sender_target(address: str, app: str, shape: tuple[int, ...], seed: int,
                  **_options: object) -> RayTarget:
    """The target of one of the load generator's sender processes (`SenderPool`, as
    EdgeWeave's nodes are played with): a Ray driver of its own, connected to the benchmark's
    cluster, calling the application through its own DeploymentHandle. Made once per process
    (each run of the pool asks again)."""
    if "target" not in _SENDER:
        import ray
        from ray import serve

        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        handle = serve.get_app_handle(app)
        target = RayTarget(handle, shape, seed)
        for x in target.inputs:  # this driver's first calls (its routing table)
            handle.remote(x).result()
        _SENDER["target"] = target
    return _SENDER["target"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--input-shape", required=True)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--batch-wait-s", type=float, default=0.0)
    ap.add_argument("--max-queued", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--dilation", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--senders", type=int, default=1,
                    help="sender processes playing each open loop (1: this driver)")
    ap.add_argument("--sender-cores", default=None,
                    help="the load generator's cores (e.g. 0,2): this driver moves there "
                         "once Ray and the application are up on the cores it was started "
                         "on (the serving cores, `_serving_cores`), before its senders start")
    args = ap.parse_args()
    shape = tuple(int(d) for d in args.input_shape.split(","))

    import ray
    from ray import serve

    from edgeweave.serve.loadgen import SenderPool, closed_loop, poisson

    start = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    serve.start(proxy_location="Disabled", logging_config={"log_level": "ERROR"})
    handle = serve.run(build(args.model, args.replicas, args.max_batch, args.batch_wait_s,
                             args.max_queued, args.threads, args.dilation), name=args.model,
                       route_prefix=None)
    target = RayTarget(handle, shape, args.seed)
    for x in target.inputs * 2:  # warm-up: every replica's first calls
        handle.remote(x).result()
    cores: dict[str, str] = {}
    if args.sender_cores:  # Ray (GCS, raylet, replicas) stays on the cores it started on
        import _serving_cores

        _serving_cores.pin(os.getpid(), {int(c) for c in args.sender_cores.split(",")})
        cores = _serving_cores.tree(os.getpid())
    pool = None
    if args.senders > 1:  # as EdgeWeave's nodes are played: the same number of processes
        pool = SenderPool(functools.partial(
            sender_target, ray.get_runtime_context().gcs_address, args.model, shape,
            args.seed), args.senders)
        cores |= {f"sender {p.pid}": _serving_cores.allowed(p.pid)
                  for p in pool.procs if p.pid is not None} if args.sender_cores else {}
    print(json.dumps({"ready": True, "start_s": time.perf_counter() - start,
                      "senders": args.senders, "cores": cores}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("quit"):
            break
        if cmd.get("closed"):  # capacity: this many devices, each with one request out
            run = closed_loop(target, int(cmd["closed"]), [args.model], cmd["duration"],
                              {args.model: cmd["slo_s"]}, drain_s=cmd["drain_s"])
        else:
            arrivals = poisson({args.model: cmd["rate"]}, cmd["duration"],
                               cmd.get("clients", 1000), cmd["seed"])
            run = (pool or _Driver(target)).open_loop(
                arrivals, {args.model: cmd["slo_s"]}, drain_s=cmd["drain_s"],
                duration_s=cmd["duration"])
        print(json.dumps({"lag_s": run.lag_s, "records": [
            [r.model, r.client, r.sent, r.deadline_s, r.end, r.status, r.refused_by_system,
             None if r.latency_s != r.latency_s else r.latency_s, r.throttled, r.detail]
            for r in run.records]}),
              flush=True)
    if pool is not None:
        pool.close()
    serve.shutdown()
    ray.shutdown()


class _Driver:
    """This driver process as the only sender (the pool's `open_loop`, in process)."""

    def __init__(self, target: RayTarget):
        self.target = target

    def open_loop(self, arrivals, slo_s, **kw):
        from edgeweave.serve.loadgen import open_loop

        return open_loop(self.target, arrivals, slo_s, **kw)


if __name__ == "__main__":
    main()
