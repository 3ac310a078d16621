"""The lab's serving nodes as the simulator models them (`sim.validate`): the serving engine
a node runs a deployed stage through (`serving_spec`), and what one more request costs a batch
of the plan's edge stage on this host (`batch_marginal`)."""

from __future__ import annotations

from typing import Any

from edgeweave.plan import Plan
from edgeweave.runtime.server import NodeConfig
from edgeweave.serve import ServingConfig


def serving_spec(workers: int, batch_marginal: float | None) -> dict[str, Any]:
    """A lab node's serving engine as a simulated server (`servers.BatchServer`): ``workers``
    batches at once (``--max-concurrency``), each of up to the node's ``--max-batch`` requests
    taken from its queue as soon as a worker is free (a stage deployed with the default serving
    knobs waits no time for a batch to fill; with no deadlines, EDF serves in arrival order).
    Requests that arrive together while the workers are busy thus run in one batch, not one
    after another (measured with 4 devices on one edge: pairs in one batch). A
    ``batch_marginal`` of None: the stage cannot batch (the node serves it in batches of one)."""
    node, knobs = NodeConfig("edge", "edge"), ServingConfig()
    return {"discipline": "batch", "cores": workers,
            "max_batch": 1 if batch_marginal is None else node.max_batch,
            "max_delay_ms": knobs.max_delay_ms,
            "marginal": 1.0 if batch_marginal is None else min(1.0, max(0.0, batch_marginal))}


def batch_marginal(graph: Any, chosen: Plan, largest: int) -> float | None:
    """What one more request costs a batch of the plan's edge stage, as a fraction of one
    request's compute: timed on this host at batch 1 and at ``largest`` by the procedure the
    node calibrates a deployed stage with (`serve.batching.calibrate`); None if the stage
    cannot batch (its batched outputs differ), as the node then serves it in batches of one.
    1.0 (no gain) for a plan with no edge stage."""
    import torch

    from edgeweave.graph import split
    from edgeweave.serve.batching import calibrate as time_batches

    env = {name: torch.randn(graph.input_shape, generator=torch.Generator().manual_seed(0))
           for name in graph.placeholders}
    with torch.inference_mode():
        for stage in split(graph, chosen.placement, tuple(chosen.tiers)):
            args = tuple(env[v] for v in stage.inputs)
            if stage.key == "edge":
                cal = time_batches(lambda *a, m=stage.module: tuple(m(*a)), args, largest)
                if not cal.batchable:
                    return None
                return (cal.seconds[largest] / cal.seconds[1] - 1.0) / (largest - 1) \
                    if largest > 1 else 1.0
            env.update(zip(stage.outputs, stage.module(*args), strict=True))
    return 1.0
