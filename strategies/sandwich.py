"""BigNAS sandwich rule with in-place distillation (Yu et al. 2020).

Each step trains the largest subnet on the labels, then the smallest and ``num_random``
random subnets on the largest's soft outputs, so the bounds of the space are trained
every step and small subnets get a teacher for free.
"""

from __future__ import annotations

import numpy as np
from pydantic import NonNegativeInt, PositiveFloat

from nasfleet.strategies.base import FROM_LARGEST, StrategyParams, SubnetTask, TrainingStrategy
from nasfleet.strategies.registry import STRATEGIES


class SandwichParams(StrategyParams):
    num_random: NonNegativeInt = 2
    label_smoothing: float = 0.1
    distill_weight: PositiveFloat = 1.0
    """Loss weight of the subnets that learn from the largest's soft outputs (the largest's is 1);
    a hyper-parameter ``nasfleet train --tune`` searches."""


@STRATEGIES.register()
class SandwichStrategy(TrainingStrategy):
    """BigNAS sandwich rule: largest on labels, then smallest and random subnets distilled from it.

    Trains the bounds of the space every step; ``distill_weight`` scales the distilled losses.
    """

    name = "sandwich"
    Params = SandwichParams
    params: SandwichParams

    def subnets_for_step(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        tasks = [
            SubnetTask(self.space.largest(), role="largest"),
            SubnetTask(self.space.smallest(), role="smallest", distill=FROM_LARGEST, weight=self.params.distill_weight),
        ]
        tasks += [
            SubnetTask(self.space.sample_choices(rng), role="random", distill=FROM_LARGEST, weight=self.params.distill_weight)
            for _ in range(self.params.num_random)
        ]
        return tasks
