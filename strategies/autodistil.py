"""AutoDistil: few-shot task-agnostic distillation into size sub-spaces (Xu et al., 2022).

One supernet spanning tiny and large subnets makes them fight over the same weights; AutoDistil
splits the space by model size into ``K`` sub-spaces and trains one supernet per sub-space
(one run per sub-space here: ``subspace: i``). Each learns from a teacher without labels, by
MiniLM-style self-attention distillation of the last layer: the KL divergence between the
teacher's and the student's attention distributions (query-key relations) and value relations
(value-value), each computed over ``relation_heads`` heads obtained by splitting the
concatenated queries, keys or values (MiniLMv2), so a student with fewer heads or a narrower
width still has relations of the teacher's shape. A light search per sub-space under a size
budget then picks the subnet to fine-tune (``benchmarks/autodistil.py``).

The teacher is the largest subnet of a trained supernet of the same space (``teacher_weights``:
its ``supernet.pt``), frozen and outside the trained module's parameters, loaded on the first
training forward (so evaluating or exporting a run never needs the file). Without
``teacher_weights`` the teacher is trained in place: each step's first task is the space's
largest subnet on the labels, and the students distil from its (detached) relations.

Only the transformer spaces (``vit``, ``gpt``) have attention to distil; in the ``gpt`` space
relations are causal, as its attention is (token t relates to tokens up to t).
"""

from __future__ import annotations

import math
from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveInt, model_validator
from torch import nn

from nasfleet.errors import NasfleetError
from nasfleet.safe_load import safe_torch_load
from nasfleet.strategies.base import Distill, StrategyParams, SubnetTask, TaskOutputs, TrainingStrategy
from nasfleet.strategies.registry import STRATEGIES
from nasfleet.supernet import Arch, GPTSpace, SearchSpace
from nasfleet.supernet.capture import captured_outputs
from nasfleet.supernet.vit import TransformerSpace

PROJECTIONS = ("q", "k", "v")
RELATION_MASK = -1e4
"""Score of a future position in a causal relation: its probability underflows to exactly 0."""


class AutoDistilParams(StrategyParams):
    subspaces: PositiveInt = 2
    """K: the space is cut into this many sub-spaces of equal share by size."""
    subspace: NonNegativeInt = 0
    """Which sub-space this run trains (0 holds the smallest subnets)."""
    size: str = "params"
    """What "size" means for the partition and the budget: ``params`` or ``mflops``."""
    teacher_weights: str | None = None
    """A ``supernet.pt`` of a trained run of the same space; its largest subnet is the frozen teacher.
    None: the teacher is the largest subnet, trained in place on the labels."""
    relation_heads: PositiveInt = 1
    """Heads the concatenated q, k, v are split into for relations (must divide every attention width)."""
    attention_weight: NonNegativeFloat = 1.0
    """Weight of the attention-distribution (query-key) KL; 0 with ``value_weight`` 0 turns distillation off."""
    value_weight: NonNegativeFloat = 1.0
    """Weight of the value-relation (value-value) KL."""
    label_weight: NonNegativeFloat = 0.0
    """Weight of the students' cross-entropy on the labels; 0 is AutoDistil's task-agnostic objective."""
    num_random: NonNegativeInt = 1
    """Random sub-space subnets a step, beside the sub-space's largest and smallest (sandwich rule)."""
    partition_samples: PositiveInt = 4096
    """Architectures sampled (fixed seed) to place the sub-space boundaries at size quantiles."""

    @model_validator(mode="after")
    def _check(self) -> AutoDistilParams:
        if self.subspace >= self.subspaces:
            raise ValueError(f"subspace {self.subspace} is out of range for {self.subspaces} sub-spaces")
        if self.size not in ("params", "mflops"):
            raise ValueError(f"size must be 'params' or 'mflops', not {self.size!r}")
        if self.attention_weight + self.value_weight + self.label_weight == 0:
            raise ValueError("attention_weight, value_weight and label_weight are all 0: nothing to learn")
        return self


