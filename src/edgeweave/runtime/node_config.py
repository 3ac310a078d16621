"""What one node server is configured with (`edgeweave serve`'s flags), and the sizes its
bounds are derived from: places admission grants, streams open at once, server threads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from edgeweave.serve import NodeServing
from edgeweave.serve.front_config import FrontConfig

__all__ = ["NodeConfig"]


@dataclass
class NodeConfig:
    role: str
    name: str
    next_target: str | None = None
    max_concurrency: int = 4  # batches computing at once (the serving engine's workers)
    max_queue: int = 16  # requests waiting, node-wide
    max_batch: int = 8  # the largest batch a deployed stage may ask for (1: no batching)
    policy: str = "edf"  # edf: earliest deadline first, shedding late work; fifo: as before
    dilation: float = 1.0  # emulate hardware slower than this host by stretching compute
    threads: int = 1
    forward_timeout_s: float = 30.0
    max_stage_mb: float = 2048.0  # the largest stage (weights) one Deploy may upload
    stage_budget_mb: float = 1024.0  # deployed stages' weights; least recently used evicted
    chunk_budget_mb: float = 2048.0  # uploaded weight chunks on disk; least recently used go
    models: tuple[str, ...] = ()  # operator-installed models (path/to/file.py:factory)
    cache_dir: str | None = None  # Deploy's temp files (default: a fresh temp dir)
    max_deploy_s: float = 900.0  # the longest a Deploy stream may hold a slot
    # the longest one emulated link crossing may hold a request: a request names its own link
    # rate and arrival stamp, and a bad one must not park a server thread for hours
    max_link_s: float = 120.0
    # the longest an arrival stamp on our clock may hold a request (a stamp is the sender's
    # word); waited out only after admission, so parked requests are bounded in number too
    max_arrival_wait_s: float = 30.0
    # decoded bytes a request's tensors may declare when no stage here says what to expect
    max_decoded_mb: float = 128.0
    channel_factory: Callable[[str], grpc.Channel] | None = None  # auth, TLS
    # the operator's front stages (cache, filter, prefetch) per model name (serve --front)
    fronts: dict[str, FrontConfig] = field(default_factory=dict)

    @property
    def serving(self) -> NodeServing:
        return NodeServing(self.policy, self.max_concurrency, self.max_batch, self.max_queue)

    @property
    def places(self) -> int:
        """Requests held at once: batches computing, queued, or parked for their link."""
        return self.max_concurrency * self.max_batch + self.max_queue

    @property
    def max_streams(self) -> int:
        """InferStreams open at once: each holds a server thread while it is open."""
        return self.max_concurrency + self.max_queue

    @property
    def workers(self) -> int:
        """Server threads: every place admission grants, every open stream, and spare ones so
        Health, Stats and refusals never wait behind held requests."""
        return self.places + self.max_streams + 8
