"""Deployed stages on a node, by digest, under a byte budget (least recently used go first).

Stages used to be kept forever, so a peer could deploy until memory ran out (issue 12, finding
4). Now their weights count against ``serve --stage-budget-mb``; room is made before a new
stage's weights are loaded, so resident stages stay within the budget. A request naming an
evicted stage gets FAILED_PRECONDITION, and the device re-deploys once, as after a restart.
A stage also leaves by `remove` (the Remove RPC); either way `on_leave` is told, so the serving
engine stops serving it and refuses what was queued for it.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from edgeweave.runtime.recipe import StagePackage, StageRecipe, WeightSpec


@dataclass
class DeployedStage:
    """A stage a node built and traced itself. ``specs`` maps every value it consumes or
    produces to its (wire dtype name, shape), so a request's tensors can be checked before
    they are decoded; ``weights`` are the module's own tensors (kept to forward the stage)."""

    module: torch.jit.ScriptModule
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    specs: dict[str, tuple[str, tuple[int, ...]]]
    recipe: StageRecipe
    digest: str
    weights: tuple[tuple[WeightSpec, torch.Tensor], ...]

    @property
    def nbytes(self) -> int:
        return sum(spec.nbytes for spec, _ in self.weights)

    def package(self) -> StagePackage:
        return StagePackage(self.recipe, self.weights, self.digest)


class StageStore:
    """Thread-safe; reading a stage marks it recently used."""

    def __init__(self, budget_bytes: int,
                 on_leave: Callable[[str, str], None] | None = None):
        self.budget = budget_bytes
        self._stages: OrderedDict[str, DeployedStage] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0
        self.on_leave = on_leave  # (digest, "evicted" | "removed"), outside the lock

    def get(self, digest: str) -> DeployedStage | None:
        with self._lock:
            stage = self._stages.get(digest)
            if stage is not None:
                self._stages.move_to_end(digest)
            return stage

    def __getitem__(self, digest: str) -> DeployedStage:
        stage = self.get(digest)
        if stage is None:
            raise KeyError(digest)
        return stage

    def __contains__(self, digest: object) -> bool:
        with self._lock:
            return digest in self._stages

    def __len__(self) -> int:
        return len(self._stages)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(s.nbytes for s in self._stages.values())

    def make_room(self, nbytes: int) -> None:
        """Evict least recently used stages until ``nbytes`` more fit the budget."""
        with self._lock:
            gone = self._evict(nbytes)
        self._release(gone, "evicted")

    def put(self, stage: DeployedStage) -> None:
        with self._lock:
            self._stages.pop(stage.digest, None)
            gone = self._evict(stage.nbytes)
            self._stages[stage.digest] = stage
        self._release(gone, "evicted")

    def remove(self, digest: str) -> bool:
        """Drop a stage (the Remove RPC); False if it is not here."""
        with self._lock:
            stage = self._stages.pop(digest, None)
        if stage is None:
            return False
        self._release([stage], "removed")
        return True

    def _evict(self, nbytes: int) -> list[DeployedStage]:
        gone = []
        total = sum(s.nbytes for s in self._stages.values())
        while self._stages and total + nbytes > self.budget:
            _, old = self._stages.popitem(last=False)
            total -= old.nbytes
            gone.append(old)
            self.evicted += 1
        return gone


    def _release(self, gone: list[DeployedStage], why: str) -> None:
        """Tell `on_leave`, then free the weights now: a traced module sits in reference cycles
        (fx and TorchScript objects), which only a full collection frees, and the next stage is
        about to load."""
        if not gone:
            return
        if self.on_leave is not None:
            for stage in gone:
                self.on_leave(stage.digest, why)
        gone.clear()
        gc.collect()
