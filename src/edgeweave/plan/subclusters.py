"""The sub-clusters a cluster plan also searches: the gateway and every device at least as fast
as some hardware class, for each class slower than the fastest.

Why: the fused-tile searches are not exact when tiles have many devices to go to (greedy +
local moves) or the model is cut into several blocks, so a plan over more devices could be
priced worse than one over fewer (vgg16 on 5 pi-cluster devices was priced 2410 ms against
2294 ms on the first 4); a user who adds a device expects the planner at worst to ignore it.
Leaving out the slowest devices is what ignoring them means for a heterogeneous cluster (an
rpi3 whose tile finishes after the rpi4s' holds the frame up), so the fused tiles are searched
again without them and the best plan of every search wins. To keep the cost bounded, devices
are only left out a whole hardware class at a time, slowest first: the pi-cluster (rpi4s and
rpi3s) gives one extra search, a homogeneous cluster none.

A device's speed is its hardware's GFLOP/s over its calibrated compute scale
(plan.run_calibration: how much longer its tasks ran than priced), a class's the mean of its
devices'; classes equally fast are one step. The gateway always stays (it holds the frame).
"""

from __future__ import annotations

from collections.abc import Sequence

from edgeweave.plan.cluster_cost import ClusterModel


def speed(model: ClusterModel, name: str) -> float:
    """A device's effective GFLOP/s as priced (its hardware's, over its compute scale)."""
    return model.devices[name].gflops / model.compute_scale.get(name, 1.0)


def speed_subsets(model: ClusterModel, names: Sequence[str]) -> list[list[str]]:
    """The sub-clusters of ``names`` (in their order) to search besides ``names`` itself:
    for each hardware class of the non-gateway devices slower than the fastest, the gateway
    and every device whose class is at least that fast; largest first. Empty when every
    device but the gateway is of one speed."""
    others = [n for n in names if n != model.gateway]
    members: dict[str, list[str]] = {}
    for name in others:
        members.setdefault(model.devices[name].hardware, []).append(name)
    class_speed = {hw: sum(speed(model, n) for n in group) / len(group)
                   for hw, group in members.items()}
    steps = sorted({round(s, 9) for s in class_speed.values()}, reverse=True)
    out = []
    for floor in reversed(steps[:-1]):  # the slowest step is every device: ``names`` itself
        kept = {n for n in others if round(class_speed[model.devices[n].hardware], 9) >= floor}
        out.append([n for n in names if n == model.gateway or n in kept])
    return out
