"""The job config: one YAML file validated once into typed models, then passed down.

A :class:`JobConfig` describes a whole training job — what to train (space, strategy,
data, optimizer, evaluation) and how to run it (``launch``: in this process, on Ray Train
workers, or as ranks of an ``mpiexec``/``torchrun`` job, with its DeepSpeed settings
inlined). The ``config.yaml`` a run writes is this model, so ``nasfleet train --config
RUN/config.yaml`` re-runs the same job, distributed runs included. Command-line flags are
shortcuts for dotted overrides (``--set optim.steps=300``), applied before validation.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SerializationInfo,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from nasfleet.errors import NasfleetError
from nasfleet.registry import import_plugins
from nasfleet.strategies.searchers import COST_NAMES, Constraint, searcher_params
from nasfleet.supernet import MBConvSpaceConfig, space_config_from_dict
from nasfleet.supernet.registry import SHAPE_FIELDS

DEFAULT_DEEPSPEED: dict[str, Any] = {
    "zero_optimization": {"stage": 0},
    "fp16": {"enabled": False},
    "bf16": {"enabled": False},
    "gradient_clipping": 0,
    "wall_clock_breakdown": False,
}
"""ZeRO stage 0 in fp32: ``cluster_configs/deepspeed/zero0_cpu.json`` without the batch keys the trainer owns
(a test keeps the two equal)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DataConfig(_Strict):
    dataset: str = "digits"
    """A registered data set (``nasfleet.orchestrator.data.DATASETS``): ``digits``, ``mnist``, or a plug-in's."""
    path: Path | None = None
    """Folder with the data set's files (``mnist``, ``fashion-mnist``: the IDX files
    ``train-images-idx3-ubyte[.gz]`` ...). ``fashion-mnist`` without a path is fetched into the
    data cache (``nasfleet data fetch``)."""
    batch_size: PositiveInt = 64
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float | None = Field(None, gt=0, lt=0.5)
    """The share held out for testing where the data set has no test split of its own (digits:
    0.15 when unset). IDX data sets bring theirs, and refuse this setting."""
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
    grad_clip_norm: PositiveFloat | None = None
    """Clip the step's gradient to this global L2 norm before the update (off by default).

    One setting for every launcher: in one process the torch backend clips, under DeepSpeed the
    engine clips the all-reduced gradient (its ``gradient_clipping``), so both runs clip the same
    vector. A high learning rate with momentum can blow up on one rare batch; this bounds that step.
    """


class EvalConfig(_Strict):
    calibration_batches: PositiveInt = 8
    random_subnets: NonNegativeInt = 3


class CommConfig(_Strict):
    """Where to predict the gradient all-reduce from, logged beside the measured time (either or neither)."""

    calibration: Path | None = None
    """An α–β fit written by ``nasfleet comm calibrate``."""
    topology: str | None = None
    """A fabric spec or topology YAML simulated at flow level (see docs/comm.md)."""


LaunchKind = Literal["local", "ray", "mpi", "torchrun"]


