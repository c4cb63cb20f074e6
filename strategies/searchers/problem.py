"""What a search optimises: accuracy against chosen costs, under upper-bound constraints.

The costs themselves (MFLOPs, params, a latency table's prediction, the comm layer's
all-reduce time) are supplied by the caller as one function, so the search algorithms
never depend on how a cost is measured.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from nasfleet.errors import NasfleetError
from nasfleet.supernet import Arch, SearchSpace

COST_NAMES = ("mflops", "params", "latency_ms", "comm_ms")
"""Every cost a search can minimise or bound; each grows with the subnet, so the smallest is cheapest."""

_CONSTRAINT = re.compile(r"^\s*([a-z_]+)\s*<=?\s*([0-9.eE+-]+)\s*$")


def check_cost_name(name: str) -> str:
    if name not in COST_NAMES:
        raise NasfleetError(f"unknown cost {name!r} (expected one of {', '.join(COST_NAMES)})")
    return name


@dataclass(frozen=True)
class Constraint:
    """``cost <= limit``."""

    cost: str
    limit: float

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """``"latency_ms<=5"`` (``<`` reads as ``<=``: costs are measured, never exact)."""
        match = _CONSTRAINT.match(text)
        if match is None:
            raise NasfleetError(f"constraint {text!r} is not of the form COST<=LIMIT (e.g. mflops<=0.5)")
        try:
            limit = float(match.group(2))
        except ValueError:
            raise NasfleetError(f"constraint {text!r}: {match.group(2)!r} is not a number") from None
        return cls(check_cost_name(match.group(1)), limit)

    def __str__(self) -> str:
        return f"{self.cost}<={self.limit:g}"


@dataclass(frozen=True)
class Evaluated:
    """One evaluated subnet as a search algorithm sees it.

    ``complete`` is False when an early-stopping scheduler stopped it: its accuracy is
    then an estimate from part of the validation data.
    """

    arch: Arch
    accuracy: float
    costs: dict[str, float]
    complete: bool = True


@dataclass
class SearchProblem:
    """The space, the costs on the front besides accuracy, the constraints, and how costs are computed."""

    space: SearchSpace
    objectives: tuple[str, ...]
    constraints: tuple[Constraint, ...]
    cost_fn: Callable[[Arch], dict[str, float]]
    _cache: dict[Arch, dict[str, float]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.objectives:
            raise NasfleetError("a search needs at least one cost objective besides accuracy (e.g. mflops)")
        for name in self.objectives:
            check_cost_name(name)
        if len(set(self.objectives)) != len(self.objectives):
            raise NasfleetError(f"objective listed twice: {list(self.objectives)}")

    def costs(self, arch: Arch) -> dict[str, float]:
        if arch not in self._cache:
            self._cache[arch] = self.cost_fn(arch)
        return self._cache[arch]

    def feasible(self, arch: Arch) -> bool:
        costs = self.costs(arch)
        return all(costs[c.cost] <= c.limit for c in self.constraints)

    def check_feasible(self) -> None:
        """Fail up front when no subnet can satisfy the constraints.

        Every cost grows with width, depth, kernel and expansion, so the smallest subnet
        is the cheapest in each: if it violates a bound, every subnet does.
        """
        smallest = self.space.smallest()
        costs = self.costs(smallest)
        for c in self.constraints:
            if costs[c.cost] > c.limit:
                raise NasfleetError(
                    f"no subnet satisfies {c}: even the smallest subnet has {c.cost} = {costs[c.cost]:.4g}"
                )

    def objective_matrix(self, results: Sequence[Evaluated]) -> np.ndarray:
        """Rows of minimised objectives: ``-accuracy`` then each cost objective."""
        return np.array([[-r.accuracy, *(r.costs[name] for name in self.objectives)] for r in results], dtype=float)

    def reference_point(self) -> np.ndarray:
        """A hypervolume reference every feasible subnet improves on: zero accuracy, the largest subnet's costs."""
        largest = self.costs(self.space.largest())
        bounds = {c.cost: c.limit for c in self.constraints}
        return np.array([0.0, *(min(largest[n], bounds.get(n, np.inf)) * 1.0001 for n in self.objectives)])
