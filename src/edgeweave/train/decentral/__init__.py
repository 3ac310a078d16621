"""Decentralized training: gossip (GoSGD, D-PSGD), ring all-reduce, parameter server and
bounded-staleness asynchronous SGD, simulated over peer graphs with a time model, plus real
peer processes gossiping over gRPC (:mod:`edgeweave.train.decentral.peer`)."""

from edgeweave.train.decentral.allreduce import allreduce_sgd, ring_allreduce
from edgeweave.train.decentral.async_sgd import ssp_sgd
from edgeweave.train.decentral.gossip import dpsgd, gosgd, gosgd_mix
from edgeweave.train.decentral.graphs import PeerGraph, make_graph
from edgeweave.train.decentral.methods import METHODS, run_method
from edgeweave.train.decentral.param_server import param_server_sgd
from edgeweave.train.decentral.stack import NodeStack
from edgeweave.train.decentral.timing import TimeModel
from edgeweave.train.decentral.trace import RunConfig, Trace

__all__ = ["METHODS", "NodeStack", "PeerGraph", "RunConfig", "TimeModel", "Trace",
           "allreduce_sgd", "dpsgd", "gosgd", "gosgd_mix", "make_graph", "param_server_sgd",
           "ring_allreduce", "run_method", "ssp_sgd"]
