"""One way to evaluate a list of subnets, in this process or on the Ray actor pool.

Both paths run :func:`~nasfleet.orchestrator.evaluate.subnets.evaluate_arch` on the same
inputs, so they give the same accuracies; the pool spreads the subnets over actors that
share one object-store copy of the weights and the data. ``nasfleet evaluate --actors N``
and the library use this. ``nasfleet search`` evaluates on the same actor body
(:class:`~nasfleet.orchestrator.evaluate.pool.SupernetReplica`): its Tune trials each hold one,
and the front's test accuracies come from a pool over the same object-store copy.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import numpy as np

from nasfleet.orchestrator.evaluate.subnets import SubnetResult, evaluate_arch
from nasfleet.orchestrator.evaluate.trained import TrainedSupernet
from nasfleet.supernet import Arch, SearchSpace


class SubnetEvaluator(Protocol):
    def evaluate(self, archs: Sequence[Arch], roles: Sequence[str] | None = None) -> list[SubnetResult]:
        """Results in input order."""
        ...


class InProcessEvaluator:
    def __init__(self, trained: TrainedSupernet, splits: tuple[str, ...]) -> None:
        self.trained = trained
        self.splits = splits

    def evaluate(self, archs: Sequence[Arch], roles: Sequence[str] | None = None) -> list[SubnetResult]:
        roles = list(roles) if roles is not None else [""] * len(archs)
        return [evaluate_arch(self.trained, arch, self.splits, role) for arch, role in zip(archs, roles)]


@contextmanager
def subnet_evaluator(
    trained: TrainedSupernet, actors: int = 0, splits: tuple[str, ...] = ("val",), ray_address: str | None = None
) -> Iterator[SubnetEvaluator]:
    """In this process when ``actors`` is 0, else an :class:`EvaluationPool` of that many Ray actors."""
    if actors == 0:
        yield InProcessEvaluator(trained, splits)
        return
    from nasfleet.orchestrator.evaluate.pool import EvaluationPool
    from nasfleet.orchestrator.launch.ray_cluster import connect_ray

    connect_ray(ray_address)
    with EvaluationPool(trained, num_actors=actors, splits=splits) as pool:
        yield pool


def standard_subnets(space: SearchSpace, random_subnets: int, seed: int) -> tuple[list[Arch], list[str]]:
    """The smallest, ``random_subnets`` seeded random ones, and the largest (smallest first), with roles."""
    rng = np.random.default_rng(seed)
    archs = [space.smallest(), *(space.sample_choices(rng) for _ in range(random_subnets)), space.largest()]
    roles = ["smallest", *(f"random-{i}" for i in range(random_subnets)), "largest"]
    return archs, roles


def evaluate_standard_subnets(
    trained: TrainedSupernet, splits: tuple[str, ...] = ("val",), random_subnets: int = 3, seed: int = 0
) -> list[SubnetResult]:
    """The smallest, the largest and ``random_subnets`` random subnets (seeded), smallest first, here."""
    archs, roles = standard_subnets(trained.space, random_subnets, seed)
    return InProcessEvaluator(trained, splits).evaluate(archs, roles)
