"""Real worker processes (ClusterLab): one is SIGKILLed in the middle of a frame and another
joins late; every frame is still answered, equal to the single-device output, under both
schedulers, and under work stealing the late joiner takes work."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from cluster_helpers import digits, digits_plan

from edgeweave.runtime.cluster.gateway import TileGateway
from edgeweave.runtime.cluster.lab import ClusterLab


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["stealing", "sharing"])
def test_a_worker_sigkilled_mid_frame_loses_no_frame_and_a_late_joiner_steals(scheduler):
    plan = digits_plan(grid=(2, 2), reuse=True)
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(digits().input_shape, generator=g) for _ in range(6)]
    with ClusterLab({"a": 300.0, "b": 300.0}) as lab:
        gw = TileGateway(digits(), plan, scheduler=scheduler, token=lab.token)
        try:
            for device in ("a", "b"):
                gw.join(device, lab.targets[device])
            futures = [gw.submit(x, s) for x, s in zip(xs, ["a", "b"] * 3, strict=True)]
            deadline = time.monotonic() + 30
            while gw.pool.held("b") == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert gw.pool.held("b") > 0  # b is in the middle of a frame
            lab.kill("b")
            gw.join("c", lab.start("c", dilation=1.0))  # starting a process takes seconds:
            futures += [gw.submit(x, "a") for x in xs[:2]]  # frames after it joined too
            results = [f.result(timeout=120) for f in futures]
        finally:
            gw.close()
    assert sum(r.rerun for r in results) >= 1
    for x, r in zip(xs + xs[:2], results, strict=True):
        with torch.no_grad():
            assert torch.allclose(r.output, digits().module(x), atol=1e-5)
        assert sum(r.tasks.values()) == 4
    if scheduler == "stealing":
        assert sum(r.tasks.get("c", 0) for r in results) >= 1


def test_a_worker_sigkilled_in_a_later_fused_block_loses_no_frame():
    """DeeperThings' two fused blocks (a sync point between them): the worker is SIGKILLed
    while it holds a tile of the second block, computed from the first block's stitched map;
    that tile is re-run elsewhere and every frame is answered, equal to the single-device
    output."""
    plan = digits_plan(blocks=[(1, (2, 2), False), (3, (2, 2), False)])
    assert len(plan.partition.stages()) == 2
    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(digits().input_shape, generator=g) for _ in range(3)]
    with ClusterLab({"a": 200.0, "b": 200.0}) as lab:
        gw = TileGateway(digits(), plan, scheduler="stealing", token=lab.token)
        try:
            with ThreadPoolExecutor(2) as pool:  # each Setup builds the tiles' modules
                list(pool.map(lambda d: gw.join(d, lab.targets[d]), ("a", "b")))
            futures = [gw.submit(x, "a") for x in xs]

            def second_block() -> bool:
                return any(gw.stages.block_of(job.tile) >= 1
                           for _frame, job in gw.pool.held_tags("b"))

            deadline = time.monotonic() + 30
            while not second_block() and time.monotonic() < deadline:
                time.sleep(0.002)
            assert second_block()  # b is in the middle of a frame's second block
            lab.kill("b")
            results = [f.result(timeout=60) for f in futures]
        finally:
            gw.close()
    assert sum(r.rerun for r in results) >= 1
    for x, r in zip(xs, results, strict=True):
        with torch.no_grad():
            assert torch.allclose(r.output, digits().module(x), atol=1e-5)
        assert sum(r.tasks.values()) == 8  # both blocks' four tiles, each answered once
