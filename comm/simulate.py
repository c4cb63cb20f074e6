"""Run a collective on a topology under a routing at either fidelity.

Each distinct step pattern of the collective is routed and solved once, then
weighted by how often the schedule repeats it; ``dedup=False`` solves every step in
order instead and gives the same numbers (tested), only slower.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from nasfleet.errors import NasfleetError
from nasfleet.comm.analytical import step_load
from nasfleet.comm.collectives import Collective, place_ranks
from nasfleet.comm.flowsim import simulate_step
from nasfleet.comm.limits import check_memory
from nasfleet.comm.routing import get_routing, is_hashed, route_step
from nasfleet.comm.topology import Topology

FIDELITIES = ("analytical", "flow")


@dataclass(frozen=True)
class PatternResult:
    """One distinct step pattern: its duration and what it put on the links."""

    time_s: float
    congestion_s: float
    latency_s: float
    num_flows: int
    num_transfers: int
    link_bytes: np.ndarray = field(repr=False)
    flow_finish_s: np.ndarray | None = field(default=None, repr=False)
    rate_changes: int = 0


@dataclass(frozen=True)
class SimulationResult:
    """Outcome of one collective.

    ``completion_time_s`` is the collective completion time (CCT);
    ``max_congestion_s`` the sum over steps of the step's max link load / capacity;
    ``max_link_utilization`` the busiest link's bytes / (capacity × CCT);
    ``flows`` and ``subflows`` count network flows and single-rate transfers over all
    steps (under ``spray`` a flow is one sprayed transfer).
    """

    completion_time_s: float
    max_congestion_s: float
    max_link_utilization: float
    flows: int
    subflows: int
    steps: int
    collective: str
    algorithm: str
    routing: str
    fidelity: str
    ranks: int
    bytes: float
    seed: int
    topology: str
    wall_time_s: float
    patterns: tuple[PatternResult, ...] = field(repr=False)
    schedule: tuple[tuple[int, int], ...] = field(repr=False)
    link_capacity_bytes_per_s: np.ndarray = field(repr=False)

    def step_times_s(self) -> np.ndarray:
        """Duration of every step in order."""
        return np.array([self.patterns[i].time_s for i, r in self.schedule for _ in range(r)])

    def link_bytes_total(self) -> np.ndarray:
        """Bytes each link carried over the whole collective."""
        total = np.zeros_like(self.link_capacity_bytes_per_s)
        for i, repeat in self.schedule:
            total += repeat * self.patterns[i].link_bytes
        return total

    def utilization_timeline(self, links: np.ndarray | None = None, max_steps: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """(step start times, utilisation [step × link]) with each step's average
        utilisation per link; runs of one repeated pattern are merged so at most
        about ``max_steps`` rows come back."""
        links = np.arange(len(self.link_capacity_bytes_per_s)) if links is None else np.asarray(links)
        cap = self.link_capacity_bytes_per_s[links]
        starts, rows, now = [], [], 0.0
        for i, repeat in self.schedule:
            pattern = self.patterns[i]
            busy = np.where(cap > 0, pattern.link_bytes[links] / np.where(cap > 0, cap, 1), 0.0)
            util = busy / pattern.time_s if pattern.time_s > 0 else np.zeros_like(busy)
            # A long run of one pattern is shown as a few rows, not thousands.
            pieces = max(1, min(repeat, max_steps // max(1, len(self.schedule))))
            for k in range(pieces):
                starts.append(now + k * repeat / pieces * pattern.time_s)
                rows.append(util)
            now += repeat * pattern.time_s
        return np.array(starts), np.array(rows)

    def to_dict(self) -> dict:
        """The summary as plain JSON-able values."""
        return {
            "completion_time_s": self.completion_time_s,
            "max_congestion_s": self.max_congestion_s,
            "max_link_utilization": self.max_link_utilization,
            "subflows": self.subflows,
            "flows": self.flows,
            "steps": self.steps,
            "collective": self.collective,
            "algorithm": self.algorithm,
            "routing": self.routing,
            "fidelity": self.fidelity,
            "ranks": self.ranks,
            "bytes": self.bytes,
            "seed": self.seed,
            "topology": self.topology,
            "wall_time_s": self.wall_time_s,
        }


def _check_fidelity(fidelity: str) -> None:
    if fidelity not in FIDELITIES:
        raise NasfleetError(f"unknown fidelity {fidelity!r}: choose one of {', '.join(FIDELITIES)}")


def simulate(
    topology: Topology,
    collective: Collective,
    routing: str = "split",
    fidelity: str = "flow",
    seed: int = 0,
    gpus_per_host: int = 1,
    placement: str | Sequence[int] = "contiguous",
    alpha_s: float = 0.0,
    dedup: bool = True,
) -> SimulationResult:
    """Simulate ``collective`` on ``topology``.

    ``routing`` is a registered name (``ecmp``, ``spray``, ``split``, ``ecmp-K``);
    ``seed`` drives the ECMP hash (and a ``random`` placement); ``alpha_s`` is a
    per-step software overhead such as a calibrated α, added to every step.
    """
    _check_fidelity(fidelity)
    if not (alpha_s >= 0 and math.isfinite(alpha_s)):
        raise NasfleetError(f"bad alpha_s {alpha_s}: must be a finite number, not negative")
    schedule_router = get_routing(routing)
    started = time.perf_counter()
    rank_host = place_ranks(collective.ranks, topology.num_hosts, gpus_per_host, placement, seed)
    coll = collective if dedup else collective.expanded()
    # every distinct pattern keeps its link loads and its flows' finish times
    check_memory(
        f"simulating {len(coll.patterns):,} distinct steps on {topology.num_links:,} links",
        sum(8 * (topology.num_links + p.num_flows) for p in coll.patterns),
    )
    capacity = topology.link_bytes_per_s

    results = []
    for step in coll.patterns:
        transfers = route_step(topology, step, rank_host, schedule_router, seed)
        used = np.unique(transfers.incidence.indices)
        if len(used) and capacity[used].min() <= 0:
            dead = int(used[np.argmin(capacity[used])])
            raise NasfleetError(f"traffic needs failed link {topology.link_label(dead)}: no other path exists")
        load = step_load(transfers, capacity)
        if fidelity == "flow":
            timing = simulate_step(transfers, capacity)
            time_s, finish, changes = timing.time_s, timing.flow_finish_s, timing.rate_changes
        else:
            time_s, finish, changes = load.time_s, None, 0
        results.append(
            PatternResult(
                time_s=time_s + alpha_s,
                congestion_s=load.congestion_s,
                latency_s=load.latency_s,
                num_flows=step.num_flows,
                num_transfers=transfers.num_transfers,
                link_bytes=load.link_bytes,
                flow_finish_s=finish,
                rate_changes=changes,
            )
        )

    cct = sum(results[i].time_s * r for i, r in coll.schedule)
    link_total = np.zeros_like(capacity)
    for i, r in coll.schedule:
        link_total += r * results[i].link_bytes
    with np.errstate(divide="ignore", invalid="ignore"):
        util = np.where(capacity > 0, link_total / (capacity * cct), 0.0) if cct > 0 else np.zeros(1)
    return SimulationResult(
        completion_time_s=float(cct),
        max_congestion_s=float(sum(results[i].congestion_s * r for i, r in coll.schedule)),
        max_link_utilization=float(util.max(initial=0.0)),
        flows=sum(results[i].num_flows * r for i, r in coll.schedule),
        subflows=sum(results[i].num_transfers * r for i, r in coll.schedule),
        steps=coll.num_steps,
        collective=collective.kind,
        algorithm=collective.algorithm,
        routing=schedule_router.name,
        fidelity=fidelity,
        ranks=collective.ranks,
        bytes=collective.size_bytes,
        seed=seed,
        topology=topology.name,
        wall_time_s=time.perf_counter() - started,
        patterns=tuple(results),
        schedule=coll.schedule,
        link_capacity_bytes_per_s=capacity,
    )


@dataclass(frozen=True)
class SeedSummary:
    """A hashed routing over several seeds: the mean and the worst case."""

    results: tuple[SimulationResult, ...]

    @property
    def mean_completion_time_s(self) -> float:
        return float(np.mean([r.completion_time_s for r in self.results]))

    @property
    def worst_completion_time_s(self) -> float:
        return float(np.max([r.completion_time_s for r in self.results]))

    @property
    def mean_max_congestion_s(self) -> float:
        return float(np.mean([r.max_congestion_s for r in self.results]))

    @property
    def worst_max_congestion_s(self) -> float:
        return float(np.max([r.max_congestion_s for r in self.results]))

    def to_dict(self) -> dict:
        """The first run's fields, with times and congestion averaged over seeds."""
        first = self.results[0].to_dict()
        first.update(
            completion_time_s=self.mean_completion_time_s,
            completion_time_worst_s=self.worst_completion_time_s,
            max_congestion_s=self.mean_max_congestion_s,
            max_congestion_worst_s=self.worst_max_congestion_s,
            max_link_utilization=float(np.mean([r.max_link_utilization for r in self.results])),
            seeds=[r.seed for r in self.results],
            wall_time_s=float(sum(r.wall_time_s for r in self.results)),
        )
        return first


def simulate_over_seeds(
    topology: Topology, collective: Collective, routing: str, seeds: int = 8, first_seed: int = 0, **kwargs
) -> SeedSummary:
    """Run a hashed routing (``ecmp``, ``ecmp-K``) for ``seeds`` seeds; other routings
    do not depend on the seed and run once."""
    if seeds < 1:
        raise NasfleetError(f"bad number of seeds {seeds}: must be at least 1")
    count = seeds if is_hashed(routing) else 1
    return SeedSummary(
        tuple(simulate(topology, collective, routing, seed=first_seed + k, **kwargs) for k in range(count))
    )
