"""Deep Model Assembling (Ni et al., 2022): train a large network as K modules, one job each.

The target is the space's largest subnet as a plain network (stem, its blocks, head), its blocks
split into K consecutive modules. A shallow *meta model* links them: the same stem and head with
one cheap block in place of each module (a stand-in with the module's input width, output width
and stride). The method runs three kinds of job, each an ordinary training run of this strategy:

- ``phase: meta`` trains the meta model (every parameter);
- ``phase: incubate, module: k`` puts real module ``k`` in stand-in ``k``'s place and trains it
  alone: the meta model's parameters are frozen (``requires_grad`` off, so the optimizer skips
  them), so the K incubation jobs are independent and can run at the same time;
- ``phase: target`` trains the whole target network: the K incubated modules assembled with the
  meta model's stem and head (fine-tune), or from scratch (the end-to-end baseline).

Which weights a job starts from is the job config's ``init_weights`` (the assembling driver,
:mod:`nasfleet.orchestrator.assembling`, writes those files); this module only builds the networks.
Parameter names are shared across phases: ``stem.*``, ``head.*``, ``parts.K.standin.*`` for a
stand-in and ``parts.K.blocks.J.*`` for a module, so a module's tensors move between jobs by name.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import NonNegativeInt, PositiveInt
from torch import nn

from nasfleet.errors import NasfleetError
from nasfleet.strategies.base import StrategyParams, SubnetTask, TrainingStrategy, require_mbconv
from nasfleet.strategies.registry import STRATEGIES
from nasfleet.supernet import Arch, SearchSpace
from nasfleet.supernet.arch import BlockChoice
from nasfleet.supernet.channel_prune import multiply_adds
from nasfleet.supernet.mbconv import MBConvBlock, MBConvNet, MBConvSpace

Phase = Literal["meta", "incubate", "target"]


class StandIn(nn.Module):
    """One cheap inverted-residual block standing for a module in the meta model."""

    def __init__(self, c_in: int, c_out: int, stride: int, block: BlockChoice) -> None:
        super().__init__()
        self.standin = MBConvBlock(c_in, c_out, block, stride, residual=c_in == c_out and stride == 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.standin(x)


class Module(nn.Module):
    """Consecutive blocks of the target network: one of the K modules."""

    def __init__(self, blocks: list[MBConvBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class AssemblyNet(nn.Module):
    """Stem, K parts (each a module or its stand-in), head: the meta, incubation or target network.

    ``forward(x, arch)`` ignores ``arch`` (the network is fixed): it takes one so that the trainer,
    batch-norm recalibration and evaluation call it as they call a supernet.
    """

    def __init__(self, stem: nn.Module, parts: list[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.parts = nn.ModuleList(parts)
        self.head = head

    def forward(self, x: torch.Tensor, arch: Arch | None = None) -> torch.Tensor:
        x = F.relu(self.stem(x))
        for part in self.parts:
            x = part(x)
        return self.head(x.mean(dim=(2, 3)))


def split_sizes(blocks: int, modules: int) -> list[int]:
    """How many consecutive blocks each of ``modules`` modules gets (earlier ones one more if uneven)."""
    if not 1 <= modules <= blocks:
        raise NasfleetError(
            f"the target network has {blocks} blocks: it splits into 1 to {blocks} modules, not {modules}"
        )
    return [len(chunk) for chunk in np.array_split(np.arange(blocks), modules)]


def build_network(space: MBConvSpace, modules: int, phase: Phase, module: int = 0) -> AssemblyNet:
    """The network of ``phase`` for the space's largest subnet split into ``modules`` modules.

    Built in a fixed order (the target network first, then the stand-ins), so under one torch
    seed a module's initial weights are the same in its incubation job and in the end-to-end run.
    """
    target = MBConvNet(space.config, space.largest())
    blocks = [block for stage in target.stages for block in stage]
    stages = space.config.stages
    strides = [spec.stride if j == 0 else 1 for spec, stage in zip(stages, target.stages) for j in range(len(stage))]
    cheapest = BlockChoice(min(s.kernels[0] for s in stages), min(s.expands[0] for s in stages))
    parts: list[nn.Module] = []
    start = 0
    for index, size in enumerate(split_sizes(len(blocks), modules)):
        chunk = blocks[start : start + size]
        if phase == "target" or (phase == "incubate" and index == module):
            parts.append(Module(chunk))
        else:
            c_in, c_out = chunk[0].expand.conv.in_channels, chunk[-1].project.conv.out_channels
            parts.append(StandIn(c_in, c_out, math.prod(strides[start : start + size]), cheapest))
        start += size
    network = AssemblyNet(target.stem, parts, target.head)
    if phase == "incubate":
        network.requires_grad_(False)  # the meta model is frozen: the optimizer skips what has no gradient
        parts[module].requires_grad_(True)
    return network


class AssemblingParams(StrategyParams):
    modules: PositiveInt = 2
    """K: how many consecutive modules the target network's blocks are split into."""
    phase: Phase = "target"
    """Which network the job trains: the meta model, one module inside it, or the whole target."""
    module: NonNegativeInt = 0
    """``phase: incubate``: the module that learns (0 is the one after the stem)."""


@STRATEGIES.register()
class AssemblingStrategy(TrainingStrategy):
    """Trains one phase of Deep Model Assembling: the meta model, one module in it, or the target.

    Every step is one task on the labels; the space's largest subnet names it for the trainer's
    cost logging (the network trained is fixed, see :func:`build_network`).
    """

    name = "assembling"
    Params = AssemblingParams
    params: AssemblingParams
    ranks_subnets = False  # it trains one network

    def __init__(self, space: SearchSpace, params: StrategyParams) -> None:
        super().__init__(space, params)
        mbconv = require_mbconv(space, self.name)
        p = self.params
        blocks = sum(stage.depth for stage in mbconv.largest().stages)
        split_sizes(blocks, p.modules)
        if p.module >= p.modules:
            raise NasfleetError(f"strategy {self.name!r}: module {p.module} does not exist (0..{p.modules - 1})")
        self.mbconv = mbconv

    def build_model(self) -> nn.Module:
        return build_network(self.mbconv, self.params.modules, self.params.phase, self.params.module)

    def subnets_for_step(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        return [SubnetTask(self.space.largest(), role=self.params.phase)]


def part_prefix(index: int) -> str:
    """The parameter-name prefix of part ``index`` of an :class:`AssemblyNet`."""
    return f"parts.{index}."


def forward_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass on one example (convolutions and linear layers)."""
    return multiply_adds(model, tuple(example.shape[1:]))
