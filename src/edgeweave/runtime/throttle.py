"""Client-side adaptive throttling: a device stops sending an edge the requests it has been
refusing, and answers them itself at once (Beyer et al., Site Reliability Engineering, ch. 21,
"Handling Overload").

An edge's refusal is cheap next to serving a large model, but not next to serving a small one:
for the digits tenants a refused request costs the node and the device about as much of the
RPC path as an answered one, so at twice the node's capacity the refusals took the CPU the
answers needed (measured: goodput fell to half the capacity with every request still sent).
So each device keeps, over the last `window_s` seconds, how many requests it tried
(`requests`) and how many the edge accepted (`accepts`), and sends a new one with probability
1 - max(0, (requests - k x accepts) / (requests + 1)). While the edge accepts nearly
everything nothing is throttled; once more than 1 - 1/k of the requests are refused, the
excess over k x what the edge accepts is answered locally without a round trip, and the edge
still sees k times what it can take, so it can say when it takes more again. k = 0 turns it
off. The book suggests k = 2; smaller k keeps more back, but a node that refuses more than
1 - 1/k of what it is sent however little that is (deadline misses on a noisy host) would be
sent almost nothing, so k must stay above what the node refuses at its capacity (measured with
digits-cnn, 100 ms SLO, a host at load 14: goodput at twice the capacity 38% of it without the
throttle, 82% with k = 1.25 and 78% with k = 1.5, which kept back 10% at 100% load, k = 1.25
34%).

A request sent counts among `requests` only once its outcome is known (accepted or refused),
a throttled one at once. Counted when sent, as the book has it, a fresh device population at
hundreds of requests a second had tried dozens before the first answer came back: the
probability started near 1, and since it falls only by a factor k per window's turnover, it
took seconds to let requests through again (measured: a third of the requests throttled at
100% load, where the node refused 3%).
"""

from __future__ import annotations

import random
import threading
from collections import deque


class Throttle:
    """Thread-safe; see module doc."""

    def __init__(self, k: float = 1.5, window_s: float = 2.0, seed: int | None = 0,
                 slots: int = 8):
        if k and k < 1.0:
            raise ValueError(f"throttle k {k!r}: expected 0 (off) or at least 1")
        self.k, self.window_s = k, window_s
        self._slot_s = window_s / slots
        self._slots: deque[list[float]] = deque()  # [start, requests, accepts] per slot
        self._requests = self._accepts = 0.0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def _slot(self, now: float) -> list[float]:
        while self._slots and self._slots[0][0] <= now - self.window_s:
            _, r, a = self._slots.popleft()
            self._requests -= r
            self._accepts -= a
        if not self._slots or now >= self._slots[-1][0] + self._slot_s:
            self._slots.append([now, 0.0, 0.0])
        return self._slots[-1]

    def reject_probability(self, now: float) -> float:
        with self._lock:
            self._slot(now)
            return self._probability()

    def _probability(self) -> float:
        return max(0.0, (self._requests - self.k * self._accepts) / (self._requests + 1.0))

    def admit(self, now: float) -> bool:
        """Whether to send a request now; False (counted): answer it locally instead."""
        if not self.k:
            return True
        with self._lock:
            slot = self._slot(now)
            if self._rng.random() >= self._probability():
                return True
            slot[1] += 1
            self._requests += 1
            return False

    def accepted(self, now: float) -> None:
        """The edge accepted (answered) a request sent."""
        self._count(now, 1.0)

    def refused(self, now: float) -> None:
        """The edge refused a request sent (or failed on it)."""
        self._count(now, 0.0)

    def _count(self, now: float, accepted: float) -> None:
        if not self.k:
            return
        with self._lock:
            slot = self._slot(now)
            slot[1] += 1
            slot[2] += accepted
            self._requests += 1
            self._accepts += accepted