class LaunchConfig(_Strict):
    """How the job runs. ``local`` trains in this process; the others are data parallel under DeepSpeed."""

    kind: LaunchKind = "local"
    workers: PositiveInt = 2
    """``ray``: Ray Train workers, one data-parallel rank each (mpi/torchrun take the count from the launcher).
    With ``min_workers``, the most workers and the step's global batch: ``workers × data.batch_size``."""
    min_workers: PositiveInt | None = None
    """Elastic training: run on any worker count from this to ``workers`` (``--workers MIN:MAX``).
    The global batch stays ``workers × data.batch_size`` by accumulation, and a run resumes
    onto any count in the range (see :func:`data_parallel_shards`)."""
    deepspeed: dict[str, Any] = Field(default_factory=lambda: copy.deepcopy(DEFAULT_DEEPSPEED))
    """DeepSpeed settings (a ``--deepspeed FILE`` is read into this, so the run's config.yaml holds them)."""
    ray_address: str | None = None
    """The Ray cluster to join; default ``$RAY_ADDRESS``, else a local cluster on loopback."""
    max_failures: NonNegativeInt = 3
    """``ray``: worker-group restarts from the last checkpoint before the run fails."""
    gpu: bool = False
    """One GPU per rank and NCCL; otherwise CPUs and gloo."""
    threads: PositiveInt = 1
    """torch intra-op threads per process. Results depend on it, so it is recorded and resume checks it."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Serve Prometheus metrics on 127.0.0.1:PORT (``ray``: the local cluster's metrics-export port)."""
    comm: CommConfig = Field(default_factory=CommConfig)

    @field_validator("deepspeed")
    @classmethod
    def _canonical_order(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """Sorted keys, so the config a run writes does not depend on how the file was ordered."""
        return _sorted_keys(settings)

    @model_validator(mode="after")
    def _elastic_range(self) -> LaunchConfig:
        if self.min_workers is not None and self.min_workers > self.workers:
            raise ValueError(f"launch.min_workers ({self.min_workers}) exceeds launch.workers ({self.workers})")
        return self

    @property
    def distributed(self) -> bool:
        return self.kind != "local"

    @property
    def elastic(self) -> bool:
        return self.distributed and self.min_workers is not None


class TuneConfig(_Strict):
    """A ``tune:`` section makes ``nasfleet train`` train a population (PBT or PB2 on Ray Tune) of
    single-process runs over the learning rate and the distillation weight; the winner becomes the run."""

    scheduler: Literal["pbt", "pb2"]
    population: int = Field(4, ge=2)
    interval_steps: PositiveInt | None = None
    """Steps between perturbations (and per Tune iteration); default a sixth of ``optim.steps``."""
    lr_factors: tuple[float, float] = (0.3, 3.0)
    """The learning rate's range, as factors of ``optim.lr`` (sampled log-uniformly)."""
    distill_weight_range: tuple[float, float] = (0.25, 2.0)
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)
    """The bottom fraction of the population that copies the top fraction at each perturbation."""
    resample_probability: float = Field(0.25, ge=0, le=1)
    """PBT only: the chance that an explored value is resampled instead of scaled by 0.8 or 1.2."""
    synchronous: bool = True
    """Compare the whole population at the same step (each trial pauses and restarts every
    interval, a few seconds each); asynchronous PBT compares trials as their reports arrive."""

    @model_validator(mode="after")
    def _ranges_ascend(self) -> TuneConfig:
        for name in ("lr_factors", "distill_weight_range"):
            low, high = getattr(self, name)
            if not 0 < low < high:
                raise ValueError(f"{name} must satisfy 0 < low < high, got ({low}, {high})")
        return self


SCHEDULERS = ("fifo", "asha", "hyperband", "median")


class SearchSettings(_Strict):
    """Everything that defines a search (``nasfleet search``); stored with it so ``--resume`` continues it.

    A job config's ``search:`` section holds the same fields: ``nasfleet search --config JOB``
    and ``nasfleet demo`` take their settings from it.
    """

    name: str = "search"
    searcher: str = "random"
    searcher_params: dict[str, Any] = Field(default_factory=dict)
    scheduler: str = "fifo"
    reduction_factor: int = Field(2, ge=2)
    """ASHA's and HyperBand's η: the fraction 1/η of trials that go on at each rung."""
    evaluations: int = Field(32, ge=1)
    """Trials (subnets) in total, counting those an early-stopping scheduler cuts short."""
    objectives: list[str] = Field(default_factory=lambda: ["mflops"], min_length=1)
    constraints: list[str] = Field(default_factory=list)
    chunks: int = Field(4, ge=1)
    """Fidelity steps: the validation split is evaluated in this many chunks, reporting after each."""
    concurrency: int = Field(2, ge=1)
    seed: int = 0
    latency_table: str | None = None
    comm_topology: str | None = None
    comm_workers: int = Field(8, ge=2)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
            raise ValueError(f"search name {name!r} must be letters, digits, '_', '-' or '.'")
        return name

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, name: str) -> str:
        if name not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {name!r} (expected one of {', '.join(SCHEDULERS)})")
        return name

    @field_validator("objectives")
    @classmethod
    def _known_objectives(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in COST_NAMES]
        if unknown:
            raise ValueError(f"unknown objective {unknown[0]!r} (expected one of {', '.join(COST_NAMES)})")
        return names

    @model_validator(mode="after")
    def _parsable(self) -> SearchSettings:
        try:
            for text in self.constraints:
                Constraint.parse(text)
            searcher_params(self.searcher, self.searcher_params)
        except NasfleetError as exc:
            raise ValueError(str(exc)) from None
        return self


def search_settings(**values: Any) -> SearchSettings:
    """Validated settings; a bad value is one NasfleetError naming the field."""
    try:
        settings = SearchSettings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise NasfleetError(f"search {where}: {message}") from None
    return settings


