"""Continual learning with one supermask per task: ExSSNeT, SupSup and plain fine-tuning.

A task sequence (:func:`parse_tasks`) is learned one task after another inside one training job:
the strategy's schedule gives task ``t`` the steps ``[t·steps_per_task, (t+1)·steps_per_task)``,
draws only that task's training examples (``example_probabilities``), and the model
(:class:`SupermaskSupernet`) computes task ``t``'s function: its input transform (a fixed pixel
permutation, for permuted sequences), its supermask over the conv and linear weights, and its own
output head (the logits of the task's classes; the task id is given at test time, the
task-incremental setting SupSup and ExSSNeT report).

The methods (``method``):

- ``supsup`` (Wortsman et al., 2020): the weights stay at their random initialisation; per task only
  real-valued scores train, and the mask keeps the ``density`` best-scored inputs of every unit
  (edge-popup's top-k, gradients passed straight through to the scores).
- ``exssnet`` (Yadav & Bansal, 2023): each task first learns its mask as SupSup does
  (``mask_fraction`` of its steps), then fixes it and trains the weights inside it that no earlier
  task's mask holds. Weights an earlier task uses are never written again, so earlier tasks cannot
  be forgotten; ``exclusive=False`` trains every weight inside the mask instead (the ablation that
  forgets). With ``kkt``, a new task's scores start from those of the earlier task whose subnetwork
  gives the new task's examples the best k-nearest-neighbour accuracy (KNN-based knowledge transfer).
- ``finetune``: no masks; every weight trains on each task in turn (the forgetting baseline).

"Fixed" means bit-identical: momentum and weight decay move parameters whose gradient is zero, so
:meth:`ContinualStrategy.after_update` puts back every entry the step must not change. Batch-norm
layers carry no trained scale or shift (SupSup's non-affine batch norm); their running statistics
are shared and meaningless across tasks, so a task is evaluated after re-estimating them on its own
training images (``nasfleet.orchestrator.continual``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt, field_validator
from torch import nn
from torch.func import functional_call

from nasfleet.errors import NasfleetError
from nasfleet.strategies.base import (
    StrategyParams,
    SubnetTask,
    TaskOutputs,
    TrainingStrategy,
    find_module,
    require_mbconv,
)
from nasfleet.strategies.registry import STRATEGIES
from nasfleet.supernet import Arch, SearchSpace

PERMUTATION_SEED = 1013
"""Seeds the pixel permutation of permuted task ``k`` as ``(PERMUTATION_SEED, k)``."""
SCORE_SEED = 7
"""Seeds the initial mask scores (a private generator: building the model draws from no shared RNG)."""


@dataclass(frozen=True)
class ContinualTask:
    """One task of a sequence: the classes it tells apart, and how its inputs are transformed."""

    classes: tuple[int, ...]
    permutation: int | None = None
    """Pixels permuted by the fixed permutation with this index; None leaves the images as they are."""

    def describe(self) -> str:
        low, high = self.classes[0], self.classes[-1]
        span = f"classes {low}-{high}" if self.classes == tuple(range(low, high + 1)) else f"classes {self.classes}"
        return span + (f", permutation {self.permutation}" if self.permutation is not None else "")


def parse_tasks(spec: str, num_classes: int) -> tuple[ContinualTask, ...]:
    """The task sequence a ``--tasks`` spec names, checked against the data set's ``num_classes``.

    ``split:N``: the classes in N consecutive groups (Fashion-MNIST's 10 in ``split:5``: 0-1, 2-3, ...).
    ``permuted:N``: N tasks over all classes; task 0 sees the images as they are, task k > 0 with
    their pixels in a fixed random order of its own. ``classes:A-B,C,D-E``: one task per
    comma-separated class range (e.g. ``classes:0-1,2-3,4-5,6-7,8-9,10-19`` on ``fashion-digits``,
    five Fashion-MNIST pairs then the digits as a second domain).
    """
    kind, sep, rest = spec.strip().partition(":")
    if not sep or not rest:
        raise NasfleetError(f"task spec {spec!r} is not split:N, permuted:N or classes:A-B,C-D,...")
    if kind in ("split", "permuted"):
        if not rest.isdigit() or int(rest) < 1:
            raise NasfleetError(f"task spec {spec!r}: N must be a positive whole number")
        count = int(rest)
        if kind == "permuted":
            return tuple(ContinualTask(tuple(range(num_classes)), k if k else None) for k in range(count))
        if count > num_classes // 2:
            raise NasfleetError(f"task spec {spec!r}: {num_classes} classes make at most {num_classes // 2} tasks of 2 or more")
        groups = np.array_split(np.arange(num_classes), count)
        return tuple(ContinualTask(tuple(int(c) for c in group)) for group in groups)
    if kind != "classes":
        raise NasfleetError(f"task spec {spec!r}: unknown kind {kind!r} (expected split, permuted or classes)")
    tasks = []
    for part in rest.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise NasfleetError(f"task spec {spec!r}: {part!r} is not a class or a range A-B")
        low, high = int(match[1]), int(match[2] if match[2] is not None else match[1])
        if high < low or high >= num_classes:
            raise NasfleetError(f"task spec {spec!r}: {part!r} is not a range within the {num_classes} classes 0-{num_classes - 1}")
        if high == low:
            raise NasfleetError(f"task spec {spec!r}: task {part!r} has one class; a task tells 2 or more apart")
        tasks.append(ContinualTask(tuple(range(low, high + 1))))
    seen = [c for task in tasks for c in task.classes]
    if len(seen) != len(set(seen)):
        raise NasfleetError(f"task spec {spec!r}: a class belongs to two tasks")
    return tuple(tasks)


def pixel_permutation(index: int, pixels: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng([PERMUTATION_SEED, index]).permutation(pixels))


def top_k_per_unit(scores: torch.Tensor, shape: torch.Size, density: float) -> torch.Tensor:
    """A 0/1 mask of ``shape`` keeping each output unit's ``density`` best-scored inputs (at least one).

    Per unit rather than per layer, so that at 2-10 % no filter of a small layer is left without
    inputs (a per-layer top-k empties most 3×3 filters of a depthwise conv).
    """
    rows = scores.view(shape[0], -1)
    k = max(1, int(round(density * rows.shape[1])))
    kept = torch.zeros_like(rows)
    kept.scatter_(1, torch.topk(rows, k, dim=1).indices, 1.0)
    return kept.view(-1)


class SupermaskSupernet(nn.Module):
    """A supernet run as one task of a sequence: that task's inputs, supermask and classes.

    The masked weights are the supernet's conv and linear weights (every parameter with two or more
    dimensions); everything else is held at its initial value (batch-norm scale 1 and shift 0, a zero
    head bias). Task ``t``'s mask is ``masks[t]`` once fixed (``fixed[t]``), before that the top-k of
    ``scores[t]``. Which task runs: ``active_task`` (a buffer, so a loaded run is at the task it last
    trained), or for a block of code :func:`using_task`.
    """

    def __init__(self, supernet: nn.Module, tasks: tuple[ContinualTask, ...], density: float, masked: bool) -> None:
        super().__init__()
        self.supernet = supernet
        self.tasks = tasks
        self.density = density
        self.masked = masked
        self.masked_names = [name for name, p in supernet.named_parameters() if p.dim() >= 2]
        weights = dict(supernet.named_parameters())
        self.shapes = [weights[name].shape for name in self.masked_names]
        self.sizes = [weights[name].numel() for name in self.masked_names]
        total = sum(self.sizes)
        generator = torch.Generator().manual_seed(SCORE_SEED)
        with torch.no_grad():
            for name, p in supernet.named_parameters():
                if p.dim() < 2:
                    p.fill_(1.0 if name.endswith("bn.weight") else 0.0)
                    p.requires_grad_(False)
                elif masked:
                    # Edge-popup's scaled initialisation: a unit keeping a fraction d of its inputs
                    # keeps the output scale of the dense layer.
                    p.mul_(density ** -0.5)
        # Scores start uniform in [0, 1/sqrt(fan-in)) per layer (edge-popup's scale, relative to the
        # gradients a score receives); every task draws its own.
        bounds = torch.cat([torch.full((size,), (size / shape[0]) ** -0.5) for size, shape in zip(self.sizes, self.shapes)])
        self.scores = nn.ParameterList(
            nn.Parameter(torch.rand(total, generator=generator) * bounds if masked else torch.zeros(0))
            for _ in tasks
        )
        self.register_buffer("masks", torch.zeros(len(tasks), total if masked else 0, dtype=torch.bool))
        self.register_buffer("fixed", torch.zeros(len(tasks), dtype=torch.bool))
        self.register_buffer("active_task", torch.zeros((), dtype=torch.long))
        self._override: tuple[int, int] | None = None
        self._permutations: dict[tuple[int, int], torch.Tensor] = {}

    def mask(self, task: int) -> torch.Tensor:
        """Task ``task``'s flat 0/1 mask; while its scores train, gradients pass straight through to them."""
        if bool(self.fixed[task]):
            return self.masks[task].float()
        scores = self.scores[task]
        parts = [
            top_k_per_unit(s.detach(), shape, self.density)
            for s, shape in zip(torch.split(scores, self.sizes), self.shapes)
        ]
        hard = torch.cat(parts)
        return hard + scores - scores.detach()

    def fix_mask(self, task: int) -> None:
        """Freeze task ``task``'s mask at the top-k of its current scores."""
        with torch.no_grad():
            self.masks[task] = self.mask(task).detach() > 0.5
            self.fixed[task] = True

    def used_by(self, tasks: range) -> torch.Tensor:
        """The flat weight positions any of ``tasks``' fixed masks keeps."""
        owned = torch.zeros(self.masks.shape[1], dtype=torch.bool)
        for t in tasks:
            owned |= self.masks[t]
        return owned

    def task_inputs(self, x: torch.Tensor, task: int) -> torch.Tensor:
        index = self.tasks[task].permutation
        if index is None:
            return x
        pixels = x.shape[-2] * x.shape[-1]
        key = (index, pixels)
        if key not in self._permutations:
            self._permutations[key] = pixel_permutation(index, pixels)
        return x.flatten(-2)[..., self._permutations[key]].view_as(x)

    def run(self, x: torch.Tensor, arch: Arch, inputs_of: int, mask_of: int) -> torch.Tensor:
        """All classes' logits of the subnet under ``mask_of``'s mask, on ``inputs_of``'s inputs."""
        x = self.task_inputs(x, inputs_of)
        if not self.masked:
            return self.supernet(x, arch)
        mask = torch.split(self.mask(mask_of), self.sizes)
        weights = dict(self.supernet.named_parameters())
        masked = {
            name: weights[name] * m.view(shape) for name, m, shape in zip(self.masked_names, mask, self.shapes)
        }
        return functional_call(self.supernet, masked, (x, arch))

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        task, mask_of = self._override or (int(self.active_task), int(self.active_task))
        logits = self.run(x, arch, task, mask_of)
        allowed = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        allowed[list(self.tasks[task].classes)] = True
        return logits.masked_fill(~allowed, float("-inf"))  # the task's own head: its classes only

    def features(self, x: torch.Tensor, arch: Arch, inputs_of: int, mask_of: int) -> torch.Tensor:
        """The head's input (pooled features) of the subnet under ``mask_of``'s mask."""
        captured: list[torch.Tensor] = []
        head = self.supernet.get_submodule("head")
        handle = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            self.run(x, arch, inputs_of, mask_of)
        finally:
            handle.remove()
        return captured[0]


