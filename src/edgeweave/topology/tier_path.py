"""The device -> edge -> cloud chain one co-inference runs on, checked to be a real chain."""

from __future__ import annotations

from itertools import pairwise

from pydantic import BaseModel, ConfigDict, model_validator

from edgeweave.topology.link import Link
from edgeweave.topology.node import Node, Tier


class TierPath(BaseModel):
    """The chain one co-inference runs on: ``nodes`` ascend by tier, ``links[k]`` joins k, k+1."""

    model_config = ConfigDict(frozen=True)

    nodes: list[Node]
    links: list[Link]

    @model_validator(mode="after")
    def _check_shape(self) -> TierPath:
        if not self.nodes:
            raise ValueError("a tier path needs at least a device node")
        if len(self.links) != len(self.nodes) - 1:
            raise ValueError(
                f"{len(self.nodes)} nodes need {len(self.nodes) - 1} links, got {len(self.links)}"
            )
        for k, link in enumerate(self.links):
            if not link.joins(self.nodes[k].name, self.nodes[k + 1].name):
                raise ValueError(
                    f"links[{k}] joins {link.src}-{link.dst}, expected "
                    f"{self.nodes[k].name}-{self.nodes[k + 1].name}"
                )
        return self

    @property
    def hop_names(self) -> list[str]:
        """Hop labels built from tiers, e.g. ``["device-edge", "edge-cloud"]``."""
        return [f"{a.tier}-{b.tier}" for a, b in pairwise(self.nodes)]

    @property
    def tiers(self) -> list[Tier]:
        return [n.tier for n in self.nodes]

    @property
    def device(self) -> Node:
        return self.nodes[0]
