"""Training without Ray: ranks started by ``mpiexec`` (MPI/Slurm clusters) or ``torchrun``.

Every process runs ``nasfleet train --launcher mpi|torchrun``; ranks are discovered from
MPI (mpi4py) or from torchrun's environment, and they share a run folder on a filesystem
all of them can reach (see :mod:`~nasfleet.orchestrator.launch.run_folder` for how
checkpoints are published); re-running the same command resumes from the newest.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from typing import Literal

import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.comm_prediction import predict_for_job
from nasfleet.orchestrator.config import JobConfig
from nasfleet.orchestrator.train.deepspeed_ops import prepare_deepspeed_cpu
from nasfleet.orchestrator.launch.rendezvous_store import serve_rendezvous_store
from nasfleet.orchestrator.launch.run_folder import RunFolderContext, check_run_folder, run_config_for_attempt
from nasfleet.orchestrator.metrics import prometheus_metrics
from nasfleet.orchestrator.results.run_lock import hold_run
from nasfleet.orchestrator.train.loop import train_rank

Launcher = Literal["mpi", "torchrun"]


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
    # Rank 0 serves the rendezvous store on loopback itself (torch's own would listen on every interface).
    port = serve_rendezvous_store("127.0.0.1") if rank == 0 else None
    port = comm.bcast(port, root=0)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(comm.Get_size()),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )


def init_process_group(launcher: Launcher, use_gpu: bool) -> tuple[int, int]:
    """Join the launcher's process group; returns ``(rank, world size)``."""
    import deepspeed

    prepare_deepspeed_cpu()
    if launcher == "mpi":
        discover_mpi_ranks()
    elif "RANK" not in os.environ:
        raise NasfleetError("launch.kind torchrun: RANK is not set; start the job with torchrun")
    deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo", auto_mpi_discovery=launcher == "mpi")
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def train_process_group(job: JobConfig, resume: bool, last_step: int | None = None) -> int:
    """Train this process's rank of an ``mpiexec``/``torchrun`` job; returns the rank (rank 0 goes on to evaluate).

    Rank 0 holds the run folder's lock for the whole job, as the Ray driver does, so a second
    job on the same folder is refused; every rank learns of a refusal before anything is
    written. Every rank checks the run folder (they see the same one); rank 0 alone writes
    its config, and puts the previous one back if the attempt fails before it publishes.
    """
    launcher: Launcher = "mpi" if job.launch.kind == "mpi" else "torchrun"
    check_run_folder(job, resume)  # before the group starts: a bad folder is one line, at once
    rank, world = init_process_group(launcher, job.launch.gpu)
    try:
        with ExitStack() as held:
            refusal = None
            if rank == 0:
                try:
                    held.enter_context(hold_run(job.run_dir, f"nasfleet train --launcher {launcher}"))
                except NasfleetError as exc:
                    refusal = str(exc)
            shared = [refusal]
            torch.distributed.broadcast_object_list(shared, src=0)
            if shared[0] is not None:
                raise NasfleetError(shared[0])
            left_to_train = check_run_folder(job, resume)  # again, now that no other job can change it
            if rank == 0:  # a resume that fails before its first checkpoint puts the old config back
                held.enter_context(run_config_for_attempt(job))
            torch.distributed.barrier()
            if left_to_train:
                _train_this_rank(job, rank, world, last_step)
    finally:
        # Left to interpreter exit, the group's threads can abort the process after a clean run.
        torch.distributed.destroy_process_group()
    return rank


def _train_this_rank(job: JobConfig, rank: int, world: int, last_step: int | None) -> None:
    endpoint = prometheus_metrics(job.launch.metrics_port) if job.launch.metrics_port is not None and rank == 0 else None
    context = RunFolderContext(job.run_dir, rank, world, endpoint.metrics if endpoint else None)
    prediction = predict_for_job(job, world)
    train_rank(job, context, last_step, prediction.allreduce_s if prediction else None)
