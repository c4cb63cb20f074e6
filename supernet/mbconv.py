"""MobileNet-style convolutional space: stages of inverted-residual blocks.

Elastic per stage: output width and depth (the last blocks are dropped); per block:
depthwise kernel (centre crop) and expansion ratio (leading hidden channels).
Residual connections join every block but a stage's first, where width or stride may change.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator
from torch import nn

from nasfleet.supernet.arch import Arch, BlockChoice, ConvArch, StageChoice
from nasfleet.supernet.elastic import ConvBN, ElasticConvBN, ElasticLinear
from nasfleet.supernet.space import ChoiceSequence, SearchSpace, check_member

STEM_KERNEL = 3


class MBConvStageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    widths: list[PositiveInt] = Field(min_length=1)
    depths: list[PositiveInt] = Field(min_length=1)
    kernels: list[PositiveInt] = Field(default=[3, 5], min_length=1)
    expands: list[PositiveInt] = Field(default=[2, 3, 4], min_length=1)
    stride: Literal[1, 2] = 1

    @field_validator("kernels")
    @classmethod
    def _odd_kernels(cls, kernels: list[int]) -> list[int]:
        if any(k % 2 == 0 for k in kernels):
            raise ValueError("kernel sizes must be odd so that a centre crop exists")
        return kernels

    @field_validator("widths", "depths", "kernels", "expands")
    @classmethod
    def _sorted_unique(cls, values: list[int]) -> list[int]:
        return sorted(set(values))


def _default_stages() -> list[MBConvStageSpec]:
    return [
        MBConvStageSpec(widths=[8, 12, 16], depths=[1, 2], stride=1),
        MBConvStageSpec(widths=[16, 24, 32], depths=[1, 2, 3], stride=2),
        MBConvStageSpec(widths=[24, 32, 48], depths=[1, 2, 3], stride=2),
    ]


class MBConvSpaceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["mbconv"] = "mbconv"
    in_channels: PositiveInt = 1
    image_size: PositiveInt = 8
    num_classes: PositiveInt = 10
    stem_width: PositiveInt = 16
    stages: list[MBConvStageSpec] = Field(default_factory=_default_stages, min_length=1)


def spatial_after(size: int, stride: int) -> int:
    # Odd kernel k with padding k // 2: the output size does not depend on k.
    return (size - 1) // stride + 1


class InvertedResidualSpace(SearchSpace):
    """Stages of inverted-residual blocks over convolutions of ``spatial_dims`` dimensions.

    The set (sampling, bounds, counting, genes) and the cost rules are the same for image
    and sequence inputs; a subclass says how the input reaches the stem and builds the modules.
    """

    spatial_dims: ClassVar[int]
    config: MBConvSpaceConfig

    def __init__(self, config: MBConvSpaceConfig) -> None:
        self.config = config
        self._sequences = [
            ChoiceSequence(s.depths, [BlockChoice(k, e) for k in s.kernels for e in s.expands])
            for s in self.config.stages
        ]

    def config_dict(self) -> dict[str, Any]:
        return self.config.model_dump()

    # -- the set -----------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> ConvArch:
        stages = []
        for spec, seq in zip(self.config.stages, self._sequences):
            width = spec.widths[rng.integers(len(spec.widths))]
            stages.append(StageChoice(width, seq.sample_uniform(rng)))
        return ConvArch(tuple(stages), space=self.name)

    def sample_choices(self, rng: np.random.Generator) -> ConvArch:
        stages = []
        for spec, seq in zip(self.config.stages, self._sequences):
            width = spec.widths[rng.integers(len(spec.widths))]
            stages.append(StageChoice(width, seq.sample_per_choice(rng)))
        return ConvArch(tuple(stages), space=self.name)

    def smallest(self) -> ConvArch:
        return ConvArch(
            tuple(
                StageChoice(s.widths[0], (BlockChoice(s.kernels[0], s.expands[0]),) * s.depths[0])
                for s in self.config.stages
            ),
            space=self.name,
        )

    def largest(self) -> ConvArch:
        return ConvArch(
            tuple(
                StageChoice(s.widths[-1], (BlockChoice(s.kernels[-1], s.expands[-1]),) * s.depths[-1])
                for s in self.config.stages
            ),
            space=self.name,
        )

    def size(self) -> int:
        total = 1
        for spec, seq in zip(self.config.stages, self._sequences):
            total *= len(spec.widths) * seq.count()
        return total

    def enumerate(self) -> Iterator[ConvArch]:
        per_stage = [
            [StageChoice(w, blocks) for w in spec.widths for blocks in seq.enumerate()]
            for spec, seq in zip(self.config.stages, self._sequences)
        ]
        for stages in itertools.product(*per_stage):
            yield ConvArch(tuple(stages), space=self.name)

    def check(self, arch: Arch) -> list[str]:
        if not isinstance(arch, ConvArch) or arch.space != self.name:
            return [f"expected a {self.name} architecture, got space {getattr(arch, 'space', type(arch).__name__)!r}"]
        problems: list[str] = []
        if len(arch.stages) != len(self.config.stages):
            return [f"it has {len(arch.stages)} stages, the space has {len(self.config.stages)}"]
        for i, (stage, spec) in enumerate(zip(arch.stages, self.config.stages)):
            check_member(problems, f"stage {i} width", stage.width, spec.widths)
            check_member(problems, f"stage {i} depth", stage.depth, spec.depths)
            for j, block in enumerate(stage.blocks):
                check_member(problems, f"stage {i} block {j} kernel", block.kernel, spec.kernels)
                check_member(problems, f"stage {i} block {j} expand", block.expand, spec.expands)
        return problems

    def _groups(self) -> list[tuple[Sequence[Any], ChoiceSequence[Any]]]:
        return [(spec.widths, seq) for spec, seq in zip(self.config.stages, self._sequences)]

    def _split(self, arch: Arch) -> list[tuple[Any, tuple[Any, ...]]]:
        assert isinstance(arch, ConvArch)
        return [(stage.width, stage.blocks) for stage in arch.stages]

    def _join(self, parts: list[tuple[Any, tuple[Any, ...]]]) -> ConvArch:
        return ConvArch(tuple(StageChoice(width, blocks) for width, blocks in parts), space=self.name)

    # -- costs -------------------------------------------------------------------
    def _layers(self, arch: ConvArch) -> Iterator[tuple[str, int, int, int, int, int]]:
        """Yield ``(kind, c_in, c_out, kernel, out_spatial, groups)`` for every conv/linear."""
        c = self.config
        stem_in, size = self._stem_input()
        yield ("conv", stem_in, c.stem_width, STEM_KERNEL, size, 1)
        channels = c.stem_width
        for stage, spec in zip(arch.stages, c.stages):
            for j, block in enumerate(stage.blocks):
                hidden = channels * block.expand
                yield ("conv", channels, hidden, 1, size, 1)
                size = spatial_after(size, spec.stride if j == 0 else 1)
                yield ("conv", hidden, hidden, block.kernel, size, hidden)
                yield ("conv", hidden, stage.width, 1, size, 1)
                channels = stage.width
        yield ("linear", channels, c.num_classes, 1, 1, 1)

    def flops(self, arch: Arch) -> int:
        self.validate(arch)
        assert isinstance(arch, ConvArch)
        return sum(
            spatial**self.spatial_dims * c_out * (c_in // groups) * kernel**self.spatial_dims
            for _, c_in, c_out, kernel, spatial, groups in self._layers(arch)
        )

    def params(self, arch: Arch) -> int:
        self.validate(arch)
        assert isinstance(arch, ConvArch)
        total = 0
        for kind, c_in, c_out, kernel, _, groups in self._layers(arch):
            weights = c_out * (c_in // groups) * kernel**self.spatial_dims
            # Every conv is followed by a batch norm (scale and shift); the linear has a bias.
            total += weights + (2 * c_out if kind == "conv" else c_out)
        return total

    def _stem_input(self) -> tuple[int, int]:
        """The stem's input channels and spatial size (per dimension)."""
        return stem_channels(self.config, self.spatial_dims), self.config.image_size


