"""The control algorithms an experiment config asks for, built: FedCS or adaptive frequency
around the strategy, the clients' speeds from the fleet, and the hierarchy's edges.

One place for these decisions, read by the simulated run (:mod:`edgeweave.train.experiment`),
the cloud server (``fl server``) and the edge aggregator (``fl edge``), so that the three agree
on which device is under which edge, what an edge's model may claim, and what a checkpoint must
match. The YAML sections themselves are :mod:`edgeweave.train.control_config`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from edgeweave.errors import FleetError
from edgeweave.topology import Fleet, load_fleet
from edgeweave.train.backends.base import Backend
from edgeweave.train.control.adaptive_freq import AdaptiveFrequency
from edgeweave.train.control.edge_rounds import EdgeRounds
from edgeweave.train.control.fedcs import FedCS
from edgeweave.train.control.fleet_clients import edge_groups, fleet_clients
from edgeweave.train.control.hierarchical import EdgesBackend, cloud_claim_cap, edge_uplink_s
from edgeweave.train.server import ServerConfig
from edgeweave.train.strategies.base import Strategy
from edgeweave.train.strategies.fedavg import FedAvg
from edgeweave.train.task import Task
from edgeweave.train.transfer import raw_nbytes
from edgeweave.train.types import TrainError

if TYPE_CHECKING:
    from edgeweave.train.config import ExperimentConfig


def with_control(cfg: ExperimentConfig, strategy: Strategy) -> Strategy:
    """``strategy`` wrapped in FedCS or adaptive frequency when the config asks for one."""
    for field, given in (("fedcs", cfg.fedcs), ("adaptive_frequency", cfg.adaptive_frequency),
                         ("hierarchy", cfg.hierarchy)):
        if given is not None and strategy.asynchronous:
            raise TrainError(f"{field}: needs a synchronous strategy, not "
                             f"{cfg.strategy.name!r}")
    if cfg.fedcs is not None:
        f = cfg.fedcs
        return FedCS(strategy, f.deadline_s, f.request_fraction, f.max_clients, f.policy)
    if cfg.adaptive_frequency is not None:
        a = cfg.adaptive_frequency
        return AdaptiveFrequency(strategy, a.budget, a.step_cost, a.agg_cost, a.tau_init,
                                 a.tau_max)
    return strategy


def experiment_fleet(cfg: ExperimentConfig) -> Fleet | None:
    """The config's fleet, loaded (a bad file is a TrainError the caller places)."""
    if cfg.fleet is None:
        return None
    try:
        return load_fleet(cfg.fleet.source)
    except FleetError as e:
        raise TrainError(str(e)) from None


def hierarchy_groups(cfg: ExperimentConfig) -> dict[str, list[int]]:
    """Edge name -> the client ids under it (edges in fleet order); {} without a hierarchy.
    Loads the fleet either way, so a bad fleet file fails here."""
    fleet = experiment_fleet(cfg)
    if cfg.hierarchy is None or fleet is None or cfg.fleet is None:
        return {}
    return edge_groups(fleet, cfg.data.clients, cfg.fleet.assign, cfg.seed)


def fleet_speeds(cfg: ExperimentConfig, task: Task) -> tuple[list[float], list[float]] | None:
    """Each client's simulated seconds per local epoch and per upload, from the fleet."""
    fleet = experiment_fleet(cfg)
    if fleet is None or cfg.fleet is None or task.data is None:
        return None
    fc = fleet_clients(fleet, task.data.sizes().tolist(), task.model_fn(),
                       tuple(task.test_x.shape[1:]), cfg.fleet.assign, cfg.seed,
                       cfg.fleet.jitter)
    return fc.compute_s_per_epoch, fc.upload_s


def speeds_per_example(cfg: ExperimentConfig, model: torch.nn.Module,
                       sample_shape: tuple[int, ...]) -> dict[int, tuple[float, float]]:
    """Client id -> (compute seconds per example and epoch, upload seconds) for the
    ``data.clients`` clients of a real deployment, whose sample counts come with their
    registration ({} without a fleet)."""
    fleet = experiment_fleet(cfg)
    if fleet is None or cfg.fleet is None:
        return {}
    n = cfg.data.clients
    fc = fleet_clients(fleet, [1] * n, model, sample_shape, cfg.fleet.assign, cfg.seed,
                       cfg.fleet.jitter)
    return {c.client_id: (c.compute_s_per_epoch, c.upload_s) for c in fc.infos}


def cloud_strategy(cfg: ExperimentConfig) -> Strategy:
    """What the cloud aggregates the edges with: FedAvg over every edge that reports."""
    return FedAvg(fraction=1.0, min_clients=1, fit=cfg.fit.to_fit_config(cfg.seed))


def edges_for(cfg: ExperimentConfig) -> list[EdgeRounds]:
    """One :class:`EdgeRounds` per edge of the hierarchy, each with a strategy of its own."""
    from edgeweave.train.config import build_strategy

    assert cfg.hierarchy is not None
    return [EdgeRounds(name, i, ids, build_strategy(cfg), cfg.hierarchy.edge_rounds, cfg.seed,
                       cfg.codec, cfg.max_client_examples)
            for i, (name, ids) in enumerate(hierarchy_groups(cfg).items())]


def hierarchy_identity(edges: list[EdgeRounds]) -> str:
    """What the cloud's checkpoint must match besides its own settings (the edges')."""
    return json.dumps([e.identity() for e in edges], sort_keys=True)


def cloud_server_config(cfg: ExperimentConfig, base: ServerConfig) -> ServerConfig:
    """``base`` for the cloud of a hierarchy: the edges' identity in the digest, and an edge's
    claim capped at its devices' (see :func:`~edgeweave.train.control.hierarchical.
    cloud_claim_cap`)."""
    assert cfg.hierarchy is not None
    groups = hierarchy_groups(cfg)
    cap = cloud_claim_cap(cfg.max_client_examples, cfg.hierarchy.edge_rounds, groups)
    return replace(base, max_client_examples=cap, identity=hierarchy_identity(edges_for(cfg)))


def simulated_hierarchy(cfg: ExperimentConfig, task: Task, devices: Backend,
                        base: ServerConfig) -> tuple[EdgesBackend, Strategy, ServerConfig]:
    """The in-process hierarchy of ``cfg``: the edges over ``devices`` as the cloud's backend,
    the cloud's strategy and its server config."""
    from edgeweave.train.config import build_strategy

    assert cfg.hierarchy is not None
    fleet = experiment_fleet(cfg)
    assert fleet is not None
    groups = hierarchy_groups(cfg)
    wan_s = edge_uplink_s(fleet, list(groups), raw_nbytes(task.init_params()))
    edges = EdgesBackend(devices, groups, lambda _name: build_strategy(cfg),
                         cfg.hierarchy.edge_rounds, cfg.seed, cfg.codec,
                         cfg.max_client_examples, edge_cloud_s=wan_s)
    return edges, cloud_strategy(cfg), cloud_server_config(cfg, base)
