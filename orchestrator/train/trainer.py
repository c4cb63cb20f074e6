"""The single-process supernet trainer.

One step: ask the strategy for the step's subnet tasks, run each on the same batch,
back-propagate each loss (gradients accumulate over the subnets), take one optimizer
step. Nothing here depends on which strategy runs.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.train.checkpoints import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from nasfleet.orchestrator.config import OptimConfig, TrainConfig, dump_config
from nasfleet.orchestrator.data import BatchStream, DataSplits, load_data
from nasfleet.orchestrator.metrics import TrainingMetrics
from nasfleet.strategies import TrainingStrategy, build_strategy
from nasfleet.supernet import SearchSpace, build_space

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"


@dataclass
class TaskResult:
    role: str
    mflops: float
    loss: float
    accuracy: float


@dataclass
class TrainingRun:
    """Everything the loop needs, built once from the config."""

    config: TrainConfig
    data: DataSplits
    space: SearchSpace
    model: nn.Module
    strategy: TrainingStrategy
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    rng: np.random.Generator
    step: int = 0

    @property
    def checkpoint_path(self) -> Path:
        return self.config.run_dir / CHECKPOINT_FILE


def space_for_data(config: TrainConfig, data: DataSplits) -> SearchSpace:
    """The configured space with its input/output shape taken from the data."""
    shaped = config.space.model_copy(
        update={"in_channels": data.in_channels, "image_size": data.image_size, "num_classes": data.num_classes}
    )
    return build_space(type(config.space).model_validate(shaped.model_dump()))


def supernet_for(config: TrainConfig, space: SearchSpace) -> nn.Module:
    """The module a run trains and saves: the space's supernet, wrapped as its strategy needs
    (few-shot: routed sub-supernet copies). Loading a run for evaluation builds the same."""
    return build_strategy(config.strategy.name, config.strategy.params, space).wrap_model(space.build_supernet())


def lr_factor(step: int, optim: OptimConfig) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    progress = (step - optim.warmup_steps) / max(1, optim.steps - optim.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def sgd_with_schedule(
    model: nn.Module, optim: OptimConfig
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """The training recipe's optimizer (Nesterov SGD when momentum > 0) and its warm-up + cosine schedule."""
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=optim.lr,
        momentum=optim.momentum,
        weight_decay=optim.weight_decay,
        nesterov=optim.momentum > 0,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, optim))


def build_run(config: TrainConfig, rank: int = 0) -> TrainingRun:
    """Data, space, strategy, supernet, optimizer and schedule for one process.

    Every rank builds the same initial weights (seeded by ``config.seed``); only the
    subnet-sampling generator differs per rank, so ranks train different random subnets.
    """
    data = load_data(config.data)
    space = space_for_data(config, data)
    strategy = build_strategy(config.strategy.name, config.strategy.params, space)
    torch.manual_seed(config.seed)
    model = strategy.wrap_model(space.build_supernet())
    optimizer, scheduler = sgd_with_schedule(model, config.optim)
    rng = np.random.default_rng(config.seed if rank == 0 else [config.seed, rank])
    return TrainingRun(config, data, space, model, strategy, optimizer, scheduler, rng)


def run_step(
    model: nn.Module,
    strategy: TrainingStrategy,
    space: SearchSpace,
    images: torch.Tensor,
    labels: torch.Tensor,
    step: int,
    rng: np.random.Generator,
    backward: Callable[[torch.Tensor], object] = torch.Tensor.backward,
    example_ids: torch.Tensor | None = None,
    shared_batch: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> list[TaskResult]:
    """Forward and backward every task of the step; the caller steps the optimizer.

    ``backward`` lets a DeepSpeed engine accumulate the gradients its own way.
    ``example_ids`` (the batch's indices in the training set) and ``shared_batch`` (a batch
    identical on every rank; default: this step's batch) are passed on to the strategy's hooks.
    """
    results: list[TaskResult] = []
    teacher_probs: torch.Tensor | None = None
    strategy.before_step(step, model, shared_batch if shared_batch is not None else (images, labels))
    for task in strategy.subnets_for_step(step, rng):
        logits = model(images, task.arch)
        loss = strategy.loss(task, logits, labels, teacher_probs)
        backward(task.weight * loss)
        strategy.after_backward(task, model, logits.detach(), labels, example_ids)
        if task.teaches:
            teacher_probs = torch.softmax(logits.detach(), dim=-1)
        accuracy = (logits.argmax(dim=-1) == labels).float().mean().item()
        results.append(TaskResult(task.role, space.flops(task.arch) / 1e6, loss.item(), accuracy))
    strategy.after_step(step, [r.loss for r in results])
    return results


def checkpoint_state(run: TrainingRun) -> dict[str, Any]:
    return {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "strategy": run.strategy.state_dict(),
        "rng": {"numpy": run.rng.bit_generator.state, "torch": torch.get_rng_state()},
        "step": run.step,
        "config": run.config.model_dump(mode="json"),
    }


def restore(run: TrainingRun, state: dict[str, Any]) -> None:
    try:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise NasfleetError(
            f"checkpoint {run.checkpoint_path} does not match this config's supernet: {str(exc).splitlines()[0]}"
        ) from None
    run.scheduler.load_state_dict(state["scheduler"])
    run.strategy.load_state_dict(state["strategy"])
    run.rng.bit_generator.state = state["rng"]["numpy"]
    torch.set_rng_state(state["rng"]["torch"])
    run.step = int(state["step"])


@dataclass
class RoleMeans:
    """Running means of loss, batch accuracy and MFLOPs per subnet role."""

    sums: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))

    def add(self, results: list[TaskResult]) -> None:
        for r in results:
            bucket = self.sums[r.role]
            bucket["count"] += 1
            bucket["loss"] += r.loss
            bucket["accuracy"] += r.accuracy
            bucket["mflops"] += r.mflops

    def take(self) -> dict[str, dict[str, float]]:
        """The means since the last call, and a fresh start."""
        means = {role: {k: v / b["count"] for k, v in b.items() if k != "count"} for role, b in self.sums.items()}
        self.sums.clear()
        return means


