"""SortedNet (Valipour et al. 2023): many nested sub-models trained together, chosen without search.

A fixed family of sub-models, each a prefix of the larger ones along the chosen dimensions, is
sorted by cost; every step trains a random few of them (gradients accumulate), and at inference
the largest sub-model that fits a FLOPs budget is taken as is.
"""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np
from pydantic import Field, PositiveInt, field_validator

from nasfleet.errors import NasfleetError
from nasfleet.strategies.base import require_mbconv, StrategyParams, SubnetTask, TrainingStrategy
from nasfleet.strategies.registry import STRATEGIES
from nasfleet.supernet import SearchSpace
from nasfleet.supernet.arch import Arch, BlockChoice, ConvArch, StageChoice
from nasfleet.supernet.mbconv import MBConvSpace

SortedDimension = Literal["width", "depth", "kernel", "expand"]


class SortedParams(StrategyParams):
    num_subnets: PositiveInt = 2
    dims: list[SortedDimension] = Field(default=["width", "depth", "kernel", "expand"], min_length=1)

    @field_validator("dims")
    @classmethod
    def _unique(cls, dims: list[str]) -> list[str]:
        if len(set(dims)) != len(dims):
            raise ValueError("each dimension may be listed once")
        return dims


def is_prefix(small: ConvArch, big: ConvArch) -> bool:
    """Whether ``small``'s weights are a slice of ``big``'s in the supernet.

    Elastic layers take leading channels, leading blocks and centre kernel crops, so this
    holds exactly when no dimension of ``small`` exceeds ``big``'s, stage by stage and block by block.
    """
    if len(small.stages) != len(big.stages):
        return False
    for s, b in zip(small.stages, big.stages):
        if s.width > b.width or s.depth > b.depth:
            return False
        if any(x.kernel > y.kernel or x.expand > y.expand for x, y in zip(s.blocks, b.blocks)):
            return False
    return True


def _at_level(options: list[int], level: int, levels: int) -> int:
    """The option at a global level, spread evenly when stages have fewer options than levels."""
    if levels == 1:
        return options[-1]
    return options[round(level * (len(options) - 1) / (levels - 1))]


@STRATEGIES.register()
class SortedStrategy(TrainingStrategy):
    """SortedNet: trains a sorted family of nested sub-models; :meth:`select_for_budget` picks one.

    Width, kernel and expansion are one global level each (as SortedNet's width fraction);
    depth is a level per stage. Dimensions not in ``dims`` stay at their largest. With the
    default mbconv space this gives 3 × (2·3·3) × 2 × 3 = 324 sub-models. A single chain where
    each member grows one step can hold only 36 of them in that space, so the family is a lattice:
    ``submodels`` lists it by FLOPs, which respects nesting (a prefix always comes first).
    """

    name = "sorted"
    Params = SortedParams
    params: SortedParams

    def __init__(self, space: SearchSpace, params: StrategyParams) -> None:
        super().__init__(space, params)
        self.submodels: list[ConvArch] = self._family(require_mbconv(space, "sorted"))
        self._mflops = np.array([space.flops(a) / 1e6 for a in self.submodels])

    def _family(self, space: MBConvSpace) -> list[ConvArch]:
        specs = space.config.stages
        dims = set(self.params.dims)

        def levels(dim: str, count: int) -> range:
            return range(count) if dim in dims else range(count - 1, count)

        n_width = max(len(s.widths) for s in specs)
        n_kernel = max(len(s.kernels) for s in specs)
        n_expand = max(len(s.expands) for s in specs)
        depth_ranges = [levels("depth", len(s.depths)) for s in specs]
        family = set()
        for w, k, e, *depths in itertools.product(
            levels("width", n_width), levels("kernel", n_kernel), levels("expand", n_expand), *depth_ranges
        ):
            stages = []
            for spec, d in zip(specs, depths):
                block = BlockChoice(_at_level(spec.kernels, k, n_kernel), _at_level(spec.expands, e, n_expand))
                stages.append(StageChoice(_at_level(spec.widths, w, n_width), (block,) * spec.depths[d]))
            family.add(ConvArch(tuple(stages)))
        # FLOPs grow strictly with every dimension, so this order puts each prefix before its supersets.
        return sorted(family, key=lambda a: (space.flops(a), a.describe()))

    def subnets_for_step(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        count = min(self.params.num_subnets, len(self.submodels))
        picks = np.sort(rng.choice(len(self.submodels), size=count, replace=False))
        return [SubnetTask(self.submodels[i], role="sorted") for i in picks]

    def select_for_budget(self, max_mflops: float) -> Arch:
        """The largest sub-model whose forward pass costs at most ``max_mflops``: no search needed."""
        fits = np.flatnonzero(self._mflops <= max_mflops)
        if fits.size == 0:
            raise NasfleetError(
                f"no sorted sub-model fits {max_mflops:g} MFLOPs (the smallest needs {self._mflops[0]:.3f})"
            )
        return self.submodels[int(fits[-1])]
