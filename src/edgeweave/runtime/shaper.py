"""In-process link shaping: a token bucket for bandwidth plus a sleep for propagation delay.

Two uses:

* the fallback when real kernel shaping (:mod:`edgeweave.runtime.netlab`) is not available (not
  root, no ``ip``/``tc``, namespaces refused): every byte the runtime sends over a simulated link
  first passes :meth:`LinkShaper.transmit`;
* the RTT layer even when NetLab *is* used: the kernel here has no ``netem``, so the links'
  propagation delay cannot be added by ``tc`` and the runtime's link layer sleeps ``rtt/2`` per
  message instead.

Timing is kept honest: everything uses :func:`time.monotonic`, the bucket accrues tokens by
elapsed time (so an oversleep on one chunk is paid back on the next and never accumulates), and
the last millisecond before a deadline is slept in short steps rather than one coarse sleep.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "CLOCK_ID",
    "LinkShaper",
    "TokenBucket",
    "TraceLike",
    "TraceReplay",
    "sleep_until",
]

# Below this much time left, stop using one long sleep and step in short sleeps.
_FINE_S = 0.002
# The longest a waiter sleeps before re-checking (set_rate notifies waiters anyway).
_MAX_WAIT_S = 0.5
# One MTU-sized frame on the wire; the bucket always admits at least this much at once.
_FRAME_BYTES = 1540


def _clock_id() -> str:
    """This host's ``time.monotonic`` clock, named by the Linux boot id ("" where unknown).

    Processes that print the same id read the same monotonic clock (CLOCK_MONOTONIC is
    system-wide), so a sender can stamp the instant its bytes reach the far end of an emulated
    link and the receiver can wait for exactly that instant (see :meth:`LinkShaper.reserve`).
    """
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


#: Equal in every process that shares this host's monotonic clock; "" matches nothing.
CLOCK_ID = _clock_id()


def sleep_until(deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
    """Sleep until ``clock() >= deadline``: one coarse sleep, then short steps near the end.

    ``time.sleep`` on Linux oversleeps by tens to hundreds of microseconds; sleeping to 1 ms
    before the deadline and then in 100 µs steps keeps the total error small without spinning a
    core. The loop is bounded: each step sleeps a positive time until the deadline passes.
    """
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            return
        if remaining > _FINE_S:
            time.sleep(remaining - _FINE_S / 2)
        else:
            time.sleep(min(remaining, 0.0001))


def _check_mbps(mbps: float) -> float:
    mbps = float(mbps)
    if not (math.isfinite(mbps) and mbps > 0):
        raise ValueError(f"rate must be a finite number of Mbit/s > 0, got {mbps!r}")
    return mbps


class TokenBucket:
    """A thread-safe token bucket: ``rate`` in Mbit/s, ``burst`` in bytes.

    :meth:`consume` blocks until the bytes may pass. Waiters are served first-come, first-served
    and a long transfer is admitted in chunks, so several threads sharing one bucket interleave
    like packets on one link and together take as long as their bytes need at the link's rate
    (the sum of their solo times). :meth:`set_rate` takes effect immediately, also for threads
    already waiting, which is how a bandwidth trace is replayed.

    Bookkeeping: ``_requested`` counts every byte ever asked for, ``_granted`` every token ever
    added (starting with a full bucket). A request covering bytes up to ``target`` may pass once
    ``_granted >= target``. While the link is idle tokens stop accruing at ``burst`` above the
    requests, the usual bucket depth.
    """

    def __init__(self, mbps: float, burst_bytes: int | None = None) -> None:
        self._rate_bps = _check_mbps(mbps) * 1e6 / 8  # bytes per second
        self._auto_burst = burst_bytes is None  # a default burst follows the rate
        if burst_bytes is None:
            burst_bytes = self.default_burst(mbps)
        if burst_bytes < 1:
            raise ValueError(f"burst_bytes must be >= 1, got {burst_bytes}")
        self._burst = int(burst_bytes)
        self._cond = threading.Condition(threading.Lock())
        self._last = time.monotonic()
        self._granted = float(self._burst)
        self._requested = 0.0

    @staticmethod
    def default_burst(mbps: float) -> int:
        """1 ms of traffic at ``mbps``, but at least one 1540-byte frame.

        Small on purpose: every byte of burst is a byte that crosses an idle link for free, so a
        1 MB message at 8 Mbit/s stays within 0.2 % of its 1.0 s serialisation time.
        """
        return max(_FRAME_BYTES, math.ceil(_check_mbps(mbps) * 1e6 / 8 / 1000))

    @property
    def mbps(self) -> float:
        with self._cond:
            return self._rate_bps * 8 / 1e6

    @property
    def burst_bytes(self) -> int:
        return self._burst

    def _refill(self, now: float) -> None:
        # Caller holds the lock.
        elapsed = now - self._last
        if elapsed > 0:
            cap = self._requested + self._burst
            self._granted = min(self._granted + elapsed * self._rate_bps, max(cap, self._granted))
            self._last = now

    def set_rate(self, mbps: float) -> None:
        """Change the rate now: tokens up to this instant accrue at the old rate."""
        rate = _check_mbps(mbps) * 1e6 / 8
        with self._cond:
            self._refill(time.monotonic())
            self._rate_bps = rate
            if self._auto_burst:
                # a burst saved up at a fast rate must not cross a slow link for free
                self._burst = self.default_burst(mbps)
                self._granted = min(self._granted, self._requested + self._burst)
            self._cond.notify_all()

    def _chunk_bytes(self) -> int:
        # Fair interleaving of concurrent senders without taking the lock per packet: about
        # 5 ms of traffic, at least 16 KiB and at least the burst.
        return max(16384, self._burst, int(self._rate_bps * 0.005))

    def consume(self, nbytes: int) -> float:
        """Block until ``nbytes`` may pass; return the seconds spent waiting."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        start = time.monotonic()
        left = int(nbytes)
        while left > 0:
            chunk = min(left, self._chunk_bytes())
            self._consume_chunk(chunk)
            left -= chunk
        return time.monotonic() - start

    def reserve(self, nbytes: int) -> float:
        """Account ``nbytes`` now without waiting; return the :func:`time.monotonic` instant
        they will have passed at the current rate.

        Senders that reserve queue behind each other (and behind :meth:`consume` callers)
        first-come, first-served. The instant is priced at the rate in force now: a later
        :meth:`set_rate` moves the transfers after it, not this one.
        """
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        with self._cond:
            now = time.monotonic()
            self._refill(now)
            self._requested += int(nbytes)
            return now + max(0.0, self._requested - self._granted) / self._rate_bps

    def _consume_chunk(self, nbytes: int) -> None:
        with self._cond:
            self._refill(time.monotonic())
            self._requested += nbytes
            target = self._requested
            while True:
                now = time.monotonic()
                self._refill(now)
                deficit = target - self._granted
                if deficit <= 0:
                    return
                deadline = now + deficit / self._rate_bps
                remaining = deadline - now
                if remaining > _FINE_S:
                    # Coarse wait; woken early by set_rate, which changes the deadline.
                    self._cond.wait(min(remaining - _FINE_S / 2, _MAX_WAIT_S))
                else:
                    # Fine wait outside the lock so others can queue up meanwhile.
                    self._cond.release()
                    try:
                        sleep_until(deadline)
                    finally:
                        self._cond.acquire()


