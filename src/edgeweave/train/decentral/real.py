"""Real-process versions of the server and ring methods: ring all-reduce SGD, the synchronous
parameter server and SSP asynchronous SGD over gRPC on loopback (GoSGD peers: :mod:`.peer`).

This module picks a method by name (:func:`run_real`); the methods live in
:mod:`.real_ring` (ring all-reduce), :mod:`.real_param_server` (synchronous parameter server
and SSP) and :mod:`.peer` (GoSGD), and what they share (batch streams, the reference SGD, the
result) in :mod:`.real_run`. Their public names are re-exported here.
"""

from __future__ import annotations

from edgeweave.train.decentral.peer import PeerRunConfig, run_peers
from edgeweave.train.decentral.real_param_server import ParamServerNode, run_param_server
from edgeweave.train.decentral.real_ring import RingWorker, chunk_bounds, run_ring
from edgeweave.train.decentral.real_run import RealRunResult, reference_sgd, worker_stack
from edgeweave.train.types import TrainError

__all__ = [
    "REAL_METHODS",
    "ParamServerNode",
    "RealRunResult",
    "RingWorker",
    "chunk_bounds",
    "reference_sgd",
    "run_param_server",
    "run_real",
    "run_ring",
    "worker_stack",
]

#: methods with a real-process version (names as in :data:`.methods.METHODS`)
REAL_METHODS = {
    "gosgd": "GoSGD peers pushing models to random neighbours",
    "allreduce-sgd": "synchronous SGD, ring all-reduce of the gradients between the workers",
    "param-server": "synchronous SGD through a parameter server",
    "ssp": "asynchronous parameter-server SGD with bounded staleness (SSP)",
    "ssp-sa": "as ssp, with each step divided by its gradient's staleness",
}


def run_real(method: str, cfg: PeerRunConfig, staleness: float = 4,
             token: str | None = None) -> RealRunResult:
    """Run ``method`` (a key of :data:`REAL_METHODS`) as real processes on loopback; the
    staleness bound is for ``ssp``/``ssp-sa`` (the default of :func:`.methods.run_method`)."""
    if method == "gosgd":
        res = run_peers(cfg, token=token)
        nodes = [{"node": p["node"], "role": "peer", "steps": p["steps"],
                  "wire_bytes_sent": p["wire_bytes_sent"],
                  "payload_bytes_sent": p["payload_bytes_sent"]} for p in res.peers]
        return RealRunResult(method=method, model=res.model, test_acc=res.test_acc,
                             test_loss=res.test_loss, objective=res.objective, wall_s=res.wall_s,
                             nodes=nodes, extra={"weight_sum": res.weight_sum}, config=res.config)
    if method == "allreduce-sgd":
        return run_ring(cfg, token=token)
    if method == "param-server":
        return run_param_server(cfg, token=token)
    if method in ("ssp", "ssp-sa"):
        return run_param_server(cfg, staleness=staleness, staleness_lr=method == "ssp-sa",
                                token=token)
    raise TrainError(f"real-process method {method!r} is unknown; expected one of "
                     f"{', '.join(REAL_METHODS)}")
