"""`nasfleet search`: a Ray Tune experiment over the subnets of a trained supernet.

Tune drives it: a searcher (random, regularised evolution, NSGA-II, predictor-assisted)
proposes subnets, each trial evaluates one on growing chunks of the validation split, and
a Tune scheduler (FIFO, ASHA, HyperBand, median stopping) may stop it early. Every
finished or stopped trial is appended to ``<run>/search/<name>/evaluations/`` (Parquet) as
it ends; at the end the Pareto front of the fully evaluated subnets is written beside it,
with each front member's test accuracy.

Resume replays the recorded evaluations into the searcher and evaluates only the rest of
the budget: nothing already recorded is evaluated again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import SearchSettings, search_settings
from nasfleet.orchestrator.evaluate.evaluator import InProcessEvaluator, SubnetEvaluator
from nasfleet.orchestrator.evaluate.trained import TrainedSupernet
from nasfleet.orchestrator.storage import is_file, is_uri, join, make_dirs, read_text, write_text
from nasfleet.orchestrator.subnet_search.pareto_report import FrontMember, front_rows, members, write_front
from nasfleet.orchestrator.results import ParquetLog, hold_run
from nasfleet.orchestrator.subnet_search.log import SEARCH_SCHEMA
from nasfleet.orchestrator.subnet_search.costs import CostSources, cost_function
from nasfleet.strategies.searchers import (
    Constraint, Evaluated, SearchProblem, build_searcher, hypervolume,
)
from nasfleet.supernet import arch_from_json

if TYPE_CHECKING:
    from nasfleet.orchestrator.evaluate.pool import SharedSupernet

SETTINGS_FILE = "settings.json"
EVALUATIONS_FOLDER = "evaluations"


@dataclass
class SearchOutcome:
    folder: str
    name: str
    front: list[FrontMember]
    evaluated: int
    evaluated_now: int
    val_samples_now: int
    hypervolume: float


def search_folder(run: str, name: str) -> str:
    """Where a search of ``run`` keeps its settings, evaluations and front (a path or a URI, like the run)."""
    return join(str(run), "search", name)


def build_problem(trained: TrainedSupernet, settings: SearchSettings) -> SearchProblem:
    constraints = tuple(Constraint.parse(text) for text in settings.constraints)
    needed = {*settings.objectives, *(c.cost for c in constraints)}
    sources = CostSources(settings.latency_table, settings.comm_topology, settings.comm_workers)
    problem = SearchProblem(
        trained.space, tuple(settings.objectives), constraints, cost_function(trained.space, needed, sources)
    )
    problem.check_feasible()
    return problem


def _stored_settings(folder: str, settings: SearchSettings) -> SearchSettings:
    """The settings of the search being resumed; only ``evaluations`` may grow, and only where given.

    A default left unset (``--resume`` alone) must not stretch a 12-evaluation search to 32.
    """
    stored = join(folder, SETTINGS_FILE)
    if not is_file(stored):
        raise NasfleetError(f"cannot resume: {folder} holds no search (no {SETTINGS_FILE})")
    try:
        values = json.loads(read_text(stored))
    except json.JSONDecodeError:
        raise NasfleetError(f"cannot resume: {stored} is corrupted; delete the search folder to start over") from None
    if not isinstance(values, dict):
        raise NasfleetError(f"cannot resume: {stored} is not a search's settings")
    previous = search_settings(**values)
    asked = settings.evaluations if "evaluations" in settings.model_fields_set else 0
    return previous.model_copy(update={"evaluations": max(previous.evaluations, asked)})


def _recorded_rows(log: ParquetLog, folder: str) -> list[dict[str, Any]]:
    """The evaluations recorded so far; a damaged Parquet file is one line naming what to do."""
    try:
        return log.read().to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) for a corrupt file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NasfleetError(
            f"cannot resume: the evaluations in {join(folder, EVALUATIONS_FOLDER)} are unreadable ({reason}); "
            "move the damaged part-*.parquet file away and resume again"
        ) from None


def _create_folder(folder: str, settings: SearchSettings) -> None:
    stored = join(folder, SETTINGS_FILE)
    if is_file(stored):
        raise NasfleetError(f"{folder} already holds a search; pass --resume to continue it or choose another --name")
    make_dirs(folder)
    write_text(stored, settings.model_dump_json(indent=2) + "\n")


def run_search(
    trained: TrainedSupernet, run: str, settings: SearchSettings, resume: bool = False, ray_address: str | None = None
) -> SearchOutcome:
    """Search ``trained``'s subnets as configured; the trained run folder ``run`` receives the results."""
    folder = search_folder(run, settings.name)
    if resume:
        settings = _stored_settings(folder, settings)
    problem = build_problem(trained, settings)  # before touching the folder: bad settings write nothing
    if not resume and is_file(join(folder, SETTINGS_FILE)):
        raise NasfleetError(f"{folder} already holds a search; pass --resume to continue it or choose another --name")
    with hold_run(folder, f"nasfleet search {settings.name}"):
        if not resume:
            _create_folder(folder, settings)
        log = ParquetLog(join(folder, EVALUATIONS_FOLDER), SEARCH_SCHEMA)
        algorithm = build_searcher(settings.searcher, settings.searcher_params, problem, settings.seed)
        recorded = _recorded_rows(log, folder)
        for row in recorded:
            arch = trained.space.validate(arch_from_json(row["arch"]))
            algorithm.tell(Evaluated(arch, row["accuracy"], problem.costs(arch), row["complete"]))
        remaining = settings.evaluations - len(recorded)
        if remaining <= 0:  # everything is recorded: only the front's test accuracies are left, here
            return _finish(trained, settings, problem, log, folder, InProcessEvaluator(trained, ("test",)), 0, 0)
        from nasfleet.orchestrator.evaluate.pool import EvaluationPool, SharedSupernet
        from nasfleet.orchestrator.launch.ray_cluster import connect_ray

        connect_ray(ray_address)
        shared = SharedSupernet.put(trained)  # the one copy that the trials and the test evaluation map
        evaluated_now, val_samples_now = _tune(trained, shared, settings, problem, algorithm, log, folder, remaining)
        front_size = len(front_rows(log.read(), tuple(settings.objectives)))
        actors = max(1, min(settings.concurrency, front_size))
        with EvaluationPool(trained, num_actors=actors, splits=("test",), shared=shared) as pool:
            return _finish(trained, settings, problem, log, folder, pool, evaluated_now, val_samples_now)


