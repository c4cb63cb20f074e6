"""How subnets of a trained supernet are searched: algorithms, objectives, Pareto fronts."""

from nasfleet.strategies.searchers.algorithms import SEARCHERS, SearchAlgorithm, build_searcher, encode, searcher_params
from nasfleet.strategies.searchers.pareto import crowding_distance, hypervolume, non_dominated_sort, pareto_mask
from nasfleet.strategies.searchers.problem import COST_NAMES, Constraint, Evaluated, SearchProblem

__all__ = [
    "SEARCHERS", "SearchAlgorithm", "build_searcher", "encode", "searcher_params",
    "crowding_distance", "hypervolume", "non_dominated_sort", "pareto_mask",
    "COST_NAMES", "Constraint", "Evaluated", "SearchProblem",
]
