"""The grpc backend's device registry: sessions, their leases, and who is missing.

Any holder of the fleet's token can register, so the registry must not fill up for good: a
registration is a lease. It is renewed by the device's activity (registering, every RPC it
makes, and continuously while its Tasks stream is open, since that stream is the device's
liveness signal) and expires ``lease_s`` after the device last showed any. An expired device is
forgotten and must register again (its RPCs get NOT_FOUND, which a device answers by
re-registering). When all ``max_clients`` slots are held, the refusal says why and when the
next slot frees, so an honest device waiting for one knows what it waits for.

Not thread-safe on its own: :class:`~edgeweave.train.backends.grpc_backend.GrpcBackend` calls
it under its condition lock.
"""

from __future__ import annotations

import logging
import math
import queue
from collections.abc import Iterable
from dataclasses import dataclass, field

from edgeweave.train.types import TrainError

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 60.0


@dataclass
class Session:
    session: str
    client_id: int
    num_examples: int  # as registered, already bounded by the server's cap
    device: str
    seen: float  # monotonic time of the device's last activity
    queue: queue.Queue[bytes | None] = field(default_factory=queue.Queue)  # serialized Tasks
    streaming: bool = False  # a Tasks stream is open
    streamed: bool = False  # a Tasks stream was open at some point
    closed: bool = False  # superseded by a newer session, expired, or the backend closed


class RegistryFull(TrainError):
    """Every slot is held by a device whose lease has not run out."""


class DeviceRegistry:
    """Sessions by token and by client id, with leases (see the module docstring)."""

    def __init__(self, max_clients: int, lease_s: float = DEFAULT_LEASE_S) -> None:
        if max_clients < 1 or not (math.isfinite(lease_s) and lease_s > 0):
            raise TrainError(f"grpc backend: need max_clients >= 1 and a finite lease_s > 0, "
                             f"got {max_clients} and {lease_s}")
        self.max_clients, self.lease_s = max_clients, lease_s
        self.sessions: dict[str, Session] = {}
        self.by_client: dict[int, Session] = {}

    def live(self) -> list[Session]:
        """Devices with an open task stream, by client id."""
        return sorted((s for s in self.by_client.values() if s.streaming),
                      key=lambda s: s.client_id)

    def expires_in(self, s: Session, now: float) -> float:
        return math.inf if s.streaming else s.seen + self.lease_s - now

    def expire(self, now: float) -> list[int]:
        """Forget the devices whose lease ran out; returns their ids."""
        gone = [s for s in self.by_client.values() if self.expires_in(s, now) <= 0]
        for s in gone:
            self._drop(s)
            log.info("client %d: lease expired after %.0f s without activity; it must "
                     "register again", s.client_id, self.lease_s)
        return [s.client_id for s in gone]

    def add(self, sess: Session, now: float) -> Session | None:
        """Register ``sess`` (replacing the same client id's old session, which is returned);
        RegistryFull when a new id finds every slot leased."""
        old = self.by_client.get(sess.client_id)
        if old is None:
            self.expire(now)
            if len(self.by_client) >= self.max_clients:
                raise RegistryFull(self._full(now))
        else:
            self._drop(old)
        self.sessions[sess.session] = sess
        self.by_client[sess.client_id] = sess
        return old

    def get(self, token: str, now: float) -> Session | None:
        """The live session for ``token`` (its lease renewed), or None when unknown, replaced or
        expired."""
        s = self.sessions.get(token)
        if s is None or s.closed:
            return None
        if self.expires_in(s, now) <= 0:
            self._drop(s)
            return None
        s.seen = now
        return s

    def close_all(self) -> Iterable[Session]:
        for s in self.sessions.values():
            s.closed = True
        return list(self.sessions.values())

    def _drop(self, s: Session) -> None:
        s.closed = True
        s.queue.put(None)  # ends its Tasks stream, if one is still open
        self.sessions.pop(s.session, None)
        if self.by_client.get(s.client_id) is s:
            del self.by_client[s.client_id]

    def _full(self, now: float) -> str:
        idle = [self.expires_in(s, now) for s in self.by_client.values() if not s.streaming]
        head = (f"register: the server's registry is full: max_clients={self.max_clients} "
                f"devices hold a registration ({len(self.live())} of them connected)")
        if idle:
            return (f"{head}; the next slot frees in {max(min(idle), 0.0):.0f} s, when an idle "
                    f"device's lease (lease_s={self.lease_s:g}) runs out")
        return (f"{head}; a slot frees {self.lease_s:g} s (lease_s) after one of them "
                "disconnects")

    def missing(self, expected: Iterable[int]) -> list[int]:
        """Of the ``expected`` ids and every registered one, those without an open stream."""
        live = {s.client_id for s in self.live()}
        return sorted((set(expected) | set(self.by_client)) - live)

    def describe(self, live: list[Session], missing: list[int], now: float, want: int) -> str:
        """'1 connected (client 0); missing: client 2 (disconnected 12 s ago), 1 device(s) never
        connected': the log line of a round short of devices."""
        out = f"{len(live)} connected" + (
            f" (client {', '.join(str(s.client_id) for s in live)})" if live else "")
        parts = []
        for cid in missing[:20]:
            s = self.by_client.get(cid)
            state = ("not registered" if s is None else
                     f"disconnected {now - s.seen:.0f} s ago" if s.streamed else
                     "registered, no task stream yet")
            parts.append(f"client {cid} ({state})")
        if len(missing) > 20:
            parts.append(f"{len(missing) - 20} more")
        unseen = want - len(live) - len(missing)
        if unseen > 0:
            parts.append(f"{unseen} device(s) never connected")
        return out + ("; missing: " + ", ".join(parts) if parts else "")
