"""One data-parallel rank's training loop around a DeepSpeed engine, whoever launched it.

Ray Train, ``mpiexec`` and ``torchrun`` differ only in how a rank learns its place, finds
the checkpoint to resume from and publishes checkpoints and metrics: that is the
:class:`RankContext`. The loop itself is written once.

Each rank trains its own subnet sample on its own data shard; with
``managed_gradient_accumulation: false`` every subnet's backward accumulates locally and
``engine.step()`` all-reduces the whole supernet gradient once, then updates. One step
therefore trains ``world_size × subnets-per-rank`` subnets and all ranks keep identical
parameters.
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import BaseModel, ConfigDict

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import TrainConfig
from nasfleet.orchestrator.data import BatchStream
from nasfleet.orchestrator.metrics import TrainingMetrics
from nasfleet.orchestrator.storage import CHECKPOINT_PREFIX, SUPERNET_FILE
from nasfleet.strategies.registry import STRATEGIES
from nasfleet.orchestrator.train.trainer import RoleMeans, ThroughputWindow, TrainingRun, build_run, run_step

ENGINE_TAG = "engine"
CHECKPOINTS_KEPT = 3  # per run, whichever launcher publishes them
DEFAULT_DEEPSPEED_CONFIG: dict[str, Any] = {"zero_optimization": {"stage": 0}}


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def checkpoint_step(checkpoint: str) -> int:
    return int(checkpoint.rstrip("/").rsplit("/", 1)[-1][len(CHECKPOINT_PREFIX) :])


def load_deepspeed_config(path: Path | None) -> dict[str, Any]:
    """The user's DeepSpeed config, JSON or YAML (None: ZeRO stage 0 in fp32, the CPU-friendly default)."""
    if path is None:
        return dict(DEFAULT_DEEPSPEED_CONFIG)
    if not path.is_file():
        raise NasfleetError(f"DeepSpeed config {path} does not exist")
    try:
        text = path.read_text()
        config = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "YAML" if path.suffix in (".yaml", ".yml") else "JSON"
        raise NasfleetError(f"DeepSpeed config {path} is not valid {kind}: {str(exc).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise NasfleetError(f"DeepSpeed config {path} must be a JSON object")
    if "optimizer" in config:
        raise NasfleetError(f"DeepSpeed config {path}: remove the 'optimizer' block; nasfleet passes its own optimizer")
    return config


def deepspeed_config_for(base: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
    """The file's settings plus what the trainer owns: batch sizes and accumulation."""
    merged = {k: v for k, v in base.items() if k != "train_batch_size"}
    # ZeRO partitions any torch optimizer's state, but refuses ones outside its own list
    # unless told; the plain SGD passed here is one of those.
    merged.setdefault("zero_allow_untested_optimizer", True)
    merged.update(
        train_micro_batch_size_per_gpu=config.data.batch_size,
        gradient_accumulation_steps=1,
        managed_gradient_accumulation=False,
        steps_per_print=10**9,
    )
    return merged


class RankJob(BaseModel):
    """What every rank is told: the job config, the DeepSpeed settings, where to stop."""

    model_config = ConfigDict(extra="forbid")

    config: TrainConfig
    deepspeed: dict[str, Any]
    threads: int = 1
    last_step: int
    predicted_allreduce_s: float | None = None
    """The comm layer's prediction for one step's gradient all-reduce, logged beside the measurement."""


class RankContext(ABC):
    """How a launcher places a rank, restores it and publishes its checkpoints and metrics."""

    rank: int
    world_size: int

    @abstractmethod
    def resume_folder(self) -> AbstractContextManager[Path | None]:
        """The checkpoint folder to resume from (None: start fresh)."""

    @abstractmethod
    def staging_folder(self, step: int) -> AbstractContextManager[Path]:
        """Where this rank writes its part of the checkpoint for ``step``."""

    @abstractmethod
    def report(self, step: int, metrics: dict[str, float], checkpoint: Path | None) -> None:
        """Publish metrics (and the staged checkpoint, once every rank has written it)."""

    def metrics(self) -> TrainingMetrics | None:
        return None


def weights_sha256(model: torch.nn.Module) -> str:
    """A digest of every parameter: equal on all ranks when data parallelism works.

    Buffers are left out on purpose: batch-norm running statistics are per rank (each sees
    its own shard and subnets) and are re-estimated per subnet before any evaluation.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class RankProgress:
    """What one rank carries across restarts besides the engine state."""

    step: int = 0
    subnets_trained: int = 0
    resumed_from_step: int = 0


def _save_rank_state(folder: Path, rank: int, progress: RankProgress, run: TrainingRun, engine: Any) -> None:
    torch.save(
        {
            "step": progress.step,
            "subnets_trained": progress.subnets_trained,
            "resumed_from_step": progress.resumed_from_step,
            "strategy": run.strategy.state_dict(),
            "rng": {"numpy": run.rng.bit_generator.state, "torch": torch.get_rng_state()},
            "weights_sha256": weights_sha256(engine.module),
        },
        folder / f"rank_{rank}.pt",
    )


def _restore(folder: Path, engine: Any, run: TrainingRun, rank: int) -> RankProgress:
    engine.load_checkpoint(str(folder), tag=ENGINE_TAG)
    state_path = folder / f"rank_{rank}.pt"
    if not state_path.exists():
        raise RuntimeError(f"checkpoint {folder} has no state for rank {rank}: was the worker count changed?")
    state = torch.load(state_path, weights_only=False)
    run.strategy.load_state_dict(state["strategy"])
    run.rng.bit_generator.state = state["rng"]["numpy"]
    torch.set_rng_state(state["rng"]["torch"])
    step = int(state["step"])
    return RankProgress(step=step, subnets_trained=int(state["subnets_trained"]), resumed_from_step=step)


def zero_stage(deepspeed_config: dict[str, Any]) -> int:
    return int(deepspeed_config.get("zero_optimization", {}).get("stage", 0))


def check_strategy_supports(config: TrainConfig, deepspeed_config: dict[str, Any]) -> None:
    """Refuse, before any worker starts, a ZeRO stage the configured strategy cannot train under."""
    strategy = STRATEGIES.get(config.strategy.name)
    if strategy is not None and zero_stage(deepspeed_config) > strategy.max_zero_stage:
        raise NasfleetError(
            f"strategy {strategy.name!r} supports DeepSpeed ZeRO stage {strategy.max_zero_stage} at most, "
            f"the DeepSpeed config asks for stage {zero_stage(deepspeed_config)}"
        )


def sampling_rank(deepspeed_config: dict[str, Any], rank: int) -> int:
    """Which rank's subnet-sampling stream this rank follows.

    ZeRO stage 2 and 3 reduce gradients inside backward, bucket by bucket as they become
    ready, so every rank must run the same graphs in the same order: there all ranks share
    rank 0's subnet samples (each still trains on its own data shard). Stages 0 and 1
    reduce once in ``engine.step()``, so each rank draws its own subnets.
    """
    return 0 if zero_stage(deepspeed_config) >= 2 else rank


class AllReduceTimer:
    """Times the engine's gradient all-reduce inside ``engine.step()``.

    With ZeRO stage 0/1 and trainer-managed accumulation, ``step()`` calls
    ``allreduce_gradients()`` once; wrapping that bound method measures the
    communication alone. (ZeRO-2 reduces during backward, so there it stays at 0.)
    """

    def __init__(self, engine: Any) -> None:
        self.seconds = 0.0
        inner = engine.allreduce_gradients

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        engine.allreduce_gradients = timed

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def _flatten(step: int, timing: dict[str, float], means: dict[str, dict[str, float]]) -> dict[str, float]:
    metrics = {"step": float(step), **timing}
    for role, values in means.items():
        for key, value in values.items():
            metrics[f"{role}/{key}"] = value
    return metrics


def train_rank(job: RankJob, context: RankContext) -> None:
    """Train this rank from its last checkpoint (if any) to ``job.last_step``."""
    import deepspeed

    config, rank, world = job.config, context.rank, context.world_size
    torch.set_num_threads(job.threads)
    run = build_run(config, rank=sampling_rank(job.deepspeed, rank))
    engine, _, _, _ = deepspeed.initialize(
        model=run.model,
        optimizer=run.optimizer,
        lr_scheduler=run.scheduler,
        config=deepspeed_config_for(job.deepspeed, config),
    )
    with context.resume_folder() as folder:
        progress = _restore(folder, engine, run, rank) if folder is not None else RankProgress()
    batches = BatchStream(run.data.train, config.data.batch_size, config.seed, rank, world, sampler=run.strategy)
    shared_batch = tuple(t.to(engine.device) for t in batches.shared_batch())
    role_means, window, metrics = RoleMeans(), ThroughputWindow(config.data.batch_size, world), context.metrics()
    allreduce = AllReduceTimer(engine)
    engine.train()

    def backward(loss: torch.Tensor) -> None:
        engine.backward(loss, scale_wrt_gas=False)

    while progress.step < job.last_step:
        example_ids = batches.indices(progress.step)
        images, labels = (t.to(engine.device) for t in batches.examples(example_ids))
        start = time.perf_counter()
        results = run_step(
            engine, run.strategy, run.space, images, labels, progress.step, run.rng, backward,
            example_ids=example_ids, shared_batch=shared_batch,  # type: ignore[arg-type]
        )
        middle = time.perf_counter()
        engine.step()  # the gradient all-reduce, then the optimizer and LR-schedule step
        window.add(middle - start, time.perf_counter() - middle, len(results))
        role_means.add(results)
        progress.step += 1
        progress.subnets_trained += len(results)

        step = progress.step
        at_checkpoint = step % config.checkpoint_every_steps == 0 or step == job.last_step
        if step % config.log_every_steps and not at_checkpoint:
            continue
        timing = {**window.take(), "world_size": float(world), "resumed_from_step": float(progress.resumed_from_step)}
        timing["allreduce_s_per_step"] = allreduce.take() / max(timing["steps"], 1.0)
        if job.predicted_allreduce_s is not None:
            timing["predicted_allreduce_s"] = job.predicted_allreduce_s
        means = role_means.take()
        if metrics is not None:
            metrics.window(int(timing["steps"]), timing, means)
        if not at_checkpoint:
            context.report(step, _flatten(step, timing, means), None)
            continue
        with context.staging_folder(step) as folder:
            started = time.perf_counter()
            engine.save_checkpoint(str(folder), tag=ENGINE_TAG)
            _save_rank_state(folder, rank, progress, run, engine)
            if rank == 0:
                supernet = {"model": engine.module.state_dict(), "config": config.model_dump(mode="json"), "step": step}
                torch.save(supernet, folder / SUPERNET_FILE)
            torch.distributed.barrier()
            timing["checkpoint_s"] = time.perf_counter() - started
            if metrics is not None:
                metrics.checkpoint(timing["checkpoint_s"])
            context.report(step, _flatten(step, timing, means), folder)