class TraceLike(Protocol):
    """What replay needs of a trace; :class:`edgeweave.topology.BandwidthTrace` fits."""

    t_s: list[float]
    mbps: list[float]

    def mbps_at(self, t: float) -> float: ...


def _seconds_to_next_sample(trace: TraceLike, t: float) -> float | None:
    """Seconds from trace time ``t`` to the next sample boundary (looping); None if constant."""
    times = list(trace.t_s)
    if len(times) < 2:
        return None
    start = times[0]
    period = times[-1] + (times[-1] - times[-2]) - start
    offset = (t - start) % period
    for boundary in (*times[1:], start + period):
        if boundary - start > offset + 1e-9:
            return boundary - start - offset
    return period - offset  # pragma: no cover - float edge; the loop end is always ahead


class TraceReplay:
    """Applies a bandwidth trace over time from a daemon thread; :meth:`stop` ends it.

    Replay time 0 is the trace's first sample (``trace.t_s[0]``); the trace loops as
    :meth:`BandwidthTrace.mbps_at` defines. The first rate is applied synchronously, before the
    constructor returns, so callers can rely on it at once; later rates are applied at their
    sample boundaries (to within a millisecond or so). ``duration_s`` bounds the replay; without
    it, it runs until :meth:`stop` (or the owner's ``stop``/``close``).
    """

    def __init__(
        self,
        trace: TraceLike,
        apply: Callable[[float], None],
        clock: Callable[[], float] = time.monotonic,
        duration_s: float | None = None,
        name: str = "edgeweave-trace-replay",
    ) -> None:
        self._trace = trace
        self._apply = apply
        self._clock = clock
        self._duration = duration_s
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.applied: list[tuple[float, float]] = []  # (replay seconds, mbps) of each change
        self._t0 = clock()
        self._current: float | None = None
        self._step(0.0)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _step(self, elapsed: float) -> None:
        rate = float(self._trace.mbps_at(self._trace.t_s[0] + elapsed))
        if rate != self._current:
            self._apply(rate)
            self._current = rate
            self.applied.append((elapsed, rate))

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                elapsed = self._clock() - self._t0
                if self._duration is not None and elapsed >= self._duration:
                    return
                self._step(elapsed)
                wait = _seconds_to_next_sample(self._trace, self._trace.t_s[0] + elapsed)
                if wait is None:
                    return  # constant trace: nothing more to apply
                if self._duration is not None:
                    wait = min(wait, self._duration - elapsed)
                # Capped so an injected clock that is not wall time is still polled.
                self._stop.wait(min(max(wait, 0.0), _MAX_WAIT_S) + 1e-4)
        except BaseException as exc:  # surfaced via .error; a daemon thread has nowhere to raise
            self.error = exc

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the replay; the rate last applied stays in force."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)


