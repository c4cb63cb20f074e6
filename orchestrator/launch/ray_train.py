"""Data-parallel training on Ray Train workers, each a rank of the one training loop (DeepSpeed backend).

The worker function runs inside Ray Train (Ray has already created the process group) and
checkpoints through ``ray.train.report``, so ``FailureConfig`` restarts a failed worker group
from the last checkpoint. A user error raised in a worker (a :class:`NasfleetError`, such as a
corrupted checkpoint) is not a fault a restart can cure: the run fails at once and the driver
re-raises it as the one-line error it is.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.comm_prediction import predict_for_job
from nasfleet.orchestrator.config import JobConfig, config_from_dict
from nasfleet.orchestrator.launch.ray_cluster import RAY_LOOPBACK_SWITCH, check_resources, connect_ray, loopback_cluster
from nasfleet.orchestrator.launch.run_folder import resume_point_of
from nasfleet.orchestrator.metrics import TrainingMetrics, ray_metrics
from nasfleet.orchestrator.storage import basename, is_uri, parent
from nasfleet.orchestrator.train.checkpoints import CHECKPOINTS_KEPT, checkpoint_name
from nasfleet.orchestrator.train.loop import RankContext, ResumePoint, train_rank
from nasfleet.orchestrator.train.metrics_log import flatten


# --------------------------------------------------------------------------- worker side
class RayTrainContext(RankContext):
    """Ranks, checkpoints and reports through Ray Train."""

    def __init__(self) -> None:
        import ray.train

        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()

    @contextmanager
    def resume_point(self) -> Iterator[ResumePoint | None]:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as folder, resume_point_of(folder, self.rank) as point:
            yield point

    @contextmanager
    def staging_folder(self, step: int) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="nasfleet-checkpoint-") as tmp:
            yield Path(tmp)

    def publish(self, step: int, record: dict[str, Any], staged: Path | None) -> None:
        import ray.train

        metrics = flatten(record)
        if staged is None:
            ray.train.report(metrics)
        else:
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(str(staged)),
                checkpoint_dir_name=checkpoint_name(step),
            )

    def metrics(self) -> TrainingMetrics | None:
        return ray_metrics() if self.rank == 0 else None


def quiet_ray_train_reports() -> None:
    """Ray Train logs every report (metrics dict included) at INFO; ours are in metrics.jsonl instead.

    Its worker-context logger is named after its file, so it is found through the module.
    """
    try:
        from ray.train.v2._internal.execution import context as ray_train_context
    except ImportError:  # a later Ray moved it: the log stays noisy, nothing breaks
        return
    logging.getLogger(ray_train_context.__file__).setLevel(logging.WARNING)


def train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: one rank of the training loop."""
    quiet_ray_train_reports()
    job = config_from_dict(loop_config["job"], "job config")
    train_rank(job, RayTrainContext(), loop_config.get("last_step"), loop_config.get("predicted_allreduce_s"))


# --------------------------------------------------------------------------- driver side
def storage_location(job: JobConfig) -> tuple[str, str]:
    """``(storage_path, run name)`` as Ray Train wants them: the run folder's parent and its name."""
    if is_uri(job.run_dir):
        return parent(job.run_dir), basename(job.run_dir)
    folder = Path(job.run_dir).expanduser().absolute()
    return str(folder.parent), folder.name


def user_errors_fail_fast() -> None:
    """Make Ray Train give up at once when a worker raised a NasfleetError (a retry fails the same way).

    Ray Train 2.60 retries every worker-group error up to ``max_failures`` and offers no
    public hook to classify errors, so its failure-policy factory is wrapped (once, on the
    driver; the policy object travels to the controller). If a later Ray moves the factory,
    user errors are merely retried as before.
    """
    try:
        from ray.train.v2._internal.execution.failure_handling import DefaultFailurePolicy, FailureDecision
        from ray.train.v2.api import data_parallel_trainer
    except ImportError:
        return
    if getattr(data_parallel_trainer.create_failure_policy, "nasfleet", False):
        return

    def create_failure_policy(failure_config: Any) -> Any:
        return UserErrorsFailFast(failure_config, DefaultFailurePolicy, FailureDecision)

    create_failure_policy.nasfleet = True  # type: ignore[attr-defined]
    data_parallel_trainer.create_failure_policy = create_failure_policy


class UserErrorsFailFast:
    """Ray Train's default failure policy, except that a worker's NasfleetError is raised, not retried."""

    def __init__(self, failure_config: Any, default: type, decisions: Any) -> None:
        self.failure_config = failure_config
        self._default = default(failure_config)
        self._decisions = decisions

    def make_decision(self, training_failed_error: Any) -> Any:
        if user_error_in(training_failed_error) is not None:
            return self._decisions.RAISE
        return self._default.make_decision(training_failed_error)


def user_error_in(error: BaseException) -> NasfleetError | None:
    """The NasfleetError a worker raised, if that is what a Ray Train failure carries."""
    failures = getattr(error, "worker_failures", None) or {}
    for failure in failures.values():
        seen: BaseException | None = failure
        while seen is not None:
            if isinstance(seen, NasfleetError):
                return seen
            cause = getattr(seen, "cause", None)
            seen = cause if isinstance(cause, BaseException) else seen.__cause__
    return None


def train_on_ray(job: JobConfig, last_step: int | None = None) -> None:
    """Run the Ray Train job to ``last_step`` (default: the end), resuming from the run's last checkpoint.

    Survives worker failures (``launch.max_failures``); a user error in a worker is raised here at once.
    """
    import os

    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from nasfleet.orchestrator.launch.torch_rendezvous import NodeAddressTorchConfig  # imports Ray Train

    launch = job.launch
    # Elastic: Ray Train asks for the most workers and starts (or restarts, after losing a node) with what it gets.
    fewest = launch.min_workers or launch.workers
    starts_local_cluster = not (launch.ray_address or os.environ.get("RAY_ADDRESS")) and not ray.is_initialized()
    if starts_local_cluster and not launch.gpu:
        # Before paying for a cluster start.
        check_resources(fewest, launch.gpu, have=os.cpu_count() or 1, threads=launch.threads)
    prediction = predict_for_job(job, launch.workers)
    connect_ray(launch.ray_address, launch.metrics_port)
    check_resources(fewest, launch.gpu, threads=launch.threads)
    user_errors_fail_fast()
    storage, name = storage_location(job)
    # Workers on a loopback cluster keep their collectives on loopback too (inherited when we started it).
    worker_env = loopback_cluster().worker_env if os.environ.get(RAY_LOOPBACK_SWITCH) == "0" else {}
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={
            "job": job.model_dump(mode="json"),
            "last_step": last_step,
            "predicted_allreduce_s": prediction.allreduce_s if prediction else None,
        },
        # A worker reserves a CPU per torch thread it runs, so threads never outnumber the cores Ray gave out.
        scaling_config=ScalingConfig(
            num_workers=(fewest, launch.workers) if launch.elastic else launch.workers,
            use_gpu=launch.gpu, resources_per_worker={"CPU": launch.threads},
        ),
        # Rank 0's rendezvous store on its node's address, not on every interface.
        torch_config=NodeAddressTorchConfig(backend="nccl" if launch.gpu else "gloo"),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=launch.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
            worker_runtime_env={"env_vars": worker_env} if worker_env else None,
        ),
    )
    try:
        trainer.fit()
    except Exception as exc:
        user_error = user_error_in(exc)
        if user_error is not None:
            raise NasfleetError(str(user_error)) from None
        raise