class MBConvSpace(InvertedResidualSpace):
    """The image space: 2-D convolutions over ``in_channels`` × ``image_size`` × ``image_size`` inputs."""

    name = "mbconv"
    spatial_dims = 2

    def __init__(self, config: MBConvSpaceConfig | None = None) -> None:
        super().__init__(config or MBConvSpaceConfig())

    def build_supernet(self) -> MBConvSupernet:
        return MBConvSupernet(self.config)

    def build_standalone(self, arch: Arch) -> MBConvNet:
        self.validate(arch)
        assert isinstance(arch, ConvArch)
        return MBConvNet(self.config, arch)


class ElasticMBConvBlock(nn.Module):
    def __init__(
        self, in_max: int, out_max: int, expand_max: int, kernel_max: int, stride: int, spatial_dims: int = 2
    ) -> None:
        super().__init__()
        hidden_max = in_max * expand_max
        self.expand = ElasticConvBN(in_max, hidden_max, 1, spatial_dims=spatial_dims)
        self.depthwise = ElasticConvBN(hidden_max, hidden_max, kernel_max, stride, depthwise=True, spatial_dims=spatial_dims)
        self.project = ElasticConvBN(hidden_max, out_max, 1, spatial_dims=spatial_dims)

    def forward(self, x: torch.Tensor, width: int, block: BlockChoice, residual: bool) -> torch.Tensor:
        hidden = x.shape[1] * block.expand
        h = F.relu(self.expand(x, hidden))
        h = F.relu(self.depthwise(h, hidden, block.kernel))
        h = self.project(h, width)
        return x + h if residual else h


