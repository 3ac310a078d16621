"""Per-layer latency and energy: measured on this host, predicted on every tier of a fleet."""

from edgeweave.profile.analytic import analytic_profile
from edgeweave.profile.build import (
    LATENCY_SOURCES,
    calibration_samples,
    fit_latency_model,
    latencies_on,
    profile_graph,
    retarget,
)
from edgeweave.profile.measure import measure_nodes
from edgeweave.profile.regression import LatencyModel, op_class
from edgeweave.profile.schema import DevicePower, LinkSpec, NodeCost, Profile, load_profile
from edgeweave.profile.synthetic import random_profile

__all__ = [
    "LATENCY_SOURCES",
    "DevicePower",
    "LatencyModel",
    "LinkSpec",
    "NodeCost",
    "Profile",
    "analytic_profile",
    "calibration_samples",
    "fit_latency_model",
    "latencies_on",
    "load_profile",
    "measure_nodes",
    "op_class",
    "profile_graph",
    "random_profile",
    "retarget",
]
