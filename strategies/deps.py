"""Delayed ε-shrinking (DεpS): the full model trains alone first, then smaller subnets join slowly.

Until ``delay_fraction`` of the schedule only the largest subnet trains; afterwards each step is a
sandwich whose smaller subnets' loss weight (their learning-rate multiplier) ramps up to 1.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt

from nasfleet.strategies.base import FROM_LARGEST, StrategyParams, SubnetTask, TrainingStrategy
from nasfleet.strategies.registry import STRATEGIES


class DepsParams(StrategyParams):
    total_steps: PositiveInt
    delay_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    ramp_fraction: float = Field(default=0.25, ge=0.0, le=1.0)
    start_lr_scale: float = Field(default=0.1, gt=0.0, le=1.0)
    num_random: NonNegativeInt = 2
    label_smoothing: float = 0.1


@STRATEGIES.register()
class DepsStrategy(TrainingStrategy):
    """DεpS: full model alone until ``delay_fraction × total_steps``, then sandwich with ramped subnet LRs.

    The smaller subnets' weight rises linearly from ``start_lr_scale`` to 1 over
    ``ramp_fraction × total_steps`` steps, so a well-trained full model is not disturbed abruptly.
    """

    name = "deps"
    Params = DepsParams
    params: DepsParams

    @property
    def delay_steps(self) -> int:
        return int(round(self.params.delay_fraction * self.params.total_steps))

    def subnet_weight(self, step: int) -> float:
        """The smaller subnets' loss (learning-rate) multiplier at ``step``; 0 before the delay."""
        if step < self.delay_steps:
            return 0.0
        ramp_steps = self.params.ramp_fraction * self.params.total_steps
        progress = 1.0 if ramp_steps <= 0 else min(1.0, (step - self.delay_steps) / ramp_steps)
        start = self.params.start_lr_scale
        return start + (1.0 - start) * progress

    def subnets_for_step(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        if step < self.delay_steps:
            return [SubnetTask(self.space.largest(), role="largest")]
        weight = self.subnet_weight(step)
        tasks = [
            SubnetTask(self.space.largest(), role="largest"),
            SubnetTask(self.space.smallest(), role="smallest", distill=FROM_LARGEST, weight=weight),
        ]
        tasks += [
            SubnetTask(self.space.sample_choices(rng), role="random", distill=FROM_LARGEST, weight=weight)
            for _ in range(self.params.num_random)
        ]
        return tasks
