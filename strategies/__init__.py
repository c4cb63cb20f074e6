"""How a supernet is trained: strategies behind one small interface, chosen by name.

Importing this package registers the built-in strategies (each module's decorator runs).
"""

from nasfleet.strategies.assembling import AssemblingStrategy  # noqa: F401  (registers it)
from nasfleet.strategies.autodistil import AutoDistilStrategy  # noqa: F401  (registers it)
from nasfleet.strategies.base import (
    FROM_LARGEST,
    Distill,
    StrategyParams,
    SubnetTask,
    TaskOutputs,
    TrainingStrategy,
    distillation_loss,
    soft_cross_entropy,
)
from nasfleet.strategies.continual import ContinualStrategy  # noqa: F401  (registers it)
from nasfleet.strategies.deps import DepsStrategy
from nasfleet.strategies.fewshot import FewShotGMStrategy, FewShotSupernet
from nasfleet.strategies.hypernetwork import HypernetworkStrategy  # noqa: F401  (registers it)
from nasfleet.strategies.ibp import IBPStrategy  # noqa: F401  (registers it)
from nasfleet.strategies.mixture import MixtureOfSupernetsStrategy  # noqa: F401  (registers it)
from nasfleet.strategies.mixturegrowth import MixtureGrowthStrategy  # noqa: F401  (registers it)
from nasfleet.strategies.pada import PadaStrategy
from nasfleet.strategies.polarisation import PolarisationStrategy  # noqa: F401  (registers it)
from nasfleet.strategies.progressive import ProgressiveStrategy
from nasfleet.strategies.registry import STRATEGIES, build_strategy, strategy_class
from nasfleet.strategies.sandwich import SandwichStrategy
from nasfleet.strategies.shift import ShiftStrategy
from nasfleet.strategies.sorted import SortedStrategy
from nasfleet.strategies.tanglenas import TangleNASStrategy  # noqa: F401  (registers it)
from nasfleet.strategies.uniform import UniformStrategy

__all__ = [
    "FROM_LARGEST", "STRATEGIES", "DepsStrategy", "Distill", "FewShotGMStrategy", "FewShotSupernet", "PadaStrategy",
    "ProgressiveStrategy", "SandwichStrategy", "ShiftStrategy", "SortedStrategy", "StrategyParams", "SubnetTask",
    "TaskOutputs", "TrainingStrategy", "UniformStrategy", "build_strategy", "distillation_loss", "soft_cross_entropy",
    "strategy_class",
]
