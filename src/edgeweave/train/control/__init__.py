"""Edge-specific control of federated training: who trains (FedCS), how many local steps
between aggregations (adaptive frequency), at which tier models are averaged (hierarchical FL),
and how fast each client is (device speeds from the fleet)."""

from edgeweave.train.control.adaptive_freq import AdaptiveFrequency, FreqRecord, best_tau
from edgeweave.train.control.fedcs import (
    FedCS,
    Schedule,
    greedy_select,
    random_fill,
    upload_schedule,
)
from edgeweave.train.control.fleet_clients import FleetClients, fleet_clients, model_costs
from edgeweave.train.control.hierarchical import (
    HierarchicalTrainer,
    HierConfig,
    edge_uplink_s,
)
from edgeweave.train.control.wrapper import StrategyWrapper

__all__ = [
    "AdaptiveFrequency",
    "FedCS",
    "FleetClients",
    "FreqRecord",
    "HierConfig",
    "HierarchicalTrainer",
    "Schedule",
    "StrategyWrapper",
    "best_tau",
    "edge_uplink_s",
    "fleet_clients",
    "greedy_select",
    "model_costs",
    "random_fill",
    "upload_schedule",
]
