"""What the engine reports as it serves, for whoever keeps metrics (the node's Prometheus
endpoint, the live summary line, a test). The engine knows nothing of how they are kept."""

from __future__ import annotations

from typing import Protocol


class ServeObserver(Protocol):
    def batch(self, model: str, size: int, queue_s: list[float], compute_s: float,
              limit: int) -> None:
        """A batch ran: its size, each member's time in the queue, the batch's compute time,
        and the model's batch limit afterwards (AIMD moves it)."""

    def shed(self, model: str, stage: str, reason: str) -> None:
        """A request was shed: `stage` "rejected" (on arrival) or "dropped" (after queuing)."""

    def depth(self, model: str, queued: int) -> None:
        """The model's queue length changed."""


class NoObserver:
    def batch(self, model: str, size: int, queue_s: list[float], compute_s: float,
              limit: int) -> None:
        pass

    def shed(self, model: str, stage: str, reason: str) -> None:
        pass

    def depth(self, model: str, queued: int) -> None:
        pass
