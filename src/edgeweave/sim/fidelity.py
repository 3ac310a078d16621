"""One fidelity row: the simulator's and the real runtime's per-request latencies for one
configuration of `sim.validate`, with what explains their difference (the load factors measured
in the run and beside it, their drift, the edge's batch sizes on each side), and the
benchmark's row built from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeweave.sim.agreement import intervals, mean_batch


@dataclass
class Fidelity:
    scenario: str
    model: str
    mode: str
    requests: int
    sim_ms: list[float] = field(repr=False)
    real_ms: list[float] = field(repr=False)
    switches_sim: int = 0
    switches_real: int = 0
    load_factors: dict[str, float] = field(default_factory=dict)
    deploy_s: float = 0.0
    plan_only_ms: list[float] = field(default_factory=list, repr=False)
    compute_cv: dict[str, float] = field(default_factory=dict)
    overhead_ms: float = 0.0
    overhead_cv: float = 0.0
    drift: dict[str, float] = field(default_factory=dict)  # tier -> cool-down / warm-up - 1
    batch_marginal: float | None = 1.0  # the edge's cost of one more request in a batch
    # batch size -> requests that ran in a batch that big at the edge, each side
    batch_real: dict[int, int] = field(default_factory=dict)
    batch_sim: dict[int, int] = field(default_factory=dict)
    # tier -> the timed run's compute against the calibration's (`agreement.timed_drift`)
    timed_drift: dict[str, dict[str, float]] = field(default_factory=dict)
    replay_ms: list[float] = field(default_factory=list, repr=False)  # see `compare`
    #: per timed request, in arrival order (`records`): its arrival, device, both latencies,
    #: the real edge's batch and the runtime's segments, what a row's error is traced back to
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)
    timed_compute_ms: list[float] = field(default_factory=list, repr=False)  # see `compare`
    #: calibrated beside the run (warm-up and cool-down) only, and the load factors it saw
    around_ms: list[float] = field(default_factory=list, repr=False)
    around_load: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The benchmark's row: ``sim_*`` with each tier's compute as measured through the
        timed run (`calibration.in_run`; ``load_factors`` its mean); ``around_*`` calibrated
        by the warm-up and cool-down alone (``around_load_factors``); ``plan_only_*`` from the
        Plan's figures alone; ``timed_compute_*`` with the timed run's compute drawn from the
        whole run's and ``replay_*`` (one device) with it in order (see `compare`); how far
        the percentiles and errors would move on another run (`sim.agreement.intervals`); the
        edge's batch sizes, real (each reply's) and simulated."""
        sp50, sp95 = np.percentile(self.sim_ms, [50, 95])
        rp50, rp95 = np.percentile(self.real_ms, [50, 95])
        row = {"scenario": self.scenario, "model": self.model, "mode": self.mode,
               "requests": self.requests,
               "sim_p50_ms": float(sp50), "real_p50_ms": float(rp50),
               "err_p50": float((sp50 - rp50) / rp50),
               "sim_p95_ms": float(sp95), "real_p95_ms": float(rp95),
               "err_p95": float((sp95 - rp95) / rp95),
               "load_factors": self.load_factors, "around_load_factors": self.around_load,
               "compute_cv": self.compute_cv,
               "overhead_ms": self.overhead_ms, "overhead_cv": self.overhead_cv,
               "drift": self.drift, "timed_drift": self.timed_drift,
               "batch_marginal": self.batch_marginal,
               "deploy_s": self.deploy_s,
               "switches_sim": self.switches_sim, "switches_real": self.switches_real,
               **intervals(self.sim_ms, self.real_ms),
               "edge_batch_real": {str(b): k for b, k in self.batch_real.items()},
               "edge_batch_sim": {str(b): k for b, k in self.batch_sim.items()},
               "edge_batch_mean_real": mean_batch(self.batch_real),
               "edge_batch_mean_sim": mean_batch(self.batch_sim)}
        for label, ms in (("plan_only", self.plan_only_ms), ("replay", self.replay_ms),
                          ("timed_compute", self.timed_compute_ms), ("around", self.around_ms)):
            if ms:
                o50, o95 = np.percentile(ms, [50, 95])
                row.update({f"{label}_p50_ms": float(o50),
                            f"{label}_err_p50": float((o50 - rp50) / rp50),
                            f"{label}_p95_ms": float(o95),
                            f"{label}_err_p95": float((o95 - rp95) / rp95)})
        return row