class LinkShaper:
    """One simulated link: token-bucket serialisation plus ``rtt_ms/2`` propagation delay.

    :meth:`transmit` is what a sender calls per message: it blocks while the bytes are
    serialised at the link's rate (sharing the bucket with other senders on the same link) and
    then for half the round-trip time, and returns the seconds spent. Propagation sleeps of
    concurrent senders overlap, as on a real link; serialisation does not.
    """

    def __init__(self, mbps: float, rtt_ms: float, burst_bytes: int | None = None) -> None:
        rtt_ms = float(rtt_ms)
        if not (math.isfinite(rtt_ms) and rtt_ms >= 0):
            raise ValueError(f"rtt_ms must be a finite number >= 0, got {rtt_ms!r}")
        self._rtt_ms = rtt_ms
        self.bucket = TokenBucket(mbps, burst_bytes)
        self._replay: TraceReplay | None = None

    @property
    def mbps(self) -> float:
        return self.bucket.mbps

    @property
    def rtt_ms(self) -> float:
        return self._rtt_ms

    def set_mbps(self, mbps: float) -> None:
        """Change the bandwidth now, also for transfers in progress."""
        self.bucket.set_rate(mbps)

    def transmit(self, nbytes: int) -> float:
        """Serialise ``nbytes`` and wait out one-way propagation; return seconds spent."""
        start = time.monotonic()
        self.bucket.consume(nbytes)
        if self._rtt_ms > 0:
            sleep_until(time.monotonic() + self._rtt_ms / 2000.0)
        return time.monotonic() - start

    def reserve(self, nbytes: int) -> float:
        """The instant (``time.monotonic``) ``nbytes`` sent now reach the far end: their turn
        on the link, serialisation at its rate, then half the RTT. Nothing blocks.

        This is how a sender on a shaped loopback link overlaps the real transfer with the
        emulated one: it sends at once, stamped with this instant, and the receiver (on the
        same clock, :data:`CLOCK_ID`) starts on the message no earlier. Sleeping first and
        sending after would add the loopback transfer (about 3 ms for 0.6 MB after an idle
        gap, measured) on top of a wire time that already includes it on a real link.
        """
        return self.bucket.reserve(nbytes) + self._rtt_ms / 2000.0

    def replay(
        self,
        trace: TraceLike,
        clock: Callable[[], float] = time.monotonic,
        duration_s: float | None = None,
    ) -> TraceReplay:
        """Start replaying ``trace`` onto this link (replacing any earlier replay)."""
        self.stop()
        self._replay = TraceReplay(
            trace, self.set_mbps, clock=clock, duration_s=duration_s, name="edgeweave-link-replay"
        )
        return self._replay

    def stop(self) -> None:
        """Stop the trace replay, if any; the current rate stays."""
        if self._replay is not None:
            self._replay.stop()
            self._replay = None