@dataclass
class ThroughputWindow:
    """Step timings since the last log line, split into compute and update.

    "update" is ``optimizer.step()`` in one process and ``engine.step()`` under
    DeepSpeed, where it starts with the gradient all-reduce.
    """

    batch_size: int
    world_size: int = 1
    compute_s: float = 0.0
    update_s: float = 0.0
    steps: int = 0
    subnets: int = 0

    def add(self, compute_s: float, update_s: float, subnets: int) -> None:
        self.compute_s += compute_s
        self.update_s += update_s
        self.steps += 1
        self.subnets += subnets

    def take(self) -> dict[str, float]:
        elapsed = max(self.compute_s + self.update_s, 1e-12)
        steps = max(self.steps, 1)
        timing = {
            "steps": float(self.steps),
            "compute_s_per_step": self.compute_s / steps,
            "update_s_per_step": self.update_s / steps,
            "samples_per_s": self.steps * self.batch_size * self.world_size / elapsed,
            "subnets_per_s": self.subnets * self.world_size / elapsed,
        }
        self.compute_s = self.update_s = 0.0
        self.steps = self.subnets = 0
        return timing


@dataclass
class MetricsLog:
    """Role means flushed as one JSON line every ``log_every_steps``."""

    path: Path
    means: RoleMeans = field(default_factory=RoleMeans)

    def flush(self, step: int, lr: float, timing: dict[str, float]) -> dict[str, dict[str, float]]:
        means = self.means.take()
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "lr": lr, "by_role": means, "timing": timing}) + "\n")
        return means

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` by a run that died before its next checkpoint."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in kept))


def prepare_run_dir(config: TrainConfig, resume: bool) -> None:
    run_dir = config.run_dir
    if (run_dir / CHECKPOINT_FILE).exists() and not resume:
        raise NasfleetError(f"{run_dir} already holds a run; pass --resume to continue it or choose another run_dir")
    if resume and not (run_dir / CHECKPOINT_FILE).exists():
        raise NasfleetError(f"cannot resume: no checkpoint in {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, run_dir / CONFIG_FILE)


def train(
    config: TrainConfig,
    resume: bool = False,
    show_progress: bool = True,
    until_step: int | None = None,
    metrics: TrainingMetrics | None = None,
) -> TrainingRun:
    """Train (or continue) the run described by ``config``; returns the run.

    ``until_step`` stops early (with a checkpoint) without changing the schedule, for
    time-sliced jobs; a later ``resume`` carries on exactly. ``metrics`` receives each
    logging window and checkpoint time (e.g. a Prometheus endpoint).
    """
    last_step = config.optim.steps if until_step is None else min(until_step, config.optim.steps)
    prepare_run_dir(config, resume)
    run = build_run(config)
    log = MetricsLog(config.run_dir / METRICS_FILE)
    window = ThroughputWindow(config.data.batch_size)
    if resume:
        restore(run, load_checkpoint(run.checkpoint_path))
        log.truncate_after(run.step)
    batches = BatchStream(run.data.train, config.data.batch_size, config.seed, sampler=run.strategy)
    shared_batch = batches.shared_batch()
    run.model.train()
    with Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), disable=not show_progress,
    ) as progress:
        bar = progress.add_task("train", total=config.optim.steps, completed=run.step, status="")
        while run.step < last_step:
            example_ids = batches.indices(run.step)
            images, labels = batches.examples(example_ids)
            run.optimizer.zero_grad(set_to_none=True)
            start = time.perf_counter()
            results = run_step(
                run.model, run.strategy, run.space, images, labels, run.step, run.rng,
                example_ids=example_ids, shared_batch=shared_batch,
            )
            middle = time.perf_counter()
            run.optimizer.step()
            run.scheduler.step()
            window.add(middle - start, time.perf_counter() - middle, len(results))
            run.step += 1
            log.means.add(results)
            if run.step % config.log_every_steps == 0 or run.step == config.optim.steps:
                timing = window.take()
                means = log.flush(run.step, run.scheduler.get_last_lr()[0], timing)
                if metrics is not None:
                    metrics.window(int(timing["steps"]), timing, means)
                status = "  ".join(f"{role} loss {m['loss']:.3f} acc {m['accuracy']:.2f}" for role, m in means.items())
                progress.update(bar, status=status)
            if run.step % config.checkpoint_every_steps == 0 or run.step == last_step:
                started = time.perf_counter()
                save_checkpoint(checkpoint_state(run), run.checkpoint_path)
                if metrics is not None:
                    metrics.checkpoint(time.perf_counter() - started)
            progress.update(bar, completed=run.step)
    return run
