"""Few-shot NAS (Zhao et al. 2021) split by gradient matching (GM-NAS, Hu et al., ICLR 2022).

After a warm-up the one-shot supernet is split into a few sub-supernets on the edge whose
choices disagree most about how the shared weights should move (lowest cosine similarity of
their gradients), each choice group getting its own copy of the trained weights.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt, PositiveInt
from torch import nn

from nasfleet.errors import NasfleetError
from nasfleet.strategies.base import StrategyParams, SubnetTask, TrainingStrategy, find_module, require_mbconv
from nasfleet.strategies.registry import STRATEGIES
from nasfleet.supernet import Arch, SearchSpace
from nasfleet.supernet.arch import BlockChoice, ConvArch, StageChoice
from nasfleet.supernet.mbconv import MBConvSpace


class FewShotParams(StrategyParams):
    warmup_steps: NonNegativeInt
    """One-shot training steps before the split."""
    num_copies: int = Field(default=2, ge=2)
    """Sub-supernets after the split (each a full copy of the weights: memory grows with it)."""
    num_random: PositiveInt = 1
    """Random subnets trained per step (each on the labels)."""
    base_archs: PositiveInt = 2
    """Subnets whose choice on an edge is varied to measure that edge's gradients (averaged)."""
    seed: int = 0
    """Seeds the base subnets: the same on every rank."""


@dataclass(frozen=True)
class Edge:
    """A block slot present in every subnet (below the stage's smallest depth) and its op choices."""

    stage: int
    block: int
    options: tuple[BlockChoice, ...]

    def choice(self, arch: ConvArch) -> BlockChoice:
        return arch.stages[self.stage].blocks[self.block]

    def with_choice(self, arch: ConvArch, option: BlockChoice) -> ConvArch:
        stage = arch.stages[self.stage]
        blocks = stage.blocks[: self.block] + (option,) + stage.blocks[self.block + 1 :]
        stages = arch.stages[: self.stage] + (StageChoice(stage.width, blocks),) + arch.stages[self.stage + 1 :]
        return ConvArch(stages)

    @property
    def prefix(self) -> str:
        """The parameter-name prefix of the edge's own layers in the supernet."""
        return f"stages.{self.stage}.{self.block}."


def candidate_edges(space: MBConvSpace) -> list[Edge]:
    """Every block slot that all subnets have, so any subnet can be routed by its choice there."""
    return [
        Edge(i, j, tuple(BlockChoice(k, e) for k in spec.kernels for e in spec.expands))
        for i, spec in enumerate(space.config.stages)
        for j in range(min(spec.depths))
    ]


class FewShotSupernet(nn.Module):
    """``num_copies`` copies of a supernet; a subnet runs on the copy its choice on the split edge maps to.

    Before the split every subnet runs on copy 0 (the others idle). The routing (which edge, and
    option → copy) lives in buffers, so it is saved with the weights and every loader follows it.
    """

    def __init__(self, supernet: nn.Module, num_copies: int, edges: Sequence[Edge]) -> None:
        super().__init__()
        self.copies = nn.ModuleList([supernet] + [copy.deepcopy(supernet) for _ in range(num_copies - 1)])
        self.edges = list(edges)
        self.register_buffer("split_edge", torch.tensor(-1))
        self.register_buffer("copy_of_option", torch.zeros(max(len(e.options) for e in edges), dtype=torch.long))

    def copy_index(self, arch: Arch) -> int:
        edge = int(self.split_edge)
        if edge < 0:
            return 0
        assert isinstance(arch, ConvArch)
        option = self.edges[edge].options.index(self.edges[edge].choice(arch))
        return int(self.copy_of_option[option])

    def module_for(self, arch: Arch) -> nn.Module:
        """The sub-supernet that computes ``arch`` (what extraction copies weights from)."""
        return self.copies[self.copy_index(arch)]

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        return self.module_for(arch)(x, arch)

    @torch.no_grad()
    def split(self, edge: int, assignment: Sequence[int]) -> None:
        """Give every copy copy 0's weights (in place: optimizers keep their parameters) and route."""
        for other in self.copies[1:]:
            other.load_state_dict(self.copies[0].state_dict())
        self.split_edge.fill_(edge)
        self.copy_of_option.zero_()
        self.copy_of_option[: len(assignment)] = torch.tensor(list(assignment), dtype=torch.long)


@dataclass(frozen=True)
class SplitPlan:
    edge: int
    assignment: tuple[int, ...]
    """The copy of each of the edge's options."""
    agreement: tuple[float, ...]
    """Each edge's mean pairwise cosine similarity of its options' gradients (NaN: too few options)."""


def cosine_matrix(gradients: torch.Tensor) -> np.ndarray:
    """Pairwise cosine similarity of the rows of ``[options, parameters]``."""
    unit = F.normalize(gradients.double(), dim=1)
    return (unit @ unit.T).cpu().numpy()


def balanced_partitions(n: int, k: int) -> Iterator[tuple[int, ...]]:
    """Each split of ``n`` items into ``k`` groups whose sizes differ by at most one, once
    (group labels in order of first appearance)."""
    for labels in itertools.product(range(k), repeat=n):
        first_seen = list(dict.fromkeys(labels))
        if first_seen != list(range(k)):
            continue
        sizes = np.bincount(labels, minlength=k)
        if sizes.max() - sizes.min() <= 1:
            yield labels


