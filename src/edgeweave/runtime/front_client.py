"""A device asking an edge to serve a whole model with front stages on it (issue 18): its own
small semantic cache consulted before anything is sent (Precog's device cache), the edge's
answers inserted into it, and the cache entries the edge pushes with its replies admitted
after checking them.

The edge is a peer like any other, so a push is checked before anything is kept: the reply
must name the device cache's own key embedding; it must carry no more entries than the device
asked for; and every entry must have a key of the cache's dimension with finite values of unit
length, a label among the model's classes and a short id
(:meth:`~edgeweave.serve.cache.semantic.SemanticCache.check_entry`). A push that breaks a rule
is refused whole or entry by entry (``refused`` counts them, ``last_refusal`` says why); the
device goes on answering either way. A reply the filter answered (no outputs) leaves the
device with the answer it had, as the filter means.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np
import torch

from edgeweave.errors import EdgeWeaveError, ServeError
from edgeweave.runtime import tensors
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.whole_model import WholeModel
from edgeweave.serve.cache.config import MAX_PUSH
from edgeweave.serve.cache.semantic import CacheEntry, SemanticCache
from edgeweave.serve.stage import Verdict, model_answer

#: Who answered a request that never left the device.
DEVICE_CACHE = "device-cache"


@dataclass(frozen=True)
class DeviceAnswer:
    label: int | None     #: None: the filter answered and the device had no answer yet
    answered_by: str      #: device-cache, or the edge's: model, cache, filter
    latency_ms: float     #: wall clock, lookup and round trip
    pushed: int = 0       #: entries the edge pushed with this reply that the device kept


class CachedDevice:
    """One device: ``infer(x)`` answers from the device cache or asks the edge."""

    def __init__(self, model: WholeModel, stub: pb_grpc.NodeStub, device: str,
                 cache: SemanticCache | None = None, prefetch: int = 16,
                 timeout_s: float = 30.0):
        if not 0 <= prefetch <= MAX_PUSH:
            raise ServeError(f"prefetch must be 0..{MAX_PUSH} entries per reply, got {prefetch}")
        self.model, self.stub, self.device = model, stub, device
        self.cache, self.timeout_s = cache, timeout_s
        self.prefetch = prefetch if cache is not None else 0
        self.last: int | None = None
        self.refused = 0
        self.last_refusal = ""

    def infer(self, x: torch.Tensor) -> DeviceAnswer:
        start = time.perf_counter()
        if self.cache is not None:
            found = self.cache.lookup(x, self.device)
            if found is not None:
                self.last = found.label
                return DeviceAnswer(found.label, DEVICE_CACHE, _ms(start))
        req = self.model.request(self.model.encode(x), request_id=uuid.uuid4().hex[:12])
        req.device, req.prefetch = self.device, self.prefetch
        try:
            reply = self.stub.Infer(req, timeout=self.timeout_s)
        except grpc.RpcError as e:
            raise EdgeWeaveError(f"the edge refused {self.device}'s request: "
                                 f"{e.code().name}: {e.details()}") from None
        latency = _ms(start)
        if not reply.tensors:  # the filter: nothing new in this frame
            return DeviceAnswer(self.last, reply.answered_by or "filter", latency)
        logits = tensors.decode(reply.tensors)[self.model.outputs[0]]
        answer = model_answer(logits[0])
        self.last = answer.label
        if self.cache is not None:
            self.cache.observe(x, self.device, Verdict(answer.label, answer.score,
                                                       f"edge-{reply.answered_by or 'model'}"))
        return DeviceAnswer(answer.label, reply.answered_by or "model", latency,
                            self.admit(reply))

    def admit(self, reply: pb.InferReply) -> int:
        """Keep the entries the edge pushed (see the module doc); how many were kept."""
        if not reply.prefetched or self.cache is None:
            return 0
        entries: Sequence[pb.CacheEntry] = reply.prefetched
        if len(entries) > self.prefetch:
            return self._refuse(len(entries), f"the edge pushed {len(entries)} entries; this "
                                f"device asked for at most {self.prefetch}")
        embed = self.cache.embedder.name
        if reply.prefetch_embed != embed:
            return self._refuse(len(entries), f"the pushed entries are keyed by "
                                f"{reply.prefetch_embed[:40]!r}; this device's cache by "
                                f"{embed!r}")
        kept = 0
        for e in entries:
            if len(e.key) != self.cache.embedder.dim:  # before any copy of the values
                self._refuse(1, f"cache entry {e.uid[:40]!r} has a key of {len(e.key)} "
                             f"values; this cache's keys have {self.cache.embedder.dim}")
                continue
            try:
                kept += self.cache.admit(CacheEntry(np.asarray(e.key, dtype=np.float32),
                                                    int(e.label), e.uid))
            except ServeError as err:
                self._refuse(1, str(err))
        return kept

    def _refuse(self, n: int, why: str) -> int:
        self.refused += n
        self.last_refusal = why
        return 0


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
