"""How each simulated request ended, as per-request arrays, and the failures only known once
the run is over (an answer that came back to a device that had moved on, or too late).

Every request ends exactly one way: answered (OK) or failed by mobility, network, capacity
or deadline. Network and capacity failures happen during the run (a full link buffer, a
refusing server, no coverage); `classify` marks mobility and deadline ones afterwards with
array operations over all requests at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: request outcomes; every request ends exactly one way
PENDING, OK, DEADLINE, MOBILITY, NETWORK, CAPACITY = range(-1, 5)
STATUS = {OK: "ok", DEADLINE: "deadline", MOBILITY: "mobility", NETWORK: "network",
          CAPACITY: "capacity", PENDING: "pending"}
FAILURE_CAUSES = ("mobility", "network", "capacity", "deadline")


@dataclass
class Outcome:
    """Per-request arrays of one run (index = request, in arrival order)."""

    t: np.ndarray
    device: np.ndarray
    ap: np.ndarray
    done: np.ndarray
    status: np.ndarray
    network_s: np.ndarray
    server_s: np.ndarray
    device_s: np.ndarray
    work: np.ndarray
    edge: np.ndarray  # index into `edges` of the server that ran the edge stage (-1: none)


def classify(out: Outcome, used_net: np.ndarray,
             ap_at: Callable[[np.ndarray, np.ndarray], np.ndarray],
             deadline_s: np.ndarray) -> None:
    """Mark mobility failures (a request that used the network answered after its device
    left the access point it was sent from; ``used_net`` per placement, ``ap_at(devices,
    times)`` where devices are) and deadline failures (``deadline_s`` per request, inf:
    none) among the answered requests."""
    answered = np.flatnonzero(out.status == OK)
    if not len(answered):
        return
    net = answered[used_net[out.work[answered]]]
    ap_end = ap_at(out.device[net], out.done[net])
    out.status[net[ap_end != out.ap[net]]] = MOBILITY
    ok = np.flatnonzero(out.status == OK)
    late = (out.done[ok] - out.t[ok]) > deadline_s[ok] + 1e-12
    out.status[ok[late]] = DEADLINE