def plan_split(gradients: Sequence[torch.Tensor], num_copies: int) -> SplitPlan:
    """GM-NAS's decision: split the edge whose options' gradients agree least, into the balanced
    groups with the lowest mean cross-group similarity (the options that agree stay together)."""
    sims = [cosine_matrix(g) for g in gradients]
    agreement = tuple(
        float(s[~np.eye(len(s), dtype=bool)].mean()) if len(s) >= num_copies else float("nan") for s in sims
    )
    edge = int(np.nanargmin(agreement))
    sim = sims[edge]

    def cross_group(labels: tuple[int, ...]) -> float:
        cross = np.not_equal.outer(labels, labels)
        return float(sim[cross].mean())

    assignment = min(balanced_partitions(len(sim), num_copies), key=cross_group)
    return SplitPlan(edge, tuple(int(a) for a in assignment), agreement)


@STRATEGIES.register()
class FewShotGMStrategy(TrainingStrategy):
    """Few-shot NAS with gradient matching: one-shot warm-up, then a split into sub-supernets.

    At ``warmup_steps``, for every edge, gradients of the shared weights (all but the edge's own
    layers) are taken from subnets differing only in that edge's op, on a batch and base subnets
    identical on every rank; the edge with the lowest cosine agreement is split (:func:`plan_split`)
    and training goes on with each subnet routed to its sub-supernet (:class:`FewShotSupernet`).
    """

    name = "fewshot-gm"
    Params = FewShotParams
    # The split copies weights into the parameters in place; ZeRO 1+ keeps its own fp32 master
    # copies (partitioned) and would overwrite them at the next step.
    max_zero_stage = 0
    params: FewShotParams

    def __init__(self, space: SearchSpace, params: StrategyParams) -> None:
        super().__init__(space, params)
        self.edges = candidate_edges(require_mbconv(space, self.name))
        widest = max((len(e.options) for e in self.edges), default=0)
        if self.params.num_copies > widest:
            raise NasfleetError(
                f"strategy {self.name!r}: num_copies {self.params.num_copies} exceeds the {widest} op choices "
                "of the widest splittable edge"
            )
        self.plan: SplitPlan | None = None

    def wrap_model(self, supernet: nn.Module) -> nn.Module:
        return FewShotSupernet(supernet, self.params.num_copies, self.edges)

    def subnets_for_step(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        tasks = []
        for _ in range(self.params.num_random):
            arch = self.space.sample_choices(rng)
            tasks.append(SubnetTask(arch, role="random" if self.plan is None else f"shot{self.copy_of(arch)}"))
        return tasks

    def copy_of(self, arch: Arch) -> int:
        """The sub-supernet ``arch`` trains in (0 before the split)."""
        if self.plan is None:
            return 0
        assert isinstance(arch, ConvArch)
        edge = self.edges[self.plan.edge]
        return self.plan.assignment[edge.options.index(edge.choice(arch))]

    def before_step(self, step: int, model: nn.Module, shared_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        if self.plan is not None or step < self.params.warmup_steps:
            return
        wrapper = find_module(model, FewShotSupernet)
        assert isinstance(wrapper, FewShotSupernet)
        plan = plan_split(self.edge_gradients(wrapper.copies[0], *shared_batch), self.params.num_copies)
        self.plan = _same_on_every_rank(plan)
        wrapper.split(self.plan.edge, self.plan.assignment)

    def edge_gradients(self, supernet: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
        """Per edge, ``[options, shared parameters]``: each option's gradient, averaged over the base subnets.

        Batch-norm running statistics are put back afterwards, so measuring leaves no trace.
        """
        rng = np.random.default_rng(self.params.seed)
        bases = [self.space.sample_choices(rng) for _ in range(self.params.base_archs)]
        saved = {name: b.clone() for name, b in supernet.named_buffers()}
        out = []
        for edge in self.edges:
            shared = [p for name, p in supernet.named_parameters() if not name.startswith(edge.prefix)]
            rows = []
            for option in edge.options:
                total = torch.zeros(sum(p.numel() for p in shared), dtype=torch.float64, device=images.device)
                for base in bases:
                    assert isinstance(base, ConvArch)
                    loss = F.cross_entropy(supernet(images, edge.with_choice(base, option)), labels)
                    grads = torch.autograd.grad(loss, shared, allow_unused=True)
                    total += torch.cat(
                        [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, shared)]
                    ).double()
                rows.append(total / len(bases))
            out.append(torch.stack(rows))
        with torch.no_grad():
            for name, b in supernet.named_buffers():
                b.copy_(saved[name])
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"plan": None if self.plan is None else asdict(self.plan)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        plan = state["plan"]
        self.plan = None if plan is None else SplitPlan(
            int(plan["edge"]), tuple(plan["assignment"]), tuple(plan["agreement"])
        )


def _same_on_every_rank(plan: SplitPlan) -> SplitPlan:
    """Rank 0's plan everywhere: ranks compute the same one from identical weights and data, and
    this makes sure a last-bit difference on some accelerator cannot split them differently."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return plan
    box: list[Any] = [plan]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
