"""Analytical fidelity: per-step link loads and the congestion bound.

A step cannot finish before its most loaded link has drained (max_e load_e /
capacity_e, the step's *congestion*) plus the propagation delay of its longest path;
that sum is the step time here. It is exact when the bottleneck link is busy for the
whole step (rings, spraying on a non-blocking fabric) and a lower bound otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nasfleet.comm.routing import Transfers


@dataclass(frozen=True)
class StepLoad:
    link_bytes: np.ndarray
    congestion_s: float
    bottleneck_link: int
    latency_s: float

    @property
    def time_s(self) -> float:
        return self.congestion_s + self.latency_s


def step_load(transfers: Transfers, capacity_bytes_per_s: np.ndarray) -> StepLoad:
    """Link loads of one step and its congestion bound."""
    link_bytes = transfers.link_bytes()
    with np.errstate(divide="ignore", invalid="ignore"):
        drain_s = np.where(link_bytes > 0, link_bytes / capacity_bytes_per_s, 0.0)
    worst = int(np.argmax(drain_s)) if len(drain_s) else 0
    return StepLoad(
        link_bytes=link_bytes,
        congestion_s=float(drain_s.max(initial=0.0)),
        bottleneck_link=worst,
        latency_s=float(transfers.latency_s.max(initial=0.0)),
    )
