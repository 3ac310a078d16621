"""Sweeps: one scenario over device counts x policies x seeds, serially or as Ray tasks.

Every point is an independent, seeded run of the same scenario, so the points can run anywhere
and in any order: serially in this process, as tasks on a local Ray instance (the default for a
sweep), or on a Ray cluster given its address. A point's row is the same wherever it ran (only
its ``wall_s`` differs), which the tests check on a local multi-node Ray cluster.

The scenario travels to the workers as data (the validated Scenario with its fleet, plans and
traces inside), so a worker needs EdgeWeave installed but none of the scenario's files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edgeweave.errors import SimError
from edgeweave.sim.scenario import Scenario

#: summary fields a sweep row keeps (the rest of a run's summary is per-server detail)
ROW_FIELDS = ("requests", "served", "service_ms", "network_ms", "server_ms", "device_ms",
              "failures", "failure_rate", "failure_rates", "modes", "replans", "switches",
              "events")


@dataclass(frozen=True)
class SweepPoint:
    devices: int
    policy: str
    seed: int


def points(devices: Sequence[int], policies: Sequence[str], seeds: Sequence[int]
           ) -> list[SweepPoint]:
    if not devices or not policies or not seeds:
        raise SimError("a sweep needs at least one device count, one policy and one seed")
    if any(n < 0 for n in devices):
        raise SimError(f"--devices: counts must be >= 0, got {list(devices)}")
    return [SweepPoint(n, p, s) for n in devices for p in policies for s in seeds]


def run_point(scn: Scenario, point: SweepPoint, training: bool = False) -> dict[str, Any]:
    """One point of a sweep: the scenario resized, reseeded and run under the point's policy."""
    from edgeweave.sim.run import simulate

    t0 = time.perf_counter()
    run = simulate(scn.with_devices(point.devices).model_copy(update={"seed": point.seed}),
                   policy=point.policy, training=training)
    row = {"devices": point.devices, "policy": point.policy, "seed": point.seed,
           **{k: run.summary[k] for k in ROW_FIELDS}}
    if run.training is not None:
        row["training"] = {k: run.training[k] for k in ("time_to_accuracy", "final_accuracy")}
    row["wall_s"] = time.perf_counter() - t0
    return row


def sweep(scn: Scenario, devices: Sequence[int], policies: Sequence[str], seeds: Sequence[int],
          *, ray: bool = True, address: str | None = None, num_cpus: int | None = None,
          training: bool = False,
          progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Run every (devices, policy, seed) point; rows come back in point order."""
    from edgeweave.sim.policies import list_policies

    unknown = sorted(set(policies) - set(list_policies()))
    if unknown:
        raise SimError(f"--policies: unknown {', '.join(unknown)} "
                       f"(known: {', '.join(list_policies())})")
    todo = points(devices, policies, seeds)
    if not ray:
        rows = []
        for k, p in enumerate(todo):
            rows.append(run_point(scn, p, training))
            if progress is not None:
                progress(k + 1, len(todo))
        return rows
    return _on_ray(scn, todo, address, num_cpus, training, progress)


def _on_ray(scn: Scenario, todo: list[SweepPoint], address: str | None, num_cpus: int | None,
            training: bool, progress: Callable[[int, int], None] | None
            ) -> list[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise SimError("--sweep runs on Ray, which is not installed (pip install "
                       "'edgeweave[ray]'); add --serial to sweep in this process") from None
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address or "local", num_cpus=None if address else num_cpus,
                     include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        except ConnectionError as e:
            raise SimError(f"--address {address}: cannot reach a Ray cluster ({e})") from None
    try:
        task = ray.remote(num_cpus=1)(run_point)
        ref = ray.put(scn)
        futures = [task.remote(ref, p, training) for p in todo]
        index = {f: k for k, f in enumerate(futures)}
        rows: list[dict[str, Any] | None] = [None] * len(futures)
        pending = list(futures)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for f in done:
                rows[index[f]] = ray.get(f)
            if progress is not None:
                progress(len(futures) - len(pending), len(futures))
        return [r for r in rows if r is not None]
    finally:
        if started:
            ray.shutdown()
