"""Emulated edge hardware in the serving benchmark (`serving.py --dilation`): which model's
serving is stretched by time dilation (`edgeweave.runtime.dilation`), on every system alike, and
the sentence every table and the JSON carry about it."""

from __future__ import annotations


def dilations(text: str, models: list[str]) -> dict[str, float]:
    """`--dilation`: one factor for every model, or `model=factor,...` (the rest at 1)."""
    out = dict.fromkeys(models, 1.0)
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, value = part.rpartition("=")
        try:
            factor = float(value)
        except ValueError:
            factor = float("nan")
        if not 1.0 <= factor <= 100.0 or (name and name not in out):
            raise SystemExit(f"--dilation {part!r}: expected FACTOR or MODEL=FACTOR with a "
                             f"model of --models ({', '.join(models)}) and FACTOR in 1..100")
        for m in [name] if name else models:
            out[m] = factor
    return out


def dilation_note(factor: dict[str, float]) -> str:
    """What hardware the edge emulates, said in every table and the JSON."""
    slow = {m: f for m, f in factor.items() if f > 1.0}
    if not slow:
        return "time dilation x1 (none): the edge runs at this host's speed"
    said = ", ".join(f"{m} x{f:g}" for m, f in slow.items())
    return (f"TIME DILATION {said}: the edge serving that model emulates hardware that many "
            "times slower than this host (each batch's compute stretched, on every system "
            "alike); the others run at this host's speed")
