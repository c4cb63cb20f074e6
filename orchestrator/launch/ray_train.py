"""Supernet training on Ray Train workers, each running the DeepSpeed rank loop.

The worker function runs inside Ray Train (Ray has already created the process group)
and checkpoints through ``ray.train.report``, so ``FailureConfig`` can restart a failed
worker group from the last checkpoint. The driver side validates the request, connects
to Ray and calls ``TorchTrainer.fit``.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import TrainConfig
from nasfleet.orchestrator.comm_prediction import CommSource, predict_for_job
from nasfleet.orchestrator.metrics import TrainingMetrics, ray_metrics
from nasfleet.orchestrator.train.loop import (
    CHECKPOINTS_KEPT,
    RankContext,
    RankJob,
    checkpoint_name,
    checkpoint_step,
    check_strategy_supports,
    load_deepspeed_config,
    train_rank,
)
from nasfleet.orchestrator.storage import is_uri, join, latest_checkpoint, resolve_storage


@dataclass(frozen=True)
class DistributedOptions:
    """How to run on Ray; checked when the job starts (files, storage, address, resources)."""

    workers: int
    deepspeed_config: Path | None = None
    """None: ZeRO stage 0 in fp32, the CPU-friendly default."""
    storage_path: str | None = None
    """Folder or pyarrow URI that holds the run; default: the config's run_dir's parent."""
    ray_address: str | None = None
    max_failures: int = 3
    use_gpu: bool = False
    threads_per_worker: int = 1
    metrics_export_port: int | None = None
    """For a Ray cluster started here: the port its agent serves Prometheus metrics on."""
    comm: CommSource = CommSource()
    """What to predict the gradient all-reduce from (logged beside the measured time)."""


def storage_location(config: TrainConfig, options: DistributedOptions) -> tuple[str, str]:
    """``(storage_path, run name)`` as Ray Train wants them."""
    name = config.run_dir.name
    if options.storage_path is None:
        return str(config.run_dir.parent.expanduser().absolute()), name
    _, path = resolve_storage(options.storage_path)  # validates a URI early
    return (options.storage_path if is_uri(options.storage_path) else path), name


# --------------------------------------------------------------------------- worker side
class RayTrainContext(RankContext):
    """Ranks, checkpoints and reports through Ray Train (which built the process group)."""

    def __init__(self) -> None:
        import ray.train

        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()

    @contextmanager
    def resume_folder(self) -> Iterator[Path | None]:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as folder:
            yield Path(folder)

    @contextmanager
    def staging_folder(self, step: int) -> Iterator[Path]:
        with tempfile.TemporaryDirectory() as tmp:
            yield Path(tmp)

    def report(self, step: int, metrics: dict[str, float], checkpoint: Path | None) -> None:
        import ray.train

        if checkpoint is None:
            ray.train.report(metrics)
        else:
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint)),
                checkpoint_dir_name=checkpoint_name(step),
            )

    def metrics(self) -> TrainingMetrics | None:
        return ray_metrics() if self.rank == 0 else None


def quiet_ray_train_reports() -> None:
    """Ray Train logs every report (metrics dict included) at INFO; ours are in the metrics instead.

    Its worker-context logger is named after its file, so it is found through the module.
    """
    try:
        from ray.train.v2._internal.execution import context as ray_train_context
    except ImportError:  # a later Ray moved it: the log stays noisy, nothing breaks
        return
    logging.getLogger(ray_train_context.__file__).setLevel(logging.WARNING)


def train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker function."""
    quiet_ray_train_reports()
    train_rank(RankJob.model_validate(loop_config), RayTrainContext())


# --------------------------------------------------------------------------- driver side
@dataclass(frozen=True)
class DistributedResult:
    run_folder: str
    checkpoint_folder: str
    step: int
    metrics: dict[str, Any]


def check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast on a cluster address nothing listens on (ray.init would retry for minutes)."""
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise NasfleetError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def connect_ray(address: str | None, metrics_export_port: int | None = None) -> None:
    """Join the given cluster, the one `ray job submit` runs us in, or start a local one."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)
    # A cluster started here serves on loopback only; joining one uses its own addresses.
    local: dict[str, Any] = {} if address else {"_node_ip_address": "127.0.0.1", "dashboard_host": "127.0.0.1"}
    if not address and metrics_export_port is not None:
        local["_metrics_export_port"] = metrics_export_port
    try:
        ray.init(address=address, configure_logging=False, **local)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = address or "a new local cluster"
        raise NasfleetError(f"cannot connect to Ray at {where}: {str(exc).splitlines()[0]}") from None


def check_resources(options: DistributedOptions, have: int | None = None) -> None:
    """Enough CPUs (or GPUs) for one worker each; ``have`` defaults to the connected cluster's."""
    import ray

    kind = "GPU" if options.use_gpu else "CPU"
    if have is None:
        have = int(ray.cluster_resources().get(kind, 0))
    if options.workers > have:
        raise NasfleetError(f"{options.workers} workers need {options.workers} {kind}s but the Ray cluster has {have}")


def train_distributed(
    config: TrainConfig, options: DistributedOptions, resume: bool = False, until_step: int | None = None
) -> DistributedResult:
    """Run the Ray Train job to the end of the schedule (surviving worker failures).

    ``until_step`` stops early with a checkpoint, keeping the schedule; ``resume`` goes on.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if options.workers < 1:
        raise NasfleetError("--workers must be at least 1 for distributed training")
    deepspeed_config = load_deepspeed_config(options.deepspeed_config)
    check_strategy_supports(config, deepspeed_config)
    storage, name = storage_location(config, options)
    folder = join(storage, name)
    existing = latest_checkpoint(folder)
    if existing and not resume:
        raise NasfleetError(f"{folder} already holds a run; pass --resume to continue it or choose another run_dir")
    if resume and not existing:
        raise NasfleetError(f"cannot resume: no checkpoint in {folder}")
    last_step = config.optim.steps if until_step is None else min(until_step, config.optim.steps)
    if existing and checkpoint_step(existing) >= last_step:
        return DistributedResult(folder, existing, checkpoint_step(existing), {})
    prediction = predict_for_job(config, options.workers, deepspeed_config, options.comm)
    import ray

    starts_local_cluster = not (options.ray_address or os.environ.get("RAY_ADDRESS")) and not ray.is_initialized()
    if starts_local_cluster and not options.use_gpu:
        check_resources(options, have=os.cpu_count() or 1)  # before paying for a cluster start
    connect_ray(options.ray_address, options.metrics_export_port)
    check_resources(options)

    trainer = TorchTrainer(
        train_worker,
        train_loop_config=RankJob(
            config=config,
            deepspeed=deepspeed_config,
            threads=options.threads_per_worker,
            last_step=last_step,
            predicted_allreduce_s=prediction.allreduce_s if prediction else None,
        ).model_dump(mode="json"),
        scaling_config=ScalingConfig(
            num_workers=options.workers, use_gpu=options.use_gpu, resources_per_worker={"CPU": 1}
        ),
        torch_config=TorchConfig(backend="nccl" if options.use_gpu else "gloo"),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=options.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        ),
    )
    result = trainer.fit()
    checkpoint = latest_checkpoint(folder)
    if checkpoint is None:
        raise NasfleetError(f"training finished without a checkpoint in {folder}")
    metrics = dict(result.metrics or {})
    return DistributedResult(folder, checkpoint, checkpoint_step(checkpoint), metrics)
