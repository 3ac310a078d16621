"""Fleet topology: the devices, edge servers and clouds a model runs across, and their links.

Other subpackages import from here rather than from the modules, so the module layout can change
without breaking them.
"""

from edgeweave.topology.cluster import Cluster, Medium
from edgeweave.topology.fleet import (
    DEFAULT_FLEET,
    TIERS,
    Fleet,
    Link,
    Node,
    Tier,
    TierPath,
    list_builtin_fleets,
    load_fleet,
    serialize_ms,
    transfer_ms,
)
from edgeweave.topology.hardware import CATALOG, HardwareProfile, get_hardware
from edgeweave.topology.trace import BandwidthTrace, load_trace

__all__ = [
    "CATALOG",
    "DEFAULT_FLEET",
    "TIERS",
    "BandwidthTrace",
    "Cluster",
    "Fleet",
    "HardwareProfile",
    "Link",
    "Medium",
    "Node",
    "Tier",
    "TierPath",
    "get_hardware",
    "list_builtin_fleets",
    "load_fleet",
    "load_trace",
    "serialize_ms",
    "transfer_ms",
]
