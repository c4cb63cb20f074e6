"""The job config: one YAML file validated once into typed models, then passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, ValidationError

from nasfleet.errors import NasfleetError
from nasfleet.supernet import MBConvSpaceConfig, SpaceConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    dataset: Literal["digits", "mnist"] = "digits"
    path: Path | None = None
    """Folder with the MNIST IDX files (``train-images-idx3-ubyte[.gz]`` ...); for ``mnist`` only."""
    batch_size: PositiveInt = 64
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    split_seed: int = 0


class StrategyConfig(_Strict):
    name: str = "sandwich"
    params: dict[str, Any] = Field(default_factory=dict)


class OptimConfig(_Strict):
    steps: PositiveInt = 1000
    lr: PositiveFloat = 0.05
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-5, ge=0)
    warmup_steps: NonNegativeInt = 50


class EvalConfig(_Strict):
    calibration_batches: PositiveInt = 8
    random_subnets: NonNegativeInt = 3


class TrainConfig(_Strict):
    run_dir: Path = Path("runs/demo")
    seed: int = 0
    space: SpaceConfig = Field(default_factory=MBConvSpaceConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint_every_steps: PositiveInt = 200
    log_every_steps: PositiveInt = 25


def config_from_dict(data: Any, source: str = "config") -> TrainConfig:
    if not isinstance(data, dict):
        raise NasfleetError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise NasfleetError(f"{source}: {where}: {err['msg']}") from None


def load_config(path: Path) -> TrainConfig:
    if not path.is_file():
        raise NasfleetError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise NasfleetError(f"config file {path} is not valid YAML{where}: {problem}") from None
    return config_from_dict(data, str(path))


def dump_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
