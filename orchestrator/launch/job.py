"""A training job end to end: train (here or on Ray), evaluate, record to Parquet.

This is what `nasfleet train` and `nasfleet demo` run, and what `ray job submit` starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nasfleet.orchestrator.comm_prediction import CommSource
from nasfleet.orchestrator.config import TrainConfig
from nasfleet.orchestrator.launch.ray_train import DistributedOptions, train_distributed
from nasfleet.orchestrator.metrics import TrainingMetrics
from nasfleet.orchestrator.evaluate.subnets import SubnetResult, evaluate_standard_subnets, load_trained
from nasfleet.orchestrator.launch.process_group import Launcher, train_process_group
from nasfleet.orchestrator.results.store import ResultsStore, SubnetRecord
from nasfleet.orchestrator.storage import join
from nasfleet.orchestrator.train.trainer import train

RESULTS_FOLDER = "results"


@dataclass(frozen=True)
class JobOutcome:
    run_folder: str
    step: int
    results: list[SubnetResult]
    results_folder: str


@dataclass(frozen=True)
class ProcessGroupLaunch:
    """Ranks started outside Ray: by ``mpiexec`` or by ``torchrun``."""

    launcher: Launcher
    deepspeed_config: Path | None = None
    use_gpu: bool = False
    metrics_port: int | None = None
    comm: CommSource = CommSource()


def run_training_job(
    config: TrainConfig,
    distributed: DistributedOptions | ProcessGroupLaunch | None,
    resume: bool = False,
    show_progress: bool = True,
    splits: tuple[str, ...] = ("val", "test"),
    metrics: TrainingMetrics | None = None,
) -> JobOutcome | None:
    """Train (in this process, on Ray, or as one rank of an MPI/torchrun job), then evaluate and record.

    ``metrics`` is for training in this process; Ray workers report through Ray's agent.
    Under MPI/torchrun only rank 0 evaluates; the other ranks return None.
    """
    if distributed is None:
        train(config, resume=resume, show_progress=show_progress, metrics=metrics)
        folder = str(config.run_dir)
    elif isinstance(distributed, ProcessGroupLaunch):
        rank, folder = train_process_group(
            config, distributed.launcher, distributed.deepspeed_config, resume, distributed.use_gpu,
            distributed.metrics_port, comm=distributed.comm,
        )
        if rank != 0:
            return None
    else:
        folder = train_distributed(config, distributed, resume=resume).run_folder
    trained = load_trained(folder)
    results = evaluate_standard_subnets(trained, splits, config.eval.random_subnets, config.seed)
    results_folder = join(folder, RESULTS_FOLDER)
    ResultsStore(results_folder).append(
        [SubnetRecord.from_result(r, config.run_dir.name, trained.checkpoint_id) for r in results]
    )
    return JobOutcome(folder, trained.step, results, results_folder)
