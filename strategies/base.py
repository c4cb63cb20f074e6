"""The interface every supernet-training strategy implements.

A strategy answers three questions and nothing else: which subnets run at this step
(and what each learns from: labels, or an earlier task's outputs), how each subnet's loss
is computed, and what it must remember across steps (its state goes into checkpoints).
The trainer stays the same for every strategy: it runs the tasks in order, back-propagates
each loss (so gradients accumulate over the step's subnets) and takes one optimizer step.

Four optional hooks, no-ops by default, serve strategies that react to what training
measures (the trainer calls them for every strategy and never asks which one runs):
:meth:`TrainingStrategy.wrap_model` builds the trained module around the supernet (applied
wherever a supernet is built: the trainer, the rank loop, ``load_trained``);
:meth:`TrainingStrategy.before_step` sees the model and a batch identical on every rank before
a step; :meth:`TrainingStrategy.after_backward` sees each task's logits, labels, example ids and
the model's gradients right after that task's backward; :meth:`TrainingStrategy.example_probabilities`
lets a strategy choose how training examples are sampled (``BatchStream`` consults it).
Three more serve strategies with a schedule of their own (continual learning's task sequence):
:meth:`TrainingStrategy.bind_training_data` shows the strategy the training split once;
:meth:`TrainingStrategy.schedule_restarts` restarts the learning-rate schedule at its phases;
:meth:`TrainingStrategy.after_update` runs after the optimizer step (weight decay and momentum move
parameters whose gradient is zero: a strategy that holds some fixed puts them back there).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from nasfleet.errors import NasfleetError
from nasfleet.supernet import Arch, MBConvSpace, SearchSpace


@dataclass(frozen=True)
class Distill:
    """What a task learns from an earlier task of the same step (its teacher), decided by the strategy.

    ``target`` is the teacher's softened probabilities (``probs``, at ``temperature``: soft
    cross-entropy scaled by T², as in Hinton et al.), its raw ``logits`` (mean squared error),
    or ``features``: the strategy's :meth:`TrainingStrategy.loss` compares the captured
    module outputs itself (the task and its teacher name them in ``capture``).
    """

    teacher: str
    """The ``role`` of an earlier task in the step."""
    target: Literal["probs", "logits", "features"] = "probs"
    temperature: float = 1.0


FROM_LARGEST = Distill(teacher="largest")
"""In-place distillation from the step's largest subnet at temperature 1 (BigNAS)."""


@dataclass(frozen=True)
class SubnetTask:
    """One forward/backward pass of a step.

    A task learns from the labels, or from an earlier task's outputs (``distill``). ``role``
    names the subnet for metrics ("largest", "smallest", "random") and for later tasks that
    distil from it. ``capture`` names modules of the model whose outputs the trainer records
    for this task (features for feature distillation); they reach :meth:`TrainingStrategy.loss`.
    """

    arch: Arch
    role: str
    weight: float = 1.0
    distill: Distill | None = None
    capture: tuple[str, ...] = ()


@dataclass
class TaskOutputs:
    """What a forward pass produced: logits and the captured module outputs (by module name).

    The trainer passes the current task's outputs with gradients, and earlier tasks' detached.
    """

    logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)

    def detached(self) -> TaskOutputs:
        return TaskOutputs(self.logits.detach(), {k: v.detach() for k, v in self.features.items()})


