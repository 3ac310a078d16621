"""A federated experiment as one YAML file, validated before anything trains.

    model: mlp:64,64,10
    data: {dataset: digits, partition: iid, clients: 20}
    strategy: {name: fedavg, fraction: 0.5}
    fit: {lr: 0.1, batch_size: 16, epochs: 1}
    rounds: 30

Everything a run depends on is in the file (seed included), so the file plus the package version
reproduce the run; the file is copied beside the results. Errors name the file and the field
path (``digits.yaml: strategy.params.eta: ...``) because users edit these by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgeweave.topology.error_paths import describe_error, field_path
from edgeweave.train.claims import DEFAULT_MAX_CLIENT_EXAMPLES
from edgeweave.train.control_config import (
    AdaptiveFrequencySection,
    FedCSSection,
    FleetSection,
    HierarchySection,
    control_problem,
)
from edgeweave.train.types import FitConfig, TrainError

if TYPE_CHECKING:
    from edgeweave.train.strategies.base import Strategy


class _Strict(BaseModel):
    # NaN and inf are refused in every number field: NaN passes no comparison, so `gt=0` alone
    # would let a `deadline_s: .nan` through to spin a wait loop
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DataConfig(_Strict):
    """``dataset`` and ``partition`` are the names :func:`edgeweave.train.data.make_task` takes
    (digits, synthetic:ALPHA,BETA, npz:PATH, folder:DIR, mnist:DIR, cifar10:DIR; iid,
    dirichlet:ALPHA, shards[:K], unbalanced:SIGMA, natural)."""

    dataset: str = "digits"
    partition: str = "iid"
    clients: int = Field(default=10, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


class StrategyConfig(_Strict):
    name: str = "fedavg"
    fraction: float = Field(default=1.0, gt=0, le=1)
    min_clients: int = Field(default=1, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)


class FitSection(_Strict):
    lr: float = Field(default=0.1, gt=0)
    batch_size: int = Field(default=16, ge=1)
    epochs: int = Field(default=1, ge=1)
    local_steps: int | None = Field(default=None, ge=1)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)

    def to_fit_config(self, seed: int) -> FitConfig:
        return FitConfig(lr=self.lr, batch_size=self.batch_size, epochs=self.epochs,
                         local_steps=self.local_steps, momentum=self.momentum,
                         weight_decay=self.weight_decay, seed=seed)


class SpeedConfig(_Strict):
    """Heterogeneous devices: each client's seconds per local epoch and per upload are drawn
    uniformly from these [low, high] ranges (with the experiment's seed); deadlines and
    over-selection act on these simulated times."""

    compute_s_per_epoch: tuple[float, float] = (0.0, 0.0)
    upload_s: tuple[float, float] = (0.0, 0.0)

    @field_validator("compute_s_per_epoch", "upload_s")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1]:
            raise ValueError(f"must be [low, high] with 0 <= low <= high, got {list(v)}")
        return v


class DPFedAvgConfig(_Strict):
    """User-level DP-FedAvg (McMahan et al. 2018) around the strategy: Poisson client sampling
    at ``sample_rate``, each update clipped to ``clip``, Gaussian noise ``noise_multiplier *
    clip`` on the sum. Give ``target_epsilon`` instead of ``noise_multiplier`` to have the noise
    chosen (Opacus's accountant) so that ``rounds`` rounds spend exactly that budget."""

    clip: float = Field(default=1.0, gt=0)
    noise_multiplier: float | None = Field(default=None, ge=0)
    target_epsilon: float | None = Field(default=None, gt=0)
    delta: float = Field(default=1e-5, gt=0, lt=1)
    sample_rate: float = Field(default=0.1, gt=0, le=1)
    server_lr: float = Field(default=1.0, gt=0)


class LocalDPConfig(_Strict):
    """Example-level DP-SGD on every client through Opacus (per-sample clipping + noise)."""

    noise_multiplier: float = Field(default=1.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    delta: float = Field(default=1e-5, gt=0, lt=1)


class PrivacyConfig(_Strict):
    dp_fedavg: DPFedAvgConfig | None = None
    local_dp: LocalDPConfig | None = None


class SecureAggregationConfig(_Strict):
    """Bonawitz et al. secure aggregation: the server sees only the sum. ``k`` neighbours per
    client (Bell et al. 2020) instead of all pairs; ``dropout`` simulates clients vanishing after
    they shared their keys."""

    clip: float = Field(default=1.0, gt=0)
    ring_bits: Literal[32, 64] = 32
    k: int | None = Field(default=None, ge=1)
    threshold_frac: float = Field(default=0.5, gt=0, lt=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    # against a server that may lie: signed keys + the ConsistencyCheck round (needs t > n/2)
    active: bool = False


class AttackConfig(_Strict):
    """Byzantine clients (a fixed ``fraction`` of them, drawn from the seed) corrupt their
    updates: sign_flip, scaled or noise; robustness comes from the strategy (fedmedian,
    trimmed_mean, krum, norm_bound)."""

    kind: Literal["none", "sign_flip", "scaled", "noise"] = "sign_flip"
    fraction: float = Field(default=0.1, ge=0, lt=1)
    scale: float | None = Field(default=None, gt=0)
    noise_std: float = Field(default=1.0, gt=0)


class ExperimentConfig(_Strict):
    name: str = "experiment"
    seed: int = 0
    model: str = "mlp:64,64,10"
    data: DataConfig = Field(default_factory=DataConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    fit: FitSection = Field(default_factory=FitSection)
    rounds: int = Field(default=10, ge=1)
    # grpc is not here: its clients are real processes, started by `edgeweave fl server`
    backend: Literal["sequential", "vectorized", "ray"] = "sequential"
    dropout: float = Field(default=0.0, ge=0, lt=1)
    deadline_s: float | None = Field(default=None, gt=0)
    over_select: float = Field(default=1.0, ge=1)
    speeds: SpeedConfig | None = None
    # backend ray: the cluster to join ("auto", "HOST:6379", "ray://HOST:10001"); None = local
    ray_address: str | None = Field(default=None, min_length=1)
    codec: str | None = None
    up_codec: str | None = None
    down_codec: str | None = None
    privacy: PrivacyConfig | None = None
    secure_aggregation: SecureAggregationConfig | None = None
    attack: AttackConfig | None = None
    eval_every: int = Field(default=1, ge=1)
    checkpoint_every: int = Field(default=1, ge=1)
    out_dir: Path | None = None
    plot: bool = True
    # the most examples one client's update may claim (edgeweave.train.claims)
    max_client_examples: int = Field(default=DEFAULT_MAX_CLIENT_EXAMPLES, ge=1)
    # the control algorithms and the fleet they read (edgeweave.train.control_config)
    fleet: FleetSection | None = None
    fedcs: FedCSSection | None = None
    adaptive_frequency: AdaptiveFrequencySection | None = None
    hierarchy: HierarchySection | None = None


def parse_config(raw: Any, source: str = "<config>") -> ExperimentConfig:
    """Validate a mapping (parsed YAML); errors say ``source: field.path: problem``."""
    if not isinstance(raw, dict):
        raise TrainError(f"{source}: expected a mapping of experiment fields at the top level, "
                         f"got {type(raw).__name__}")
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        problems = [f"{field_path(err['loc'])}: {describe_error(err)}" for err in e.errors()]
        raise TrainError(f"{source}: " + "; ".join(problems)) from None
    problem = control_problem(cfg)
    if problem is not None:
        raise TrainError(f"{source}: {problem}")
    _check_names(cfg, source)
    return cfg


def _check_names(cfg: ExperimentConfig, source: str) -> None:
    """Resolve the strategy and model names now, so a typo fails before any data loads."""
    from edgeweave.train.compress import make_compressor
    from edgeweave.train.models import build_model

    checks: list[tuple[str, Callable[[], object]]] = [
        ("strategy", lambda: build_strategy(cfg)), ("model", lambda: build_model(cfg.model))]
    if cfg.fleet is not None:  # the file loads, and in a hierarchy every device has an edge
        from edgeweave.train.control.from_config import hierarchy_groups

        checks.append(("fleet", lambda: hierarchy_groups(cfg)))
    for fld in ("up_codec", "down_codec"):
        spec = getattr(cfg, fld)
        if spec is not None:
            checks.append((fld, partial(make_compressor, spec, fld)))
    for fld, check in checks:
        try:
            check()
        except TrainError as e:
            raise TrainError(f"{source}: {fld}: {e}") from None


def read_config_yaml(path: str | Path) -> Any:
    """The experiment file's raw YAML, with read and syntax errors naming the file."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise TrainError(f"{path}: cannot read experiment config ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise TrainError(f"{path}: not valid YAML ({e})") from None


def load_config(path: str | Path) -> ExperimentConfig:
    return parse_config(read_config_yaml(path), str(path))


def build_strategy(cfg: ExperimentConfig):
    """The configured strategy, with secure aggregation and DP-FedAvg around it when asked, and
    FedCS or adaptive frequency around that (in a hierarchy: the edges' strategy)."""
    from edgeweave.train.control.from_config import with_control

    return with_control(cfg, _base_strategy(cfg))


def _base_strategy(cfg: ExperimentConfig) -> Strategy:
    from edgeweave.train.strategies import get_strategy

    fit = cfg.fit.to_fit_config(cfg.seed)
    sa = cfg.secure_aggregation
    strategy: Strategy
    if sa is not None:
        if cfg.strategy.name.strip().lower() != "fedavg" or cfg.strategy.params:
            raise TrainError("secure_aggregation: the server sees only the sum, so it works "
                             f"with strategy fedavg (no params), not {cfg.strategy.name!r}")
        from edgeweave.train.secagg import SecAggFedAvg

        strategy = SecAggFedAvg(cfg.strategy.fraction, cfg.strategy.min_clients, fit,
                                clip=sa.clip, ring_bits=sa.ring_bits, dropout=sa.dropout,
                                k=sa.k, threshold_frac=sa.threshold_frac, seed=cfg.seed,
                                active=sa.active)
    else:
        strategy = get_strategy(cfg.strategy.name, fraction=cfg.strategy.fraction,
                                min_clients=cfg.strategy.min_clients, fit=fit,
                                **cfg.strategy.params)
    local = cfg.privacy.local_dp if cfg.privacy is not None else None
    if local is not None:  # the clients' own epsilons reach the metrics line
        from edgeweave.train.privacy import ClientPrivacyReport

        strategy = ClientPrivacyReport(strategy, local.delta)
    dp = cfg.privacy.dp_fedavg if cfg.privacy is not None else None
    if dp is None:
        return strategy
    if sa is not None:
        raise TrainError("privacy.dp_fedavg and secure_aggregation cannot be combined yet: "
                         "DP-FedAvg clips each update, which the secure sum hides")
    from edgeweave.train.privacy import DPFedAvg, noise_for_epsilon

    if (dp.noise_multiplier is None) == (dp.target_epsilon is None):
        raise TrainError("privacy.dp_fedavg: give exactly one of noise_multiplier and "
                         "target_epsilon")
    sigma = dp.noise_multiplier
    if sigma is None:
        assert dp.target_epsilon is not None
        sigma = noise_for_epsilon(dp.target_epsilon, dp.delta, dp.sample_rate, cfg.rounds)
    return DPFedAvg(strategy, clip=dp.clip, noise_multiplier=sigma,
                    sample_rate=dp.sample_rate, delta=dp.delta, server_lr=dp.server_lr,
                    seed=cfg.seed)