@contextmanager
def using_task(model: nn.Module, task: int, mask_of: int | None = None) -> Iterator[SupermaskSupernet]:
    """Within the block the model computes task ``task`` (with ``mask_of``'s mask, if given)."""
    wrapper = find_module(model, SupermaskSupernet)
    assert isinstance(wrapper, SupermaskSupernet)
    saved = wrapper._override
    wrapper._override = (task, task if mask_of is None else mask_of)
    try:
        yield wrapper
    finally:
        wrapper._override = saved


def knn_accuracy(
    reference: torch.Tensor, reference_labels: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor, k: int
) -> float:
    """Accuracy of a cosine k-nearest-neighbour vote (ties to the lowest class) of ``query`` against ``reference``."""
    similarity = F.normalize(query, dim=1) @ F.normalize(reference, dim=1).T
    k = min(k, reference.shape[0])
    nearest = reference_labels[torch.topk(similarity, k, dim=1).indices]
    classes = int(max(reference_labels.max(), query_labels.max())) + 1
    votes = F.one_hot(nearest, classes).sum(dim=1)
    return float((votes.argmax(dim=1) == query_labels).float().mean())


def kkt_choice(
    wrapper: SupermaskSupernet, arch: Arch, images: torch.Tensor, labels: torch.Tensor, task: int, k: int = 5
) -> tuple[int, list[float]]:
    """The earlier task whose subnetwork's features serve ``task`` best, and each one's k-NN accuracy.

    The examples (``task``'s inputs) are split in two halves, one the neighbours, the other
    scored; batch norm uses the examples' own statistics, and nothing in the model changes.
    """
    half = images.shape[0] // 2
    accuracies = []
    was_training = wrapper.training
    norms = [m for m in wrapper.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    wrapper.train()
    try:
        with torch.no_grad():
            for earlier in range(task):
                features = wrapper.features(images, arch, inputs_of=task, mask_of=earlier)
                accuracies.append(knn_accuracy(features[:half], labels[:half], features[half:], labels[half:], k))
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
        wrapper.train(was_training)
    return int(np.argmax(accuracies)), accuracies


class ContinualParams(StrategyParams):
    tasks: str = "split:5"
    """The task sequence (see :func:`parse_tasks`)."""
    steps_per_task: PositiveInt = 100
    """Training steps of each task; steps past the sequence's end go on training its last task."""
    method: Literal["exssnet", "supsup", "finetune"] = "exssnet"
    density: float = Field(0.1, gt=0.0, le=1.0)
    """The fraction of each unit's input weights a task's mask keeps (supsup, exssnet)."""
    mask_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    """ExSSNeT: the share of a task's steps that learn its mask; the rest train its exclusive weights."""
    exclusive: bool = True
    """ExSSNeT: train only weights no earlier task's mask holds. False is the ablation that forgets."""
    kkt: bool = True
    """ExSSNeT: start a task's scores from the earlier task whose mask serves it best (k-NN on its features)."""
    kkt_examples: PositiveInt = 64
    kkt_neighbours: PositiveInt = 5

    @field_validator("kkt_examples")
    @classmethod
    def _enough(cls, value: int) -> int:
        if value < 4:
            raise ValueError("kkt_examples must be 4 or more (half are neighbours, half are scored)")
        return value


@STRATEGIES.register()
class ContinualStrategy(TrainingStrategy):
    """A task sequence learned in one job, one supermask per task (see the module docstring)."""

    name = "continual"
    Params = ContinualParams
    params: ContinualParams
    # after_update restores the module's parameters; under ZeRO ≥ 1 the optimizer's own partitions
    # would write them back at the next step.
    max_zero_stage = 0
    ranks_subnets = False  # it trains one network per task, not a family of subnets to rank

    def __init__(self, space: SearchSpace, params: StrategyParams) -> None:
        super().__init__(space, params)
        # The masked network's parts (which parameters are masked, the "head" KKT reads) are the mbconv space's.
        self.tasks = parse_tasks(self.params.tasks, require_mbconv(space, self.name).config.num_classes)
        self.next_step = 0
        self._labels: np.ndarray | None = None
        self._images: torch.Tensor | None = None
        self._before: list[torch.Tensor] = []

    # -- the schedule --------------------------------------------------------------
    def task_at(self, step: int) -> int:
        return min(step // self.params.steps_per_task, len(self.tasks) - 1)

    def mask_steps(self) -> int:
        """ExSSNeT: how many of a task's steps learn its mask."""
        return max(1, int(round(self.params.mask_fraction * self.params.steps_per_task)))

    def learns_mask(self, step: int) -> bool:
        """Whether the step trains the task's scores (else its weights)."""
        if self.params.method == "supsup":
            return True
        if self.params.method == "finetune":
            return False
        return step - self.task_at(step) * self.params.steps_per_task < self.mask_steps()

    def task_end(self, task: int) -> int:
        """The step after the task's last one (the job's ``optim.steps`` for the whole sequence)."""
        return (task + 1) * self.params.steps_per_task

    def schedule_restarts(self, total_steps: int) -> tuple[int, ...]:
        """Each task (and ExSSNeT's weight phase) gets its own warm-up and cosine decay."""
        starts = []
        for t in range(len(self.tasks)):
            start = t * self.params.steps_per_task
            starts.append(start)
            if self.params.method == "exssnet":
                starts.append(start + self.mask_steps())
        return tuple(s for s in starts if 0 < s < total_steps)

    # -- the trainer's hooks ---------------------------------------------------------
    def wrap_model(self, supernet: nn.Module) -> nn.Module:
        return SupermaskSupernet(supernet, self.tasks, self.params.density, self.params.method != "finetune")

    def bind_training_data(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self._images, self._labels = images, labels.numpy()

    def example_probabilities(self, num_examples: int) -> np.ndarray | None:
        if self._labels is None:
            raise RuntimeError("continual: the trainer did not bind the training data")
        classes = self.tasks[self.task_at(self.next_step)].classes
        chosen = np.isin(self._labels, classes).astype(float)
        return chosen / chosen.sum()

    def subnets_for_step(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        return [SubnetTask(self.space.largest(), role=f"task{self.task_at(step)}")]

    def loss(
        self, task: SubnetTask, outputs: TaskOutputs, labels: torch.Tensor, earlier: dict[str, TaskOutputs]
    ) -> torch.Tensor:
        """Cross-entropy over the current task's classes (its head)."""
        classes = torch.tensor(self.tasks[self.task_at(self.next_step)].classes, device=labels.device)
        local = torch.full((outputs.logits.shape[-1],), -1, dtype=torch.long, device=labels.device)
        local[classes] = torch.arange(len(classes), device=labels.device)
        targets = local[labels]
        # The sampler gives other tasks' examples a probability of about 1e-12 (BatchStream's floor):
        # one that is drawn is dropped, not learned under the wrong head.
        keep = targets >= 0
        logits = outputs.logits[keep][:, classes]
        return F.cross_entropy(logits, targets[keep], label_smoothing=self.params.label_smoothing)

    def before_step(self, step: int, model: nn.Module, shared_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        wrapper = find_module(model, SupermaskSupernet)
        assert isinstance(wrapper, SupermaskSupernet)
        task = self.task_at(step)
        with torch.no_grad():
            if wrapper.masked:
                for earlier in range(task):  # a finished task's mask is fixed (SupSup's at its end)
                    if not bool(wrapper.fixed[earlier]):
                        wrapper.fix_mask(earlier)
                first = step == task * self.params.steps_per_task
                if first and task > 0 and self.params.method == "exssnet" and self.params.kkt:
                    source, _ = kkt_choice(
                        wrapper, self.space.largest(), *self._kkt_examples(task), task, self.params.kkt_neighbours
                    )
                    wrapper.scores[task].copy_(wrapper.scores[source])
                if not self.learns_mask(step) and not bool(wrapper.fixed[task]):
                    wrapper.fix_mask(task)
            wrapper.active_task.fill_(task)
        self._before = [p.detach().clone() for p in wrapper.parameters()]

    def after_step(self, step: int, losses: list[float]) -> None:
        self.next_step = step + 1

    def after_update(self, step: int, model: nn.Module) -> None:
        """Undo the optimizer's change to every entry this step must hold fixed (bit for bit)."""
        wrapper = find_module(model, SupermaskSupernet)
        assert isinstance(wrapper, SupermaskSupernet)
        trainable = self.trainable(wrapper, step)
        with torch.no_grad():
            for param, before in zip(wrapper.parameters(), self._before):
                allowed = trainable.get(id(param))
                if allowed is None:
                    param.copy_(before)
                elif allowed is not True:
                    param.copy_(torch.where(allowed, param, before))

    def trainable(self, wrapper: SupermaskSupernet, step: int) -> dict[int, bool | torch.Tensor]:
        """What the step may change, by parameter id: True (all of it) or a bool mask of its entries."""
        task = self.task_at(step)
        weights = dict(wrapper.supernet.named_parameters())
        if self.params.method == "finetune":
            return {id(weights[name]): True for name in wrapper.masked_names}
        if self.learns_mask(step):
            return {id(wrapper.scores[task]): True}
        free = wrapper.masks[task].clone()
        if self.params.exclusive:
            free &= ~wrapper.used_by(range(task))
        parts = torch.split(free, wrapper.sizes)
        return {id(weights[name]): part.view(shape) for name, part, shape in zip(wrapper.masked_names, parts, wrapper.shapes)}

    def _kkt_examples(self, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed, seeded draw of the task's training examples (the same on every rank)."""
        assert self._labels is not None and self._images is not None
        candidates = np.flatnonzero(np.isin(self._labels, self.tasks[task].classes))
        picked = np.random.default_rng([SCORE_SEED, task]).permutation(candidates)[: self.params.kkt_examples]
        index = torch.from_numpy(np.sort(picked))
        return self._images[index], torch.from_numpy(self._labels[index.numpy()])

    def state_dict(self) -> dict[str, Any]:
        return {"next_step": self.next_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next_step = int(state["next_step"])
