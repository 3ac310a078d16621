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

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgeweave.topology.error_paths import field_path
from edgeweave.train.types import FitConfig, TrainError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    """``dataset`` and ``partition`` are the names :func:`edgeweave.train.data.make_task` takes
    (digits, synthetic:ALPHA,BETA, npz:PATH, folder:DIR, mnist:DIR, cifar10:DIR; iid,
    dirichlet:ALPHA, shards[:K], unbalanced:SIGMA, natural)."""

    dataset: str = "digits"
    partition: str = "iid"
    clients: int = Field(10, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


class StrategyConfig(_Strict):
    name: str = "fedavg"
    fraction: float = Field(1.0, gt=0, le=1)
    min_clients: int = Field(1, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)


class FitSection(_Strict):
    lr: float = Field(0.1, gt=0)
    batch_size: int = Field(16, ge=1)
    epochs: int = Field(1, ge=1)
    local_steps: int | None = Field(None, ge=1)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)

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


class ExperimentConfig(_Strict):
    name: str = "experiment"
    seed: int = 0
    model: str = "mlp:64,64,10"
    data: DataConfig = Field(default_factory=DataConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    fit: FitSection = Field(default_factory=FitSection)
    rounds: int = Field(10, ge=1)
    # grpc is not here: its clients are real processes, started by `edgeweave fl-server`
    backend: Literal["sequential", "vectorized", "ray"] = "sequential"
    dropout: float = Field(0.0, ge=0, lt=1)
    deadline_s: float | None = Field(None, gt=0)
    over_select: float = Field(1.0, ge=1)
    speeds: SpeedConfig | None = None
    codec: str | None = None
    eval_every: int = Field(1, ge=1)
    checkpoint_every: int = Field(1, ge=1)
    out_dir: Path | None = None
    plot: bool = True


def _describe(err: dict[str, Any]) -> str:
    if err.get("type") == "missing":
        return "missing (this field is required)"
    if err.get("type") == "extra_forbidden":
        return "unexpected field (check the spelling)"
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{msg}, got {err.get('input')!r}"


def parse_config(raw: Any, source: str = "<config>") -> ExperimentConfig:
    """Validate a mapping (parsed YAML); errors say ``source: field.path: problem``."""
    if not isinstance(raw, dict):
        raise TrainError(f"{source}: expected a mapping of experiment fields at the top level, "
                         f"got {type(raw).__name__}")
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        problems = [f"{field_path(err['loc'])}: {_describe(err)}" for err in e.errors()]
        raise TrainError(f"{source}: " + "; ".join(problems)) from None
    _check_names(cfg, source)
    return cfg


def _check_names(cfg: ExperimentConfig, source: str) -> None:
    """Resolve the strategy and model names now, so a typo fails before any data loads."""
    from edgeweave.train.models import build_model

    for fld, check in (("strategy", lambda: build_strategy(cfg)),
                       ("model", lambda: build_model(cfg.model))):
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
    from edgeweave.train.strategies import get_strategy

    return get_strategy(cfg.strategy.name, fraction=cfg.strategy.fraction,
                        min_clients=cfg.strategy.min_clients,
                        fit=cfg.fit.to_fit_config(cfg.seed), **cfg.strategy.params)
