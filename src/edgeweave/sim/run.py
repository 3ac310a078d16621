"""The facade: a scenario in, a run out (the policy's summary, the training rounds, JSON).

    run = simulate(load_scenario("campus.yaml"))
    run.summary["service_ms"]["p50"], run.summary["failure_rate"]
    run.to_json()   # {"format_version": 1, "kind": "edgeweave.sim.run", ...}

A scenario with a ``training`` section trains its federated experiment on the same fleet while
the devices serve inference; ``inference=False`` or ``training=False`` switch one side off, which
is how a run measures what each costs the other.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeweave.errors import SimError
from edgeweave.sim.engine import Outcome, Simulation
from edgeweave.sim.scenario import Scenario
from edgeweave.sim.summary import document, summarize
from edgeweave.sim.training import (
    CloudRounds,
    FleetBackend,
    check_synchronous,
    group_by_home_edge,
    time_to_accuracy,
)
from edgeweave.train.types import TrainError


@dataclass
class SimRun:
    scenario: Scenario
    sim: Simulation
    outcome: Outcome
    summary: dict[str, Any]
    training: dict[str, Any] | None
    wall_s: float

    def to_json(self) -> dict[str, Any]:
        scn = self.scenario
        return document("edgeweave.sim.run", {
            "scenario": scn.name, "source": scn.source, "seed": scn.seed,
            "duration_s": scn.duration_s, "wall_s": self.wall_s,
            "summary": self.summary, "training": self.training,
            "versions": versions(),
        })


def versions() -> dict[str, str]:
    import simpy

    from edgeweave import __version__

    return {"edgeweave": __version__, "simpy": simpy.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def simulate(scn: Scenario, *, policy: str | None = None,
             policy_params: dict[str, Any] | None = None, inference: bool = True,
             training: bool = True, arrivals: tuple[np.ndarray, np.ndarray] | None = None,
             progress: Callable[[float, float], None] | None = None,
             before: Callable[[Simulation], None] | None = None) -> SimRun:
    """Run ``scn`` (with ``policy`` instead of its own, if given) to the end; ``before`` sees
    the simulation once it has started, before it runs (e.g. to replay measured times)."""
    t0 = time.perf_counter()
    sim = Simulation(scn, policy=policy, policy_params=policy_params, arrivals=arrivals,
                     inference=inference, progress=progress)
    sim.start()
    if before is not None:
        before(sim)
    trained = None
    if training and scn.training is not None:
        try:
            trained = train_on_fleet(sim)
        except TrainError as e:
            raise SimError(f"{scn.source or scn.name}: training: {e}") from None
    sim.env.run()
    out = sim.finish()
    return SimRun(scn, sim, out, summarize(sim, out), trained, time.perf_counter() - t0)


def train_on_fleet(sim: Simulation) -> dict[str, Any]:
    """The scenario's federated experiment, trained on the simulated devices (see
    :mod:`edgeweave.sim.training`); returns its per-round metrics and time-to-accuracy."""
    from edgeweave.train.control.fleet_clients import model_costs
    from edgeweave.train.control.hierarchical import HierarchicalTrainer, HierConfig
    from edgeweave.train.experiment import build_backend, build_strategy, build_task, server_config
    from edgeweave.train.server import Server

    scn = sim.scn
    spec = scn.training
    assert spec is not None
    cfg = spec.experiment
    task = build_task(cfg)
    strategy = build_strategy(cfg)
    check_synchronous(strategy)
    pool = (np.flatnonzero(sim.devices.population == [p.name for p in scn.populations]
                           .index(spec.population))
            if spec.population is not None else np.arange(len(sim.devices)))
    if len(pool) < cfg.data.clients:
        raise SimError(f"training: {cfg.data.clients} clients but only {len(pool)} devices")
    devices = pool[:cfg.data.clients].tolist()
    flops, nbytes = model_costs(task.model_fn(), tuple(task.test_x.shape[1:]))
    inner = build_backend(cfg, task)
    if spec.hierarchical is not None:
        from edgeweave.train.control.hierarchical import edge_uplink_s

        groups = group_by_home_edge(sim, devices, spec.start_s)
        wan = edge_uplink_s(scn.fleet, list(groups), nbytes)
        backend = FleetBackend(sim, inner, devices, nbytes, flops, spec.start_s, groups, wan)
        trainer: Any = HierarchicalTrainer(
            task, backend, groups, strategy,
            HierConfig(cloud_rounds=cfg.rounds, edge_rounds=spec.hierarchical.edge_rounds,
                       seed=cfg.seed, eval_every=cfg.eval_every, codec=cfg.codec),
            edge_cloud_s=wan)
        trainer.server.backend = CloudRounds(trainer.edges, backend)
    else:
        backend = FleetBackend(sim, inner, devices, nbytes, flops, spec.start_s,
                               deadline_s=cfg.deadline_s)
        trainer = Server(task, strategy, backend,
                         dataclasses.replace(server_config(cfg), out_dir=None))
    with inner:
        records = trainer.run()
    backend.close_round()
    rounds = []
    for rec, when in zip(records, backend.rounds, strict=True):
        fits = [f for f in backend.log if f.round == rec.round]
        rounds.append({**rec.to_json(), "sim_start_s": when["start_s"],
                       "sim_end_s": when["end_s"], "sim_round_s": when["end_s"] -
                       when["start_s"], "available": when["available"],
                       "dropped_mobility": sum(f.dropped_mobility for f in fits),
                       "late": sum(f.late for f in fits)})
    return {"experiment": cfg.name, "model": cfg.model, "clients": len(devices),
            "hierarchical": spec.hierarchical is not None,
            "edge_rounds": spec.hierarchical.edge_rounds if spec.hierarchical else None,
            "model_bytes": nbytes, "rounds": rounds,
            "time_to_accuracy": time_to_accuracy(rounds, spec.target_accuracy),
            "final_accuracy": rounds[-1]["test_acc"] if rounds else None}
