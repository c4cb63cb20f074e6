"""The ranking statistics against a ground truth trained over several seeds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from nasfleet.errors import NasfleetError
from nasfleet.research.ranking_stats import bootstrap_indices, bootstrap_tau, ranking_statistics
from nasfleet.research.standalone import ImageScores, mean_scores

IMAGES = 400


def runs_of(quality: float, seeds: int, seed_noise: float, rng: np.random.Generator) -> list[ImageScores]:
    """``seeds`` stand-alone runs of one subnet: each run's accuracy is the quality plus seed noise."""
    runs = []
    for _ in range(seeds):
        level = float(np.clip(quality + rng.normal(0, seed_noise), 0.05, 0.99))
        runs.append(ImageScores(rng.random(IMAGES) < level, rng.exponential(1 - level, IMAGES)))
    return runs


def estimate_and_truth(seeds: int, seed_noise: float) -> tuple[list[ImageScores], list[list[ImageScores]]]:
    rng = np.random.default_rng(3)
    quality = np.linspace(0.80, 0.86, 10)  # close together, as the reference task's subnets are
    estimated = [runs_of(q, 1, 0.0, rng)[0] for q in quality]
    return estimated, [runs_of(q, seeds, seed_noise, rng) for q in quality]


def test_the_mean_of_runs_has_the_mean_accuracy_and_nll() -> None:
    a = ImageScores(np.array([True, False, True, True]), np.array([0.1, 2.0, 0.3, 0.2]))
    b = ImageScores(np.array([True, True, False, False]), np.array([0.3, 0.4, 1.5, 1.0]))
    mean = mean_scores([a, b])
    assert mean.accuracy == pytest.approx((a.accuracy + b.accuracy) / 2)
    assert mean.mean_nll == pytest.approx((a.mean_nll + b.mean_nll) / 2)
    assert mean_scores([a]) is a
    with pytest.raises(ValueError, match="share of runs"):
        ImageScores(np.array([0.5, 1.5]), np.zeros(2))


def test_identical_runs_give_the_single_run_interval() -> None:
    estimated, truth = estimate_and_truth(seeds=1, seed_noise=0.0)
    indices = bootstrap_indices(IMAGES, 300, seed=0)
    single = bootstrap_tau(estimated, truth, "accuracy", indices)
    doubled = bootstrap_tau(estimated, [runs * 2 for runs in truth], "accuracy", indices)
    assert single == doubled


def test_seed_noise_in_the_ground_truth_widens_the_interval() -> None:
    """The same mean-of-two truth, once with its seed level resampled and once treated as one run."""
    estimated, truth = estimate_and_truth(seeds=2, seed_noise=0.02)
    indices = bootstrap_indices(IMAGES, 500, seed=0)
    with_seeds = bootstrap_tau(estimated, truth, "accuracy", indices)
    as_one_run = bootstrap_tau(estimated, [[mean_scores(runs)] for runs in truth], "accuracy", indices)
    assert with_seeds.high - with_seeds.low > as_one_run.high - as_one_run.low
    ranking = ranking_statistics(estimated, truth, indices)
    assert ranking.kendall_tau_interval == with_seeds  # the default seed of the run level
    means = [mean_scores(runs).accuracy for runs in truth]
    assert ranking.kendall_tau == pytest.approx(stats.kendalltau([s.accuracy for s in estimated], means).statistic)


def test_a_subnet_without_runs_is_refused() -> None:
    estimated, truth = estimate_and_truth(seeds=1, seed_noise=0.0)
    with pytest.raises(NasfleetError, match="at least one run"):
        bootstrap_tau(estimated, [*truth[:-1], []], "accuracy", bootstrap_indices(IMAGES, 10, seed=0))
