"""The statistics behind the strategy comparison: rank correlations and their bootstrap intervals.

Kept apart from training and reporting so that the numbers can be checked (and reused) on plain
per-image scores, with no supernet, run folder or plot involved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from nasfleet.errors import NasfleetError
from nasfleet.research.standalone import ImageScores, mean_scores

CONFIDENCE = 0.95
"""Coverage of the bootstrap intervals, and the share of resamples a resolved pair must keep its order in."""


@dataclass(frozen=True)
class Interval:
    """A bootstrap percentile interval; ``undefined`` resamples (a constant side: τ has no value) are left out."""

    low: float
    high: float
    undefined: int = 0

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class RankingStatistics:
    """How well a supernet ranks the fixed set, on test accuracy and on test NLL, with τ intervals."""

    kendall_tau: float
    spearman_rho: float
    kendall_tau_interval: Interval
    kendall_tau_nll: float
    spearman_rho_nll: float
    kendall_tau_nll_interval: Interval



def rank_correlations(estimated: Sequence[float], truth: Sequence[float]) -> tuple[float, float]:
    """Kendall τ (τ-b, ties allowed) and Spearman ρ; NaN when either side is constant."""
    if len(estimated) != len(truth) or len(estimated) < 2:
        raise NasfleetError(
            f"rank correlation needs two equal-length lists of ≥ 2 values, got {len(estimated)} and {len(truth)}"
        )
    if len(set(estimated)) < 2 or len(set(truth)) < 2:
        return math.nan, math.nan
    return float(stats.kendalltau(estimated, truth).statistic), float(stats.spearmanr(estimated, truth).statistic)


def kendall_tau_b(estimated: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Kendall τ-b along the last axis (one row per resample); NaN where either side is constant.

    τ-b = Σ sign(eᵢ−eⱼ)·sign(tᵢ−tⱼ) / √(untied pairs in e · untied pairs in t), as scipy's, vectorised
    so a thousand resamples cost one array operation.
    """
    i, j = np.triu_indices(np.shape(estimated)[-1], k=1)
    e = np.sign(estimated[..., i] - estimated[..., j])
    t = np.sign(truth[..., i] - truth[..., j])
    denominator = np.sqrt((e * e).sum(axis=-1) * (t * t).sum(axis=-1))
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, (e * t).sum(axis=-1) / safe, np.nan)


def bootstrap_indices(num_images: int, resamples: int, seed: int) -> np.ndarray:
    """``resamples`` rows of ``num_images`` image indices drawn with replacement (seeded)."""
    if num_images < 1 or resamples < 1:
        raise NasfleetError(f"a bootstrap needs ≥ 1 image and ≥ 1 resample, got {num_images} and {resamples}")
    return np.random.default_rng(seed).integers(0, num_images, size=(resamples, num_images))


METRICS = ("accuracy", "nll")


def resampled_means(scores: Sequence[ImageScores], metric: str, indices: np.ndarray) -> np.ndarray:
    """[resamples, subnets]: each subnet's accuracy (correct-image count) or mean NLL on each resample.

    Accuracy is kept as a count so that equal accuracies tie exactly (floats of equal counts do too,
    but counts make it obvious).
    """
    if metric not in METRICS:
        raise NasfleetError(f"unknown ranking metric {metric!r} (known: {', '.join(METRICS)})")
    sizes = {len(s.correct) for s in scores}
    if len(sizes) != 1 or indices.max(initial=0) >= min(sizes):
        raise NasfleetError(f"per-image scores must cover the same images, got sizes {sorted(sizes)}")
    columns = [s.correct[indices].sum(axis=1) if metric == "accuracy" else s.nll[indices].mean(axis=1) for s in scores]
    return np.stack(columns, axis=1).astype(np.float64)


def seed_resampled_means(
    runs: Sequence[Sequence[ImageScores]], metric: str, indices: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """[resamples, subnets]: as :func:`resampled_means`, each subnet's runs also resampled.

    The second level of the bootstrap a seeded ground truth needs: on each image resample, every
    subnet's value is the mean over its training runs drawn with replacement, independently per
    subnet (each was trained on its own). With one run each this is :func:`resampled_means`.
    """
    columns = []
    for subnet_runs in runs:
        per_run = resampled_means(subnet_runs, metric, indices)  # [resamples, runs]
        picks = rng.integers(0, per_run.shape[1], size=per_run.shape)
        columns.append(np.take_along_axis(per_run, picks, axis=1).mean(axis=1))
    return np.stack(columns, axis=1)


def bootstrap_tau(
    estimated: Sequence[ImageScores],
    truth: Sequence[Sequence[ImageScores]],
    metric: str,
    indices: np.ndarray,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """Percentile interval of Kendall τ between the two sides, both recomputed on each resample.

    Both sides are resampled with the same image indices (the same test images judge both); the
    truth's training runs (seeds) are resampled too (:func:`seed_resampled_means`), so the interval
    covers which test images were drawn and which training runs the ground truth happened to get.
    """
    if len(estimated) != len(truth) or any(len(runs) == 0 for runs in truth):
        raise NasfleetError("the ground truth needs at least one run for every estimated subnet")
    sizes = {len(s.correct) for s in estimated} | {len(r.correct) for runs in truth for r in runs}
    if len(sizes) != 1:
        raise NasfleetError(f"per-image scores must cover the same images, got sizes {sorted(sizes)}")
    rng = np.random.default_rng(seed)
    taus = kendall_tau_b(resampled_means(estimated, metric, indices), seed_resampled_means(truth, metric, indices, rng))
    defined = taus[~np.isnan(taus)]
    if defined.size == 0:
        return Interval(math.nan, math.nan, len(taus))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(defined, [tail, 100 - tail])
    return Interval(float(low), float(high), int(len(taus) - defined.size))


def ranking_statistics(
    estimated: Sequence[ImageScores], truth: Sequence[Sequence[ImageScores]], indices: np.ndarray, seed: int = 0
) -> RankingStatistics:
    """τ and ρ on test accuracy and on mean test NLL (full test set), each τ with its bootstrap interval.

    ``truth`` holds every subnet's stand-alone runs (one per training seed); the point estimates
    compare with their mean, the intervals resample images and runs.
    """
    means = [mean_scores(runs) for runs in truth]
    tau, rho = rank_correlations([s.accuracy for s in estimated], [s.accuracy for s in means])
    tau_nll, rho_nll = rank_correlations([s.mean_nll for s in estimated], [s.mean_nll for s in means])
    return RankingStatistics(
        tau, rho, bootstrap_tau(estimated, truth, "accuracy", indices, seed=seed),
        tau_nll, rho_nll, bootstrap_tau(estimated, truth, "nll", indices, seed=seed),
    )


def resolved_pairs(scores: Sequence[ImageScores], metric: str, indices: np.ndarray) -> tuple[int, int]:
    """How many subnet pairs keep their full-test-set order (not a tie) in ≥ ``CONFIDENCE`` of resamples.

    A measure of how determined a ranking is by the test set: pairs that flip under resampling
    cannot be ranked by any estimate. Returns (resolved, all pairs).
    """
    full = np.array([s.accuracy if metric == "accuracy" else s.mean_nll for s in scores])
    i, j = np.triu_indices(len(scores), k=1)
    order = np.sign(full[i] - full[j])
    means = resampled_means(scores, metric, indices)
    kept = (np.sign(means[:, i] - means[:, j]) == order).mean(axis=0)
    return int(((order != 0) & (kept >= CONFIDENCE)).sum()), len(i)
