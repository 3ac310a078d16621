"""A fleet's machines: the three tiers and one node on one of them.

The tier order is the direction co-inference data moves (device -> edge -> cloud); a node names
its hardware by catalog name or inline, resolved and checked here when the YAML is read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgeweave.topology.hardware import CATALOG, HardwareProfile

Tier = Literal["device", "edge", "cloud"]
# Ordered low to high: a co-inference plan always moves data up this order.
TIERS: tuple[Tier, ...] = ("device", "edge", "cloud")


class Node(BaseModel):
    """One machine in the fleet; ``hardware`` may be given as a catalog name such as ``rpi4``.

    ``edge`` (device nodes only) names the edge server this device trains under in hierarchical
    federated learning; without it the device belongs to the edge it has the fastest link to
    (:meth:`~edgeweave.topology.fleet.Fleet.edge_of`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    tier: Tier
    hardware: HardwareProfile
    edge: str | None = Field(None, min_length=1)

    @field_validator("tier", mode="before")
    @classmethod
    def _known_tier(cls, value: Any) -> Any:
        if value not in TIERS:
            raise ValueError(f"unknown tier {value!r} (expected one of {', '.join(TIERS)})")
        return value

    @field_validator("hardware", mode="before")
    @classmethod
    def _resolve_catalog_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in CATALOG:
                raise ValueError(f"unknown hardware {value!r} (known: {', '.join(CATALOG)})")
            return CATALOG[value]
        return value
