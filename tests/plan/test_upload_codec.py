"""Choosing how an incremental upload's weights travel (issue 18, IONN): every layer priced at
its encoded bytes; a lossy codec chosen when it saves query time and is accurate enough, raw
otherwise; agreement measured only for codecs that would pay."""

import pytest

from edgeweave.plan.ionn import upload_schedule
from edgeweave.plan.upload_codec import choose_upload_codec, latency_steps, saved_s
from helpers import make_profile

MB = 1_000_000
PARAMS = [0, 1000, 2 * MB, 0, 20 * MB]


def _chain(mbps):
    # a conv-like n2 (40 ms on the device, 2 ms on the edge, 2 MB) and an fc-like n4 (30 ms
    # vs 1 ms, 20 MB): both pay, n2 first
    return make_profile(latencies=[(0, 0), (2, 1), (40, 2), (1, 0.1), (30, 1)],
                        out_bytes=[40_000, 10_000, 10_000, 10_000, 400],
                        edges=[(i, i + 1) for i in range(4)], links=[(mbps, 2.0)],
                        param_bytes=PARAMS, tiers=("device", "edge"))


def _sizes(p):
    raw = {n.name: n.param_bytes for n in p.nodes}
    return {"none": raw, "fp16": {k: v // 2 for k, v in raw.items()},
            "int8": {k: v // 4 for k, v in raw.items()}}


class _Agreement:
    def __init__(self, **values):
        self.values, self.asked = values, []

    def __call__(self, codec):
        self.asked.append(codec)
        return self.values[codec]


def test_a_slow_link_gets_int8_weights_priced_at_their_encoded_bytes():
    p = _chain(mbps=8.0)
    agree = _Agreement(int8=0.99, fp16=1.0)
    choice = choose_upload_codec(p, ("none",), _sizes(p), agree)
    assert choice.codec == "int8" and choice.schedule.weight_codec == "int8"
    assert agree.asked == ["int8"]  # the most saving first; fp16 never needed measuring
    raw = upload_schedule(p)
    assert [s.nodes for s in choice.schedule.steps] == [s.nodes for s in raw.steps]
    assert [s.nbytes for s in choice.schedule.steps] == [s.nbytes // 4 for s in raw.steps]
    assert choice.schedule.first_benefit_s == pytest.approx(raw.first_benefit_s / 4, rel=1e-3)
    assert choice.saved_s["int8"] > choice.saved_s["fp16"] > 1.0


def test_a_codec_below_the_agreement_bound_is_never_chosen():
    p = _chain(mbps=8.0)
    agree = _Agreement(int8=0.9, fp16=1.0)
    choice = choose_upload_codec(p, ("none",), _sizes(p), agree)
    assert choice.codec == "fp16" and "int8 agreed on only 90.0%" in choice.why
    assert agree.asked == ["int8", "fp16"]
    none = choose_upload_codec(p, ("none",), _sizes(p), _Agreement(int8=0.5, fp16=0.97))
    assert none.codec == "none" and "agreement" in none.why


def test_raw_weights_when_compression_would_save_little_or_nothing_uploads():
    fast = _chain(mbps=10_000.0)  # 22 MB in 18 ms: nothing worth an accuracy loss
    agree = _Agreement(int8=1.0, fp16=1.0)
    choice = choose_upload_codec(fast, ("none",), _sizes(fast), agree)
    assert choice.codec == "none" and agree.asked == [] and "save" in choice.why
    dead = make_profile(latencies=[(0, 0), (1, 0.5), (1, 0.5)], out_bytes=[MB, MB, MB],
                        edges=[(0, 1), (1, 2)], links=[(1.0, 2.0)], param_bytes=[0, 10, 10],
                        tiers=("device", "edge"))
    choice = choose_upload_codec(dead, ("none",), _sizes(dead), agree)
    assert choice.codec == "none" and not choice.schedule.steps and agree.asked == []


def test_saved_time_is_the_area_between_the_latency_curves():
    p = _chain(mbps=8.0)
    raw, int8 = (upload_schedule(p, upload_bytes=_sizes(p)[c], weight_codec=c)
                 for c in ("none", "int8"))
    assert saved_s(raw, raw) == 0.0
    (_, l0), (t1, l1), (t2, l2) = latency_steps(raw)  # n2 lands at 2 s, n4 at 22 s
    (_, _), (u1, m1), (u2, m2) = latency_steps(int8)  # a quarter of that: 0.5 s, 5.5 s
    assert u1 < t1 < u2 < t2 and (m1, m2) == (l1, l2)
    want = (t1 - u1) * (1 - m1 / l0) + (t2 - u2) * (1 - m2 / l1)  # 0 where they are level
    assert saved_s(raw, int8) == pytest.approx(want)
