"""EdgeWeave: run deep learning across IoT devices, edge servers and the cloud."""

from edgeweave.errors import (
    EdgeWeaveError,
    FleetError,
    GraphError,
    ModelError,
    PlanError,
    ProfileError,
)

__version__ = "0.1.0"

__all__ = [
    "EdgeWeaveError",
    "FleetError",
    "GraphError",
    "ModelError",
    "PlanError",
    "ProfileError",
    "__version__",
]
