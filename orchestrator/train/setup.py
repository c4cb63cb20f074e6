"""What one training process builds from the job config: data, space, strategy, model, optimizer.

Every rank builds the same initial weights (seeded by ``job.seed``); only the subnet-sampling
generator differs per rank, so ranks train different random subnets. The same recipe
(Nesterov SGD, warm-up then cosine) trains subnets stand-alone in the benchmarks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import JobConfig, OptimConfig
from nasfleet.orchestrator.data import DataShape, DataSplits, data_shape, load_data
from nasfleet.safe_load import safe_torch_load
from nasfleet.strategies import TrainingStrategy, build_strategy
from nasfleet.supernet import SearchSpace, space_for_shape


def job_space(job: JobConfig, shape: DataShape | None = None) -> SearchSpace:
    """The job's search space shaped for its data set (known without loading the data)."""
    shape = shape or data_shape(job.data)
    return space_for_shape(job.space, shape.in_channels, shape.image_size, shape.num_classes)


def job_strategy(job: JobConfig, space: SearchSpace | None = None) -> TrainingStrategy:
    return build_strategy(job.strategy.name, job.strategy.params, space or job_space(job))


def lr_factor(step: int, optim: OptimConfig, restarts: Sequence[int] = ()) -> float:
    """Linear warm-up, then cosine decay to zero; each phase between ``restarts`` has its own."""
    start = max((r for r in restarts if r <= step), default=0)
    end = min((r for r in restarts if r > step), default=optim.steps)
    step, steps = step - start, end - start
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    progress = (step - optim.warmup_steps) / max(1, steps - optim.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def sgd_with_schedule(
    model: nn.Module, optim: OptimConfig, restarts: Sequence[int] = ()
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """The training recipe's optimizer (Nesterov SGD when momentum > 0) and its warm-up + cosine schedule
    (restarted at ``restarts``, a strategy's phases)."""
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=optim.lr,
        momentum=optim.momentum,
        weight_decay=optim.weight_decay,
        nesterov=optim.momentum > 0,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, optim, restarts))


@dataclass
class RankSetup:
    """Everything one process trains with, before any backend wraps it."""

    job: JobConfig
    data: DataSplits
    space: SearchSpace
    strategy: TrainingStrategy
    model: nn.Module
    optimizer: torch.optim.SGD
    scheduler: torch.optim.lr_scheduler.LambdaLR
    rng: np.random.Generator


def build_rank(job: JobConfig, sampling_rank: int = 0) -> RankSetup:
    """Data, space, strategy, model, optimizer and schedule; ``sampling_rank`` seeds subnet sampling."""
    data = load_data(job.data)
    space = job_space(job)
    strategy = job_strategy(job, space)
    torch.manual_seed(job.seed)
    model = strategy.build_model()
    if job.init_weights is not None:
        load_initial_weights(model, job.init_weights)
    strategy.bind_training_data(data.train.images, data.train.labels)
    optimizer, scheduler = sgd_with_schedule(model, job.optim, strategy.schedule_restarts(job.optim.steps))
    rng = np.random.default_rng(job.seed if sampling_rank == 0 else [job.seed, sampling_rank])
    return RankSetup(job, data, space, strategy, model, optimizer, scheduler, rng)


def load_initial_weights(model: nn.Module, path: Path) -> None:
    """Copy a state-dict file's tensors into ``model`` (``JobConfig.init_weights``); the rest stay as they are.

    Every tensor in the file must name one of the model's, with the same shape: a file for
    another model is one NasfleetError, not a silently partial load.
    """
    state = safe_torch_load(path, "init_weights file")
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NasfleetError(f"init_weights file {path} is not a state dict of tensors")
    own = model.state_dict()
    unknown = [name for name in state if name not in own]
    reshaped = [name for name in state if name in own and state[name].shape != own[name].shape]
    if unknown:
        raise NasfleetError(f"init_weights file {path}: {len(unknown)} tensors the model lacks (first {unknown[0]})")
    if reshaped:
        name = reshaped[0]
        raise NasfleetError(
            f"init_weights file {path}: {len(reshaped)} tensors of another shape (first {name}: "
            f"{tuple(state[name].shape)} in the file, {tuple(own[name].shape)} in the model)"
        )
    model.load_state_dict(state, strict=False)
