"""A simulation scenario as one YAML file: a Fleet plus who lives on it and what they run.

    name: campus
    fleet: campus-fleet.yaml            # a Fleet file, a built-in fleet name, or inline
    duration_s: 1800
    access_points:                      # each wired to one of the fleet's edge servers
      - {name: ap-library, edge: edge-a, mbps: 54, rtt_ms: 5}
    places:                             # EdgeCloudSim's nomadic model
      - {name: library, access_point: ap-library, attractiveness: 3, dwell_s: 900}
    populations:
      - {name: phones, count: 1000, hardware: {phone: 0.7, rpi4: 0.3}, applications: detect}
    applications:
      - {name: detect, plan: alexnet-plan.json, active_s: 40, idle_s: 20, interval_s: 5,
         deadline_ms: 500}
    policy: edgeweave

Paths (fleet, plans, traces, the training experiment) are relative to the scenario file.
Everything is resolved and checked when the file loads, so a typo fails at once with the file
and the field path (``campus.yaml: places[2].access_point: unknown access point 'ap-lib'``),
the way fleet and experiment files report theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edgeweave.errors import EdgeWeaveError, SimError
from edgeweave.sim.apps import AppPlan, load_app_plan, parse_app_plan
from edgeweave.topology import CATALOG, BandwidthTrace, Fleet, HardwareProfile, load_fleet
from edgeweave.topology.error_paths import describe_error, field_path
from edgeweave.topology.trace import load_trace
from edgeweave.train.config import ExperimentConfig, parse_config, read_config_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _base(info: ValidationInfo) -> Path:
    return Path((info.context or {}).get("base_dir", "."))


def _resolve(value: Any, info: ValidationInfo) -> Path:
    path = Path(value)
    return path if path.is_absolute() else _base(info) / path


class AccessPoint(_Strict):
    """A wireless cell wired to one edge server. ``shared``: the devices attached share the
    medium (one FIFO queue per direction, a Wi-Fi cell); otherwise each device gets the full
    rate on its own (a cellular bearer). ``trace`` replays a ``t_seconds,mbps`` CSV."""

    name: str = Field(min_length=1)
    edge: str = Field(min_length=1)
    mbps: float | None = Field(None, gt=0)
    rtt_ms: float = Field(5.0, ge=0)
    trace: BandwidthTrace | None = None
    downlink_mbps: float | None = Field(None, gt=0)
    shared: bool = True

    @field_validator("trace", mode="before")
    @classmethod
    def _load(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str | Path):
            try:
                return load_trace(_resolve(value, info))
            except EdgeWeaveError as e:
                raise ValueError(str(e)) from None
        return value

    @model_validator(mode="after")
    def _rate(self) -> AccessPoint:
        if self.mbps is None and self.trace is None:
            raise ValueError("give mbps or a bandwidth trace")
        return self

    @property
    def uplink_mbps(self) -> float:
        """Nominal uplink rate: ``mbps``, or the trace's time-weighted mean."""
        if self.mbps is not None:
            return self.mbps
        assert self.trace is not None
        return self.trace.mean_mbps


class Place(_Strict):
    """Where devices dwell (EdgeCloudSim's nomadic mobility): a device stays an exponential time
    of mean ``dwell_s``, then moves to another place chosen with probability proportional to
    ``attractiveness``. A place without an access point has no coverage."""

    name: str = Field(min_length=1)
    access_point: str | None = None
    attractiveness: float = Field(1.0, gt=0)
    dwell_s: float = Field(600.0, gt=0)


Mix = str | dict[str, float]


def _check_mix(value: Any) -> Any:
    if isinstance(value, Mapping):
        if not value:
            raise ValueError("an empty mix; give at least one name with a weight")
        for k, w in value.items():
            if not isinstance(w, int | float) or w < 0:
                raise ValueError(f"weight of {k!r} must be a number >= 0, got {w!r}")
        if sum(value.values()) <= 0:
            raise ValueError("weights must not all be 0")
    return value


#: how much a time varies from request to request (`sim.jitter`): a coefficient of variation
#: (a gamma around the planned time; 0: fixed), or the measured times' factors themselves
#: (any scale: one is drawn per request, scaled to mean 1), which keep a measured tail's shape
def _check_spread(value: Any) -> Any:
    what = "a coefficient of variation from 0 to 3, or a list of 2 to 10000 measured times > 0"
    if isinstance(value, bool):
        raise ValueError(f"expected {what}, got {value!r}")
    if isinstance(value, int | float):
        if not 0 <= value <= 3:
            raise ValueError(f"expected {what}, got {value!r}")
        return float(value)
    if isinstance(value, list | tuple) and 2 <= len(value) <= 10000 and all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in value):
        return [float(v) for v in value]
    shown = repr(value)
    if isinstance(value, list | tuple):
        shown = (f"a list of {len(value)}" if not 2 <= len(value) <= 10000
                 else "a list with a time that is not a number > 0")
    raise ValueError(f"expected {what}, got {shown}")


