"""Single-path one-shot (SPOS, Guo et al. 2020): one random subnet per step.

Every elastic choice is drawn uniformly and independently; the subnet learns from labels.
"""

from __future__ import annotations

import numpy as np

from nasfleet.strategies.base import SubnetTask, TrainingStrategy
from nasfleet.strategies.registry import STRATEGIES


@STRATEGIES.register()
class UniformStrategy(TrainingStrategy):
    """Single-path one-shot (SPOS): one subnet per step, every elastic choice drawn uniformly.

    The baseline every other strategy is compared with in docs/strategies.md.
    """

    name = "uniform"

    def subnets_for_step(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        return [SubnetTask(self.space.sample_choices(rng), role="random")]
