"""One round on the grpc backend: each client's open task, and the round's result from them.

A task is settled once, by an update, a refusal or a disconnect; what is unsettled when the
round closes failed for lack of an update within ``round_timeout_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeweave.train.backends.sequential import empty_updates
from edgeweave.train.types import Params, Updates


@dataclass
class PendingTask:
    """One client's open task in the current round."""

    task_id: str
    round: int
    payload: bytes  # the serialized Task, kept to resend to a device that registers again
    result: tuple[Params, int, float] | None = None
    reason: str | None = None
    bytes_up: int = 0

    @property
    def done(self) -> bool:
        return self.result is not None or self.reason is not None


def round_updates(client_ids: list[int], pending: dict[int, PendingTask],
                  failed: dict[int, str], bytes_down: int, round_timeout_s: float,
                  like: Params | None) -> Updates:
    """The round's updates from the settled tasks, in ``client_ids`` order; ``failed`` gains
    every client whose task did not bring one (with the reason). ``like`` shapes an empty
    result."""
    ok_ids, params, sizes, losses, up = [], [], [], [], 0
    for cid in client_ids:
        p = pending.get(cid)
        if p is None:
            continue
        if p.result is not None:
            ok_ids.append(cid)
            params.append(p.result[0])
            sizes.append(p.result[1])
            losses.append(p.result[2])
            up += p.bytes_up
        else:
            failed[cid] = p.reason or (
                f"client {cid} sent no update within round_timeout_s={round_timeout_s}"
            )
    if ok_ids:
        updates = Updates.stack(ok_ids, params, sizes, losses)
    else:
        assert like is not None
        updates = empty_updates(like, failed)
    updates.metrics.update(failed=failed, bytes_up=up, bytes_down=bytes_down)
    return updates