Spread = Annotated[float | list[float], BeforeValidator(_check_spread)]


def mix_weights(mix: Mix) -> dict[str, float]:
    """A mix as names -> probabilities (a single name is all of it)."""
    if isinstance(mix, str):
        return {mix: 1.0}
    total = float(sum(mix.values()))
    return {k: float(w) / total for k, w in mix.items()}


class Population(_Strict):
    """``count`` devices; each draws its hardware (catalog names or the fleet's device nodes)
    and its application from the mixes, and moves among ``places`` (default: all).
    ``compute_cv``: how much a device's compute time varies from request to request (the
    coefficient of variation of a gamma around the profiled time, or measured factors;
    `Spread`, `sim.jitter`; 0: fixed); ``speed``: its compute runs at this multiple of the
    profiled speed (e.g. the inverse of a measured load factor, as a server's ``speed``)."""

    name: str = Field(min_length=1)
    count: int = Field(ge=0)
    hardware: Mix
    applications: Mix
    places: list[str] | None = None
    compute_cv: Spread = 0.0
    speed: float = Field(1.0, gt=0)

    @field_validator("hardware", "applications", mode="before")
    @classmethod
    def _mix(cls, value: Any) -> Any:
        return _check_mix(value)


class Application(_Strict):
    """Requests of one model from devices that alternate active and idle periods
    (exponential, means ``active_s`` and ``idle_s``) and send a request every ``interval_s``
    on average (Poisson) while active (EdgeCloudSim's application model). ``plan`` is what
    the planner wrote for it: a Plan JSON (`edgeweave plan --json`, a multi-device partition
    included), an Edgent record (`edgeweave adapt edgent --json`) or a model selection record
    (`edgeweave adapt select --json`); see `sim.apps`. ``input_bytes`` overrides what the input
    weighs on the wire. ``in_flight``: how many of a device's requests may be under way at
    once (1, the default, is the runtime's client, which answers one request before it sends
    the next: later requests wait on the device, and that wait counts in their service time;
    null: no limit, each request goes out when it is issued)."""

    name: str = Field(min_length=1)
    plan: AppPlan
    active_s: float = Field(40.0, gt=0)
    idle_s: float = Field(20.0, ge=0)
    interval_s: float = Field(5.0, gt=0)
    deadline_ms: float | None = Field(None, gt=0)
    input_bytes: int | None = Field(None, ge=0)
    in_flight: int | None = Field(1, ge=1)
    overhead_ms: float = Field(0.0, ge=0)
    overhead_cv: Spread = 0.0

    @field_validator("plan", mode="before")
    @classmethod
    def _load(cls, value: Any, info: ValidationInfo) -> Any:
        try:
            if isinstance(value, str | Path):
                return load_app_plan(_resolve(value, info))
            return parse_app_plan(value)
        except EdgeWeaveError as e:
            raise ValueError(str(e)) from None


class ServerSpec(_Strict):
    """Overrides for a tier's or a node's servers: ``cores`` (default: its hardware's),
    admission ``slots`` and ``queue`` (default: the runtime server's), the discipline, and
    ``speed``: the fraction of its hardware's speed the node really computes at (a machine
    shared with other work, or throttled; the runtime's load factor is 1 / speed).
    ``service_cv``: how much a stage's compute varies from request to request (the coefficient
    of variation of a gamma around its time, or measured factors; `Spread`, `sim.jitter`; 0:
    every request takes exactly the planned time, which understates queueing and tails)."""

    cores: int | None = Field(None, ge=1)
    speed: float = Field(1.0, gt=0)
    service_cv: Spread = 0.0
    slots: int | None = Field(None, ge=1)
    queue: int | None = Field(None, ge=0)
    discipline: Literal["ps", "batch"] = "ps"
    max_batch: int = Field(8, ge=1)
    max_delay_ms: float = Field(5.0, ge=0)
    marginal: float = Field(0.25, ge=0, le=1)


class PolicySpec(_Strict):
    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class HierarchicalSpec(_Strict):
    edge_rounds: int = Field(1, ge=1)


_INLINE = "<inline>"


