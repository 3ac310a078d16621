"""The simulation clock: simpy's environment with a fast lane for plain calls.

A fleet of 10,000 devices schedules millions of events whose only job is to call one function
later (a transfer arriving, a server's next completion, the next arrival). A simpy `Event`
costs an object, a callback list and two method calls per event; `Clock.call_at` pushes a
``(time, priority, sequence, (fn, arg))`` entry into simpy's own queue instead, so the fast
calls and simpy's events share one clock and one ordering (by time, then priority, then
scheduling order); the engine's own calls are cheaper still: a queued list is a request in
flight, handed to the clock's `stepper` (one tuple fewer per event). simpy processes (the
federated rounds, the progress ticker) run alongside unchanged. A run's arrivals are known up
front and sorted, so they need no queue entries at all: `feed` hands the clock the sorted
times, and its loop calls ``fn(i)`` for the next one whenever it is due no later than the
queue's head (an arrival goes first at a tie). `caller` gives the fast lane on a `Clock` and a
simpy timeout on any other environment, so the queues work on either.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any

import simpy
from simpy.core import EmptySchedule, StopSimulation
from simpy.events import NORMAL, EventPriority


class Clock(simpy.Environment):
    """simpy's environment plus `call_at`, `feed` and a count of the events it has run."""

    def __init__(self, initial_time: float = 0) -> None:
        super().__init__(initial_time)
        self._feed_t: list[float] = []
        self._feed_fn: Callable[[int], None] | None = None
        self._feed_i = 0
        self.stepper: Callable[[list[Any]], None] = _unset

    def feed(self, times: list[float], fn: Callable[[int], None]) -> None:
        """Call ``fn(i)`` at ``times[i]`` for every i (``times`` sorted, none in the past)."""
        self._feed_t, self._feed_fn, self._feed_i = times, fn, 0

    def _fed(self) -> bool:
        """Run the next fed call if it is due before the queue's head; False if it is not."""
        i, times = self._feed_i, self._feed_t
        if i == len(times) or (self._queue and self._queue[0][0] < times[i]):
            return False
        self._feed_i = i + 1
        self._now = times[i]
        assert self._feed_fn is not None
        self._feed_fn(i)
        return True

    def call_at(self, t: float, fn: Callable[[Any], None], arg: Any) -> None:
        """Call ``fn(arg)`` at time ``t`` (now, if ``t`` is in the past)."""
        now = self._now
        queue: list[Any] = self._queue  # simpy types it for Events; it holds our tuples too
        heappush(queue, (t if t > now else now, NORMAL, next(self._eid), (fn, arg)))

    def step(self) -> None:
        if self._fed():
            return
        try:
            self._now, _, _, event = heappop(self._queue)
        except IndexError:
            raise EmptySchedule from None
        if event.__class__ is list:
            self.stepper(event)
        elif event.__class__ is tuple:
            event[0](event[1])
        else:
            self._process(event)

    def _process(self, event: Any) -> None:
        """simpy's `Environment.step` for a real event (callbacks, failures, stop)."""
        callbacks, event.callbacks = event.callbacks, None
        try:
            for callback in callbacks:
                callback(event)
        except StopSimulation:
            event.callbacks = callbacks[callbacks.index(callback) + 1:]
            self.schedule(event, EventPriority(-1))  # as simpy: before everything else
            raise
        if not event._ok and not hasattr(event, "_defused"):
            exc = type(event._value)(*event._value.args)
            exc.__cause__ = event._value
            raise exc

    def run(self, until: Any = None) -> Any:
        """simpy's `run`; to the end of the schedule (``until`` None) without a method call
        per event."""
        if until is not None:
            return super().run(until)
        # the objects alive now (the scenario, its plans and profiles, torch's and pydantic's
        # machinery) are not garbage this run makes: the collector leaves them out of its
        # passes (7% of a city run's time went to traversing them), unless a caller has
        # frozen objects of its own
        freeze = gc.get_freeze_count() == 0
        if freeze:
            gc.freeze()
        try:
            self._drain()
        finally:
            if freeze:
                gc.unfreeze()
        return None

    def _drain(self) -> None:
        """Run the fed calls and the queue to the end (`run` without ``until``)."""
        queue: list[Any] = self._queue  # simpy types it for Events; it holds our entries too
        process, stepper = self._process, self.stepper
        times, fn, n = self._feed_t, self._feed_fn or _nothing, len(self._feed_t)
        i = self._feed_i
        due = times[i] if i < n else math.inf
        while True:
            # the queue's calls due before the next arrival (an arrival goes first at a tie)
            while queue and queue[0][0] < due:
                self._now, _, _, event = heappop(queue)
                kind = event.__class__
                if kind is list:
                    stepper(event)
                elif kind is tuple:
                    event[0](event[1])
                else:
                    process(event)
            if i == n:
                if not queue:
                    return
                due = math.inf  # only the queue is left
                continue
            self._now = due
            i += 1
            self._feed_i = i
            fn(i - 1)
            due = times[i] if i < n else math.inf

    @property
    def scheduled(self) -> int:
        """Events scheduled so far, the fed calls made included."""
        # simpy numbers every scheduled event from one counter (`_eid`); reading it is free,
        # where counting in an overridden `schedule` costs a Python call per event
        text = repr(self._eid)  # "count(N)"
        return int(text[text.index("(") + 1:-1]) + self._feed_i


def _nothing(_: int) -> None:
    return None


def _unset(_: list[Any]) -> None:
    raise RuntimeError("a list was queued on a Clock without a stepper")


def caller(env: simpy.Environment) -> Callable[[float, Callable[[Any], None], Any], None]:
    """``call_at(t, fn, arg)`` for any environment: the fast lane on a `Clock`, a simpy
    timeout elsewhere (a queue tested on its own)."""
    if isinstance(env, Clock):
        return env.call_at

    def call_at(t: float, fn: Callable[[Any], None], arg: Any) -> None:
        env.timeout(max(0.0, t - env.now), arg).callbacks.append(lambda ev: fn(ev.value))

    return call_at
