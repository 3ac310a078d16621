"""Which weight codec an incremental upload uses (``--upload-codec auto``): the one whose
schedule lets the device's queries benefit soonest, among those accurate enough.

IONN's first benefit waits for the first partition's bytes (AlexNet's conv layers, 9.8 MB:
15.7 s at 5 Mbit/s), and the rest for minutes; per-channel int8 weights are a quarter of that
and fp16 half. The price is accuracy: the edge then runs the dequantized weights for good, so a
lossy codec is a candidate only when its measured top-1 agreement with the exact model
(`profile.weight_agreement`, on random inputs) is at least ``min_agreement``.

Each candidate's schedule (`plan.ionn`, priced at its encoded bytes) is a predicted latency
over time, a step down as each partition lands. Against the raw upload, over the raw upload's
duration H, a codec saves ``integral_0^H (1 - L_codec(t) / L_raw(t)) dt`` seconds: the share of
a busy device's time its queries finish sooner, summed. It pays when that is at least
``min_saved_s`` (one second): for a model that uploads in a moment, nothing is worth an
accuracy loss. The best saving that is accurate enough wins (agreement is measured only for the
codecs that would pay, the most saving first); none: raw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from edgeweave.errors import PlanError
from edgeweave.plan.ionn import UploadSchedule, upload_schedule
from edgeweave.profile.schema import Profile

#: Least top-1 agreement with the exact model a lossy weight codec must reach to be chosen.
MIN_AGREEMENT = 0.98
#: Least saving (seconds of a busy device's time, see module doc) that pays for a lossy codec.
MIN_SAVED_S = 1.0


@dataclass(frozen=True)
class CodecChoice:
    """The chosen codec's schedule, and why: each candidate's saving and agreement."""

    codec: str
    schedule: UploadSchedule
    saved_s: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    why: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"codec": self.codec, "saved_s": self.saved_s, "agreement": self.agreement,
                "why": self.why}


def latency_steps(schedule: UploadSchedule) -> list[tuple[float, float]]:
    """``(from s, predicted ms per query)``: the plan in force from each landing on."""
    out, at = [(0.0, schedule.initial.total_ms)], 0.0
    for step in schedule.steps:
        at += step.upload_s
        out.append((at, step.plan.total_ms))
    return out


def _at(steps: list[tuple[float, float]], t: float) -> float:
    return [ms for at, ms in steps if at <= t][-1]


def saved_s(raw: UploadSchedule, other: UploadSchedule) -> float:
    """``integral_0^H (1 - L_other / L_raw) dt`` over the raw upload's duration H."""
    a, b = latency_steps(raw), latency_steps(other)
    horizon = a[-1][0]
    cuts = sorted({t for t, _ in a + b if t < horizon} | {horizon})
    return sum((t1 - t0) * (1.0 - _at(b, t0) / _at(a, t0))
               for t0, t1 in pairwise(cuts))


def choose_upload_codec(profile: Profile, codecs: Sequence[str],
                        upload_bytes: Mapping[str, Mapping[str, int]],
                        agreement: Callable[[str], float], *,
                        min_agreement: float = MIN_AGREEMENT,
                        min_saved_s: float = MIN_SAVED_S) -> CodecChoice:
    """See module doc. ``upload_bytes``: per weight codec (``none`` among them), each layer's
    bytes as uploaded; ``agreement(codec)``: a lossy codec's measured top-1 agreement, asked
    only of codecs that would pay, the most saving first, until one is accurate enough."""
    if "none" not in upload_bytes:
        raise PlanError("choosing a weight codec needs the raw upload's sizes too")
    schedules = {c: upload_schedule(profile, codecs, upload_bytes=sizes, weight_codec=c)
                 for c, sizes in upload_bytes.items()}
    raw = schedules["none"]
    saved = {c: saved_s(raw, s) for c, s in schedules.items() if c != "none"}
    measured: dict[str, float] = {}
    for codec in sorted(saved, key=lambda c: -saved[c]):
        if saved[codec] < min_saved_s:
            break
        measured[codec] = agreement(codec)
        if measured[codec] >= min_agreement:
            short = "".join(f"; {c} agreed on only {a:.1%}" for c, a in measured.items()
                            if a < min_agreement)
            why = (f"saves {saved[codec]:.1f} s of queries over the raw upload's "
                   f"{latency_steps(raw)[-1][0]:.1f} s at {measured[codec]:.1%} top-1 "
                   f"agreement{short}")
            return CodecChoice(codec, schedules[codec], saved, measured, why)
    why = ("no upload pays at this bandwidth" if not raw.steps else
           f"no lossy codec would save {min_saved_s:g} s" if not measured else
           f"no codec that pays reaches {min_agreement:.0%} top-1 agreement")
    return CodecChoice("none", raw, saved, measured, why)
