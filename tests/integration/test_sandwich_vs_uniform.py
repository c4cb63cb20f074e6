"""The sandwich-vs-uniform benchmark: three trainings per seed, a learning curve each, cached and resumable."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasfleet.orchestrator.train import job_space
from nasfleet.research.comparison import fixed_subnets

from conftest import benchmark_module, tiny_config


@pytest.fixture(scope="module")
def bench():
    with benchmark_module("sandwich_vs_uniform") as module:
        yield module


def test_same_steps_and_same_passes_are_trained_once_with_a_curve_each(bench, tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "unused")  # sandwich with one random subnet: 3 passes a step
    subnets = fixed_subnets(job_space(config), 3, seed=0)
    runs = bench.build(config, subnets, steps=4, seeds=1, stages=2, cache=tmp_path / "cache", workers=2)
    assert [(r["training"], r["steps"]) for r in runs] == [
        ("sandwich", 4), ("uniform, same steps", 4), ("uniform, same passes", 12),
    ]
    assert [[(c["step"], c["subnet_passes"]) for c in r["curve"]] for r in runs] == [
        [(2, 6), (4, 12)], [(2, 2), (4, 4)], [(6, 6), (12, 12)],
    ]
    assert all(set(c["test_accuracy"]) == {"smallest", "median", "largest"} for r in runs for c in r["curve"])
    assert len(list((tmp_path / "cache").glob("*.json"))) == 3
    again = bench.build(config, subnets, steps=4, seeds=1, stages=2, cache=tmp_path / "cache", workers=2)
    assert again == runs  # read back, nothing trained
    markdown = bench.report(runs, {}, {}, 4)
    assert "| sandwich | 4 | 12 |" in markdown and "| uniform, same passes | 12 | 12 |" in markdown
