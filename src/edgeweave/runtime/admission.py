"""Admission control of a node: how many requests it holds, and what each may hold it for.

A node holds at most `limit + queue` requests: `limit` computing, the rest waiting for a compute
slot or for their emulated link (a request stamped to arrive later is "parked" until then). At
most `queue` may be parked at once, so requests stamped far ahead can never take the slots of
requests ready to run; anything beyond is refused at once with RESOURCE_EXHAUSTED instead of
piling up threads until memory runs out. Admission happens before a request waits for anything,
so a parked request costs one held place and one thread, both bounded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Rejected(Exception):
    """The node holds as many requests (or parked requests) as it may; `why` says which."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


class Admission:
    """`with admission.admit(parks) as ticket:` then `with ticket.slot() as queue_ms:`."""

    def __init__(self, limit: int, queue: int):
        self.limit, self.queue = limit, queue
        self._slots = threading.Semaphore(limit)
        self._lock = threading.Lock()
        self.held = 0  # admitted and not finished (parked, waiting or running)
        self.parked = 0  # waiting for their arrival stamp
        self.running = 0

    @property
    def waiting(self) -> int:
        """Held but not computing: parked or waiting for a compute slot."""
        return self.held - self.running

    @contextmanager
    def admit(self, parks: bool = False) -> Iterator[_Ticket]:
        """Take one of the node's places (and a parking place when the request `parks`), or
        raise Rejected at once."""
        max_parked = max(1, self.queue)
        with self._lock:
            if self.held >= self.limit + self.queue:
                raise Rejected(f"{self.running} running and {self.waiting} waiting")
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
            if self.held >= self.limit + self.queue:
                raise Rejected(f"{self.running} running and {self.waiting} waiting")
            if not self._slots.acquire(blocking=False):
                raise Rejected(f"{self.running} running")
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

    @contextmanager
    def slot(self) -> Iterator[float]:
        """Wait for a compute slot (this request is already counted, so the wait is bounded by
        the requests ahead of it); yields the ms waited."""
        self.unpark()
        adm = self._admission
        start = time.perf_counter()
        adm._slots.acquire()
        with adm._lock:
            adm.running += 1
        try:
            yield (time.perf_counter() - start) * 1000.0
        finally:
            with adm._lock:
                adm.running -= 1
            adm._slots.release()
