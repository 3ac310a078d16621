"""What a served model may do (its batching knobs and limits) and what the node allows.

A device deploys a model with the knobs of Triton's dynamic batcher: the largest batch, how long
the first request of a batch may wait for others (max queue delay), the batch sizes to prefer,
and its own queue bound; plus its latency objective (Clipper's SLO, the target of the adaptive
batch size) and whether the batch size adapts. The node's operator bounds every knob (a device
is a peer: its numbers are claims), and `resolve` checks a model's knobs against those bounds,
naming the field and the range on a bad value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from edgeweave.errors import ServeError

#: Scheduling policies: earliest deadline first (sheds what cannot be served in time), or
#: first come first served without deadlines (the node as it was before batching).
POLICIES = ("edf", "fifo")
MAX_DELAY_MS = 1000.0  # the longest a request may wait for its batch to fill, on any node
MAX_SLO_MS = 3_600_000.0
MAX_PREFERRED = 16
MAX_PRIORITY = 9  # priorities 0 (default) to 9 (most important)


@dataclass(frozen=True)
class NodeServing:
    """Node-wide serving settings (the operator's, from `edgeweave serve`)."""

    policy: str = "edf"
    workers: int = 4  # batches computing at once
    max_batch: int = 8  # the largest batch any model may ask for (and the default)
    max_queue: int = 16  # requests waiting, node-wide (each model's queue is at most this)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ServeError(f"--policy {self.policy!r}: expected one of {', '.join(POLICIES)}")
        for name, low in (("workers", 1), ("max_batch", 1), ("max_queue", 0)):
            if int(getattr(self, name)) < low:
                raise ServeError(f"--{name.replace('_', '-')} {getattr(self, name)}: expected "
                                 f"at least {low}")


@dataclass(frozen=True)
class ServingConfig:
    """One served model's knobs; 0 (or empty) means "the node's default"."""

    max_batch: int = 0
    max_delay_ms: float = 0.0
    preferred_batch: tuple[int, ...] = field(default=())
    max_queue: int = 0
    slo_ms: float = 0.0  # latency objective: AIMD's target; SLO of requests without a deadline
    adaptive: bool = False  # AIMD on the batch size against slo_ms (Clipper)

    def describe(self) -> str:
        pref = ",".join(map(str, self.preferred_batch)) or "-"
        return (f"max batch {self.max_batch}, max delay {self.max_delay_ms:g} ms, preferred "
                f"{pref}, queue {self.max_queue}, SLO {self.slo_ms:g} ms"
                + (", adaptive" if self.adaptive else ""))


def resolve(cfg: ServingConfig, node: NodeServing, batchable: bool = True) -> ServingConfig:
    """`cfg` with the node's defaults filled in, every knob checked against the node's bounds
    (ServeError naming the field); a model that cannot batch gets max batch 1."""
    where = "serving config"
    node_batch = node.max_batch if batchable else 1
    _in_range(f"{where} max_batch", cfg.max_batch, 0, node.max_batch, "the node's --max-batch")
    _in_range(f"{where} max_queue", cfg.max_queue, 0, node.max_queue, "the node's --max-queue")
    _finite(f"{where} max_delay_ms", cfg.max_delay_ms, MAX_DELAY_MS)
    _finite(f"{where} slo_ms", cfg.slo_ms, MAX_SLO_MS)
    if cfg.adaptive and cfg.slo_ms <= 0:
        raise ServeError(f"{where}: adaptive batching needs slo_ms (the latency objective the "
                         f"batch size adapts to)")
    max_batch = min(cfg.max_batch or node.max_batch, node_batch)
    if len(cfg.preferred_batch) > MAX_PREFERRED:
        raise ServeError(f"{where} preferred_batch: at most {MAX_PREFERRED} sizes, got "
                         f"{len(cfg.preferred_batch)}")
    for size in cfg.preferred_batch:
        _in_range(f"{where} preferred_batch", size, 1, cfg.max_batch or node.max_batch,
                  "max_batch")
    preferred = tuple(sorted({s for s in cfg.preferred_batch if s <= max_batch}))
    return replace(cfg, max_batch=max_batch, preferred_batch=preferred,
                   max_queue=cfg.max_queue or node.max_queue)


def check_priority(priority: int) -> int:
    if not 0 <= priority <= MAX_PRIORITY:
        raise ServeError(f"priority {priority}: expected 0 (default) to {MAX_PRIORITY}")
    return priority


def _in_range(name: str, value: int, low: int, high: int, bound: str) -> None:
    if not low <= value <= high:
        raise ServeError(f"{name} {value}: expected {low} to {high} ({bound})")


def _finite(name: str, value: float, high: float) -> None:
    if not (math.isfinite(value) and 0 <= value <= high):
        raise ServeError(f"{name} {value!r}: expected a number of ms from 0 to {high:g}")