class TrainingSpec(_Strict):
    """A federated experiment (an experiment YAML file or its fields inline, as `edgeweave
    train` reads them) trained on the scenario's devices: client i is the i-th device of
    ``population`` (default: all devices in order); rounds run in simulated time from
    ``start_s``. ``hierarchical`` aggregates at the clients' edges first (HierFAVG).
    ``target_accuracy`` is what time-to-accuracy is measured to."""

    experiment: ExperimentConfig
    population: str | None = None
    start_s: float = Field(0.0, ge=0)
    hierarchical: HierarchicalSpec | None = None
    target_accuracy: float = Field(0.8, gt=0, le=1)

    @field_validator("experiment", mode="before")
    @classmethod
    def _load(cls, value: Any, info: ValidationInfo) -> Any:
        try:
            if isinstance(value, str | Path):
                path = _resolve(value, info)
                return parse_config(read_config_yaml(path), str(path))
            if isinstance(value, Mapping):
                return parse_config(dict(value), _INLINE)
        except EdgeWeaveError as e:
            raise ValueError(str(e).removeprefix(f"{_INLINE}: ")) from None
        return value


class Scenario(_Strict):
    name: str = "scenario"
    seed: int = 0
    duration_s: float = Field(gt=0)
    fleet: Fleet
    access_points: list[AccessPoint] = Field(min_length=1)
    places: list[Place] = Field(min_length=1)
    populations: list[Population] = Field(min_length=1)
    applications: list[Application] = Field(min_length=1)
    policy: PolicySpec = PolicySpec(name="edgeweave")
    servers: dict[str, ServerSpec] = Field(default_factory=dict)
    link_buffer_ms: float | None = Field(2000.0, gt=0)
    training: TrainingSpec | None = None
    source: str | None = None

    @field_validator("fleet", mode="before")
    @classmethod
    def _load_fleet(cls, value: Any, info: ValidationInfo) -> Any:
        try:
            if isinstance(value, str):
                path = _resolve(value, info)
                return load_fleet(path if path.is_file() else value)
            if isinstance(value, Mapping):
                return Fleet.from_dict(value, source="fleet", base_dir=_base(info))
        except EdgeWeaveError as e:
            raise ValueError(str(e)) from None
        return value

    @field_validator("policy", mode="before")
    @classmethod
    def _policy_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @property
    def devices(self) -> int:
        return sum(p.count for p in self.populations)

    def with_devices(self, n: int) -> Scenario:
        """The same scenario with ``n`` devices, split over the populations in proportion to
        their counts (what a sweep over fleet sizes varies)."""
        if n < 0:
            raise SimError(f"devices must be >= 0, got {n}")
        total = self.devices or 1
        counts = [p.count * n // total for p in self.populations]
        counts[0] += n - sum(counts)  # the rounding remainder goes to the first population
        pops = [p.model_copy(update={"count": c})
                for p, c in zip(self.populations, counts, strict=True)]
        return self.model_copy(update={"populations": pops})

    def with_policy(self, name: str, **params: Any) -> Scenario:
        return self.model_copy(update={"policy": PolicySpec(name=name, params=params)})

    def hardware(self, name: str) -> HardwareProfile:
        """A population's hardware name: a device node of the fleet, else a catalog entry."""
        for node in self.fleet.nodes_in("device"):
            if node.name == name:
                return node.hardware
        return CATALOG[name]


def parse_scenario(raw: Any, source: str = "<scenario>", base_dir: Path | None = None
                   ) -> Scenario:
    """Validate a parsed mapping; every problem is reported as ``source: field.path: what``."""
    if not isinstance(raw, Mapping):
        got = "an empty file" if raw is None else f"a {type(raw).__name__}"
        raise SimError(f"{source}: expected a mapping of scenario fields at the top level, "
                       f"got {got}")
    try:
        scn = Scenario.model_validate({**raw, "source": source},
                                      context={"base_dir": base_dir or Path(".")})
    except ValidationError as e:
        problems = [f"{field_path(err['loc'])}: {describe_error(err)}" for err in e.errors()]
        if len(problems) == 1:
            raise SimError(f"{source}: {problems[0]}") from None
        raise SimError(f"{source}: {len(problems)} problems:\n"
                       + "\n".join(f"  {p}" for p in problems)) from None
    from edgeweave.sim.scenario_refs import reference_problem

    problem = reference_problem(scn)
    if problem is not None:
        raise SimError(f"{source}: {problem}")
    return scn


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file (see the module doc)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SimError(f"{path}: scenario file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SimError(f"{path}: cannot read scenario file ({e})") from None
    except yaml.YAMLError as e:
        raise SimError(f"{path}: not valid YAML ({e})") from None
    return parse_scenario(raw, str(path), path.parent)