class MBConvSupernet(nn.Module):
    """Every subnet of an :class:`MBConvSpace`; ``forward(x, arch)`` runs one of them.

    Subclasses for other inputs set ``spatial_dims`` and override :meth:`stem_input`.
    """

    spatial_dims: ClassVar[int] = 2

    def __init__(self, config: MBConvSpaceConfig) -> None:
        super().__init__()
        self.config = config
        self.stem = ElasticConvBN(
            stem_channels(config, self.spatial_dims), config.stem_width, STEM_KERNEL, spatial_dims=self.spatial_dims
        )
        self.stages = nn.ModuleList()
        channels = config.stem_width
        for spec in config.stages:
            width = max(spec.widths)
            self.stages.append(
                nn.ModuleList(
                    ElasticMBConvBlock(
                        channels if j == 0 else width, width, max(spec.expands), max(spec.kernels),
                        spec.stride if j == 0 else 1, self.spatial_dims,
                    )
                    for j in range(max(spec.depths))
                )
            )
            channels = width
        self.head = ElasticLinear(channels, config.num_classes)

    def stem_input(self, x: torch.Tensor) -> torch.Tensor:
        """The batch as the stem reads it (images as they come)."""
        return x

    def forward(self, x: torch.Tensor, arch: ConvArch) -> torch.Tensor:
        x = F.relu(self.stem(self.stem_input(x), self.config.stem_width))
        for blocks, stage in zip(self.stages, arch.stages):
            for j, (module, block) in enumerate(zip(blocks, stage.blocks)):
                x = module(x, stage.width, block, residual=j > 0)
        return self.head(x.mean(dim=tuple(range(2, x.dim()))))


class MBConvBlock(nn.Module):
    def __init__(
        self, c_in: int, c_out: int, block: BlockChoice, stride: int, residual: bool, spatial_dims: int = 2
    ) -> None:
        super().__init__()
        hidden = c_in * block.expand
        self.residual = residual
        self.expand = ConvBN(c_in, hidden, 1, spatial_dims=spatial_dims)
        self.depthwise = ConvBN(hidden, hidden, block.kernel, stride, depthwise=True, spatial_dims=spatial_dims)
        self.project = ConvBN(hidden, c_out, 1, spatial_dims=spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.project(F.relu(self.depthwise(F.relu(self.expand(x)))))
        return x + h if self.residual else h


class PlainStagedNet(nn.Module):
    """The forward pass of a plain (extracted or pruned) inverted-residual network.

    Subclasses build ``stem``, ``stages`` (blocks in order) and ``head``; the pass is the same
    for every way of choosing the blocks, so it is written once.
    """

    spatial_dims: ClassVar[int] = 2
    stem: nn.Module
    stages: nn.ModuleList
    head: nn.Linear

    def stem_input(self, x: torch.Tensor) -> torch.Tensor:
        """The batch as the stem reads it (images as they come)."""
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(self.stem_input(x)))
        for blocks in self.stages:
            for block in blocks:
                x = block(x)
        return self.head(x.mean(dim=tuple(range(2, x.dim()))))


class MBConvNet(PlainStagedNet):
    """One subnet as a plain network; parameter names match :class:`MBConvSupernet`."""

    def __init__(self, config: MBConvSpaceConfig, arch: ConvArch) -> None:
        super().__init__()
        self.stem = ConvBN(stem_channels(config, self.spatial_dims), config.stem_width, STEM_KERNEL, spatial_dims=self.spatial_dims)
        self.stages = nn.ModuleList()
        channels = config.stem_width
        for stage, spec in zip(arch.stages, config.stages):
            blocks = nn.ModuleList()
            for j, block in enumerate(stage.blocks):
                stride = spec.stride if j == 0 else 1
                blocks.append(MBConvBlock(channels, stage.width, block, stride, j > 0, self.spatial_dims))
                channels = stage.width
            self.stages.append(blocks)
        self.head = nn.Linear(channels, config.num_classes)


def stem_channels(config: MBConvSpaceConfig, spatial_dims: int) -> int:
    """Input channels of the stem: an image's channels, or a sequence step's values (a row's pixels)."""
    return config.in_channels if spatial_dims == 2 else config.in_channels * config.image_size