def _tune(
    trained: TrainedSupernet, shared: SharedSupernet, settings: SearchSettings, problem: SearchProblem, algorithm: Any,
    log: ParquetLog, folder: str, trials: int,
) -> tuple[int, int]:
    from ray import tune

    from nasfleet.orchestrator.subnet_search.trial import ArchSearcher, RecordEvaluations, SubnetTrial

    trainable = tune.with_parameters(SubnetTrial, shared=shared, chunks=settings.chunks, seed=settings.seed)
    searcher = ArchSearcher(algorithm)
    labels = {"search": settings.name, "searcher": settings.searcher, "scheduler": settings.scheduler}
    from nasfleet.orchestrator.metrics import ray_metrics

    # The driver's metrics, exported by its Ray node's agent: trials recorded and the best accuracy so far.
    metrics = ray_metrics().for_run(trained.config.run_name)
    recorder = RecordEvaluations(log, problem, labels, trained.checkpoint_id, metrics)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(
            metric="accuracy", mode="max", search_alg=searcher, scheduler=make_scheduler(settings),
            num_samples=trials, max_concurrent_trials=settings.concurrency, reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name="tune", storage_path=folder if is_uri(folder) else str(Path(folder).resolve()), verbose=0,
            callbacks=[recorder],
        ),
    )
    grid = tuner.fit()
    if searcher.error is not None and recorder.recorded == 0:
        raise searcher.error
    failed = [r for r in grid if r.error is not None]
    if failed:
        raise NasfleetError(f"{len(failed)} search trials failed; first: {str(failed[0].error).splitlines()[0]}")
    return recorder.recorded, recorder.val_samples


def make_scheduler(settings: SearchSettings) -> Any:
    """Ray Tune's own scheduler for the name; the time unit is one validation chunk."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler, MedianStoppingRule

    if settings.scheduler == "asha":
        return ASHAScheduler(
            time_attr="training_iteration", max_t=settings.chunks, grace_period=1,
            reduction_factor=settings.reduction_factor,
        )
    if settings.scheduler == "hyperband":
        return HyperBandScheduler(
            time_attr="training_iteration", max_t=settings.chunks, reduction_factor=settings.reduction_factor
        )
    if settings.scheduler == "median":
        return MedianStoppingRule(time_attr="training_iteration", grace_period=1, min_samples_required=3)
    return FIFOScheduler()


def _finish(
    trained: TrainedSupernet, settings: SearchSettings, problem: SearchProblem, log: ParquetLog, folder: str,
    test_evaluator: SubnetEvaluator, evaluated_now: int, val_samples_now: int,
) -> SearchOutcome:
    """The front of everything recorded, each member's test accuracy, and the files."""
    table = log.read()
    objectives = tuple(settings.objectives)
    rows = front_rows(table, objectives)
    tests = [r.accuracy["test"] for r in test_evaluator.evaluate([arch_from_json(r["arch"]) for r in rows])]
    front = members(rows, objectives, tests)
    complete = [r for r in table.to_pylist() if r["complete"]]
    points = np.array([[-r["accuracy"], *(r[n] for n in objectives)] for r in complete], dtype=float)
    volume = hypervolume(points, problem.reference_point()) if complete else 0.0
    summary = {
        "search": settings.name, "searcher": settings.searcher, "scheduler": settings.scheduler,
        "constraints": list(settings.constraints), "evaluated": table.num_rows, "complete": len(complete),
        "hypervolume": volume, "reference_point": problem.reference_point().tolist(),
        "checkpoint": trained.checkpoint_id,
    }
    write_front(folder, front, summary, table, objectives)
    return SearchOutcome(folder, settings.name, front, table.num_rows, evaluated_now, val_samples_now, volume)
