"""One shared medium for the whole cluster: transfers between different devices take turns on
it (their arrival stamps follow one another), a device's transfer to itself is free."""

from __future__ import annotations

import time

import pytest

from edgeweave.runtime.cluster.medium import SharedMedium
from edgeweave.runtime.proto import cluster_pb2 as cpb


def test_transfers_of_different_devices_serialise_on_the_shared_medium():
    medium = SharedMedium(mbps=8.0, rtt_ms=0.0)  # 1 MB/s: 100 kB take 100 ms
    start = time.monotonic()
    stamps = []
    for src, dst in (("gw", "a"), ("gw", "b"), ("c", "gw")):
        msg = cpb.Task()
        medium.send(msg, 100_000, src, dst)
        stamps.append(msg.deliver_at_ns / 1e9 - start)
    # private links would deliver all three after ~0.1 s; one medium: 0.1, 0.2, 0.3 s
    assert stamps[0] == pytest.approx(0.1, abs=0.02)
    assert stamps[1] - stamps[0] == pytest.approx(0.1, abs=0.01)
    assert stamps[2] - stamps[1] == pytest.approx(0.1, abs=0.01)
    assert medium.bytes == 300_000 and medium.transfers == 3


def test_a_result_received_waits_behind_transfers_already_on_the_medium():
    medium = SharedMedium(mbps=8.0, rtt_ms=0.0)
    msg = cpb.Task()
    medium.send(msg, 50_000, "gw", "a")  # occupies the medium for 50 ms
    start = time.monotonic()
    medium.receive(20_000, "b", "gw")  # 20 ms of its own, after those 50
    assert time.monotonic() - start >= 0.065


def test_a_devices_transfer_to_itself_is_free():
    medium = SharedMedium(mbps=0.001, rtt_ms=50.0)
    msg = cpb.Task(deliver_at_ns=5, clock="x")
    assert medium.send(msg, 10**9, "a", "a") == 0.0
    assert msg.deliver_at_ns == 0 and medium.receive(10**9, "a", "a") == 0.0
    assert medium.bytes == 0
