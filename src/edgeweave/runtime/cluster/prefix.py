"""One frame through a layer-wise plan's prefix at the gateway (runtime.cluster.layers): split
layers through the devices, everything else in the gateway's process, dilated to its hardware."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import torch
from torch import fx

from edgeweave.runtime import dilation
from edgeweave.runtime.cluster.frames import TaskCosts
from edgeweave.runtime.cluster.steps import StepRun

if TYPE_CHECKING:
    from edgeweave.runtime.cluster.layers import LayerGateway


class PrefixRun(fx.Interpreter):
    """Runs the model up to the plan's prefix: split layers through the devices, the rest on
    the gateway (dilated). Driven node by node (:meth:`prefix`): stopping ``Interpreter.run``
    with an exception makes torch import its compiler stack to log it (5 s)."""

    def __init__(self, gw: LayerGateway, frame: int):
        super().__init__(gw.graph.module)
        self.gw, self.frame = gw, frame
        self.values: dict[str, Any] = {}
        self.medium_bytes = 0
        self.delivery_ms = 0.0
        self.rerun = 0
        self.costs = TaskCosts()
        self.tasks: Counter = Counter()
        self.compute: defaultdict[str, float] = defaultdict(float)
        # the first split layer of the run of resident layers under way, and its input
        self.chain: tuple[int, torch.Tensor] | None = None

    def add(self, compute: dict[str, float], tasks: Counter, nbytes: int,
            costs: TaskCosts) -> None:
        """A split layer's (or a run's) work into the frame's totals."""
        for device, ms in compute.items():
            self.compute[device] += ms
        self.tasks.update(tasks)
        self.medium_bytes += nbytes
        self.costs.extend(costs)

    def prefix(self, x: torch.Tensor) -> None:
        gw = self.gw
        nodes = list(gw.graph.module.graph.nodes)  # self.module, typed as the module it is
        by_name = {n.name: n for n in nodes}
        waiting = {n: len(n.users) for n in nodes}
        # the gateway's own layers between split ones are dilated as one stretch (held after
        # each, the next one started from cold caches)
        stretch: dilation.Mark | None = None
        for n in nodes:
            if n.op == "placeholder":
                value: Any = x
            elif n.name in gw.first:
                self._hold(stretch)
                stretch = None
                k, source = gw.first[n.name], self.env[n.all_input_nodes[0]]
                if k in gw.runs:
                    value = StepRun(gw, gw.runs[k], self, gw._steps).go(source)
                elif k in gw.in_run:  # computed with its run: the run's output passes through
                    value = source
                else:
                    value = gw.split_layer(k, source, self)
            elif n.name in gw.inner:  # computed with its split layer: its value passes through
                value = self.env[by_name[gw.inner[n.name]]]
            else:
                if stretch is None:
                    stretch = dilation.start()
                with torch.inference_mode():
                    value = self.run_node(n)
            self.env[n] = value
            if n.name in gw.needed:
                self.values[n.name] = value
            if n.name == gw.last:
                break
            for producer in n.all_input_nodes:  # free what no later node reads
                waiting[producer] -= 1
                if waiting[producer] == 0:
                    del self.env[producer]
        self._hold(stretch)

    def _hold(self, stretch: dilation.Mark | None) -> None:
        """Dilate the gateway's own layers since ``stretch`` (if any) to its hardware."""
        if stretch is not None:
            self.compute[self.gw.gateway] += dilation.finish(stretch, self.gw.dilation,
                                                             spin=self.gw.spin)
