"""The Profile: what planning needs to know about one model on one fleet, as plain data.

A profile is measured once (slow: it runs the model) and planned from many times (fast: it is
only numbers), so it saves to JSON and loads back without torch being involved. The plan JSON is
this same document plus placement, predicted cost and alternatives, so any plan can be re-checked
from its own file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeweave.errors import ProfileError
from edgeweave.topology import serialize_ms, transfer_ms
from edgeweave.topology.link import ByteCount


class NodeCost(BaseModel):
    """One operator: its size and what it costs on each tier of the fleet."""

    model_config = ConfigDict(extra="allow")

    name: str
    op: str
    flops: int = Field(ge=0)
    param_bytes: int = Field(ge=0)
    out_bytes: int = Field(ge=0)
    latency_ms: dict[str, float]
    energy_j: dict[str, float]


class LinkSpec(BaseModel):
    """One hop between consecutive tiers, as the cost model sees it."""

    mbps: float = Field(gt=0)
    rtt_ms: float = Field(ge=0)

    def serialize_ms(self, nbytes: ByteCount) -> ByteCount:
        return serialize_ms(nbytes, self.mbps)

    def transfer_ms(self, nbytes: ByteCount) -> ByteCount:
        return transfer_ms(nbytes, self.mbps, self.rtt_ms)


class DevicePower(BaseModel):
    """The end device's power draw, which the energy objective charges (Neurosurgeon's choice:
    the battery that matters is the device's)."""

    compute_w: float = Field(ge=0)
    idle_w: float = Field(ge=0)
    tx_w: float = Field(ge=0)
    rx_w: float = Field(ge=0)


class Profile(BaseModel):
    """Per-node latency and energy on each tier, plus the links between the tiers."""

    model_config = ConfigDict(extra="allow")

    model: str
    fleet: str
    input_bytes: int = Field(ge=0)
    tiers: list[str]
    tier_nodes: dict[str, str] = Field(default_factory=dict)
    nodes: list[NodeCost]
    edges: list[tuple[str, str]]
    output: str | list[str]
    links: dict[str, LinkSpec]
    device_power: DevicePower
    inputs: list[str] = Field(default_factory=list)

    @property
    def outputs(self) -> list[str]:
        return [self.output] if isinstance(self.output, str) else list(self.output)

    def hop_names(self) -> list[str]:
        return [f"{a}-{b}" for a, b in zip(self.tiers, self.tiers[1:], strict=False)]

    def hop_links(self) -> list[LinkSpec]:
        return [self.links[h] for h in self.hop_names()]

    def digest(self) -> str:
        """Short content hash, so a plan records exactly which profile produced it."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def with_link(
        self, hop: str, mbps: float | None = None, rtt_ms: float | None = None
    ) -> Profile:
        """A copy with one hop's bandwidth or RTT replaced: a bandwidth sweep re-plans without
        re-measuring, because link costs are not baked into the node costs."""
        if hop not in self.links:
            raise ProfileError(f"profile has no hop {hop!r} (hops: {', '.join(self.links)})")
        old = self.links[hop]
        links = dict(self.links)
        links[hop] = LinkSpec(
            mbps=old.mbps if mbps is None else mbps,
            rtt_ms=old.rtt_ms if rtt_ms is None else rtt_ms,
        )
        return self.model_copy(update={"links": links})

    def with_load(self, factors: dict[str, float]) -> Profile:
        """A copy with each tier's node latencies scaled by its load factor (Neurosurgeon's K,
        see `edgeweave.runtime.load`): re-planning for busy or throttled machines without
        re-measuring them."""
        unknown = sorted(set(factors) - set(self.tiers))
        if unknown:
            raise ProfileError(f"load factors for unknown tiers {unknown} "
                               f"(tiers: {', '.join(self.tiers)})")
        if not factors:
            return self
        nodes = [n.model_copy(update={"latency_ms": {
            t: ms * factors.get(t, 1.0) for t, ms in n.latency_ms.items()}}) for n in self.nodes]
        return self.model_copy(update={"nodes": nodes})

    def check(self, source: str = "profile") -> Profile:
        """Cross-field consistency that pydantic field types cannot express."""
        names = {n.name for n in self.nodes}
        if len(names) != len(self.nodes):
            raise ProfileError(f"{source}: nodes: duplicate node names")
        for i, (a, b) in enumerate(self.edges):
            for end, field in ((a, 0), (b, 1)):
                if end not in names:
                    raise ProfileError(f"{source}: edges[{i}][{field}]: unknown node {end!r}")
        for o in self.outputs:
            if o not in names:
                raise ProfileError(f"{source}: output: unknown node {o!r}")
        for n in self.nodes:
            missing = [t for t in self.tiers if t not in n.latency_ms]
            if missing:
                raise ProfileError(
                    f"{source}: nodes[{n.name}].latency_ms: missing tiers {missing}"
                )
        for h in self.hop_names():
            if h not in self.links:
                raise ProfileError(f"{source}: links: missing hop {h!r}")
        return self

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def load_profile(path: str | Path) -> Profile:
    """Read a profile (or a plan: a plan JSON is a profile plus more) saved by `save`."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{p}: no such profile file") from None
    except IsADirectoryError:
        raise ProfileError(f"{p}: is a directory, expected a profile JSON file") from None
    except OSError as e:
        raise ProfileError(f"{p}: cannot read profile file ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ProfileError(f"{p}: not a text file (expected profile JSON)") from None
    except json.JSONDecodeError as e:
        raise ProfileError(f"{p}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{p}: expected a JSON object at the top level")
    for key in ("placement", "predicted", "alternatives"):
        raw.pop(key, None)
    try:
        prof = Profile.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise ProfileError(f"{p}: {loc}: {err['msg']}") from None
    return prof.check(str(p))
