"""The interface every supernet-training strategy implements.

A strategy answers three questions and nothing else: which subnets run at this step
(and against which target), how each subnet's loss is computed, and what it must
remember across steps (its state goes into checkpoints). The trainer stays the same
for every strategy: it runs the tasks in order, back-propagates each loss (so gradients
accumulate over the step's subnets) and takes one optimizer step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from nasfleet.errors import NasfleetError
from nasfleet.supernet import Arch, MBConvSpace, SearchSpace


@dataclass(frozen=True)
class SubnetTask:
    """One forward/backward pass of a step.

    ``target`` is what the subnet learns from: the labels, or the soft outputs of the
    step's teacher (the earlier task with ``teaches=True``). ``role`` names the subnet
    for metrics ("largest", "smallest", "random").
    """

    arch: Arch
    role: str
    target: Literal["labels", "teacher"] = "labels"
    teaches: bool = False
    weight: float = 1.0


class StrategyParams(BaseModel):
    """Base of each strategy's validated parameters (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    label_smoothing: float = 0.0


class TrainingStrategy(ABC):
    """A supernet-training method. Subclasses set ``name`` and ``Params`` and plan steps."""

    name: ClassVar[str]
    Params: ClassVar[type[StrategyParams]] = StrategyParams

    def __init__(self, space: SearchSpace, params: StrategyParams) -> None:
        self.space = space
        self.params = params

    @abstractmethod
    def subnets_for_step(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        """The subnets to run at ``step``, teachers before the tasks that learn from them."""

    def loss(
        self, task: SubnetTask, logits: torch.Tensor, labels: torch.Tensor, teacher_probs: torch.Tensor | None
    ) -> torch.Tensor:
        if task.target == "teacher":
            if teacher_probs is None:
                raise RuntimeError(f"{self.name}: a task distils before any task teaches")
            return soft_cross_entropy(logits, teacher_probs)
        return F.cross_entropy(logits, labels, label_smoothing=self.params.label_smoothing)

    def after_step(self, step: int, losses: list[float]) -> None:
        """Hook for schedules and statistics; ``losses`` are the step's task losses in order."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a soft target: in-place distillation's loss (BigNAS)."""
    return -(target_probs * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def require_mbconv(space: SearchSpace, strategy: str) -> MBConvSpace:
    """The space as an MBConvSpace, for strategies defined on its stage/block structure."""
    if not isinstance(space, MBConvSpace):
        raise NasfleetError(f"strategy {strategy!r} supports the mbconv space, not {space.name!r}")
    return space
