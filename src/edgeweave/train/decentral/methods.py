"""The decentralized methods by name, so the CLI, the benchmark and a user's script run the same
thing: ``run_method("gosgd", stack, config, time, graph="ring")``."""

from __future__ import annotations

from edgeweave.train.decentral.allreduce import allreduce_sgd
from edgeweave.train.decentral.async_sgd import ssp_sgd
from edgeweave.train.decentral.gossip import dpsgd, gosgd
from edgeweave.train.decentral.graphs import make_graph
from edgeweave.train.decentral.param_server import param_server_sgd
from edgeweave.train.decentral.stack import NodeStack
from edgeweave.train.decentral.timing import TimeModel
from edgeweave.train.decentral.trace import RunConfig, Trace
from edgeweave.train.types import TrainError

#: name -> what it is; gossip methods use the peer graph, the others a server or a ring
METHODS = {
    "gosgd": "GoSGD: asynchronous sum-weight gossip with one random neighbour (peer graph)",
    "dpsgd": "D-PSGD: synchronous neighbour averaging with Metropolis weights (peer graph)",
    "allreduce-sgd": "synchronous SGD, gradients averaged by a ring all-reduce",
    "param-server": "synchronous SGD through a parameter server",
    "ssp": "asynchronous parameter-server SGD, bounded staleness (stale synchronous parallel)",
    "ssp-sa": "as ssp, with the step divided by each gradient's staleness",
}


def run_method(method: str, stack: NodeStack, config: RunConfig, time: TimeModel,
               graph: str = "complete", staleness: float = 4) -> Trace:
    """Run ``method`` (a key of :data:`METHODS`) on ``stack``; ``graph`` is a
    :func:`~edgeweave.train.decentral.graphs.make_graph` spec for the gossip methods."""
    if method in ("gosgd", "dpsgd"):
        peers = make_graph(graph, stack.n, seed=config.seed)
        trace = (gosgd if method == "gosgd" else dpsgd)(stack, peers, config, time)
    elif method == "allreduce-sgd":
        trace = allreduce_sgd(stack, config, time)
    elif method == "param-server":
        trace = param_server_sgd(stack, config, time)
    elif method in ("ssp", "ssp-sa"):
        trace = ssp_sgd(stack, config, time, staleness=staleness,
                        staleness_lr=method == "ssp-sa")[0]
    else:
        raise TrainError(f"decentralized method {method!r} is unknown; expected one of "
                         f"{', '.join(METHODS)}")
    trace.method = method
    return trace
