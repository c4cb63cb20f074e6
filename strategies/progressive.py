"""Once-for-all progressive shrinking (Cai et al. 2020): unlock elastic dimensions one at a time.

The full model trains first; then kernel sizes, then depths, then widths and expansion ratios
become elastic, each phase distilling the sampled subnets from the full model's soft outputs.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt, field_validator

from nasfleet.strategies.base import FROM_LARGEST, require_mbconv, StrategyParams, SubnetTask, TrainingStrategy
from nasfleet.strategies.registry import STRATEGIES
from nasfleet.supernet import SearchSpace
from nasfleet.supernet.arch import BlockChoice, ConvArch, StageChoice

# Dimensions that become elastic at each phase boundary, in OFA's order.
PHASES: tuple[frozenset[str], ...] = (
    frozenset(),
    frozenset({"kernel"}),
    frozenset({"kernel", "depth"}),
    frozenset({"kernel", "depth", "width", "expand"}),
)


class ProgressiveParams(StrategyParams):
    total_steps: PositiveInt
    # Where the kernel, depth and width/expand phases start, as fractions of total_steps.
    phase_starts: list[float] = Field(default=[0.25, 0.5, 0.75], min_length=3, max_length=3)
    num_random: NonNegativeInt = 2
    label_smoothing: float = 0.1

    @field_validator("phase_starts")
    @classmethod
    def _ordered_fractions(cls, starts: list[float]) -> list[float]:
        if any(not 0.0 <= s <= 1.0 for s in starts):
            raise ValueError("phase starts are fractions of the schedule in [0, 1]")
        if starts != sorted(starts):
            raise ValueError("phase starts must be non-decreasing (kernel, then depth, then width)")
        return starts


@STRATEGIES.register()
class ProgressiveStrategy(TrainingStrategy):
    """OFA progressive shrinking: full → elastic kernel → elastic depth → elastic width/expand.

    Each step trains the largest subnet on the labels (it teaches) and ``num_random`` subnets that
    vary only the dimensions unlocked so far (the rest at their largest) on its soft outputs.
    """

    name = "progressive"
    Params = ProgressiveParams
    params: ProgressiveParams

    def __init__(self, space: SearchSpace, params: StrategyParams) -> None:
        super().__init__(space, params)
        self._specs = require_mbconv(space, "progressive").config.stages

    def phase(self, step: int) -> int:
        """0 full model, 1 elastic kernel, 2 + elastic depth, 3 + elastic width and expand."""
        starts = [round(f * self.params.total_steps) for f in self.params.phase_starts]
        return sum(step >= s for s in starts)

    def sample_unlocked(self, unlocked: frozenset[str], rng: np.random.Generator) -> ConvArch:
        """A subnet varying only the ``unlocked`` dimensions, each uniformly; the others at their largest."""

        def pick(options: list[int], dim: str) -> int:
            return options[rng.integers(len(options))] if dim in unlocked else options[-1]

        stages = []
        for spec in self._specs:
            width = pick(spec.widths, "width")
            depth = pick(spec.depths, "depth")
            blocks = [BlockChoice(pick(spec.kernels, "kernel"), pick(spec.expands, "expand")) for _ in range(depth)]
            stages.append(StageChoice(width, tuple(blocks)))
        return ConvArch(tuple(stages))

    def subnets_for_step(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        unlocked = PHASES[self.phase(step)]
        if not unlocked:
            return [SubnetTask(self.space.largest(), role="largest")]
        tasks = [SubnetTask(self.space.largest(), role="largest")]
        tasks += [
            SubnetTask(self.sample_unlocked(unlocked, rng), role="elastic", distill=FROM_LARGEST)
            for _ in range(self.params.num_random)
        ]
        return tasks
