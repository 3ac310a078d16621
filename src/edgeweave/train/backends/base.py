"""What every backend does: run the selected clients' local training, return stacked results.

The server loop is identical whichever backend runs (vectorized, sequential, grpc, ray). A
backend owns client execution only: it never aggregates and never chooses clients.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from edgeweave.train.types import ClientInfo, FitConfig, Params, TrainError, Updates


class Backend(ABC):
    name: str = "backend"

    @abstractmethod
    def available_clients(self) -> list[ClientInfo]:
        """The clients that can be selected now (simulated: all of the task's clients; grpc: the
        ones connected and registered, with the example counts they reported)."""

    @abstractmethod
    def fit(self, round_num: int, global_params: Params, client_ids: list[int],
            config: FitConfig) -> Updates:
        """Train each client in ``client_ids`` from ``global_params`` with ``config``.

        Clients that fail (crash, time out, send a rejected update) are left out of the result
        and reported in ``Updates.metrics["failed"]`` as ``{client_id: reason}``; the round goes
        on with the ones that arrived.
        """

    def state(self) -> dict[str, Any]:
        """Client-side state the server checkpoints with the round (e.g. each client's privacy
        ledger under local DP-SGD), so a resumed run continues it; nothing by default."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        if state:
            raise TrainError(f"{self.name} backend: unexpected checkpointed state keys "
                             f"{sorted(state)}")

    def close(self) -> None:
        """Release processes, actors or sockets (nothing to release by default)."""
        return None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
