"""The shared medium: transfers of different devices take turns, results come back in order,
dependencies hold inputs back (checked against schedules worked out by hand)."""

from __future__ import annotations

import pytest

from edgeweave.errors import PlanError
from edgeweave.plan.medium import Task, simulate

# 8 Mbit/s: 1000 bytes take 1 ms on the medium; an RTT of 2 ms adds 1 ms to each transfer.
MBPS, RTT = 8.0, 2.0


def test_two_devices_take_turns_on_the_medium() -> None:
    tasks = [Task("a", 10.0, 1000, 1000), Task("b", 10.0, 1000, 1000)]
    s = simulate(tasks, "g", MBPS, RTT)
    # a's input 0-1 (arrives 2), b's waits: 1-2 (arrives 3); a runs 2-12, b 3-13;
    # a's result 12-13 (at 14), b's 13-14 (at 15)
    assert s.start_ms == (2.0, 3.0)
    assert s.done_ms == (14.0, 15.0)
    assert s.makespan_ms == 15.0 and s.medium_busy_ms == 4.0
    assert s.device_busy_ms == {"a": 10.0, "b": 10.0}


def test_gateway_tasks_send_nothing_and_devices_run_in_order() -> None:
    tasks = [Task("g", 5.0, 4000, 4000), Task("a", 3.0, 1000, 0), Task("a", 3.0, 1000, 0)]
    s = simulate(tasks, "g", MBPS, RTT)
    assert s.done_ms[0] == 5.0 and s.medium_busy_ms == 2.0
    # a's inputs arrive at 2 and 3; it runs 2-5 then 5-8; empty results take half an RTT
    assert s.start_ms[1:] == (2.0, 5.0)
    assert s.done_ms[1:] == (6.0, 9.0)


def test_dependencies_hold_the_input_until_the_results_are_back() -> None:
    tasks = [Task("a", 10.0, 1000, 1000), Task("b", 1.0, 1000, 1000, after=(0,))]
    s = simulate(tasks, "g", MBPS, RTT)
    # task 0's result is at the gateway at 14; only then is task 1's input sent (14-15, at 16)
    assert s.start_ms[1] == 16.0 and s.done_ms[1] == 19.0


def test_bad_inputs() -> None:
    with pytest.raises(PlanError, match="mbps > 0"):
        simulate([], "g", 0.0, 1.0)
    with pytest.raises(PlanError, match="depends on"):
        simulate([Task("a", 1.0, 0, 0, after=(0,))], "g", MBPS, RTT)
    assert simulate([], "g", MBPS, RTT).makespan_ms == 0.0