def relation_logprobs(x: torch.Tensor, y: torch.Tensor, heads: int, causal: bool) -> torch.Tensor:
    """Log-softmax of the scaled dot products of ``x`` and ``y`` (``[B, T, W]``) split into ``heads``:
    ``[B, heads, T, T]``. With ``x = q, y = k`` these are attention distributions; ``x = y = v``
    value relations."""
    batch, tokens, width = x.shape
    if width % heads:
        raise NasfleetError(f"relation_heads {heads} does not divide an attention width of {width}")
    d = width // heads
    xs = x.reshape(batch, tokens, heads, d).transpose(1, 2)
    ys = y.reshape(batch, tokens, heads, d).transpose(1, 2)
    scores = xs @ ys.transpose(-2, -1) / math.sqrt(d)
    if causal:
        future = torch.ones(tokens, tokens, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(future, RELATION_MASK)
    return F.log_softmax(scores.float(), dim=-1)


def relation_kl(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) of two relation log-probabilities, summed over a row, mean over rows."""
    return (teacher.exp() * (teacher - student)).sum(dim=-1).mean()


def self_attention_kl(
    teacher: dict[str, torch.Tensor], student: dict[str, torch.Tensor], heads: int, causal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention-distribution KL and the value-relation KL of one layer's q, k, v (keys q/k/v)."""
    attention = relation_kl(
        relation_logprobs(teacher["q"], teacher["k"], heads, causal),
        relation_logprobs(student["q"], student["k"], heads, causal),
    )
    value = relation_kl(
        relation_logprobs(teacher["v"], teacher["v"], heads, causal),
        relation_logprobs(student["v"], student["v"], heads, causal),
    )
    return attention, value


def last_layer_names(arch: Arch, prefix: str = "") -> tuple[str, ...]:
    """Module names of the q, k, v projections of ``arch``'s last layer."""
    return tuple(f"{prefix}layers.{arch.depth - 1}.attn.{p}" for p in PROJECTIONS)


def last_layer_qkv(model: nn.Module, x: torch.Tensor, arch: Arch) -> dict[str, torch.Tensor]:
    """The last layer's q, k, v of ``arch`` on ``x`` without gradients (for measuring distillation)."""
    names = last_layer_names(arch)
    with torch.no_grad(), captured_outputs(model, names) as captured:
        model(x, arch)
    return dict(zip(PROJECTIONS, (captured[n] for n in names)))


def load_teacher(space: SearchSpace, weights: str) -> nn.Module:
    """A supernet of ``space`` with the weights of a run's ``supernet.pt`` (unwrapping a student prefix)."""
    state = safe_torch_load(weights, "autodistil teacher_weights")
    if not isinstance(state, dict):
        raise NasfleetError(f"teacher_weights {weights} is not a state dict")
    state = {k.removeprefix("student."): v for k, v in state.items() if not k.startswith("teacher_")}
    with torch.random.fork_rng(devices=[]):  # building draws initial weights; the run's RNG must not move
        teacher = space.build_supernet()
    try:
        teacher.load_state_dict(state)
    except RuntimeError as e:
        raise NasfleetError(f"teacher_weights {weights} is not a supernet of this space: {str(e).splitlines()[0]}") from None
    return teacher


class FrozenTeacher(nn.Module):
    """The trained supernet (``student``) beside a frozen teacher whose last-layer q, k, v are
    exposed through identity modules ``teacher_q``/``teacher_k``/``teacher_v``, so the trainer's
    ``capture`` records them like any module output.

    The teacher is not a submodule: it is not trained, not checkpointed and not all-reduced, and
    it is loaded from its file on the first forward in training mode. Its q, k, v are computed once
    per batch (a step's tasks share the input tensor) without gradients.
    """

    def __init__(self, student: nn.Module, space: SearchSpace, weights: str, teacher_arch: Arch) -> None:
        super().__init__()
        self.student = student
        self.teacher_q, self.teacher_k, self.teacher_v = nn.Identity(), nn.Identity(), nn.Identity()
        self._space = space
        self._weights = weights
        self._teacher_arch = teacher_arch
        self._teacher: tuple[nn.Module, ...] = ()
        """Empty until loaded; a tuple so that nn.Module does not register (and checkpoint) it."""
        self._captured: dict[str, torch.Tensor] = {}
        self._batch: torch.Tensor | None = None

    def _load_teacher(self, device: torch.device) -> nn.Module:
        teacher = load_teacher(self._space, self._weights).requires_grad_(False).eval().to(device)
        for p, module in zip(PROJECTIONS, last_layer_names(self._teacher_arch)):
            teacher.get_submodule(module).register_forward_hook(
                lambda _m, _i, out, p=p: self._captured.__setitem__(p, out)
            )
        return teacher

    def teacher_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self._teacher:
            self._teacher = (self._load_teacher(x.device),)
        if self._batch is not x:
            with torch.no_grad():
                self._teacher[0](x, self._teacher_arch)
            self._batch = x
        return self._captured

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        if self.training:
            features = self.teacher_features(x)
            for p, probe in zip(PROJECTIONS, (self.teacher_q, self.teacher_k, self.teacher_v)):
                probe(features[p])
        return self.student(x, arch)

    def module_for(self, arch: Arch) -> nn.Module:
        """The trained supernet: what extraction slices (the teacher is not part of the run)."""
        return self.student


@STRATEGIES.register()
class AutoDistilStrategy(TrainingStrategy):
    """Sandwich sampling inside one size sub-space, every subnet distilled from the teacher's attention."""

    name = "autodistil"
    Params = AutoDistilParams
    params: AutoDistilParams
    spaces = ("vit", "gpt")

    def __init__(self, space: SearchSpace, params: StrategyParams) -> None:
        if not isinstance(space, TransformerSpace):
            raise NasfleetError(f"strategy 'autodistil' distils self-attention: it supports vit and gpt, not {space.name!r}")
        super().__init__(space, params)
        self.causal = isinstance(space, GPTSpace)
        widths = [h * space.config.head_dim for h in space.config.heads]
        if any(w % self.params.relation_heads for w in widths):
            raise NasfleetError(f"autodistil: relation_heads {self.params.relation_heads} must divide every attention width {widths}")
        sample = self._partition_sample()
        self.bounds = self.subspace_bounds(sample)
        members = [a for a in sample if self.contains(a)]
        if not members:
            raise NasfleetError(f"autodistil: sub-space {self.params.subspace} of {self.params.subspaces} is empty")
        self.sub_largest = space.largest() if self.params.subspace == self.params.subspaces - 1 else max(members, key=self.size_of)
        self.sub_smallest = space.smallest() if self.params.subspace == 0 else min(members, key=self.size_of)
        self.teacher_arch = space.largest()
        self.prefix = "" if self.params.teacher_weights is None else "student."

    def size_of(self, arch: Arch) -> float:
        return float(self.space.params(arch) if self.params.size == "params" else self.space.flops(arch) / 1e6)

    def _partition_sample(self) -> list[Arch]:
        rng = np.random.default_rng(0)
        return [self.space.sample_choices(rng) for _ in range(self.params.partition_samples)]

    def subspace_bounds(self, sample: list[Arch]) -> tuple[float, float]:
        """This sub-space's size interval ``[low, high)``: quantiles of the sampled architectures' sizes."""
        sizes = np.array([self.size_of(a) for a in sample])
        edges = np.quantile(sizes, np.linspace(0.0, 1.0, self.params.subspaces + 1))
        i = self.params.subspace
        low = -math.inf if i == 0 else float(edges[i])
        high = math.inf if i == self.params.subspaces - 1 else float(edges[i + 1])
        return low, high

    def contains(self, arch: Arch) -> bool:
        low, high = self.bounds
        return low <= self.size_of(arch) < high

    def sample_subspace(self, rng: np.random.Generator, tries: int = 10_000) -> Arch:
        """A per-choice random architecture of this sub-space (rejection sampling)."""
        for _ in range(tries):
            arch = self.space.sample_choices(rng)
            if self.contains(arch):
                return arch
        raise NasfleetError(f"autodistil: no architecture of sub-space {self.params.subspace} in {tries} draws")

    def check_training_inputs(self) -> None:
        """Read the teacher on the driver once, so a missing or foreign file is one line, not a worker failure."""
        weights = self.params.teacher_weights
        if weights is None:
            return
        if not Path(weights).is_file():
            raise NasfleetError(f"autodistil: teacher_weights {weights} is not a file")
        load_teacher(self.space, weights)

    def wrap_model(self, supernet: nn.Module) -> nn.Module:
        if self.params.teacher_weights is None:
            return supernet
        return FrozenTeacher(supernet, self.space, self.params.teacher_weights, self.teacher_arch)

    def subnets_for_step(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        p = self.params
        distilling = p.attention_weight + p.value_weight > 0
        tasks = []
        if p.teacher_weights is None:
            tasks.append(SubnetTask(self.teacher_arch, role="teacher", capture=last_layer_names(self.teacher_arch) if distilling else ()))
        teacher = Distill(teacher="teacher", target="features") if distilling else None
        teacher_names = ("teacher_q", "teacher_k", "teacher_v") if p.teacher_weights is not None and distilling else ()
        students = [(self.sub_largest, "largest"), (self.sub_smallest, "smallest")]
        students += [(self.sample_subspace(rng), "random") for _ in range(p.num_random)]
        for arch, role in students:
            capture = last_layer_names(arch, self.prefix) + teacher_names if distilling else ()
            tasks.append(SubnetTask(arch, role=role, distill=teacher, capture=capture))
        return tasks

    def teacher_features(self, task: SubnetTask, outputs: TaskOutputs, earlier: dict[str, TaskOutputs]) -> dict[str, torch.Tensor]:
        if self.params.teacher_weights is not None:
            return {p: outputs.features[f"teacher_{p}"] for p in PROJECTIONS}
        features = earlier["teacher"].features
        return {p: features[n] for p, n in zip(PROJECTIONS, last_layer_names(self.teacher_arch))}

    def loss(
        self, task: SubnetTask, outputs: TaskOutputs, labels: torch.Tensor, earlier: dict[str, TaskOutputs]
    ) -> torch.Tensor:
        p = self.params
        if task.role == "teacher":
            return F.cross_entropy(outputs.logits, labels, label_smoothing=p.label_smoothing)
        total = outputs.logits.new_zeros(())
        if p.label_weight > 0:
            total = total + p.label_weight * F.cross_entropy(outputs.logits, labels, label_smoothing=p.label_smoothing)
        if task.distill is not None:
            student = {q: outputs.features[n] for q, n in zip(PROJECTIONS, last_layer_names(task.arch, self.prefix))}
            teacher = {q: t.to(student[q].dtype) for q, t in self.teacher_features(task, outputs, earlier).items()}
            attention, value = self_attention_kl(teacher, student, p.relation_heads, self.causal)
            total = total + p.attention_weight * attention + p.value_weight * value
        return total


__all__ = ["AutoDistilParams", "AutoDistilStrategy", "FrozenTeacher", "relation_kl", "relation_logprobs", "self_attention_kl"]
