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
from nasfleet.comm.collectives import Collective, LazyPatterns, Step, place_ranks
from nasfleet.comm.flowsim import simulate_step
from nasfleet.comm.limits import BYTES_PER_ENTRY, BYTES_PER_TRANSFER, check_memory
from nasfleet.comm.routing import RoutingContext, get_routing, is_hashed, per_tor_min_subflows
from nasfleet.comm.topology import Topology
from nasfleet.comm.units import bytes_per_s_to_gbps

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
    min_subflows: int = 0  # the per-ToR splitting rule's count for this step (lcm(r, s) per ToR)
    flow_finish_s: np.ndarray | None = field(default=None, repr=False)
    rate_changes: int = 0
    step: Step | None = field(default=None, repr=False)
    # kept only when simulate(record_flows=True) ran at flow level
    flow_sent_s: np.ndarray | None = field(default=None, repr=False)
    flow_initial_rate_bytes_per_s: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SimulationResult:
    """Outcome of one collective.

    ``completion_time_s`` is the collective completion time (CCT);
    ``max_congestion_s`` the sum over steps of the step's max link load / capacity;
    ``max_link_utilization`` the busiest link's bytes / (capacity × CCT);
    ``flows`` and ``subflows`` count network flows and single-rate transfers over all
    steps (under ``spray`` a flow is one sprayed transfer); ``min_subflows`` what the
    per-ToR splitting rule needs for the same steps, lcm(r, s) for the r flows of one size
    that leave a ToR over s paths (see :func:`nasfleet.comm.routing.per_tor_min_subflows`),
    whatever the routing, to set ``subflows`` against.
    """

    completion_time_s: float
    max_congestion_s: float
    max_link_utilization: float
    flows: int
    subflows: int
    min_subflows: int
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

    def top_links(self, topology: Topology, count: int) -> list[dict]:
        """The ``count`` most utilised links over the whole collective, busiest first.

        ``utilization`` is a link's bytes / (capacity × CCT), as in ``max_link_utilization``;
        ``busy_s`` the time its bytes keep it busy at full rate. Links that carried nothing
        are left out; ``topology`` is the one simulated (it names the links).
        """
        total = self.link_bytes_total()
        capacity = self.link_capacity_bytes_per_s
        with np.errstate(divide="ignore", invalid="ignore"):
            busy = np.where(capacity > 0, total / capacity, 0.0)
        used = np.flatnonzero(total > 0)
        busiest = used[np.lexsort((used, -busy[used]))][: max(0, count)]
        rows = []
        for link in busiest:
            label = topology.link_label(int(link))
            source, target = label.split("->")
            rows.append({
                "link": label,
                "id": int(link),
                "from": source,
                "to": target,
                "gbps": bytes_per_s_to_gbps(capacity[link]),
                "bytes": float(total[link]),
                "busy_s": float(busy[link]),
                "utilization": float(busy[link] / self.completion_time_s) if self.completion_time_s > 0 else 0.0,
            })
        return rows

    def flow_rates(self) -> list[dict]:
        """Every flow of every distinct step, with its rates (needs ``simulate(record_flows=True)``).

        ``pattern`` indexes the distinct steps, ``first_step`` is the first step that runs it
        and ``steps`` how many do; per flow: source and destination rank, ``bytes``,
        ``finish_s`` (arrival of its last byte, from the step's start), ``initial_gbps`` (its
        max-min fair rate when the step starts) and ``mean_gbps`` (its bytes over the time
        until its last byte left). Flows between ranks on one host never touch the
        network: their rates are ``None``.
        """
        if any(p.flow_initial_rate_bytes_per_s is None for p in self.patterns):
            raise NasfleetError("per-flow rates are kept only by a flow-level simulate(..., record_flows=True)")
        steps = np.zeros(len(self.patterns), dtype=np.int64)
        first = np.full(len(self.patterns), -1, dtype=np.int64)
        at = 0
        for i, repeat in self.schedule:
            if first[i] < 0:
                first[i] = at
            steps[i] += repeat
            at += repeat
        rows = []
        for i, pattern in enumerate(self.patterns):
            step, sent = pattern.step, pattern.flow_sent_s
            on_network = sent > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                mean = np.where(on_network, step.size_bytes / sent, np.nan)
            initial = np.where(on_network, pattern.flow_initial_rate_bytes_per_s, np.nan)
            for k in range(step.num_flows):
                rows.append({
                    "pattern": i,
                    "first_step": int(first[i]),
                    "steps": int(steps[i]),
                    "src": int(step.src[k]),
                    "dst": int(step.dst[k]),
                    "bytes": float(step.size_bytes[k]),
                    "finish_s": float(pattern.flow_finish_s[k]),
                    "initial_gbps": bytes_per_s_to_gbps(initial[k]) if on_network[k] else None,
                    "mean_gbps": bytes_per_s_to_gbps(mean[k]) if on_network[k] else None,
                })
        return rows

    def to_dict(self) -> dict:
        """The summary as plain JSON-able values."""
        return {
            "completion_time_s": self.completion_time_s,
            "max_congestion_s": self.max_congestion_s,
            "max_link_utilization": self.max_link_utilization,
            "subflows": self.subflows,
            "min_subflows": self.min_subflows,
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


def check_gpus_per_host(topology: Topology, gpus_per_host: int) -> None:
    """Refuse more ranks per host than a topology with an intra-host tier has GPUs there."""
    slots = topology.gpus_per_host
    if topology.intra_host is not None and gpus_per_host > slots:
        where = "endpoint (one GPU per NIC on a rail fabric)" if topology.endpoints_per_server > 1 else "host"
        raise NasfleetError(f"{gpus_per_host} ranks per host do not fit: topology {topology.name} has {slots} GPU(s) per {where}")


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
    record_flows: bool = False,
    fast_path: bool = True,
) -> SimulationResult:
    """Simulate ``collective`` on ``topology``.

    ``routing`` is a registered name (``ecmp``, ``spray``, ``split``, ``ecmp-K``,
    ``spray-weighted``, ``split-weighted``); ``seed`` drives the ECMP hash (and a
    ``random`` placement); ``alpha_s`` is a per-step software overhead such as a
    calibrated α, added to every step. ``record_flows`` keeps each flow's rates at flow
    level, for :meth:`SimulationResult.flow_rates`. ``fast_path`` lets an all-to-all on a
    healthy symmetric leaf-spine be solved from its structure (:mod:`nasfleet.comm.symmetric`,
    same numbers: leaf-level counts under ``spray`` or ``split``, per flow under ``ecmp``);
    ``False`` always runs the general engine.
    """
    _check_fidelity(fidelity)
    if not (alpha_s >= 0 and math.isfinite(alpha_s)):
        raise NasfleetError(f"bad alpha_s {alpha_s}: must be a finite number, not negative")
    schedule_router = get_routing(routing)
    started = time.perf_counter()
    check_gpus_per_host(topology, gpus_per_host)
    if fast_path:
        from nasfleet.comm import symmetric

        if symmetric.applies(topology, collective, routing, gpus_per_host, placement, dedup, record_flows):
            if get_routing(routing).name == "ecmp":
                if collective.algorithm == "direct":
                    return symmetric.simulate_direct_ecmp(topology, collective, fidelity, seed, alpha_s)
                return symmetric.simulate_pairwise_ecmp(topology, collective, fidelity, seed, alpha_s)
            return symmetric.simulate_alltoall(topology, collective, routing, fidelity, seed, alpha_s)
    if isinstance(collective.patterns, LazyPatterns) and not collective.patterns.built:
        # Refuse before building p(p − 1) flows: routing one step needs at least one transfer and its
        # two host links per flow, whatever the routing (the routing's own guard counts exactly).
        collective.patterns.check()
        flows = collective.patterns.flows_per_step
        check_memory(
            f"routing one step of {flows:,} flows (at least one transfer and two links each)",
            flows * (BYTES_PER_TRANSFER + 2 * BYTES_PER_ENTRY),
        )
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
        ctx = RoutingContext.build(topology, step, rank_host)
        transfers = schedule_router.route(ctx, seed)
        used = np.unique(transfers.incidence.indices)
        if len(used) and capacity[used].min() <= 0:
            dead = int(used[np.argmin(capacity[used])])
            raise NasfleetError(f"traffic needs failed link {topology.link_label(dead)}: no other path exists")
        load = step_load(transfers, capacity)
        sent = initial = None
        if fidelity == "flow":
            timing = simulate_step(transfers, capacity)
            time_s, finish, changes = timing.time_s, timing.flow_finish_s, timing.rate_changes
            if record_flows:
                sent, initial = timing.flow_sent_s, timing.flow_initial_rate_bytes_per_s
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
                min_subflows=per_tor_min_subflows(ctx),
                flow_finish_s=finish,
                rate_changes=changes,
                step=step,
                flow_sent_s=sent,
                flow_initial_rate_bytes_per_s=initial,
            )
        )

    return assemble_result(
        tuple(results), coll.schedule, collective, topology, steps=coll.num_steps, routing=schedule_router.name,
        fidelity=fidelity, seed=seed, started=started,
    )


