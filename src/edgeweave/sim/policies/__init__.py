"""Offloading policies, one file each, registered by name (see `base.py` for the protocol)."""

from edgeweave.sim.policies import (  # noqa: F401  (each module registers its policy)
    cloud_only,
    device_only,
    edge_only,
    edgeweave,
    least_loaded,
    random_choice,
)
from edgeweave.sim.policies.base import (
    POLICIES,
    Choice,
    ModePolicy,
    Policy,
    PolicyContext,
    list_policies,
    make_policy,
    register,
)

__all__ = [
    "POLICIES",
    "Choice",
    "ModePolicy",
    "Policy",
    "PolicyContext",
    "list_policies",
    "make_policy",
    "register",
]
