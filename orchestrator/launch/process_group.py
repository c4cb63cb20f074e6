"""Training without Ray: ranks started by ``mpiexec`` (MPI/Slurm clusters) or ``torchrun``.

Every process runs ``nasfleet train --launcher mpi|torchrun``; ranks are discovered from
MPI (mpi4py) or from torchrun's environment, and they share a run folder on a filesystem
all of them can reach. Checkpoints are staged by every rank in a hidden folder and
published by rank 0 with one rename, so a crash never leaves a half-written checkpoint
under a ``checkpoint_<step>`` name; re-running the same command resumes from the newest.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.comm_prediction import CommSource, predict_for_job
from nasfleet.orchestrator.config import TrainConfig
from nasfleet.orchestrator.metrics import PrometheusEndpoint, TrainingMetrics, prometheus_metrics
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
from nasfleet.orchestrator.storage import CHECKPOINT_PREFIX, latest_checkpoint

Launcher = Literal["mpi", "torchrun"]
METRICS_FILE = "metrics.jsonl"


def discover_mpi_ranks() -> None:
    """Export torch.distributed's environment from MPI.

    On one host the rendezvous is 127.0.0.1 on a free port (DeepSpeed's own discovery
    takes the first non-loopback address and a fixed port); across hosts DeepSpeed's
    mpi4py discovery (``deepspeed.init_distributed``) does the job.
    """
    if "RANK" in os.environ and "MASTER_ADDR" in os.environ:
        return
    try:
        from mpi4py import MPI
    except ImportError:
        raise NasfleetError("--launcher mpi needs mpi4py (pip install 'nasfleet[mpi]')") from None
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    if len(set(comm.allgather(MPI.Get_processor_name()))) > 1:
        return
    port = None
    if rank == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    port = comm.bcast(port, root=0)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(comm.Get_size()),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )


class ProcessGroupContext(RankContext):
    """Ranks from the launcher's environment; checkpoints and metrics in a shared run folder."""

    def __init__(self, run_folder: Path, launcher: Launcher, use_gpu: bool, metrics_port: int | None) -> None:
        import deepspeed

        if launcher == "mpi":
            discover_mpi_ranks()
        elif "RANK" not in os.environ:
            raise NasfleetError("--launcher torchrun: RANK is not set; start the job with torchrun")
        deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo", auto_mpi_discovery=launcher == "mpi")
        self.rank, self.world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        self.run_folder = run_folder
        self.endpoint: PrometheusEndpoint | None = None
        if metrics_port is not None and self.rank == 0:
            self.endpoint = prometheus_metrics(metrics_port)

    @contextmanager
    def resume_folder(self) -> Iterator[Path | None]:
        latest = latest_checkpoint(str(self.run_folder))
        yield Path(latest) if latest else None

    @contextmanager
    def staging_folder(self, step: int) -> Iterator[Path]:
        folder = self.run_folder / f".{checkpoint_name(step)}.partial"
        if self.rank == 0:
            shutil.rmtree(folder, ignore_errors=True)  # left by a crash mid-checkpoint
            folder.mkdir(parents=True)
        torch.distributed.barrier()
        yield folder

    def report(self, step: int, metrics: dict[str, float], checkpoint: Path | None) -> None:
        if self.rank == 0:
            with (self.run_folder / METRICS_FILE).open("a") as f:
                f.write(json.dumps(metrics) + "\n")
            if checkpoint is not None:
                self._publish(step, checkpoint)
        torch.distributed.barrier()

    def _publish(self, step: int, staged: Path) -> None:
        final = self.run_folder / checkpoint_name(step)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staged, final)
        published = sorted(self.run_folder.glob(f"{CHECKPOINT_PREFIX}*"))
        for old in published[:-CHECKPOINTS_KEPT]:
            shutil.rmtree(old, ignore_errors=True)

    def metrics(self) -> TrainingMetrics | None:
        return self.endpoint.metrics if self.endpoint else None


def train_process_group(
    config: TrainConfig,
    launcher: Launcher,
    deepspeed_config: Path | None,
    resume: bool = False,
    use_gpu: bool = False,
    metrics_port: int | None = None,
    threads: int = 1,
    comm: CommSource = CommSource(),
) -> tuple[int, str]:
    """Train this process's rank; returns ``(rank, run folder)``. Rank 0 goes on to evaluate."""
    settings = load_deepspeed_config(deepspeed_config)
    check_strategy_supports(config, settings)
    folder = config.run_dir.expanduser().absolute()
    existing = latest_checkpoint(str(folder))
    if existing and not resume:
        raise NasfleetError(f"{folder} already holds a run; pass --resume to continue it or choose another run_dir")
    if resume and not existing:
        raise NasfleetError(f"cannot resume: no checkpoint in {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    context = ProcessGroupContext(folder, launcher, use_gpu, metrics_port)
    last_step = config.optim.steps
    if existing is None or checkpoint_step(existing) < last_step:
        prediction = predict_for_job(config, context.world_size, settings, comm)
        job = RankJob(
            config=config,
            deepspeed=settings,
            threads=threads,
            last_step=last_step,
            predicted_allreduce_s=prediction.allreduce_s if prediction else None,
        )
        train_rank(job, context)
    return context.rank, str(folder)
