"""The ground-truth benchmark: stand-alone runs over seeds, two processes at a time, cached and resumable."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasfleet.orchestrator.config import load_config
from nasfleet.orchestrator.train import job_space
from nasfleet.research.comparison import fixed_subnets
from nasfleet.research.standalone import StandaloneCache, standalone_key, standalone_recipe
from nasfleet.supernet import arch_from_json

from conftest import benchmark_module, tiny_config


@pytest.fixture(scope="module")
def ground_truth():
    with benchmark_module("ground_truth") as module:
        yield module


def test_runs_are_cached_per_subnet_and_seed_and_a_second_run_trains_nothing(ground_truth, tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "unused")
    subnets = fixed_subnets(job_space(config), 3, seed=0)
    cache = StandaloneCache(tmp_path / "cache")
    assert ground_truth.build(config, subnets, 2, 40, cache, budget_s=0.0, workers=2) == 0  # no budget: nothing
    assert ground_truth.build(config, subnets, 2, 40, cache, budget_s=600.0, workers=2) == 6
    assert len(list((tmp_path / "cache").glob("part-*.parquet"))) == 6  # one file per (subnet, seed)
    assert ground_truth.build(config, subnets, 2, 40, cache, budget_s=600.0, workers=2) == 0
    payload, markdown = ground_truth.report(config, subnets, 2, 40, cache)
    summary = payload["summary"]
    assert summary["done"] == summary["total"] == 6 and summary["subnets_with_two_seeds"] == 3
    assert summary["seed_tau"] is not None and -1.0 <= summary["seed_tau"] <= 1.0
    assert all(set(row["test_accuracy"]) == {0, 1} for row in payload["rows"])
    assert "6 of 6 runs done" in markdown
    # Another recipe (more steps) is another ground truth: nothing of this one is reused for it.
    assert ground_truth.report(config, subnets, 2, 41, cache)[0]["summary"]["done"] == 0


def test_the_recorded_ground_truth_is_found_under_the_keys_a_comparison_computes() -> None:
    """A setting added to the job must not orphan hours of recorded stand-alone runs: one that is off
    leaves the key as it was, one that is on makes another ground truth."""
    repo = Path(__file__).resolve().parents[2]
    config = load_config(repo / "orchestrator/configs/fashion-mnist-mbconv.yaml")
    space = job_space(config)
    cache = StandaloneCache(repo / "benchmarks/results/ground_truth")
    rows = cache.read().to_pylist()
    assert len(rows) >= 48
    for row in rows:
        recipe = standalone_recipe(config, row["steps"], row["seed"])
        assert standalone_key(recipe, space, arch_from_json(row["arch"])) == row["key"], row["arch_desc"]
    clipped = recipe.model_copy(update={"optim": recipe.optim.model_copy(update={"grad_clip_norm": 1.0})})
    assert standalone_key(clipped, space, arch_from_json(row["arch"])) != row["key"]
