"""``nasfleet search``: a Ray Tune experiment over a trained supernet's subnets, and its Pareto report.

The experiment (``experiment``) imports Ray only when it runs; the Tune side (``trial``) imports
it at once, so it is not re-exported here.
"""

from nasfleet.orchestrator.config import SCHEDULERS, SearchSettings, search_settings
from nasfleet.orchestrator.subnet_search.costs import CostSources, cost_function
from nasfleet.orchestrator.subnet_search.experiment import (
    EVALUATIONS_FOLDER,
    SETTINGS_FILE,
    SearchOutcome,
    build_problem,
    run_search,
    search_folder,
)
from nasfleet.orchestrator.subnet_search.pareto_report import FrontMember, front_member, load_front

__all__ = [
    "EVALUATIONS_FOLDER", "SCHEDULERS", "SETTINGS_FILE", "CostSources", "FrontMember", "SearchOutcome",
    "SearchSettings", "build_problem", "cost_function", "front_member", "load_front", "run_search", "search_folder",
    "search_settings",
]