def assemble_result(
    patterns: tuple[PatternResult, ...],
    schedule: tuple[tuple[int, int], ...],
    collective: Collective,
    topology: Topology,
    *,
    steps: int,
    routing: str,
    fidelity: str,
    seed: int,
    started: float,
    link_total: np.ndarray | None = None,
) -> SimulationResult:
    """A collective's result from its distinct steps and the ``(step, repeats)`` runs they occur in.

    Every engine ends here, so the totals mean the same whichever solved the steps.
    ``link_total`` (bytes per link, whole collective) may be passed by an engine that has it
    cheaper than the schedule-weighted sum of every step's link bytes.
    """
    capacity = topology.link_bytes_per_s
    cct = sum(patterns[i].time_s * r for i, r in schedule)
    if link_total is None:
        link_total = np.zeros_like(capacity)
        for i, r in schedule:
            link_total += r * patterns[i].link_bytes
    with np.errstate(divide="ignore", invalid="ignore"):
        util = np.where(capacity > 0, link_total / (capacity * cct), 0.0) if cct > 0 else np.zeros(1)
    return SimulationResult(
        completion_time_s=float(cct),
        max_congestion_s=float(sum(patterns[i].congestion_s * r for i, r in schedule)),
        max_link_utilization=float(util.max(initial=0.0)),
        flows=sum(patterns[i].num_flows * r for i, r in schedule),
        subflows=sum(patterns[i].num_transfers * r for i, r in schedule),
        min_subflows=sum(patterns[i].min_subflows * r for i, r in schedule),
        steps=steps,
        collective=collective.kind,
        algorithm=collective.algorithm,
        routing=routing,
        fidelity=fidelity,
        ranks=collective.ranks,
        bytes=collective.size_bytes,
        seed=seed,
        topology=topology.name,
        wall_time_s=time.perf_counter() - started,
        patterns=patterns,
        schedule=schedule,
        link_capacity_bytes_per_s=capacity,
    )


@dataclass(frozen=True)
class SeedSummary:
    """A hashed routing over several seeds: the mean and the worst case."""

    results: tuple[SimulationResult, ...]

    @property
    def slowest(self) -> SimulationResult:
        """The run with the largest CCT (the first of equals): the one to look at links in."""
        return max(self.results, key=lambda r: r.completion_time_s)

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
