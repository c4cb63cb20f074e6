"""The costs a search bounds: exact counts, the comm layer's all-reduce prediction, a latency table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.comm_prediction import predict_step_allreduce
from nasfleet.orchestrator.config import CommConfig
from nasfleet.orchestrator.subnet_search.costs import CostSources, cost_function
from nasfleet.orchestrator.train import job_space
from nasfleet.strategies.searchers import Constraint, SearchProblem

from conftest import tiny_config

FABRIC = "leafspine:leaves=2,spines=2,hosts=4,gbps=100"


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory):
    config = tiny_config(tmp_path_factory.mktemp("costs") / "run")
    return job_space(config)


def test_comm_ms_is_the_comm_layers_prediction_for_the_subnets_parameters(space) -> None:
    costs = cost_function(space, ["comm_ms"], CostSources(comm_topology=FABRIC, comm_workers=8))
    small, large = costs(space.smallest()), costs(space.largest())
    assert small["params"] == space.params(space.smallest())
    assert small["mflops"] == pytest.approx(space.flops(space.smallest()) / 1e6)
    expected = predict_step_allreduce(space.params(space.largest()), 8, {}, CommConfig(topology=FABRIC))
    assert large["comm_ms"] == pytest.approx(expected.allreduce_s * 1e3)
    assert 0 < small["comm_ms"] < large["comm_ms"]


def test_a_comm_bound_between_the_extremes_splits_the_space(space) -> None:
    costs = cost_function(space, ["comm_ms"], CostSources(comm_topology=FABRIC))
    middle = (costs(space.smallest())["comm_ms"] + costs(space.largest())["comm_ms"]) / 2
    problem = SearchProblem(space, ("mflops",), (Constraint("comm_ms", middle),), costs)
    problem.check_feasible()
    rng = np.random.default_rng(0)
    verdicts = {problem.feasible(space.sample_choices(rng)) for _ in range(50)}
    assert verdicts == {True, False}
    assert not problem.feasible(space.largest())


def test_measured_costs_need_their_source(space, tmp_path: Path) -> None:
    with pytest.raises(NasfleetError, match="comm_ms needs a fabric"):
        cost_function(space, ["comm_ms"], CostSources())
    with pytest.raises(NasfleetError, match="latency_ms needs a latency table"):
        cost_function(space, ["latency_ms"], CostSources())
    with pytest.raises(NasfleetError, match="does not exist"):
        cost_function(space, ["latency_ms"], CostSources(latency_table=str(tmp_path / "none.json")))


def test_latency_ms_comes_from_the_table(space, tmp_path: Path) -> None:
    from nasfleet.supernet.latency import build_latency_table

    table = build_latency_table(space, batch_size=1, threads=1, repeats=3, warmup=1)
    table.save(tmp_path / "latency.json")
    costs = cost_function(space, ["latency_ms"], CostSources(latency_table=str(tmp_path / "latency.json")))
    arch = space.sample_choices(np.random.default_rng(1))
    assert costs(arch)["latency_ms"] == pytest.approx(table.predict_ms(arch))
