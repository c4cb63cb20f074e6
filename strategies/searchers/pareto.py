"""Pareto fronts and hypervolume for accuracy-vs-cost search.

Everything here works on a matrix of objectives where *every column is minimised*
(accuracy enters as its negative), so one dominance rule serves all objectives.
"""

from __future__ import annotations

import numpy as np


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """True for the points no other point dominates (duplicates of a front point stay)."""
    points = np.asarray(points, dtype=float)
    no_worse = (points[:, None, :] <= points[None, :, :]).all(axis=2)
    better = (points[:, None, :] < points[None, :, :]).any(axis=2)
    dominated = (no_worse & better).any(axis=0)  # [i, j]: i dominates j
    return ~dominated


def non_dominated_sort(points: np.ndarray) -> list[np.ndarray]:
    """Indices of each successive front (NSGA-II's ranking), best front first."""
    points = np.asarray(points, dtype=float)
    remaining = np.arange(len(points))
    fronts = []
    while remaining.size:
        mask = pareto_mask(points[remaining])
        fronts.append(remaining[mask])
        remaining = remaining[~mask]
    return fronts


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance within one front: larger means a lonelier point."""
    points = np.asarray(points, dtype=float)
    n, m = points.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(points[:, j], kind="stable")
        values = points[order, j]
        span = values[-1] - values[0]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (values[2:] - values[:-2]) / span
    return distance


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """The volume dominated by ``points`` and bounded by ``reference`` (all objectives minimised).

    Exact: a sweep along the last objective, recursing into the others (the slicing
    algorithm). Fine for the fronts a search produces (tens to a few hundred points, 2–4
    objectives); points not strictly better than the reference in every objective add nothing.
    """
    points = np.asarray(points, dtype=float)
    reference = np.asarray(reference, dtype=float)
    if points.size == 0:
        return 0.0
    points = points[(points < reference).all(axis=1)]
    if points.size == 0:
        return 0.0
    points = points[pareto_mask(points)]
    return _slice_volume(np.unique(points, axis=0), reference)


def _slice_volume(points: np.ndarray, reference: np.ndarray) -> float:
    if points.shape[1] == 1:
        return float(reference[0] - points[:, 0].min())
    order = np.argsort(points[:, -1], kind="stable")
    points = points[order]
    volume = 0.0
    for i in range(len(points)):
        upper = points[i + 1, -1] if i + 1 < len(points) else reference[-1]
        depth = upper - points[i, -1]
        if depth > 0:
            prefix = points[: i + 1, :-1]
            volume += depth * _slice_volume(prefix[pareto_mask(prefix)], reference[:-1])
    return volume
