"""The device uploads its input; its access point's edge server runs the whole model."""

from __future__ import annotations

from edgeweave.sim.policies.base import ModePolicy, register


@register
class EdgeOnly(ModePolicy):
    name = "edge-only"
    mode = "edge-only"
