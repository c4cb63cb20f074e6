"""Search algorithms, Pareto fronts and hypervolume, without Ray: behaviour on constructed cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasfleet.errors import NasfleetError
from nasfleet.strategies.searchers import (
    SEARCHERS, Constraint, Evaluated, SearchProblem, build_searcher, crowding_distance, hypervolume,
    non_dominated_sort, pareto_mask,
)
from nasfleet.strategies.searchers.algorithms import NSGA2, RegularizedEvolution
from nasfleet.supernet import MBConvSpace, MBConvSpaceConfig, ViTSpace

SPACE = MBConvSpace(
    MBConvSpaceConfig.model_validate(
        {
            "stem_width": 8,
            "stages": [
                {"widths": [8, 12, 16], "depths": [1, 2, 3], "kernels": [3, 5], "expands": [2, 3, 4], "stride": 1},
                {"widths": [12, 16, 24], "depths": [1, 2, 3], "kernels": [3, 5], "expands": [2, 3, 4], "stride": 2},
            ],
        }
    )
)


def costs(arch):
    return {"mflops": SPACE.flops(arch) / 1e6, "params": float(SPACE.params(arch))}


def problem(*constraints: str, objectives=("mflops",)) -> SearchProblem:
    return SearchProblem(SPACE, objectives, tuple(Constraint.parse(c) for c in constraints), costs)


def synthetic_accuracy(arch) -> float:
    """A learnable, saturating accuracy: more compute helps, kernel 5 helps a little, with diminishing returns."""
    genes = np.array(SPACE.to_genes(arch))
    kernel_bonus = sum(b.kernel == 5 for s in arch.stages for b in s.blocks)
    return float(1.0 - np.exp(-SPACE.flops(arch) / 2.5e5) * 0.6 + 0.01 * kernel_bonus - 0.002 * genes.sum())


def run(name: str, budget: int, seed: int, prob: SearchProblem | None = None, **params) -> SearchProblem:
    prob = prob or problem()
    algorithm = build_searcher(name, params, prob, seed)
    for _ in range(budget):
        arch = algorithm.ask()
        algorithm.tell(Evaluated(arch, synthetic_accuracy(arch), prob.costs(arch)))
    return algorithm


# -- genes ------------------------------------------------------------------------
@pytest.mark.parametrize("space", [SPACE, ViTSpace()], ids=["mbconv", "vit"])
def test_genes_round_trip_and_mark_only_used_layer_slots_active(space) -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        arch = space.sample_choices(rng)
        genes = space.to_genes(arch)
        assert space.from_genes(genes) == arch
        assert len(genes) == len(space.gene_sizes())
        assert all(0 <= g < n for g, n in zip(genes, space.gene_sizes()))
        layers = sum(len(s.blocks) for s in arch.stages) if space is SPACE else len(arch.layers)
        groups = len(arch.stages) if space is SPACE else 1
        assert space.active_genes(genes).sum() == 2 * groups + layers


def test_mutation_changes_active_genes_only_and_stays_in_the_space() -> None:
    algorithm = build_searcher("random", {}, problem(), 0)
    rng = np.random.default_rng(1)
    for _ in range(200):
        parent = SPACE.sample_choices(rng)
        child = algorithm.mutate(parent)
        assert child != parent
        SPACE.validate(child)
        before, after = np.array(SPACE.to_genes(parent)), np.array(SPACE.to_genes(child))
        changed = np.flatnonzero(before != after)
        assert SPACE.active_genes(before.tolist())[changed].all()


def test_crossover_takes_every_gene_from_one_parent() -> None:
    algorithm = build_searcher("random", {}, problem(), 0)
    a, b = SPACE.smallest(), SPACE.largest()
    child = algorithm.crossover(a, b)
    ga, gb, gc = (np.array(SPACE.to_genes(x)) for x in (a, b, child))
    assert ((gc == ga) | (gc == gb)).all()


# -- Pareto and hypervolume ---------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.integers(0, 5)] * 3), min_size=1, max_size=12))
def test_hypervolume_equals_the_count_of_dominated_unit_cells(points) -> None:
    points = np.array(points, dtype=float)
    reference = np.full(3, 6.0)
    cells = sum(
        any((p <= np.array(cell)).all() for p in points) for cell in itertools.product(range(6), repeat=3)
    )
    assert hypervolume(points, reference) == pytest.approx(cells)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=20))
def test_fronts_partition_the_points_and_each_front_is_non_dominated(points) -> None:
    points = np.array(points)
    fronts = non_dominated_sort(points)
    assert sorted(np.concatenate(fronts).tolist()) == list(range(len(points)))
    for level, front in enumerate(fronts):
        assert pareto_mask(points[front]).all()
        if level:  # every later point is dominated by some point of the front before it
            earlier = points[fronts[level - 1]]
            for p in points[front]:
                assert any((q <= p).all() and (q < p).any() for q in earlier)


def test_crowding_distance_keeps_the_extremes() -> None:
    front = np.array([[0.0, 4.0], [1.0, 2.0], [1.5, 1.8], [4.0, 0.0]])
    distance = crowding_distance(front)
    # Extremes are always kept; inner points score the normalised side lengths of their neighbours' box.
    assert distance.tolist() == pytest.approx([np.inf, 1.5 / 4 + 2.2 / 4, 3 / 4 + 2 / 4, np.inf])


# -- problems and constraints --------------------------------------------------------
def test_constraints_parse_and_bad_ones_are_one_line_errors() -> None:
    assert Constraint.parse("latency_ms <= 5") == Constraint("latency_ms", 5.0)
    assert Constraint.parse("comm_ms<20") == Constraint("comm_ms", 20.0)
    for bad, message in [("flops<=3", "unknown cost"), ("mflops>=3", "COST<=LIMIT"), ("mflops<=x", "COST<=LIMIT")]:
        with pytest.raises(NasfleetError, match=message):
            Constraint.parse(bad)


def test_an_infeasible_constraint_is_reported_before_any_search() -> None:
    smallest = costs(SPACE.smallest())["mflops"]
    with pytest.raises(NasfleetError, match="no subnet satisfies mflops"):
        problem(f"mflops<={smallest / 2}").check_feasible()
    problem(f"mflops<={smallest}").check_feasible()


@pytest.mark.parametrize("name", list(SEARCHERS))
def test_every_searcher_proposes_new_feasible_subnets_only(name: str) -> None:
    limit = costs(SPACE.largest())["mflops"] / 3
    algorithm = run(name, 40, seed=0, prob=problem(f"mflops<={limit}"), **({"initial": 8} if name == "predictor" else {}))
    archs = [r.arch for r in algorithm.history]
    assert len(set(archs)) == len(archs) == 40
    assert all(costs(a)["mflops"] <= limit for a in archs)


def test_a_searcher_that_runs_out_of_feasible_subnets_says_so() -> None:
    smallest = SPACE.smallest()
    prob = problem(f"mflops<={costs(smallest)['mflops']}")  # only the smallest subnet fits
    algorithm = build_searcher("random", {}, prob, 0)
    assert algorithm.ask() == smallest
    with pytest.raises(NasfleetError, match="no new subnet satisfying the constraints"):
        algorithm.ask()


def test_unknown_searchers_and_bad_parameters_are_one_line_errors() -> None:
    with pytest.raises(NasfleetError, match="unknown searcher 'annealing'"):
        build_searcher("annealing", {}, problem(), 0)
    with pytest.raises(NasfleetError, match="sample_size 9 exceeds population 4"):
        build_searcher("evolution", {"population": 4, "sample_size": 9}, problem(), 0)
    with pytest.raises(NasfleetError, match="unknown predictor model"):
        build_searcher("predictor", {"model": "forest"}, problem(), 0)
    with pytest.raises(NasfleetError, match="popsize: Extra inputs"):
        build_searcher("nsga2", {"popsize": 3}, problem(), 0)


# -- each algorithm's defining mechanism ---------------------------------------------
def test_regularized_evolution_mutates_a_member_of_the_current_population() -> None:
    algorithm = run("evolution", 30, seed=3, population=8, sample_size=3)
    assert isinstance(algorithm, RegularizedEvolution)
    population = {a.arch for a in algorithm.history[-8:]}
    child = algorithm.ask()
    distances = [
        int((np.array(SPACE.to_genes(child)) != np.array(SPACE.to_genes(p))).sum()) for p in population
    ]
    assert min(distances) >= 1
    assert min(distances) <= 3  # one mutated gene, plus depth genes reviving inactive slots


def test_nsga2_keeps_the_non_dominated_subnets_as_parents() -> None:
    prob = problem()
    algorithm = build_searcher("nsga2", {"population": 4}, prob, 0)
    assert isinstance(algorithm, NSGA2)
    archs = [SPACE.sample_choices(np.random.default_rng(i)) for i in range(8)]
    archs = sorted(set(archs), key=lambda a: costs(a)["mflops"])[:8]
    # The four cheapest get the best accuracies: they dominate the four dearest ones.
    for rank, arch in enumerate(archs):
        algorithm.tell(Evaluated(arch, 0.9 - 0.1 * rank, costs(arch)))
    assert {r.arch for r in algorithm.parents} == set(archs[:4])


def test_the_predictor_beats_random_search_on_a_learnable_landscape() -> None:
    """Mean hypervolume over seeds at the same number of evaluations (deterministic: seeded).

    Evolution and NSGA-II are compared with random search on the real demo supernet in
    benchmarks/search_quality.py; on this synthetic landscape they merely tie with it.
    """
    prob = problem()
    reference = prob.reference_point()

    def mean_hv(name: str, **params) -> float:
        volumes = []
        for seed in range(3):
            algorithm = run(name, 32, seed, problem(), **params)
            volumes.append(hypervolume(prob.objective_matrix(algorithm.history), reference))
        return float(np.mean(volumes))

    assert mean_hv("predictor", initial=10, candidates=100) > mean_hv("random")
