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
from nasfleet.research.standalone import ImageScores

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


def bootstrap_tau(
    estimated: Sequence[ImageScores],
    truth: Sequence[ImageScores],
    metric: str,
    indices: np.ndarray,
    confidence: float = CONFIDENCE,
) -> Interval:
    """Percentile interval of Kendall τ between the two sides, both recomputed on each resample of images.

    Both sides are resampled with the same image indices (the same test images judge both), so the
    interval reflects which test images were drawn, not training-seed noise on either side.
    """
    taus = kendall_tau_b(resampled_means(estimated, metric, indices), resampled_means(truth, metric, indices))
    defined = taus[~np.isnan(taus)]
    if defined.size == 0:
        return Interval(math.nan, math.nan, len(taus))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(defined, [tail, 100 - tail])
    return Interval(float(low), float(high), int(len(taus) - defined.size))


def ranking_statistics(
    estimated: Sequence[ImageScores], truth: Sequence[ImageScores], indices: np.ndarray
) -> RankingStatistics:
    """τ and ρ on test accuracy and on mean test NLL (full test set), each τ with its bootstrap interval."""
    tau, rho = rank_correlations([s.accuracy for s in estimated], [s.accuracy for s in truth])
    tau_nll, rho_nll = rank_correlations([s.mean_nll for s in estimated], [s.mean_nll for s in truth])
    return RankingStatistics(
        tau, rho, bootstrap_tau(estimated, truth, "accuracy", indices),
        tau_nll, rho_nll, bootstrap_tau(estimated, truth, "nll", indices),
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
