"""The training loop: the only place in nasfleet that takes optimizer steps.

One process is world size 1 with the plain torch backend; Ray Train, ``mpiexec`` and
``torchrun`` ranks run the same loop with the DeepSpeed backend. Launchers differ only in
their :class:`RankContext`: how a rank learns its place, finds the checkpoint to resume from
and publishes checkpoints. Checkpoint files and ``metrics.jsonl`` are the same for all.

Each rank trains its own subnet sample on its own data shard; one step therefore trains
``world_size × subnets-per-rank`` subnets and all ranks keep identical parameters.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import JobConfig, config_yaml
from nasfleet.orchestrator.data import BatchStream
from nasfleet.orchestrator.metrics import TrainingMetrics
from nasfleet.orchestrator.storage import join, storage_error
from nasfleet.orchestrator.train.allocator import reuse_freed_memory
from nasfleet.orchestrator.train.backends import DeepSpeedBackend, TorchBackend, TrainingBackend
from nasfleet.orchestrator.train.checkpoints import (
    CONFIG_FILE,
    SUPERNET_FILE,
    CheckpointMeta,
    RankState,
    checkpoint_name,
    load_state_into,
    weights_sha256,
    write_meta,
    write_rank_state,
    write_supernet,
)
from nasfleet.orchestrator.train.metrics_log import MetricsLog
from nasfleet.orchestrator.train.progress import ProgressLines
from nasfleet.orchestrator.train.progress import emit as emit_progress
from nasfleet.safe_load import safe_torch_load
from nasfleet.orchestrator.train.setup import RankSetup, build_rank
from nasfleet.orchestrator.train.step import RoleMeans, StepBatch, ThroughputWindow, run_step


@dataclass
class ResumePoint:
    """A checkpoint as a rank reads it: a local folder, its rank states and its log lines."""

    folder: Path
    meta: CheckpointMeta
    state: RankState
    metrics_lines: list[str] = field(default_factory=list)
    state_of_rank: int = 0
    """The rank whose state ``state`` is: this one, unless the checkpoint had fewer ranks."""


class RankContext(ABC):
    """How a launcher places a rank, restores it and publishes its checkpoints."""

    rank: int
    world_size: int
    progress_lines: bool = True
    """Whether rank 0 prints a progress line per logged window (launchers whose output is a log)."""

    @abstractmethod
    def resume_point(self) -> AbstractContextManager[ResumePoint | None]:
        """The checkpoint to resume from, downloaded if need be (None: start fresh)."""

    @abstractmethod
    def staging_folder(self, step: int) -> AbstractContextManager[Path]:
        """Where this rank writes its part of the checkpoint for ``step``."""

    @abstractmethod
    def publish(self, step: int, record: dict[str, Any], staged: Path | None) -> None:
        """Report a log record, and the staged checkpoint once every rank has written it."""

    def barrier(self) -> None:
        """Wait for every rank (ranks write one checkpoint folder together)."""
        if self.world_size > 1:
            torch.distributed.barrier()

    def metrics(self) -> TrainingMetrics | None:
        return None

    def step_done(self, step: int, last_step: int, status: str) -> None:
        """Called after every step (a progress bar in one process)."""


def make_backend(job: JobConfig, setup: RankSetup, world: int = 1, shards: int = 1) -> TrainingBackend:
    """Plain torch in this process; a DeepSpeed engine for every data-parallel launcher.

    A rank that runs several of the step's ``shards`` scales its gradient by ``world / shards``:
    the engine averages over the ``world`` ranks, so the step's gradient is then the mean over
    shards, the same as with one rank per shard.
    """
    if job.launch.distributed:
        return DeepSpeedBackend(
            setup.model, setup.optimizer, setup.scheduler, job.launch.deepspeed, job.data.batch_size,
            gradient_scale=world / shards, grad_clip_norm=job.optim.grad_clip_norm,
        )
    return TorchBackend(setup.model, setup.optimizer, setup.scheduler, job.optim.grad_clip_norm)


def data_parallel_shards(job: JobConfig, world: int) -> int:
    """How many ``data.batch_size`` slices make one step's global batch.

    One per rank, unless the job is elastic (``launch.min_workers``): then always
    ``launch.workers``, whatever number of ranks is running, and rank ``r`` of ``world`` runs
    the shards ``r, r + world, ...`` one after another (gradient accumulation). A step then
    sees the same examples at any worker count, so the global batch and the learning-rate
    recipe do not change when a node is lost or returns.
    """
    if not job.launch.elastic:
        return world
    low, high = job.launch.min_workers, job.launch.workers
    if not (low or 1) <= world <= high:
        raise NasfleetError(f"{world} ranks are outside the job's elastic range launch.min_workers..workers = {low}..{high}")
    return high


def sampling_rank(job: JobConfig, rank: int) -> int:
    """Which rank's subnet-sampling stream this rank follows.

    Under stages 0, 1 and 2 the engine reduces every parameter's gradient in one fixed order
    whatever subnets a rank ran (``DeepSpeedBackend``), so each rank draws its own subnets.
    ZeRO-3 reduces inside backward in the order the subnet's graph reaches its partitioned
    parameters, so there all ranks share rank 0's subnet samples (each still trains on its
    own data shard).
    """
    return 0 if job.launch.distributed and zero_stage(job.launch.deepspeed) >= 3 else rank


def zero_stage(deepspeed: dict[str, Any]) -> int:
    return int(deepspeed.get("zero_optimization", {}).get("stage", 0))


def _check_resumable(
    meta: CheckpointMeta, backend: TrainingBackend, world_size: int, shards: int, threads: int, elastic: bool
) -> None:
    if meta.backend != backend.name:
        kinds = {"torch": "in one process (launch.kind local)", "deepspeed": "data parallel (ray, mpi or torchrun)"}
        raise NasfleetError(f"the checkpoint was trained {kinds[meta.backend]}: resume it the same way")
    if meta.world_size != world_size and not elastic:
        raise NasfleetError(
            f"the checkpoint was trained by {meta.world_size} ranks, this job has {world_size} "
            f"(an elastic job, --workers MIN:{meta.global_shards}, resumes onto another count)"
        )
    if meta.global_shards != shards:
        raise NasfleetError(
            f"the checkpoint's global batch is {meta.global_shards} × data.batch_size, this job's is {shards} × "
            f"(set launch.workers to {meta.global_shards}, with launch.min_workers to run on fewer ranks)"
        )
    if meta.threads != threads:
        raise NasfleetError(
            f"the checkpoint was trained with {meta.threads} torch thread(s) per process, this job has {threads} "
            "(results depend on it): set launch.threads to match"
        )


@dataclass
class RankProgress:
    """Where this rank is: carried across restarts in its rank state."""

    step: int = 0
    subnets_trained: int = 0
    resumed_from_step: int = 0


def train_rank(
    job: JobConfig, context: RankContext, last_step: int | None = None, predicted_allreduce_s: float | None = None
) -> int:
    """Train this rank from its last checkpoint (if any) to ``last_step`` (default: the end); returns the step.

    ``predicted_allreduce_s`` (the comm model's estimate of one step's gradient all-reduce) is
    logged beside the measured time.
    """
    rank, world = context.rank, context.world_size
    last_step = job.optim.steps if last_step is None else min(last_step, job.optim.steps)
    torch.set_num_threads(job.launch.threads)
    reuse_freed_memory()
    shards = data_parallel_shards(job, world)
    setup = build_rank(job, sampling_rank(job, rank))
    backend = make_backend(job, setup, world, shards)
    progress, log = RankProgress(), MetricsLog(job.run_dir)
    with context.resume_point() as point:
        if point is not None:
            progress = _resume(point, job, setup, backend, world, shards, rank)
            log = MetricsLog(job.run_dir, point.metrics_lines)
    if rank == 0:
        log.restart()
    lines = ProgressLines(job.optim.steps, progress.step) if rank == 0 and context.progress_lines else None
    streams = [
        BatchStream(setup.data.train, job.data.batch_size, job.seed, shard, shards, sampler=setup.strategy)
        for shard in range(rank, shards, world)
    ]
    shared = tuple(t.to(backend.device) for t in streams[0].shared_batch())
    window = ThroughputWindow(job.data.batch_size * shards, world)
    role_means, metrics = RoleMeans(), context.metrics()
    metrics = metrics.for_run(job.run_name) if metrics is not None else None
    backend.module.train()
    while progress.step < last_step:
        step = progress.step
        started = time.perf_counter()
        results = []
        for stream in streams:  # one shard per rank unless an elastic job runs on fewer ranks
            example_ids = stream.indices(step)
            images, labels = (t.to(backend.device) for t in stream.examples(example_ids))
            batch = StepBatch(images, labels, example_ids, shared)  # type: ignore[arg-type]
            results += run_step(backend, setup.strategy, setup.space, batch, step, setup.rng)
        computed = time.perf_counter()
        allreduce_s = backend.step()
        setup.strategy.after_update(step, backend.module)
        window.add(computed - started, time.perf_counter() - computed, allreduce_s, len(results))
        role_means.add(results)
        progress.step += 1
        progress.subnets_trained += len(results)

        step = progress.step
        at_checkpoint = step % job.checkpoint_every_steps == 0 or step == last_step
        status = ""
        if at_checkpoint or step % job.log_every_steps == 0 or step == job.optim.steps:
            means = role_means.take()
            record = {
                "step": step, "lr": backend.lr(), "world_size": world, "resumed_from_step": progress.resumed_from_step,
                "timing": window.take(), "by_role": means,
            }
            if predicted_allreduce_s is not None:
                record["timing"]["predicted_allreduce_s"] = predicted_allreduce_s
            if rank == 0:
                log.append(record)
            if lines is not None:
                emit_progress(lines.line(record))
            if metrics is not None:
                metrics.window(int(record["timing"]["steps"]), record["timing"], means)
            status = "  ".join(f"{role} loss {m['loss']:.3f} acc {m['accuracy']:.2f}" for role, m in means.items())
            if at_checkpoint:
                _checkpoint(context, job, setup, backend, log, progress, record, metrics)
            else:
                context.publish(step, record, None)
        context.step_done(step, last_step, status)
    return progress.step


def _resume(
    point: ResumePoint, job: JobConfig, setup: RankSetup, backend: TrainingBackend, world: int, shards: int, rank: int
) -> RankProgress:
    """Restore the weights, optimizer, strategy and RNG states a checkpoint holds for this rank.

    A rank the checkpoint had no state for (an elastic job grew) starts from the state of rank
    ``rank % old world`` with subnet and torch generators of its own, seeded by the step.
    """
    _check_resumable(point.meta, backend, world, shards, job.launch.threads, job.launch.elastic)
    if backend.name == "torch":  # DeepSpeed's engine restores the module itself
        # The weights first: a job with another space is then told so, not that its optimizer differs.
        supernet = point.folder / SUPERNET_FILE
        load_state_into(backend.module, safe_torch_load(supernet.read_bytes(), f"checkpoint file {supernet}"), str(supernet))
    backend.load(point.folder, rank)
    setup.strategy.load_state_dict(point.state.strategy)
    if point.state_of_rank == rank:
        setup.rng.bit_generator.state = point.state.rng_numpy
        torch.set_rng_state(point.state.rng_torch)
    else:
        setup.rng = np.random.default_rng([job.seed, rank, point.state.step])
        torch.manual_seed(int(np.random.SeedSequence([job.seed, rank, point.state.step]).generate_state(1)[0]))
    return RankProgress(point.state.step, point.state.subnets_trained, point.state.step)


def _checkpoint(
    context: RankContext, job: JobConfig, setup: RankSetup, backend: TrainingBackend, log: MetricsLog,
    progress: RankProgress, record: dict[str, Any], metrics: TrainingMetrics | None,
) -> None:
    """Every rank writes its part of the checkpoint, rank 0 the shared files (``meta.json`` last); then publish."""
    rank, step = context.rank, progress.step
    try:
        with context.staging_folder(step) as folder:
            started = time.perf_counter()
            state = RankState(
                step, progress.subnets_trained, progress.resumed_from_step, setup.strategy.state_dict(),
                setup.rng.bit_generator.state, torch.get_rng_state(), weights_sha256(backend.module),
            )
            backend.save(folder, rank)
            write_rank_state(folder, rank, state)
            context.barrier()
            if rank == 0:
                write_supernet(folder, backend.module)
                log.write_into(folder)
                (folder / CONFIG_FILE).write_text(config_yaml(job))
                shards = data_parallel_shards(job, context.world_size)
                write_meta(folder, CheckpointMeta(step, context.world_size, backend.name, job.launch.threads, shards=shards))
            record["timing"]["checkpoint_s"] = time.perf_counter() - started
            if metrics is not None:
                metrics.checkpoint(record["timing"]["checkpoint_s"])
            context.publish(step, record, folder)
    except OSError as exc:  # a full disk, a read-only or vanished run folder
        raise storage_error("write", join(job.run_dir, checkpoint_name(step)), exc) from None