class JobConfig(_Strict):
    run_dir: str = "runs/demo"
    """The run's folder: a local path or a storage URI (``s3://bucket/runs/x``, ``gs://``, ``file://``)."""
    seed: int = 0
    space: BaseModel = Field(default_factory=MBConvSpaceConfig)
    """Validated into the config model of the registered space its ``name`` selects."""
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    launch: LaunchConfig = Field(default_factory=LaunchConfig)
    checkpoint_every_steps: PositiveInt = 200
    log_every_steps: PositiveInt = 25
    search: SearchSettings | None = None
    """The search ``nasfleet search --config`` (and the demo) runs over the trained run."""
    tune: TuneConfig | None = None
    """Train a population and keep the best (``--tune pbt|pb2``) instead of one run."""
    init_weights: Path | None = None
    """Start from the tensors of this state-dict file (``torch.save``) instead of the seeded
    initialisation: each must be one of the model's, with its shape; the model's tensors it lacks
    keep their seeded values. A resumed run continues from its checkpoint's weights (the file must still exist)."""
    imports: list[str] = Field(default_factory=list)
    """Modules imported before anything is looked up by name: plug-ins registering strategies, spaces, data sets."""

    @model_validator(mode="before")
    @classmethod
    def _import_plugins_first(cls, data: Any) -> Any:
        """Plug-ins named in ``imports:`` must be registered before ``space`` (or anything) is looked up."""
        if isinstance(data, dict) and isinstance(data.get("imports"), list):
            import_plugins([str(module) for module in data["imports"]])
        return data

    @field_validator("space", mode="before")
    @classmethod
    def _registered_space(cls, value: Any) -> BaseModel:
        try:
            return space_config_from_dict(value)
        except NasfleetError as exc:
            raise ValueError(str(exc)) from None

    @field_serializer("space")
    def _space_without_unset_shape(self, space: BaseModel, info: SerializationInfo) -> dict[str, Any]:
        """Shape fields left to the data set stay unset in a dump, so reloading it does not pin them."""
        unset = {name for name in SHAPE_FIELDS if name not in space.model_fields_set}
        return space.model_dump(mode=info.mode, exclude=unset)

    @field_validator("run_dir")
    @classmethod
    def _non_empty(cls, run_dir: str) -> str:
        if not run_dir.strip():
            raise ValueError("run_dir is empty")
        return run_dir

    @property
    def run_name(self) -> str:
        """The run folder's last component: what results and Ray Train call the run."""
        return self.run_dir.rstrip("/").rsplit("/", 1)[-1]


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    return f"{where}: {str(err['msg']).removeprefix('Value error, ')}"


def config_from_dict(data: Any, source: str = "config") -> JobConfig:
    if not isinstance(data, dict):
        raise NasfleetError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        raise NasfleetError(f"{source}: {_first_error(exc)}") from None


def read_yaml(path: Path, what: str) -> Any:
    """A YAML (or JSON) file's content; a missing, unreadable, non-UTF-8 or malformed file is one NasfleetError."""
    if not path.is_file():
        raise NasfleetError(f"{what} {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise NasfleetError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise NasfleetError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise NasfleetError(f"{what} {path} is not valid YAML{where}: {problem}") from None


def load_config(path: Path, overrides: list[str] | None = None) -> JobConfig:
    """The job in ``path`` with dotted ``overrides`` (``["optim.steps=300", ...]``) applied."""
    data = read_yaml(path, "config file")
    if overrides:
        if not isinstance(data, dict):
            raise NasfleetError(f"config file {path}: expected a mapping at the top level, got {type(data).__name__}")
        data = apply_overrides(data, overrides)
    return config_from_dict(data, str(path))


def with_overrides(config: JobConfig, overrides: list[str], source: str = "command line") -> JobConfig:
    """``config`` with dotted overrides applied and validated again."""
    if not overrides:
        return config
    return config_from_dict(apply_overrides(config.model_dump(mode="json"), overrides), f"config with {source} overrides")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``a.b.c=value`` paths in a plain config dict; values are parsed as YAML (numbers, lists, null)."""
    result = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise NasfleetError(f"--set {item!r} is not KEY.PATH=VALUE (e.g. optim.steps=300)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        if isinstance(value, float) and not math.isfinite(value):
            raise NasfleetError(f"--set {item!r}: the value must be a finite number")
        target = result
        parts = key.split(".")
        for part in parts[:-1]:
            child = target.get(part)
            if child is None:
                child = target[part] = {}
            if not isinstance(child, dict):
                raise NasfleetError(f"--set {item!r}: {part!r} is not a section")
            target = child
        target[parts[-1]] = value
    return result


def _sorted_keys(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: _sorted_keys(data[key]) for key in sorted(data)}
    return data


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def config_yaml(config: JobConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
