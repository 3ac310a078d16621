"""The device uploads its input through its edge to the cloud, which runs the whole model."""

from __future__ import annotations

from edgeweave.sim.policies.base import ModePolicy, register


@register
class CloudOnly(ModePolicy):
    name = "cloud-only"
    mode = "cloud-only"