class StrategyParams(BaseModel):
    """Base of each strategy's validated parameters (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    label_smoothing: float = 0.0


class TrainingStrategy(ABC):
    """A supernet-training method. Subclasses set ``name`` and ``Params`` and plan steps."""

    name: ClassVar[str]
    Params: ClassVar[type[StrategyParams]] = StrategyParams
    max_zero_stage: ClassVar[int] = 3
    """The highest DeepSpeed ZeRO stage this strategy trains correctly under (checked before a job starts)."""
    spaces: ClassVar[tuple[str, ...] | None] = None
    """The search spaces it is defined on (None: every space); the strategy comparison's default list
    leaves out a strategy that is not defined on every space."""
    ranks_subnets: ClassVar[bool] = True
    """Whether it trains a family of weight-sharing subnets worth ranking. A method that trains one
    network (a pruning method) says False, and the strategy comparison leaves it out by default."""

    def __init__(self, space: SearchSpace, params: StrategyParams) -> None:
        self.space = space
        self.params = params

    @abstractmethod
    def subnets_for_step(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        """The subnets to run at ``step``, teachers before the tasks that learn from them."""

    def loss(
        self, task: SubnetTask, outputs: TaskOutputs, labels: torch.Tensor, earlier: dict[str, TaskOutputs]
    ) -> torch.Tensor:
        """The task's training loss; ``earlier`` holds the step's earlier tasks' outputs by role (detached).

        The default covers labels and logit/probability distillation; a strategy with another
        objective (feature or attention distillation, a regulariser) overrides this.
        """
        if task.distill is None:
            return F.cross_entropy(outputs.logits, labels, label_smoothing=self.params.label_smoothing)
        teacher = earlier.get(task.distill.teacher)
        if teacher is None:
            raise RuntimeError(f"{self.name}: task {task.role!r} distils from {task.distill.teacher!r}, no earlier task")
        return distillation_loss(outputs.logits, teacher.logits, task.distill)

    def after_step(self, step: int, losses: list[float]) -> None:
        """Hook for schedules and statistics; ``losses`` are the step's task losses in order."""

    def build_model(self) -> nn.Module:
        """The module this strategy trains, saves and evaluates: a fresh supernet, wrapped.

        Everything that builds a model for a run (training, loading, evaluation actors) calls
        this, so a strategy that trains something other than the plain supernet is loaded as it trained.
        """
        return self.wrap_model(self.space.build_supernet())

    def wrap_model(self, supernet: nn.Module) -> nn.Module:
        """The module to train and save, built around a fresh supernet (default: the supernet itself).

        Called once per process before the optimizer exists, so whatever it returns is what
        the optimizer, DeepSpeed and checkpoints see. It must not draw from any RNG.
        """
        return supernet

    def before_step(self, step: int, model: nn.Module, shared_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Called before the step's tasks; ``shared_batch`` is the same on every rank, so
        decisions taken from it (and from the identical weights) agree across ranks."""

    def after_backward(
        self,
        task: SubnetTask,
        model: nn.Module,
        logits: torch.Tensor,
        labels: torch.Tensor,
        example_ids: torch.Tensor | None,
    ) -> None:
        """Called right after ``task``'s backward: ``logits`` are detached, ``example_ids`` index the
        training set (None when the caller does not know them). Gradients in ``model`` are those
        accumulated so far this step, on this rank only (under ZeRO-1/2, the backend's step buffers)."""

    def example_probabilities(self, num_examples: int) -> np.ndarray | None:
        """Sampling probabilities over the training examples, or None for shuffled epochs (default).

        Must be a function of the strategy's state only, so batches stay a pure function of
        ``(seed, step, rank, state)`` and a resumed run draws the same ones.
        """
        return None

    def bind_training_data(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Called once per process, before the first batch is drawn, with the whole training split
        (the tensors :meth:`example_probabilities` indexes). Default: ignored."""

    def schedule_restarts(self, total_steps: int) -> tuple[int, ...]:
        """Steps at which the warm-up and cosine learning-rate schedule starts again (default: none).

        Each phase between restarts gets the whole schedule over its own length.
        """
        return ()

    def after_update(self, step: int, model: nn.Module) -> None:
        """Called after the optimizer has applied ``step``'s update, on every rank. Parameters the
        step must not change can be restored here bit for bit (the optimizer's weight decay and
        momentum move parameters whose gradient is zero)."""

    def check_training_inputs(self) -> None:
        """Raise NasfleetError for what only training reads (a teacher's weights file): called on the
        driver before a job starts, never when a trained run is loaded for evaluation or export."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a soft target: in-place distillation's loss (BigNAS).

    Classes lie along dimension 1 (``[N, C]``, or ``[N, C, T]`` for a language model's tokens), as
    for ``F.cross_entropy``; the mean is over everything else.
    """
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, distill: Distill) -> torch.Tensor:
    """The student's loss against its teacher's logits, as ``distill`` asks."""
    if distill.target == "logits":
        return F.mse_loss(logits, teacher_logits)
    if distill.target == "features":
        raise RuntimeError("feature distillation compares captured outputs: the strategy's loss() must do it")
    t = distill.temperature
    probs = torch.softmax(teacher_logits / t, dim=1)
    # T² keeps the gradient scale independent of the temperature (Hinton et al., 2015).
    return soft_cross_entropy(logits / t, probs) * (t * t)


def require_mbconv(space: SearchSpace, strategy: str) -> MBConvSpace:
    """The space as an MBConvSpace, for strategies defined on its stage/block structure."""
    if not isinstance(space, MBConvSpace):
        raise NasfleetError(f"strategy {strategy!r} supports the mbconv space, not {space.name!r}")
    return space


def find_module(model: nn.Module, kind: type[nn.Module]) -> nn.Module:
    """The first ``kind`` module inside what a hook receives (the module itself, a DeepSpeed
    engine around it, or a strategy's wrapper), for hooks that read a supernet's layers."""
    for module in model.modules():
        if isinstance(module, kind):
            return module
    raise RuntimeError(f"no {kind.__name__} inside {type(model).__name__}: was the model built with wrap_model?")
