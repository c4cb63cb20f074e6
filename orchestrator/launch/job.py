"""A training job end to end: validate, train (here, on Ray, or as MPI/torchrun ranks), evaluate, record.

This is what ``nasfleet train`` and ``nasfleet demo`` run, and what ``ray job submit`` starts.
Every launcher runs the same training loop and writes the same run folder; this module only
decides which one runs, after checking on the driver everything that can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nasfleet.orchestrator.config import JobConfig, config_from_dict
from nasfleet.orchestrator.evaluate.evaluator import evaluate_standard_subnets
from nasfleet.orchestrator.evaluate.subnets import SubnetResult
from nasfleet.orchestrator.evaluate.trained import load_trained
from nasfleet.orchestrator.launch.local import train_local
from nasfleet.orchestrator.launch.process_group import train_process_group
from nasfleet.orchestrator.launch.ray_train import train_on_ray
from nasfleet.orchestrator.launch.run_folder import check_run_folder, run_config_for_attempt
from nasfleet.orchestrator.launch.validate import validate_job
from nasfleet.orchestrator.metrics import TrainingMetrics
from nasfleet.orchestrator.results import ResultsStore, SubnetRecord, hold_run
from nasfleet.orchestrator.storage import is_uri, join

RESULTS_FOLDER = "results"


@dataclass(frozen=True)
class JobOutcome:
    run_folder: str
    step: int
    results: list[SubnetResult]
    results_folder: str


def absolute_run_dir(job: JobConfig) -> JobConfig:
    """The job with a local ``run_dir`` made absolute: workers and ranks run in other folders."""
    if is_uri(job.run_dir):
        return job
    absolute = str(Path(job.run_dir).expanduser().absolute())
    weights = None if job.init_weights is None else str(job.init_weights.expanduser().absolute())
    return config_from_dict({**job.model_dump(mode="json"), "run_dir": absolute, "init_weights": weights}, "job config")


def run_job(
    job: JobConfig, resume: bool = False, until_step: int | None = None, show_progress: bool = False,
    metrics: TrainingMetrics | None = None, evaluate: bool = True,
) -> JobOutcome | None:
    """Train ``job`` with its launcher, then evaluate its standard subnets and record them.

    ``until_step`` stops early with a checkpoint, keeping the schedule; ``resume`` goes on.
    ``metrics`` is for training in this process (Ray workers report through Ray's agent,
    MPI/torchrun rank 0 serves ``launch.metrics_port`` itself). The driver holds the run
    (:func:`hold_run`) throughout, so a second writer is refused. Returns None without
    ``evaluate``, and on MPI/torchrun ranks other than 0 (only rank 0 evaluates).
    """
    job = absolute_run_dir(job)
    validate_job(job)
    if job.launch.kind in ("mpi", "torchrun"):
        rank = train_process_group(job, resume, until_step)
        return evaluate_and_record(job) if evaluate and rank == 0 else None
    with hold_run(job.run_dir, "nasfleet train"):
        if check_run_folder(job, resume):
            with run_config_for_attempt(job):
                if job.launch.kind == "ray":
                    train_on_ray(job, until_step)
                else:
                    train_local(job, until_step, show_progress, metrics)
        return evaluate_and_record(job) if evaluate else None


def train_job(
    job: JobConfig, resume: bool = False, until_step: int | None = None, show_progress: bool = False,
    metrics: TrainingMetrics | None = None,
) -> None:
    """:func:`run_job` without the evaluation: train (or continue) ``job`` up to ``until_step``."""
    run_job(job, resume, until_step, show_progress, metrics, evaluate=False)


def evaluate_and_record(job: JobConfig, splits: tuple[str, ...] = ("val", "test")) -> JobOutcome:
    """Evaluate the run's standard subnets and append them to its Parquet results."""
    job = absolute_run_dir(job)
    trained = load_trained(job.run_dir)
    results = evaluate_standard_subnets(trained, splits, job.eval.random_subnets, job.seed)
    results_folder = join(job.run_dir, RESULTS_FOLDER)
    ResultsStore(results_folder).append([SubnetRecord.from_result(r, job.run_name, job.data.dataset, trained.checkpoint_id) for r in results])
    return JobOutcome(job.run_dir, trained.step, results, results_folder)
