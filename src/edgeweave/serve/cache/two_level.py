"""Two cache levels, in process: a small cache on each device and one on the edge shared by all
devices (FoggyCache's cross-device reuse; Cachier's edge cache; Precog's device cache).

A request is looked up on its device; a miss crosses the link to the edge, whose cache is
tried next, then the model. The answer returns to the device, which inserts it. The edge
computes its own key from the input and inserts only its model's answers: a device is not
trusted to say what an input's key or label is, since its entries would be reused for every
other device. With a :class:`~.prefetch.Prefetcher` the edge also pushes entries to the device
after answering it.

Latency is EMULATED, and every part says how: device compute is this thread's CPU time
multiplied by ``device_factor`` (a slower device, as the runtime's time dilation does it),
edge compute is this thread's CPU time (the edge runs at this host's speed), and each link
crossing is the fleet link's transfer time for the bytes sent (half the RTT plus
serialisation, :meth:`edgeweave.topology.Link.transfer_ms`), not a real network. Inserts happen
after the answer is returned and are timed separately. With ``model_at="device"`` there is no
edge: a device miss runs the model on the device.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from edgeweave.errors import ServeError
from edgeweave.serve.cache.prefetch import Prefetcher
from edgeweave.serve.cache.semantic import SemanticCache
from edgeweave.serve.stage import Verdict, check_sample, model_answer
from edgeweave.topology import Link

#: Bytes of an answer on the wire (label, score, stage code).
ANSWER_BYTES = 16
#: Bytes of one pushed entry besides its key: label and id.
ENTRY_OVERHEAD_BYTES = 24


@dataclass(frozen=True)
class Served:
    answer: Verdict
    latency_ms: float   #: emulated end to end (see the module doc)
    level: str          #: the device cache's, the edge cache's or the model's stage name
    device_ms: float    #: device compute, dilated
    edge_ms: float      #: edge compute
    link_ms: float      #: emulated link time, both ways
    pushed: int = 0     #: entries the edge pushed to this device afterwards


@dataclass
class Tiers:
    """Which caches exist and where the model runs."""

    model: nn.Module
    input_shape: tuple[int, ...]
    device_cache: Callable[[str], SemanticCache] | None = None  #: builds a device's cache
    edge_cache: SemanticCache | None = None
    model_at: str = "edge"
    link: Link | None = None
    device_factor: float = 1.0
    prefetcher: Prefetcher | None = None
    devices: dict[str, SemanticCache] = field(default_factory=dict)
    insert_ms: list[float] = field(default_factory=list)
    pushed_bytes: int = 0

    def __post_init__(self) -> None:
        if self.model_at not in ("device", "edge"):
            raise ServeError(f"model_at must be 'device' or 'edge', got {self.model_at!r}")
        if self.model_at == "edge" and self.link is None:
            raise ServeError("a model on the edge needs the device-edge link to emulate")
        if self.model_at == "device" and (self.edge_cache is not None or self.prefetcher):
            raise ServeError("an edge cache or prefetching needs the model on the edge")

    def request(self, source: str, x: torch.Tensor) -> Served:
        """Serve one input from device ``source``."""
        x = check_sample(x, self.input_shape)
        cache = self._device(source)
        start = time.thread_time()
        found = cache.lookup(x, source) if cache is not None else None
        if found is None and self.model_at == "device":
            found = self._run_model(x)
        device_ms = (time.thread_time() - start) * 1000.0 * self.device_factor
        edge_ms = link_ms = 0.0
        reached_edge = found is None
        if reached_edge:
            assert self.link is not None
            link_ms += self.link.transfer_ms(x.numel() * x.element_size())
            start = time.thread_time()
            if self.edge_cache is not None:
                found = self.edge_cache.lookup(x, source)
            if found is None:
                found = self._run_model(x)
            edge_ms = (time.thread_time() - start) * 1000.0
            link_ms += self.link.transfer_ms(ANSWER_BYTES)
        assert found is not None
        pushed = self._after(source, x, found, cache, reached_edge)
        return Served(found, device_ms + edge_ms + link_ms, found.stage, device_ms, edge_ms,
                      link_ms, pushed)

    def _device(self, source: str) -> SemanticCache | None:
        if self.device_cache is None:
            return None
        if source not in self.devices:
            self.devices[source] = self.device_cache(source)
        return self.devices[source]

    @torch.inference_mode()
    def _run_model(self, x: torch.Tensor) -> Verdict:
        return model_answer(self.model(x)[0])

    def _after(self, source: str, x: torch.Tensor, found: Verdict,
               cache: SemanticCache | None, reached_edge: bool) -> int:
        """Off the critical path: inserts, and the edge's pushes to the device."""
        start = time.thread_time()
        if reached_edge and self.edge_cache is not None:
            self.edge_cache.observe(x, source, found)
        if cache is not None:
            cache.observe(x, source, found)
        pushed = 0
        if reached_edge and self.prefetcher is not None and cache is not None:
            for entry in self.prefetcher.after(source, found.label):
                pushed += cache.admit(entry)
                self.pushed_bytes += entry.key.nbytes + ENTRY_OVERHEAD_BYTES
        self.insert_ms.append((time.thread_time() - start) * 1000.0)
        return pushed
