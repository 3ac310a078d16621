"""The real side of `sim.validate`: a case's arrivals replayed against `edgeweave serve`
processes (`runtime.lab.LocalLab`) by `CoInferenceClient` device threads, between a warm-up
and a cool-down that calibrate the simulator (`sim.calibration`).

The lab's servers are what the simulated fleet copies: edge and cloud dilated (`EDGE_DILATION`,
`CLOUD_DILATION`), the edge admitting ``Case.edge_concurrency`` batches at once, each node
serving its stage through its serving engine at the node's defaults (`runtime.server.NodeConfig`:
dynamic batches of up to ``max_batch`` of what is queued, no batching delay).
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeweave.plan import Plan

if TYPE_CHECKING:
    from edgeweave.runtime.lab import LocalLab
    from edgeweave.sim.validate import Case

#: edge and cloud run dilated too (`edgeweave serve --dilation`): an emulated server that needs
#: only 1/D of a core keeps its timing on a host shared with other work, where one running at
#: this host's full speed is slowed by whatever else runs (measured: x3 on a loaded 2-core box)
EDGE_DILATION = 4.0
CLOUD_DILATION = 2.0

#: requests per client that calibrate the simulator (`sim.calibration`), half before the timed ones
#: and half after them: a spread and a mean from a few dozen requests, where the 10 of a
#: shorter warm-up left the p95 to chance. TorchScript specialises on the first `COLD` calls,
#: which come first and calibrate nothing.
CALIBRATION = 28
COLD = 2


@dataclass
class RealRun:
    """What the real runtime did with the arrivals."""

    latency_ms: list[float]  # per request, in arrival order, from its arrival to its answer
    switches: int  # plan switches the clients made
    deploy_s: float  # how long the first deploy (trace and upload of the stages) took
    warm: list[dict[str, float]]  # the warm-up requests' segments (ms) and ``total_ms``
    timed: list[dict[str, float]]  # the timed requests' segments, in arrival order
    cool: list[dict[str, float]] = field(default_factory=list)  # the cool-down's, as ``warm``
    #: per timed request, in arrival order: the batch it ran in at the edge (the node's reply;
    #: 0: no node served it)
    batch: list[int] = field(default_factory=list)

    @property
    def calibration(self) -> list[dict[str, float]]:
        """The requests that calibrate the simulator: the warm-up's and the cool-down's."""
        return self.warm + self.cool


def lab_for(case: Case) -> LocalLab:
    """The lab ``case`` runs on, not yet started: edge and cloud dilated, the edge admitting
    ``case.edge_concurrency`` batches at once. Started once (``with lab_for(case) as lab``),
    it can serve several `run_real` calls, each deploying afresh: starting two server
    processes costs seconds of this host's CPU, more than a short run."""
    from edgeweave.runtime.lab import LocalLab

    return LocalLab(extra_args={"edge": ["--max-concurrency", str(case.edge_concurrency),
                                         "--dilation", str(EDGE_DILATION)],
                                "cloud": ["--dilation", str(CLOUD_DILATION)]})


def run_real(case: Case, graph: Any, chosen: Plan, prof: Any, dilation: float,
             times: np.ndarray, devs: np.ndarray, calibration: int = CALIBRATION,
             lab: LocalLab | None = None) -> RealRun:
    """The arrivals replayed against real node servers (see `RealRun`), between a warm-up
    and a cool-down that together send ``calibration`` requests per client (after `COLD`
    uncounted ones), one at a time (nothing queues in them). On ``lab`` (started, from
    `lab_for` the same case) if given, else on a lab started and stopped here."""
    import torch

    from edgeweave.runtime.client import ClientOptions, CoInferenceClient
    from edgeweave.runtime.load import LoadFactors

    x = torch.randn(graph.input_shape, generator=torch.Generator().manual_seed(0))
    latency = np.full(len(times), np.nan)
    load = LoadFactors()  # one device's view, shared: the clients sample the same servers
    deploy_s: list[float] = []
    warm: list[dict[str, float]] = []
    timed: list[dict[str, float]] = [{} for _ in times]
    batch = [0] * len(times)
    before = calibration // 2

    def one_at_a_time(count: int, into: list[dict[str, float]], skip: int = 0) -> None:
        for k in range(count):
            for c in clients:
                r = c.infer(x)
                if k >= skip:
                    into.append({**r.segments, "total_ms": r.total_ms})

    cool: list[dict[str, float]] = []
    with contextlib.nullcontext(lab) if lab is not None else lab_for(case) as lab:
        clients = []
        for _ in range(case.devices):
            c = CoInferenceClient(graph, chosen, lab.edge_target, token=lab.token,
                                  options=ClientOptions(device_dilation=dilation,
                                                        adapt=case.adapt),
                                  profile=prof, load=load)
            if c.deployment.route:
                t0 = time.monotonic()
                c.deploy(x)
                deploy_s.append(time.monotonic() - t0)
            clients.append(c)
        one_at_a_time(COLD + before, warm, skip=COLD)
        start = time.monotonic() + 0.5
        hop = chosen.hop_names()[0]

        def device(d: int) -> None:
            c = clients[d]
            for i in np.flatnonzero(devs == d):
                due = start + times[i]
                if case.step is not None and times[i] >= case.step[0] and \
                        c.network[hop][0] != case.step[1]:
                    c.set_link_mbps(hop, case.step[1])
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                r = c.infer(x)
                latency[i] = (time.monotonic() - due) * 1000.0
                timed[i] = {**r.segments, "total_ms": r.total_ms}
                batch[i] = r.batch

        threads = [threading.Thread(target=device, args=(d,)) for d in range(case.devices)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        one_at_a_time(calibration - before, cool)
    switches = sum(sum(s["switched"] for s in c.switches) for c in clients)
    return RealRun(latency.tolist(), switches, statistics.median(deploy_s or [0.0]),
                   warm, timed, cool, batch)
