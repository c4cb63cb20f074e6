"""One training step: the strategy's tasks run on one batch, their gradients accumulate.

Nothing here depends on which strategy runs or on how gradients are reduced: the strategy
plans the tasks and computes each loss, the backend back-propagates and (after the step)
reduces and applies the gradients.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from nasfleet.orchestrator.train.backends import TrainingBackend
from nasfleet.strategies import SubnetTask, TaskOutputs, TrainingStrategy
from nasfleet.supernet import SearchSpace
from nasfleet.supernet.capture import captured_outputs


@dataclass(frozen=True)
class StepBatch:
    images: torch.Tensor
    labels: torch.Tensor
    example_ids: torch.Tensor
    """The batch's indices in the training set (for strategies that weigh examples)."""
    shared: tuple[torch.Tensor, torch.Tensor]
    """A batch identical on every rank, for decisions all ranks must agree on."""


@dataclass(frozen=True)
class TaskResult:
    role: str
    mflops: float
    loss: float
    """The strategy's own loss for the task (what was back-propagated, before the task weight)."""
    cross_entropy: float
    """Cross-entropy against the labels: comparable across strategies whatever they optimise."""
    accuracy: float


def run_step(
    backend: TrainingBackend,
    strategy: TrainingStrategy,
    space: SearchSpace,
    batch: StepBatch,
    step: int,
    rng: np.random.Generator,
) -> list[TaskResult]:
    """Forward and backward every task of the step; the caller then calls ``backend.step()``."""
    results: list[TaskResult] = []
    earlier: dict[str, TaskOutputs] = {}
    strategy.before_step(step, backend.model, batch.shared)
    tasks: list[SubnetTask] = strategy.subnets_for_step(step, rng)
    for task in tasks:
        with captured_outputs(backend.module, task.capture) as features:
            logits = backend.model(batch.images, task.arch)
        outputs = TaskOutputs(logits, dict(features))
        loss = strategy.loss(task, outputs, batch.labels, earlier)
        backend.backward(task.weight * loss)
        detached = outputs.detached()
        strategy.after_backward(task, backend.model, detached.logits, batch.labels, batch.example_ids)
        earlier[task.role] = detached
        with torch.no_grad():
            cross_entropy = F.cross_entropy(detached.logits, batch.labels).item()
            accuracy = (detached.logits.argmax(dim=1) == batch.labels).float().mean().item()  # class dim 1: per token for text
        results.append(TaskResult(task.role, space.flops(task.arch) / 1e6, loss.item(), cross_entropy, accuracy))
    strategy.after_step(step, [r.loss for r in results])
    return results


@dataclass
class RoleMeans:
    """Running means of each logged quantity per subnet role."""

    sums: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))

    def add(self, results: list[TaskResult]) -> None:
        for r in results:
            bucket = self.sums[r.role]
            bucket["count"] += 1
            for key in ("loss", "cross_entropy", "accuracy", "mflops"):
                bucket[key] += getattr(r, key)

    def take(self) -> dict[str, dict[str, float]]:
        """The means since the last call, and a fresh start."""
        means = {role: {k: v / b["count"] for k, v in b.items() if k != "count"} for role, b in self.sums.items()}
        self.sums.clear()
        return means


@dataclass
class ThroughputWindow:
    """Step timings since the last log line, split into compute and update.

    "update" is the backend's step: under DeepSpeed it starts with the gradient all-reduce
    (also timed on its own), then the optimizer and learning-rate steps.
    """

    global_batch: int
    """Examples per step, all ranks together."""
    world_size: int = 1
    compute_s: float = 0.0
    update_s: float = 0.0
    allreduce_s: float = 0.0
    steps: int = 0
    subnets: int = 0

    def add(self, compute_s: float, update_s: float, allreduce_s: float, subnets: int) -> None:
        self.compute_s += compute_s
        self.update_s += update_s
        self.allreduce_s += allreduce_s
        self.steps += 1
        self.subnets += subnets

    def take(self) -> dict[str, float]:
        elapsed = max(self.compute_s + self.update_s, 1e-12)
        steps = max(self.steps, 1)
        timing = {
            "steps": float(self.steps),
            "compute_s_per_step": self.compute_s / steps,
            "update_s_per_step": self.update_s / steps,
            "allreduce_s_per_step": self.allreduce_s / steps,
            "samples_per_s": self.steps * self.global_batch / elapsed,
            "subnets_per_s": self.subnets * self.world_size / elapsed,
        }
        self.compute_s = self.update_s = self.allreduce_s = 0.0
        self.steps = self.subnets = 0
        return timing
