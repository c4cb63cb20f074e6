"""Population Based Training (PBT, PB2) of the supernet's training hyper-parameters on Ray Tune.

A population of single-process supernet trainings (the ordinary trainer, one CPU each)
runs ``interval_steps`` optimizer steps per Tune iteration, evaluates the smallest and
largest subnets on the validation split and reports the mean accuracy with a checkpoint.
At each perturbation Tune's scheduler lets the worse trials copy a better trial's
checkpoint and perturb its hyper-parameters (PBT: ×0.8/×1.2 or resample; PB2: a GP
bandit); the copying trial restarts from that checkpoint with the NEW learning rate and
distillation weight. Every trial keeps the config's schedule length (``optim.steps``).

At the end the best trial's checkpoint becomes an ordinary run in ``config.run_dir``
(``nasfleet evaluate/export/search --run`` work on it) and ``run_dir/tune/`` holds the
schedule of every trial (``schedule.parquet``) and a summary (``summary.json``).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import ValidationError

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import JobConfig, TuneConfig, config_from_dict, config_yaml
from nasfleet.orchestrator.evaluate import TrainedSupernet, evaluate_arch, load_trained
from nasfleet.orchestrator.launch import connect_ray, train_job
from nasfleet.orchestrator.train import (
    CONFIG_FILE,
    METRICS_FILE,
    checkpoint_name,
    latest_checkpoint,
    lr_factor,
    read_meta,
)
from nasfleet.orchestrator.train.backends import OPTIMIZER_FILE
from nasfleet.safe_load import safe_torch_load
from nasfleet.strategies import strategy_class

TUNE_FOLDER = "tune"
SCHEDULE_FILE = "schedule.parquet"
SUMMARY_FILE = "summary.json"
LINEAGE_FILE = "lineage.json"
"""Written into every reported checkpoint: which trial wrote it, with which hyper-parameters."""
SCORE = "score"
DISTILL_WEIGHT = "distill_weight"


@dataclass(frozen=True)
class TrialSummary:
    trial: str
    lr: float
    """The learning rate (the schedule's peak) the trial ended with."""
    distill_weight: float | None
    """None when the strategy has no ``distill_weight`` (only the learning rate is tuned)."""
    score: float
    """Mean validation accuracy of the smallest and largest subnets at the last step."""
    exploits: int
    """How often the trial restarted from another trial's checkpoint."""


@dataclass(frozen=True)
class TuneTrainingOutcome:
    run_dir: Path
    """The winner, installed as an ordinary run."""
    winner: str
    trials: list[TrialSummary]
    schedule_path: Path
    summary_path: Path
    wall_time_s: float


# --------------------------------------------------------------------------- hyper-parameters
def tunes_distill_weight(config: JobConfig) -> bool:
    """Only strategies whose parameters declare ``distill_weight`` (sandwich) have one to tune."""
    return DISTILL_WEIGHT in strategy_class(config.strategy.name).Params.model_fields


def hyperparameter_bounds(config: JobConfig, settings: TuneConfig) -> dict[str, tuple[float, float]]:
    bounds = {"lr": (config.optim.lr * settings.lr_factors[0], config.optim.lr * settings.lr_factors[1])}
    if tunes_distill_weight(config):
        bounds[DISTILL_WEIGHT] = settings.distill_weight_range
    return bounds


def initial_population(
    config: JobConfig, bounds: dict[str, tuple[float, float]], population: int
) -> list[dict[str, float]]:
    """The config's own hyper-parameters, then ``population - 1`` seeded draws (lr log-uniform).

    Starting one member at the defaults keeps the untuned run in the race.
    """
    rng = np.random.default_rng(config.seed)
    defaults = {"lr": config.optim.lr, DISTILL_WEIGHT: float(config.strategy.params.get(DISTILL_WEIGHT, 1.0))}
    members = [{name: float(np.clip(defaults[name], *bounds[name])) for name in bounds}]
    for _ in range(population - 1):
        member = {}
        for name, (low, high) in bounds.items():
            draw = np.exp(rng.uniform(math.log(low), math.log(high))) if name == "lr" else rng.uniform(low, high)
            member[name] = float(draw)
        members.append(member)
    return members


def clip_to_bounds(bounds: dict[str, tuple[float, float]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """PBT scales values by 0.8/1.2 without limits; keep explored values inside the search space."""

    def explore(config: dict[str, Any]) -> dict[str, Any]:
        return {**config, **{name: float(np.clip(config[name], *bounds[name])) for name in bounds}}

    return explore


def trial_config(base: JobConfig, run_dir: Path, hyperparameters: dict[str, float]) -> JobConfig:
    """``base`` with the trial's folder, learning rate and (when tuned) distillation weight."""
    data = base.model_dump(mode="json")
    data["run_dir"] = str(run_dir)
    data["tune"] = None  # a trial, and the installed winner, are ordinary runs
    data["optim"]["lr"] = hyperparameters["lr"]
    if DISTILL_WEIGHT in hyperparameters:
        data["strategy"]["params"][DISTILL_WEIGHT] = hyperparameters[DISTILL_WEIGHT]
    return config_from_dict(data, "trial config")


def retarget_checkpoint(checkpoint: Path, config: JobConfig) -> int:
    """Make a copied checkpoint train on with ``config``'s learning rate; returns its step.

    The optimizer and LR schedule restore their base learning rate from the checkpoint, so
    after an exploit they would keep the cloned trial's value; this rewrites it (and the lr of
    the next step, which the schedule set before saving) so the perturbed value takes effect.
    """
    path = checkpoint / OPTIMIZER_FILE
    state = safe_torch_load(path.read_bytes(), f"checkpoint file {path}")
    step = read_meta(str(checkpoint)).step
    lr = config.optim.lr
    current = lr * lr_factor(step, config.optim)
    state["scheduler"]["base_lrs"] = [lr for _ in state["scheduler"]["base_lrs"]]
    state["scheduler"]["_last_lr"] = [current for _ in state["scheduler"]["base_lrs"]]
    for group in state["optimizer"]["param_groups"]:
        group["initial_lr"], group["lr"] = lr, current
    torch.save(state, path)
    (checkpoint / CONFIG_FILE).write_text(config_yaml(config))
    return step


# --------------------------------------------------------------------------- one trial (a Ray actor)
def validation_scores(trained: TrainedSupernet) -> dict[str, float]:
    """Val accuracy of the smallest and largest subnets (per-subnet BN recalibration) and their mean."""
    accuracy = {
        role: evaluate_arch(trained, arch, ("val",), role).accuracy["val"]
        for role, arch in (("smallest", trained.space.smallest()), ("largest", trained.space.largest()))
    }
    return {
        "val_acc_smallest": accuracy["smallest"],
        "val_acc_largest": accuracy["largest"],
        SCORE: (accuracy["smallest"] + accuracy["largest"]) / 2,
    }


def adopt_checkpoint(checkpoint: Any, folder: Path) -> tuple[Path, dict[str, Any]]:
    """Make the trial's run folder hold just the reported checkpoint; returns it and its lineage record."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with checkpoint.as_directory() as source:
        lineage = json.loads((Path(source) / LINEAGE_FILE).read_text())
        target = folder / checkpoint_name(int(lineage["step"]))
        shutil.copytree(source, target)
    (target / LINEAGE_FILE).unlink()
    shutil.copy2(target / METRICS_FILE, folder / METRICS_FILE)
    return target, lineage


def quiet_checkpoint_logs() -> None:
    """Ray logs every checkpoint upload at INFO; the schedule table says the same once."""
    for name in ("ray.train._internal.storage", "ray.tune.trainable.trainable"):
        logging.getLogger(name).setLevel(logging.WARNING)


def tune_trial(hyperparameters: dict[str, Any], base: dict[str, Any], interval_steps: int) -> None:
    """Tune's function trainable: train ``interval_steps`` at a time, evaluate, report a checkpoint.

    Restarts (a pause, or PBT's exploit of another trial) arrive with ``tune.get_checkpoint()``
    and possibly new ``hyperparameters``, which take effect from the restored step on.
    """
    from ray import tune

    quiet_checkpoint_logs()
    torch.set_num_threads(1)
    context = tune.get_context()
    trial_id = context.get_trial_id()
    folder = Path(context.get_trial_dir()) / "run"
    folder.mkdir(parents=True, exist_ok=True)
    tuned = {name: float(hyperparameters[name]) for name in ("lr", DISTILL_WEIGHT) if name in hyperparameters}
    config = trial_config(config_from_dict(base, "tuned config"), folder, tuned)
    checkpoint = tune.get_checkpoint()
    source: dict[str, Any] = {"trial_id": trial_id}
    step = 0
    if checkpoint is None:
        shutil.rmtree(folder, ignore_errors=True)  # a restart without checkpoint starts over
    else:
        adopted, source = adopt_checkpoint(checkpoint, folder)
        step = retarget_checkpoint(adopted, config)
    cloned = source["trial_id"] != trial_id
    while step < config.optim.steps:
        train_job(config, resume=step > 0, until_step=step + interval_steps)
        trained = load_trained(str(folder))
        step = trained.step
        latest = Path(str(latest_checkpoint(str(folder))))
        schedule = safe_torch_load((latest / OPTIMIZER_FILE).read_bytes(), "optimizer state")["scheduler"]
        metrics = {
            "step": step,
            **tuned,
            **validation_scores(trained),
            "optimizer_lr": schedule["_last_lr"][0],
            "base_lr": schedule["base_lrs"][0],
            "cloned_from": source["trial_id"] if cloned else "",
            "cloned_lr": source.get("lr", math.nan) if cloned else math.nan,
            "cloned_distill_weight": source.get(DISTILL_WEIGHT, math.nan) if cloned else math.nan,
        }
        cloned = False
        with tempfile.TemporaryDirectory() as staging:
            shutil.copytree(latest, staging, dirs_exist_ok=True)
            (Path(staging) / LINEAGE_FILE).write_text(json.dumps({"trial_id": trial_id, "step": step, **tuned}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(staging))


# --------------------------------------------------------------------------- driver side
def validate_settings(config: JobConfig, **settings: Any) -> TuneConfig:
    """The population's settings with ``interval_steps`` resolved (default: a sixth of the schedule)."""
    try:
        validated = TuneConfig.model_validate(settings)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "tune settings"
        raise NasfleetError(f"tune.{where}: {err['msg']}") from None
    if validated.interval_steps is None:
        validated = validated.model_copy(update={"interval_steps": max(1, config.optim.steps // 6)})
    assert validated.interval_steps is not None
    if validated.interval_steps >= config.optim.steps:
        raise NasfleetError(
            f"--tune-interval ({validated.interval_steps}) must be below the number of steps ({config.optim.steps})"
        )
    if validated.scheduler == "pb2":
        try:
            importlib.import_module("GPy")  # PB2's Gaussian-process bandit
        except ImportError:
            raise NasfleetError("--tune pb2 needs the GPy package: pip install GPy (or nasfleet[ray])") from None
    return validated


def build_scheduler(settings: TuneConfig, bounds: dict[str, tuple[float, float]]) -> Any:
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.schedulers.pb2 import PB2

    common = dict(
        time_attr="step",
        perturbation_interval=settings.interval_steps,
        quantile_fraction=settings.quantile_fraction,
        synch=settings.synchronous,
        custom_explore_fn=clip_to_bounds(bounds),
    )
    if settings.scheduler == "pb2":
        return PB2(hyperparam_bounds={k: list(v) for k, v in bounds.items()}, **common)
    mutations = {
        name: tune.loguniform(low, high) if name == "lr" else tune.uniform(low, high)
        for name, (low, high) in bounds.items()
    }
    return PopulationBasedTraining(
        hyperparam_mutations=mutations, resample_probability=settings.resample_probability, **common
    )


def install_winner(checkpoint_dir: Path, config: JobConfig, winner_hyperparameters: dict[str, float]) -> None:
    """Copy the winning checkpoint into ``config.run_dir`` as an ordinary run with the winner's config."""
    run_config = trial_config(config, Path(config.run_dir), winner_hyperparameters)
    lineage = json.loads((checkpoint_dir / LINEAGE_FILE).read_text())
    run_dir = Path(config.run_dir)
    target = run_dir / checkpoint_name(int(lineage["step"]))
    shutil.copytree(checkpoint_dir, target, dirs_exist_ok=True)
    (target / LINEAGE_FILE).unlink()
    (target / CONFIG_FILE).write_text(config_yaml(run_config))
    shutil.copy2(target / METRICS_FILE, run_dir / METRICS_FILE)
    (run_dir / CONFIG_FILE).write_text(config_yaml(run_config))


SCHEDULE_COLUMNS = (
    "trial", "step", "lr", DISTILL_WEIGHT, SCORE, "val_acc_smallest", "val_acc_largest", "optimizer_lr", "base_lr",
    "cloned_from", "cloned_lr", "cloned_distill_weight",
)


def schedule_recorder() -> Any:
    """A Tune callback that keeps every trial's reports on the driver, in arrival order.

    (A trial's own result files are rewritten when PBT restarts it, so they lose history.)
    """
    from ray.tune import Callback

    class ScheduleRecorder(Callback):
        def __init__(self) -> None:
            self.rows: list[dict[str, Any]] = []

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            self.rows.append({name: result.get(name) for name in SCHEDULE_COLUMNS} | {"trial": trial.trial_id})

        def table(self) -> pd.DataFrame:
            """One row per trial and interval: hyper-parameters, optimizer lr, score, exploits."""
            table = pd.DataFrame(self.rows, columns=list(SCHEDULE_COLUMNS))
            return table.sort_values(["trial", "step"], ignore_index=True)

    return ScheduleRecorder()


def summarize(schedule: pd.DataFrame) -> list[TrialSummary]:
    summaries = []
    for trial, rows in schedule.groupby("trial", sort=True):
        last = rows.iloc[-1]
        weight = None if pd.isna(last[DISTILL_WEIGHT]) else float(last[DISTILL_WEIGHT])
        exploits = int((rows["cloned_from"] != "").sum())
        summaries.append(TrialSummary(str(trial), float(last["lr"]), weight, float(last[SCORE]), exploits))
    return summaries


def tune_training(
    config: JobConfig,
    scheduler: Literal["pbt", "pb2"],
    population: int = 4,
    interval_steps: int | None = None,
    ray_address: str | None = None,
    quantile_fraction: float = 0.25,
    resample_probability: float = 0.25,
    synchronous: bool = True,
    lr_factors: tuple[float, float] = (0.3, 3.0),
    distill_weight_range: tuple[float, float] = (0.25, 2.0),
) -> TuneTrainingOutcome:
    """Train a population with PBT or PB2 and install the best trial as the run in ``config.run_dir``.

    ``interval_steps`` (default: a sixth of the schedule) is both the training slice per Tune
    iteration and the perturbation interval. One CPU per trial; trials run side by side as
    the cluster's CPUs allow. On a multi-node cluster ``run_dir`` must be on shared storage.
    """
    from ray import tune

    settings = validate_settings(
        config,
        scheduler=scheduler,
        population=population,
        interval_steps=interval_steps,
        quantile_fraction=quantile_fraction,
        resample_probability=resample_probability,
        synchronous=synchronous,
        lr_factors=lr_factors,
        distill_weight_range=distill_weight_range,
    )
    run_dir = Path(config.run_dir).expanduser().absolute()
    config = config_from_dict({**config.model_dump(mode="json"), "run_dir": str(run_dir)}, "config")
    if config.data.path is not None:  # trials run with the trial folder as working directory
        config = config_from_dict(
            {**config.model_dump(mode="json"), "data": {**config.data.model_dump(mode="json"),
                                                         "path": str(config.data.path.expanduser().absolute())}},
            "config",
        )
    tune_dir = run_dir / TUNE_FOLDER
    if latest_checkpoint(str(run_dir)) is not None or tune_dir.exists():
        raise NasfleetError(f"{run_dir} already holds a run; choose another run_dir for --tune")
    bounds = hyperparameter_bounds(config, settings)
    members = initial_population(config, bounds, settings.population)
    connect_ray(ray_address)

    started = time.perf_counter()
    trainable = tune.with_resources(
        tune.with_parameters(tune_trial, base=config.model_dump(mode="json"), interval_steps=settings.interval_steps),
        {"cpu": 1},
    )
    recorder = schedule_recorder()
    param_space: dict[str, Any] = {"member": tune.grid_search(list(range(len(members))))}
    for name in bounds:
        param_space[name] = tune.sample_from(lambda trial, name=name: members[trial["member"]][name])
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=SCORE, mode="max", scheduler=build_scheduler(settings, bounds), reuse_actors=True
        ),
        run_config=tune.RunConfig(
            name=settings.scheduler,
            storage_path=str(tune_dir),
            stop={"step": config.optim.steps},
            verbose=0,
            callbacks=[recorder],
        ),
    )
    results = tuner.fit()
    if results.errors:
        raise NasfleetError(f"{len(results.errors)} trial(s) failed; first: {str(results.errors[0]).splitlines()[0]}")
    schedule = recorder.table()
    trials = summarize(schedule)
    best = results.get_best_result(metric=SCORE, mode="max", scope="last")
    winner = str(best.metrics["trial_id"])
    winner_hyperparameters = {name: float(best.config[name]) for name in bounds}
    with best.checkpoint.as_directory() as folder:
        install_winner(Path(folder), config, winner_hyperparameters)
    wall_time_s = time.perf_counter() - started

    schedule_path, summary_path = tune_dir / SCHEDULE_FILE, tune_dir / SUMMARY_FILE
    schedule.to_parquet(schedule_path, index=False)
    summary = {
        "settings": settings.model_dump(mode="json"),
        "bounds": bounds,
        "steps": config.optim.steps,
        "winner": winner,
        "winner_hyperparameters": winner_hyperparameters,
        "wall_time_s": wall_time_s,
        "trials": [asdict(t) for t in trials],
    }
    summary_path.write_text(json.dumps(summary, indent=2))
    return TuneTrainingOutcome(run_dir, winner, trials, schedule_path, summary_path, wall_time_s)
