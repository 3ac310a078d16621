"""A device runs one thing at a time: a frame's rest waits for the tiles its device holds,
and the device takes no tile while a rest is waiting or running (RestLanes)."""

from __future__ import annotations

import threading

from edgeweave.runtime.cluster.rest import RestLanes


def test_a_rest_waits_for_the_devices_tiles_and_blocks_new_ones():
    held = {"a": 1}
    events: list[str] = []
    answered = threading.Event()
    freed: list[str] = []

    def run(device, frame):
        events.append(f"rest {frame} on {device}, holding {held[device]}")
        return frame * 10, "note"

    def answer(device, frame, output, note, start, wait_ms):
        events.append(f"answer {output} {note}")
        answered.set()

    lanes = RestLanes(run, lambda d: held.get(d, 0), freed.append, answer)
    try:
        lanes.put("a", 7)
        assert lanes.resting() == {"a"}  # no tile goes to a from now on
        assert not answered.wait(0.05)  # a still computes its tile
        held["a"] = 0
        assert answered.wait(5)
    finally:
        lanes.close()
    assert events == ["rest 7 on a, holding 0", "answer 70 note"]
    assert freed == ["a"] and lanes.resting() == set()


def test_a_failing_rest_answers_its_frame_with_the_error_and_the_lane_goes_on():
    outcomes: list[object] = []
    done = threading.Semaphore(0)

    def run(device, frame):
        if frame == 1:
            raise ValueError("bad frame")
        return frame, ""

    def answer(device, frame, output, note, start, wait_ms):
        outcomes.append(output)
        done.release()

    lanes = RestLanes(run, lambda d: 0, lambda d: None, answer)
    try:
        lanes.put("b", 1)
        lanes.put("b", 2)
        assert done.acquire(timeout=5) and done.acquire(timeout=5)
    finally:
        lanes.close()
    assert isinstance(outcomes[0], ValueError) and outcomes[1] == 2
