"""A network link between two fleet nodes and the one cost model for moving bytes across it.

Planners, simulators and reports all price a transfer with :func:`transfer_ms`, so they cannot
disagree about what a hop costs; a link with a bandwidth trace replays it through ``mbps_at``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgeweave.errors import FleetError
from edgeweave.topology.trace import BandwidthTrace, load_trace

if TYPE_CHECKING:
    import numpy as np

# one byte count, or an array of them: the planner prices many placements at once
ByteCount = TypeVar("ByteCount", float, "np.ndarray")


class Link(BaseModel):
    """A network link; bandwidth is used for transfers in either direction.

    Co-inference ships activations upward and only a small result back, so the uplink figure
    (what the fleet files record) is the one that matters. With a ``trace``, ``mbps`` is the
    nominal bandwidth (it defaults to the trace's time-weighted mean) and ``mbps_at`` replays the
    trace.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    src: str = Field(alias="from", min_length=1)
    dst: str = Field(alias="to", min_length=1)
    mbps: float = Field(gt=0)
    rtt_ms: float = Field(ge=0)
    trace: BandwidthTrace | None = None

    @model_validator(mode="before")
    @classmethod
    def _mbps_from_trace(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or "mbps" in data:
            return data
        trace = data.get("trace")
        if isinstance(trace, str | Path):
            try:
                trace = load_trace(trace)
            except FleetError:
                # The ``trace`` field validator re-reads the file and reports the problem under
                # ``links[i].trace``; a placeholder mbps keeps a bogus "mbps missing" out of it.
                return {**data, "mbps": 1.0}
        if isinstance(trace, BandwidthTrace):
            return {**data, "trace": trace, "mbps": trace.mean_mbps}
        return data

    @field_validator("trace", mode="before")
    @classmethod
    def _load_trace_file(cls, value: Any) -> Any:
        # A path is read here so that a bad CSV is reported under this link's field path.
        if isinstance(value, str | Path):
            try:
                return load_trace(value)
            except FleetError as exc:
                raise ValueError(str(exc)) from None
        return value

    def joins(self, a: str, b: str) -> bool:
        """True if this link connects ``a`` and ``b`` (in either direction)."""
        return {self.src, self.dst} == {a, b}

    def other_end(self, name: str) -> str:
        """The node at the far end of this link from ``name``."""
        return self.dst if name == self.src else self.src

    def mbps_at(self, t: float) -> float:
        """Bandwidth at time ``t`` seconds: the trace if the link has one, else ``mbps``."""
        return self.trace.mbps_at(t) if self.trace is not None else self.mbps

    def transfer_ms(self, nbytes: float, mbps: float | None = None) -> float:
        """Milliseconds to ship ``nbytes`` across this link: half an RTT plus serialisation.

        This is the single definition of transfer time in EdgeWeave; planners, simulators and
        reports all call it so they cannot disagree. ``mbps`` overrides the link's nominal
        bandwidth (e.g. with ``mbps_at(t)``).
        """
        rate = self.mbps if mbps is None else mbps
        if rate <= 0:
            raise FleetError(f"link {self.src}-{self.dst}: mbps must be > 0, got {rate}")
        if nbytes < 0:
            raise FleetError(f"link {self.src}-{self.dst}: nbytes must be >= 0, got {nbytes}")
        return transfer_ms(nbytes, rate, self.rtt_ms)


def serialize_ms(nbytes: ByteCount, mbps: float | ByteCount) -> ByteCount:
    """Milliseconds a link is busy pushing ``nbytes`` at ``mbps`` (what caps a pipeline's rate;
    propagation delay does not)."""
    return nbytes * 8 / (mbps * 1000)


def transfer_ms(nbytes: ByteCount, mbps: float, rtt_ms: float) -> ByteCount:
    """Per-hop transfer cost of the co-inference cost model: rtt/2 + bytes*8/(mbps*1000) ms."""
    return rtt_ms / 2 + serialize_ms(nbytes, mbps)
