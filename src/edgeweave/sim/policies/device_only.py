"""Everything on the device: no network, no server; the baseline every offloading policy must
beat (and the only one that works out of coverage)."""

from __future__ import annotations

from edgeweave.sim.policies.base import ModePolicy, register


@register
class DeviceOnly(ModePolicy):
    name = "device-only"
    mode = "device-only"
