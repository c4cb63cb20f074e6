"""The search-quality benchmark's parts: a seeded validation subset, the evaluation cache, the curves,
and the stand-alone front it measures searches against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import benchmark_module, tiny_config
from nasfleet.orchestrator.evaluate import load_trained
from nasfleet.orchestrator.launch import train_job
from nasfleet.orchestrator.subnet_search.costs import CostSources, cost_function
from nasfleet.orchestrator.train import job_space
from nasfleet.research.standalone import StandaloneCache, standalone_results
from nasfleet.strategies.searchers import SEARCHERS, SearchProblem


@pytest.fixture(scope="module")
def bench():
    with benchmark_module("search_quality") as module:
        yield module


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    run = tmp_path_factory.mktemp("search-quality") / "run"
    train_job(tiny_config(run, optim={"steps": 4, "lr": 0.05, "warmup_steps": 1}))
    return load_trained(run)


def test_the_validation_subset_is_seeded_and_drawn_from_the_split(trained) -> None:
    subset = trained.with_val_subset(40)
    again = trained.with_val_subset(40)
    assert len(subset.data.val) == 40 and torch.equal(subset.data.val.images, again.data.val.images)
    rows = trained.data.val.images.flatten(1)
    assert all((rows == image.flatten()).all(dim=1).any() for image in subset.data.val.images)
    assert subset.data.test is trained.data.test and subset.data.train is trained.data.train
    assert not torch.equal(trained.with_val_subset(40, seed=1).data.val.labels, subset.data.val.labels)
    assert trained.with_val_subset(None) is trained
    assert len(trained.with_val_subset(len(trained.data.val) + 1).data.val) == len(trained.data.val)


def test_searches_evaluate_each_subnet_once_and_keep_it_for_the_same_origin(bench, trained, tmp_path: Path) -> None:
    subset = trained.with_val_subset(60)
    cache = tmp_path / "cache.parquet"
    evaluate = bench.CachedEvaluation(subset, cache, "origin-a")
    problem = SearchProblem(subset.space, ("mflops",), (), cost_function(subset.space, ["mflops"], CostSources()))
    searches = bench.run_searches(problem, evaluate, evaluations=5, seeds=2, reference_point=problem.reference_point())
    assert set(searches.curves) == set(SEARCHERS)
    for name, curves in searches.curves.items():
        assert curves.shape == (2, 5) and (np.diff(curves, axis=1) >= 0).all()  # a front only grows
        assert len(searches.found[name]) == 10
    assert evaluate.new == len(evaluate.accuracy) <= 4 * 10
    reread = bench.CachedEvaluation(subset, cache, "origin-a")
    assert reread.accuracy == evaluate.accuracy
    assert bench.CachedEvaluation(subset, cache, "origin-b").accuracy == {}  # another checkpoint or val set


def test_standalone_points_average_the_seeds_of_the_runs_at_the_steps_asked(bench, tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "unused", optim={"steps": 3, "lr": 0.05, "warmup_steps": 1})
    cache = StandaloneCache(tmp_path / "alone")
    space = job_space(config)
    archs = [space.smallest(), space.largest()]
    runs = [standalone_results(config.model_copy(update={"seed": seed}), archs, cache) for seed in (0, 1)]

    def mflops(arch):
        return space.flops(arch) / 1e6

    points = bench.standalone_points(tmp_path / "alone", space, 3, mflops)
    expected = sorted([-np.mean([runs[s][i].accuracy["val"] for s in (0, 1)]), mflops(a)] for i, a in enumerate(archs))
    np.testing.assert_allclose(sorted(points.tolist()), expected)
    assert runs[0][0].accuracy != runs[1][0].accuracy or runs[0][1].accuracy != runs[1][1].accuracy  # two seeds
    assert bench.standalone_points(tmp_path / "alone", space, 4, mflops).shape == (0, 2)
