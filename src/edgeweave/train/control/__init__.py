"""Edge-specific control of federated training: who trains (FedCS), how many local steps
between aggregations (adaptive frequency), at which tier models are averaged (hierarchical FL:
one edge's rounds in edge_rounds.py, the edges as the cloud's clients in hierarchical.py), and
how fast each client is (device speeds from the fleet). from_config.py builds them from an
experiment config."""

from edgeweave.train.control.adaptive_freq import AdaptiveFrequency, FreqRecord, best_tau
from edgeweave.train.control.edge_rounds import EdgeResult, EdgeRounds
from edgeweave.train.control.fedcs import (
    FedCS,
    Schedule,
    greedy_select,
    random_fill,
    upload_schedule,
)
from edgeweave.train.control.fleet_clients import (
    FleetClients,
    FleetSpeeds,
    client_devices,
    edge_groups,
    fleet_clients,
    model_costs,
)
from edgeweave.train.control.hierarchical import (
    EdgesBackend,
    HierarchicalTrainer,
    HierConfig,
    edge_uplink_s,
)
from edgeweave.train.control.wrapper import StrategyWrapper

__all__ = [
    "AdaptiveFrequency",
    "EdgeResult",
    "EdgeRounds",
    "EdgesBackend",
    "FedCS",
    "FleetClients",
    "FleetSpeeds",
    "FreqRecord",
    "HierConfig",
    "HierarchicalTrainer",
    "Schedule",
    "StrategyWrapper",
    "best_tau",
    "client_devices",
    "edge_groups",
    "edge_uplink_s",
    "fleet_clients",
    "greedy_select",
    "model_costs",
    "random_fill",
    "upload_schedule",
]
