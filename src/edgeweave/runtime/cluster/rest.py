"""The rest of the model after a cluster's partitioned prefix, where the plan puts it.

The plan places the layers after the prefix on the gateway's device-edge-cloud path
(``Plan.placement``, ``partition.rest_mode``), so the gateway runs them as a device runs its
co-inference plan: the existing runtime client, told that the prefix's values are computed
already (they are the stitched block output, or the layer-wise prefix's values). Layers placed
on the gateway run here, dilated to its hardware; layers on the edge or cloud are forwarded over
the same wire, links and fallbacks as ``edgeweave infer``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from edgeweave.graph import Graph
from edgeweave.plan import Plan
from edgeweave.runtime.client import ClientOptions, CoInferenceClient, Result
from edgeweave.security import ClientTLS


class RestRunner:
    def __init__(self, graph: Graph, plan: Plan, prefix: Sequence[str], *,
                 edge_target: str | None = None, token: str | None = None,
                 tls: ClientTLS | None = None, dilation: float = 1.0,
                 options: ClientOptions | None = None):
        opts = options or ClientOptions()
        opts.device_dilation = dilation
        self.client = CoInferenceClient(graph, plan, edge_target, token=token, tls=tls,
                                        options=opts, prefix=prefix)
        self._deployed = False

    @property
    def remote(self) -> bool:
        """Whether some of the rest runs on the edge or the cloud."""
        return bool(self.client.deployment.route)

    def run(self, x: torch.Tensor, given: dict[str, torch.Tensor]) -> Result:
        """The model's output from the frame and the prefix's values (stages deployed to the
        edge and cloud with the first frame)."""
        if not self._deployed and self.remote:
            self.client.deploy(x, given)
        self._deployed = True
        return self.client.infer(x, given)
