"""How a supernet is trained: strategies behind one small interface, chosen by name."""

from nasfleet.strategies.base import StrategyParams, SubnetTask, TrainingStrategy, soft_cross_entropy
from nasfleet.strategies.deps import DepsStrategy
from nasfleet.strategies.fewshot import FewShotGMStrategy, FewShotSupernet
from nasfleet.strategies.pada import PadaStrategy
from nasfleet.strategies.progressive import ProgressiveStrategy
from nasfleet.strategies.registry import STRATEGIES, build_strategy
from nasfleet.strategies.sandwich import SandwichStrategy
from nasfleet.strategies.shift import ShiftStrategy
from nasfleet.strategies.sorted import SortedStrategy
from nasfleet.strategies.uniform import UniformStrategy

__all__ = [
    "STRATEGIES", "DepsStrategy", "FewShotGMStrategy", "FewShotSupernet", "PadaStrategy", "ProgressiveStrategy",
    "SandwichStrategy", "ShiftStrategy", "SortedStrategy",
    "StrategyParams", "SubnetTask", "TrainingStrategy", "UniformStrategy", "build_strategy", "soft_cross_entropy",
]
