"""Admission control of a node: how many requests it holds, and what each may hold it for.

A node holds at most `limit * batch + queue` requests: up to `limit` batches of `batch` computing
(the serving engine's workers), the rest waiting in the engine's queues or for their emulated
link (a request stamped to arrive later is "parked" until then). At most `queue` may be parked
at once, so requests stamped far ahead can never take the places of requests ready to run;
anything beyond is refused at once with RESOURCE_EXHAUSTED instead of piling up threads until
memory runs out. Admission happens before a request waits for anything, so a parked request
costs one held place and one thread, both bounded. A Deploy takes a place and one of `limit`
deploy slots at once, or is refused (`immediate`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Rejected(Exception):
    """The node holds as many requests (or parked requests) as it may; `why` says which."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


class Admission:
    """`with admission.admit(parks) as ticket:`, then `ticket.unpark()` once it has arrived."""

    def __init__(self, limit: int, queue: int, batch: int = 1):
        self.limit, self.queue = limit, queue
        self.places = limit * batch + queue
        self._slots = threading.Semaphore(limit)
        self._lock = threading.Lock()
        self.held = 0  # admitted and not finished (parked, queued or computing)
        self.parked = 0  # waiting for their arrival stamp
        self.running = 0  # deploys holding a slot

    @property
    def waiting(self) -> int:
        """Held but not deploying: parked, queued or computing requests."""
        return self.held - self.running

    @contextmanager
    def admit(self, parks: bool = False) -> Iterator[_Ticket]:
        """Take one of the node's places (and a parking place when the request `parks`), or
        raise Rejected at once."""
        max_parked = max(1, self.queue)
        with self._lock:
            if self.held >= self.places:
                raise Rejected(f"{self.held} requests held")
            if parks and self.parked >= max_parked:
                raise Rejected(f"{self.parked} requests already wait for their emulated link")
            self.held += 1
            self.parked += parks
        ticket = _Ticket(self, parks)
        try:
            yield ticket
        finally:
            ticket.unpark()
            with self._lock:
                self.held -= 1

    @contextmanager
    def immediate(self) -> Iterator[None]:
        """A place and a compute slot now, or Rejected: a Deploy does not queue (waiting, it
        would hold its stream and its upload)."""
        with self._lock:
            if self.held >= self.places:
                raise Rejected(f"{self.held} requests held")
            if not self._slots.acquire(blocking=False):
                raise Rejected(f"{self.running} deploys running")
            self.held += 1
            self.running += 1
        try:
            yield
        finally:
            with self._lock:
                self.held -= 1
                self.running -= 1
            self._slots.release()

    def _unpark(self) -> None:
        with self._lock:
            self.parked -= 1


class _Ticket:
    def __init__(self, admission: Admission, parked: bool):
        self._admission = admission
        self._parked = parked

    def unpark(self) -> None:
        """The request has arrived: it no longer counts as parked."""
        if self._parked:
            self._parked = False
            self._admission._unpark()
