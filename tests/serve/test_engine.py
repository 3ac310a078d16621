"""The engine with real worker threads and a stand-in model: every caller gets its own answer,
deadlines are met or the request is shed, and every request ends exactly one way."""

import math
import threading
import time

import pytest
import torch
from serve_helpers import Doubler

from edgeweave.serve import Engine, NodeServing, ServingConfig, Shed, resolve
from edgeweave.serve.latency import LatencyModel

NODE = NodeServing(policy="edf", workers=1, max_batch=8, max_queue=64)


def engine(runner, node=NODE, latency=None, **knobs):
    e = Engine(node).start()
    e.add("m", "m", runner, resolve(ServingConfig(**knobs), node), latency)
    return e


def call(e, x, deadline=math.inf, priority=0, key="m"):
    """Submit and wait: ("ok", output) or ("shed", Shed)."""
    try:
        return "ok", e.wait(e.submit(key, (x,), deadline, priority))
    except Shed as s:
        return "shed", s


def in_threads(n, fn):
    out = [None] * n
    threads = [threading.Thread(target=lambda k=k: out.__setitem__(k, fn(k))) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_each_caller_gets_its_own_rows_from_a_batch():
    model = Doubler(fixed=0.02)
    e = engine(model, max_delay_ms=20)
    try:
        results = in_threads(24, lambda k: call(e, torch.full((1, 3), float(k))))
    finally:
        e.stop()
    for k, (kind, answer) in enumerate(results):
        assert kind == "ok"
        assert torch.equal(answer.outputs[0], torch.full((1, 3), 2.0 * k))
    assert max(model.sizes) > 1 and sum(model.sizes) == 24


def test_one_bad_request_in_a_batch_fails_alone():
    e = engine(Doubler(fixed=0.01), max_delay_ms=30)
    try:
        results = in_threads(6, lambda k: call(
            e, torch.full((1, 2), math.nan if k == 3 else float(k))))
    finally:
        e.stop()
    kinds = [r[0] for r in results]
    assert kinds.count("ok") == 5 and kinds[3] == "shed"
    assert results[3][1].reason == "bad_input" and "failed on the given tensors" in str(
        results[3][1])


@pytest.mark.parametrize("max_batch", [1, 4])
def test_under_overload_nothing_is_served_late_and_the_counts_add_up(max_batch):
    """A model taking 20 ms per request, 60 requests at once with 100 ms deadlines: it can
    answer a few in time; every other one is shed with a deadline reason or a full queue
    (batched: some dropped early to make room for a full batch), none is answered after its
    deadline, and answered + shed = sent."""
    latency = LatencyModel()
    latency.seed(1, 0.02)
    model = Doubler(per_item=0.02)
    e = engine(model, latency=latency, max_batch=max_batch)
    finished = {}

    def one(k):
        deadline = time.monotonic() + 0.1
        kind, what = call(e, torch.full((1, 1), float(k)), deadline)
        finished[k] = (kind, what, deadline)
        return kind

    try:
        kinds = in_threads(60, one)
    finally:
        e.stop()
    ok = {k: f for k, f in finished.items() if f[0] == "ok"}
    shed = [f for f in finished.values() if f[0] == "shed"]
    assert len(ok) + len(shed) == 60 == len(kinds)
    assert ok and shed
    # each answer's batch ended before its deadline (the model's clock: not the caller's
    # wake-up, which a busy host delays)
    assert all(model.ended[float(k)] <= deadline for k, (_, _, deadline) in ok.items())
    assert {s.reason for _, s, _ in shed} <= {"deadline", "late", "queue_full"}


def test_a_full_queue_refuses_at_once_and_a_higher_priority_displaces():
    gate = threading.Event()

    def blocked(inputs, until):
        gate.wait(10)
        return [(x[0],) for x in inputs]

    node = NodeServing(workers=1, max_batch=1, max_queue=2)
    e = engine(blocked, node=node)
    try:
        running = e.submit("m", (torch.zeros(1, 1),))
        deadline = time.monotonic() + 5
        while e.queued and time.monotonic() < deadline:  # the worker took it
            time.sleep(0.005)
        queued = [e.submit("m", (torch.zeros(1, 1),), priority=0) for _ in range(2)]
        with pytest.raises(Shed) as full:
            e.submit("m", (torch.zeros(1, 1),), priority=0)
        assert full.value.reason == "queue_full" and "every worker is busy" in str(full.value)
        urgent = e.submit("m", (torch.zeros(1, 1),), priority=5)
        displaced = [p for p in queued if p.done]
        assert len(displaced) == 1 and displaced[0].error.reason == "displaced"
        gate.set()
        for p in (running, urgent, *[q for q in queued if not q.done]):
            assert e.wait(p).outputs is not None
    finally:
        gate.set()
        e.stop()


def test_removing_a_model_sheds_its_queue_and_refuses_new_requests():
    gate = threading.Event()
    e = engine(lambda inputs, until: (gate.wait(10), [(x[0],) for x in inputs])[1],
               node=NodeServing(workers=1, max_batch=1, max_queue=8))
    try:
        first = e.submit("m", (torch.zeros(1, 1),))
        deadline = time.monotonic() + 5
        while e.queued and time.monotonic() < deadline:
            time.sleep(0.005)
        waiting = e.submit("m", (torch.zeros(1, 1),))
        assert e.remove("m") == 1
        assert waiting.error.reason == "removed"
        with pytest.raises(Shed) as gone:
            e.submit("m", (torch.zeros(1, 1),))
        assert gone.value.reason == "unknown_model"
        gate.set()
        assert e.wait(first).outputs is not None  # the batch already running finishes
    finally:
        gate.set()
        e.stop()


def test_edf_across_models_serves_the_earliest_deadline_first():
    order = []
    gate = threading.Event()

    def runner(name):
        def run(inputs, until):
            gate.wait(10)
            order.append(name)
            return [(x[0],) for x in inputs]
        return run

    e = Engine(NodeServing(workers=1, max_batch=1, max_queue=8)).start()
    cfg = resolve(ServingConfig(), e.node)
    for name in ("blocker", "late", "soon"):
        e.add(name, name, runner(name), cfg)
    try:
        now = time.monotonic()
        items = [e.submit("blocker", (torch.zeros(1, 1),), now + 30)]
        deadline = time.monotonic() + 5
        while e.queued and time.monotonic() < deadline:
            time.sleep(0.005)
        items.append(e.submit("late", (torch.zeros(1, 1),), now + 20))
        items.append(e.submit("soon", (torch.zeros(1, 1),), now + 10))
        gate.set()
        for p in items:
            e.wait(p)
    finally:
        gate.set()
        e.stop()
    assert order == ["blocker", "soon", "late"]


class _Cache:
    name = "cache"

    def __init__(self):
        self.seen = {}

    def lookup(self, x, source):
        return self.seen.get(float(x.sum()))

    def observe(self, x, answer, source):
        self.seen[float(x.sum())] = answer


class _Filter:
    def admit(self, x, source):
        return float(x.sum()) >= 0


def test_front_stages_answer_skip_or_learn_before_a_request_queues():
    model = Doubler()
    e = engine(model)
    cache = _Cache()
    e.set_front("m", [cache, _Filter()])
    try:
        first = e.wait(e.submit("m", (torch.ones(1, 2),)))
        again = e.wait(e.submit("m", (torch.ones(1, 2),)))
        skipped = e.wait(e.submit("m", (-torch.ones(1, 2),)))
    finally:
        e.stop()
    assert first.source == "model" and again.source == "cache"
    assert torch.equal(again.outputs[0], first.outputs[0])
    assert skipped.outputs is None and skipped.source == "_Filter"
    assert model.sizes == [1]  # only the first request ran the model


def test_an_estimate_grown_in_a_slow_spell_is_corrected_by_serving_on_an_idle_node():
    """The model's estimate says 1 s a request (a slow spell is over: it takes ~1 ms now);
    requests with 100 ms deadlines, one at a time, are still served, each in time, and the
    estimate comes down (refusing them all, the node never saw the spell was over)."""
    latency = LatencyModel()
    latency.seed(1, 1.0)
    model = Doubler(per_item=0.001)
    e = engine(model, latency=latency, max_batch=1)
    try:
        got = [call(e, torch.full((1, 1), float(k)), time.monotonic() + 0.1) for k in range(12)]
    finally:
        e.stop()
    assert [kind for kind, _ in got] == ["ok"] * 12
    assert latency.estimate(1) < 0.1


def test_admission_counts_the_queue_in_the_batches_the_scheduler_forms():
    """Batches of 1 take 100 ms, of 8 480 ms (60 ms a request). Six requests due at 0.45 s are
    queued on an idle worker: the scheduler runs them in one batch, and a request due at 0.5 s
    joins it (a batch of 7 ends at 426 ms). Admission counted them instead in the batches the
    newcomer's slack allowed (twice a batch's high bound within 0.5 s: batches of 3) and
    refused it. An eighth would make the batch 8, which ends after the first deadline
    (480 ms): the batch is cut to 7 and the newcomer in it is refused, not queued behind
    requests that can only be served in batches cut small."""
    lat = LatencyModel()
    lat.seed(1, 0.1)
    lat.seed(8, 0.48)
    node = NodeServing(workers=1, max_batch=8, max_queue=64)
    e = Engine(node, clock=lambda: 0.0)  # not started: nothing runs, the queue stays
    e.add("m", "m", Doubler(), resolve(ServingConfig(max_batch=8), node), lat)
    x = (torch.zeros(1, 1),)
    for _ in range(6):
        e.submit("m", x, deadline=0.45)
    e.check("m", 0.5)
    e.submit("m", x, deadline=0.5)
    with pytest.raises(Shed, match="cannot meet its deadline"):
        e.check("m", 0.5)
    with pytest.raises(Shed, match="cannot meet its deadline"):
        e.submit("m", x, deadline=0.5)
    assert e.queued == 7
    assert len(e.dispatch(0, 0.0).batch) == 7


def test_other_models_queues_and_the_load_devices_see_are_counted_as_admission_counts():
    """Model A (batches of 1: 100 ms, of 8: 480 ms) has six requests due at 0.45 s queued:
    the scheduler runs them as one batch of six (371 ms). A request for model B (100 ms) due
    at 0.5 s finds that batch ahead of it and then runs by 0.471 s: admitted. Counted in the
    batches B's slack allowed (batches of 3, what other models' queues were counted in
    before), A's work was 418 ms and the request was refused. The load a device is told is
    the same batch of six, not six at a batch of eight's cost per request."""
    lat_a = LatencyModel()
    lat_a.seed(1, 0.1)
    lat_a.seed(8, 0.48)
    lat_b = LatencyModel()
    lat_b.seed(1, 0.1)
    node = NodeServing(workers=1, max_batch=8, max_queue=64)
    e = Engine(node, clock=lambda: 0.0)  # not started: nothing runs, the queue stays
    e.add("a", "a", Doubler(), resolve(ServingConfig(max_batch=8), node), lat_a)
    e.add("b", "b", Doubler(), resolve(ServingConfig(max_batch=8), node), lat_b)
    x = (torch.zeros(1, 1),)
    for _ in range(6):
        e.submit("a", x, deadline=0.45)
    assert e.load() == (6, pytest.approx(lat_a.estimate(6)))
    e.submit("b", x, deadline=0.5)
    with pytest.raises(Shed, match="cannot meet its deadline"):
        e.submit("b", x, deadline=0.46)
    assert len(e.dispatch(0, 0.0).batch) == 6


def test_admission_counts_a_request_in_the_batch_it_joins():
    """Batches of 1 take 200 ms, of 8 270 ms (10 ms more a request). With 485 ms to go the
    batches a request can run in are of 5 (2 x 240 ms fits), so one worker serves two batches
    of five by the deadline: exactly ten requests due then are admitted, each counted in the
    batch it joins. Counted as a batch of one after the work ahead of it (what admission did
    before), the seventh was refused (6 x 48 ms + 200 ms > 485 ms) though its batch of five,
    with the four queued before it, ends at 450 ms. `check` refuses as `submit` would,
    queueing nothing."""
    lat = LatencyModel()
    lat.seed(1, 0.2)
    lat.seed(8, 0.27)
    node = NodeServing(workers=1, max_batch=8, max_queue=64)
    e = Engine(node, clock=lambda: 0.0)  # not started: nothing runs, the queue stays
    e.add("m", "m", Doubler(), resolve(ServingConfig(max_batch=8), node), lat)
    x = (torch.zeros(1, 1),)
    admitted = []
    for _ in range(12):
        try:
            e.check("m", 0.485)
            checked = True
        except Shed:
            checked = False
        try:
            e.submit("m", x, deadline=0.485)
            admitted.append(True)
        except Shed as shed:
            assert "to run the batch it joins" in shed.message
            admitted.append(False)
        assert checked == admitted[-1]
    assert admitted == [True] * 10 + [False] * 2 and e.queued == 10


def test_an_answer_a_little_past_its_deadline_is_sent_within_the_senders_grace():
    """A device sends its deadline less a margin for the way back (its spread beyond the mean
    is the request's grace): a batch that overran the deadline by less than the grace is
    answered (the answer still reaches the device in time as a rule, and a device refused
    that late could not answer in time itself); one past deadline + grace is dropped as
    late, never served. The model takes 60 ms; the engine expected 10 ms (an idle node runs
    it anyway); the deadline is 30 ms away."""
    latency = LatencyModel()
    latency.seed(1, 0.01)
    model = Doubler(fixed=0.06)
    e = engine(model, latency=latency, max_batch=1)
    try:
        kind, answer = call_with_grace(e, torch.full((1, 1), 1.0), 0.03, grace=1.0)
        assert kind == "ok" and torch.equal(answer.outputs[0], torch.full((1, 1), 2.0))
        kind, shed = call_with_grace(e, torch.full((1, 1), 2.0), 0.03, grace=0.005)
        assert kind == "shed" and shed.reason == "late" and shed.stage == "dropped"
    finally:
        e.stop()
    assert model.sizes == [1, 1]  # both were computed: the grace decides only the answer


class Dilated:
    """Emulated hardware as the node runs it (runtime.serving.StageRunner): each batch takes
    `emulated_s`, but the stretch stops at `until`, after which nobody waits for it."""

    def __init__(self, emulated_s):
        self.emulated_s = emulated_s

    def __call__(self, inputs, until):
        time.sleep(max(0.0, min(self.emulated_s, until - time.monotonic())))
        return [(x[0] * 2,) for x in inputs]


def test_a_batch_cut_short_by_its_deadline_and_grace_is_never_answered_as_if_done():
    """An emulated batch stopped at its late instant (deadline + grace) did not finish: its
    answer is dropped as late, not sent as if the slow hardware had been quick (the stretch
    had been cut at the deadline itself, so with a grace every cut batch passed as in time)."""
    latency = LatencyModel()
    latency.seed(1, 0.001)  # the engine expects it quick, and admits it
    e = engine(Dilated(emulated_s=5.0), latency=latency, max_batch=1)
    try:
        start = time.monotonic()
        kind, shed = call_with_grace(e, torch.ones(1, 1), 0.03, grace=0.02)
        assert kind == "shed" and shed.reason == "late", shed
        assert time.monotonic() - start < 2.0  # cut at deadline + grace, not run to the end
    finally:
        e.stop()


def call_with_grace(e, x, deadline_in_s, grace):
    try:
        return "ok", e.wait(e.submit("m", (x,), time.monotonic() + deadline_in_s, grace=grace))
    except Shed as s:
        return "shed", s
