"""Measured segments of a request named as the plan's prediction names them, so the two can
be printed side by side."""

from __future__ import annotations

from edgeweave.plan import Plan
from edgeweave.runtime.proto import edgeweave_pb2 as pb


def fill_segments(segments: dict[str, float], reply: pb.InferReply, tiers: list[str]) -> None:
    """Name each measured segment as the plan's prediction names it."""
    for k, t in enumerate(reply.timings):
        lower, tier = tiers[k], tiers[k + 1]
        segments[f"{tier}_compute"] = t.compute_ms
        segments[f"{tier}_overhead"] = t.queue_ms + t.decode_ms + t.encode_ms
        segments[f"{lower}-{tier}_downlink"] = t.downlink_ms
        if k + 2 < len(tiers) and t.forward_ms:
            segments[f"{tier}-{tiers[k + 2]}_uplink"] = t.uplink_ms


def predicted_segments(p: Plan) -> dict[str, float]:
    pred = p.predicted
    out = {"total_ms": pred["total_ms"]}
    for tier, ms in pred["tier_compute_ms"].items():
        out[f"{tier}_compute"] = ms
    for hop, v in pred["hops"].items():
        out[f"{hop}_uplink"] = v["up_ms"]
        out[f"{hop}_downlink"] = v["down_ms"]
    return out
