"""Several jobs on one fabric: concurrent collectives, background traffic, and a training
iteration whose gradient buckets overlap the backward pass.

A :class:`Job` is a sequence of collectives (:class:`Phase`) on its own ranks, each
released no earlier than its ``release_s``; inside a job steps stay bulk-synchronous
(a step starts when every flow of the previous one has arrived), across jobs nothing
waits: all transfers in flight share the links max-min fairly, per flow, as in a single
step of :func:`nasfleet.comm.flowsim.simulate_step`. Rates are recomputed whenever a
transfer finishes, a job starts a step, or background traffic starts or stops.

Background traffic is either a fixed-size flow (a one-flow :class:`Job` that competes
like any other) or a :class:`FixedRateFlow`, which takes its rate off the capacity of
every link it crosses for as long as it runs (storage or inference traffic that the
collectives cannot slow down).

Every distinct step pattern of every job is routed once and kept as rows of one
transfers × links matrix; a job in step k has the rows of that step's pattern active.
One job alone gives exactly the CCT of :func:`nasfleet.comm.simulate.simulate` at flow
level (tested), and jobs that share no link give each its own alone-CCT.

A data-parallel training iteration (:func:`training_job`) is one job whose phases are
its gradient buckets: bucket i's all-reduce is released when the backward pass has
produced it (backward time split over the buckets in proportion to their bytes) and,
as on one NCCL stream, starts after bucket i − 1's has finished.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from nasfleet.comm.collectives import Collective, Step, build_collective
from nasfleet.comm.defaults import DEFAULT_PIPELINE_CHUNK_BYTES
from nasfleet.comm.flowsim import FairShare
from nasfleet.comm.limits import BYTES_PER_ENTRY, BYTES_PER_TRANSFER, MAX_WORKLOAD_STEPS, check_memory
from nasfleet.comm.routing import Transfers, get_routing, route_step
from nasfleet.comm.topology import Topology
from nasfleet.comm.units import format_bytes, gbps_to_bytes_per_s
from nasfleet.errors import NasfleetError

# Relative slack for transfers finishing together (as in flowsim).
_REL_TOL = 1e-9

MAX_BUCKETS = 100_000
"""The most gradient buckets one training iteration may have (a 1-byte bucket of a 1e9-parameter model is a typo)."""


@dataclass(frozen=True)
class Phase:
    """One collective of a job, started no earlier than ``release_s`` (and after the job's previous phase)."""

    collective: Collective
    release_s: float = 0.0
    label: str = ""


@dataclass(frozen=True)
class ComputeTimeline:
    """Forward, backward and optimiser time of one training iteration, from the job's start."""

    forward_s: float
    backward_s: float
    optimizer_s: float = 0.0


@dataclass(frozen=True)
class Job:
    """Collectives run one after another on ranks placed at ``rank_host`` (host of each rank)."""

    name: str
    rank_host: np.ndarray
    phases: tuple[Phase, ...]
    routing: str = "split"
    seed: int = 0
    background: bool = False
    compute: ComputeTimeline | None = None
    begin_s: float | None = None  # when the job starts, if before its first release (a training iteration's forward)

    @property
    def start_s(self) -> float:
        """Where the job's CCT is counted from: ``begin_s``, else its first collective's release."""
        if self.begin_s is not None:
            return self.begin_s
        return self.phases[0].release_s if self.phases else 0.0

    @property
    def num_steps(self) -> int:
        return sum(max(1, p.collective.num_steps) for p in self.phases)


@dataclass(frozen=True)
class FixedRateFlow:
    """Background traffic ``src_host → dst_host`` at ``gbps`` from ``start_s`` to ``end_s``.

    Its rate is taken off the capacity of the links it crosses (spread over paths as
    ``routing`` spreads a flow's bytes), so it never slows down; a rate no path could
    carry is refused.
    """

    src_host: int
    dst_host: int
    gbps: float
    start_s: float = 0.0
    end_s: float = math.inf
    routing: str = "spray"
    seed: int = 0
    name: str = ""


@dataclass(frozen=True)
class IterationReport:
    """Where one training iteration's time went.

    ``exposed_comm_s`` is the communication that ran after backward had finished (the
    part that lengthens the iteration), ``hidden_comm_s`` the part that ran while
    backward was still computing.
    """

    iteration_s: float
    compute_s: float
    comm_s: float
    exposed_comm_s: float
    hidden_comm_s: float
    buckets: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class JobResult:
    """When a job ran: its start (first release), finish, and each phase's start and finish."""

    name: str
    start_s: float
    finish_s: float
    phase_start_s: tuple[float, ...]
    phase_finish_s: tuple[float, ...]
    background: bool = False
    iteration: IterationReport | None = None

    @property
    def completion_time_s(self) -> float:
        """The job's CCT: from its start to its last flow's arrival."""
        return self.finish_s - self.start_s

    def to_dict(self) -> dict:
        record = {
            "name": self.name,
            "background": self.background,
            "start_s": self.start_s,
            "finish_s": self.finish_s,
            "completion_time_s": self.completion_time_s,
        }
        if self.iteration is not None:
            record["iteration"] = self.iteration.to_dict()
        return record


@dataclass(frozen=True)
class WorkloadResult:
    """Outcome of a workload: per-job results, the last finish, and how the run went."""

    jobs: tuple[JobResult, ...]
    makespan_s: float
    rate_recomputations: int
    shared_links: int  # links that carry traffic of more than one job
    wall_time_s: float
    job_link_bytes: np.ndarray = field(repr=False)  # [job × link] bytes over the whole run

    def job(self, name: str) -> JobResult:
        for result in self.jobs:
            if result.name == name:
                return result
        raise KeyError(name)


def _iteration_report(job: Job, start: float, finish: float, phase_start, phase_finish) -> IterationReport | None:
    if job.compute is None:
        return None
    compute_end = start + job.compute.forward_s + job.compute.backward_s
    comm = float(sum(f - s for s, f in zip(phase_start, phase_finish)))
    exposed = max(0.0, finish - compute_end)
    return IterationReport(
        iteration_s=max(finish, compute_end) - start + job.compute.optimizer_s,
        compute_s=job.compute.forward_s + job.compute.backward_s + job.compute.optimizer_s,
        comm_s=comm,
        exposed_comm_s=exposed,
        hidden_comm_s=max(0.0, comm - exposed),
        buckets=len(job.phases),
    )


def _check_time(what: str, value: float, allow_inf: bool = False) -> None:
    if not (value >= 0 and (math.isfinite(value) or (allow_inf and value == math.inf))):
        raise NasfleetError(f"bad {what} {value}: must be a finite number, not negative")


def _check_jobs(topology: Topology, jobs: list[Job], background: list[FixedRateFlow]) -> None:
    names = [j.name for j in jobs] + [b.name for b in background if b.name]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise NasfleetError(f"two jobs are named {duplicate!r}: give every job its own name")
    steps = sum(job.num_steps for job in jobs)
    if steps > MAX_WORKLOAD_STEPS:
        raise NasfleetError(
            f"the workload runs {steps:,} steps; at most {MAX_WORKLOAD_STEPS:,} are simulated together "
            "(fewer buckets or a larger pipeline chunk)"
        )
    for job in jobs:
        if not job.phases:
            raise NasfleetError(f"job {job.name!r} has no collective to run")
        hosts = np.asarray(job.rank_host)
        if hosts.min(initial=0) < 0 or hosts.max(initial=0) >= topology.num_hosts:
            raise NasfleetError(f"job {job.name!r}: host indices must be in 0..{topology.num_hosts - 1}")
        if topology.intra_host is not None and np.bincount(hosts).max(initial=0) > topology.gpus_per_host:
            raise NasfleetError(f"job {job.name!r}: more ranks on one host than its {topology.gpus_per_host} GPU(s)")
        for phase in job.phases:
            _check_time(f"start time of job {job.name!r}:", phase.release_s)
        if job.begin_s is not None:
            _check_time(f"start time of job {job.name!r}:", job.begin_s)
            if phase.collective.ranks != len(hosts):
                raise NasfleetError(
                    f"job {job.name!r}: its collective has {phase.collective.ranks} ranks but {len(hosts)} are placed"
                )
    for flow in background:
        label = flow.name or f"{flow.src_host}->{flow.dst_host}"
        _check_time(f"start time of background flow {label}:", flow.start_s)
        _check_time(f"end time of background flow {label}:", flow.end_s, allow_inf=True)
        if not (flow.gbps > 0 and math.isfinite(flow.gbps)):
            raise NasfleetError(f"bad rate of background flow {label}: {flow.gbps} Gb/s must be positive and finite")
        for host in (flow.src_host, flow.dst_host):
            if not 0 <= host < topology.num_hosts:
                raise NasfleetError(f"background flow {label}: host {host} is not in 0..{topology.num_hosts - 1}")


def _reserved_link_rates(topology: Topology, flow: FixedRateFlow) -> np.ndarray:
    """Bytes/s that a fixed-rate flow takes off every link."""
    if flow.src_host == flow.dst_host:
        return np.zeros(topology.num_links)
    transfers = route_step(topology, Step.of([0], [1], 1.0), np.array([flow.src_host, flow.dst_host]),
                           get_routing(flow.routing), flow.seed)
    return gbps_to_bytes_per_s(flow.gbps) * np.asarray(transfers.incidence.T @ transfers.share).ravel()


@dataclass
class _Cursor:
    """Where a job is: which run of its schedule, how many of that run's repeats are done."""

    run: int = 0
    repeat_done: int = 0
    in_step: bool = False
    wake_s: float = math.inf  # when the job's next step starts (a release, or its last arrival)
    finish_s: float = math.nan


def simulate_workload(
    topology: Topology, jobs: list[Job] | tuple[Job, ...], background: list[FixedRateFlow] | tuple[FixedRateFlow, ...] = ()
) -> WorkloadResult:
    """Run ``jobs`` (and fixed-rate ``background`` flows) together on ``topology`` at flow level."""
    started = time.perf_counter()
    jobs, background = list(jobs), list(background)
    _check_jobs(topology, jobs, background)
    capacity = topology.link_bytes_per_s

    # Route every distinct pattern of every job once; each becomes a block of rows.
    parts: list[Transfers] = []
    block_job: list[int] = []
    runs: list[list[tuple[int, int, int]]] = []  # per job: (block or -1, repeat, phase)
    for j, job in enumerate(jobs):
        router = get_routing(job.routing)
        blocks_of: dict[int, list[int]] = {}
        job_runs: list[tuple[int, int, int]] = []
        for ph, phase in enumerate(job.phases):
            coll = phase.collective
            if id(coll) not in blocks_of:
                blocks_of[id(coll)] = []
                for pattern in coll.patterns:
                    blocks_of[id(coll)].append(len(parts))
                    parts.append(route_step(topology, pattern, np.asarray(job.rank_host), router, job.seed))
                    block_job.append(j)
            ids = blocks_of[id(coll)]
            job_runs.extend((ids[i], repeat, ph) for i, repeat in coll.schedule)
            if not coll.schedule:  # nothing on the wire (one rank, or zero bytes): a zero-time phase
                job_runs.append((-1, 1, ph))
        runs.append(job_runs)
    # all routed steps are kept at once, with the per-job link loads reported at the end
    check_memory(
        f"a workload of {len(jobs):,} jobs with {len(parts):,} distinct steps on {topology.num_links:,} links",
        sum(p.num_transfers * BYTES_PER_TRANSFER + p.incidence.nnz * BYTES_PER_ENTRY for p in parts)
        + 8 * len(jobs) * topology.num_links,
    )

    num_links = topology.num_links
    sizes = [p.num_transfers for p in parts]
    block_ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    incidence = sp.vstack([p.incidence for p in parts], format="csr") if parts else sp.csr_matrix((0, num_links))
    size = np.concatenate([p.size_bytes for p in parts]) if parts else np.zeros(0)
    latency = np.concatenate([p.latency_s for p in parts]) if parts else np.zeros(0)
    share = np.concatenate([p.share for p in parts]) if parts else np.zeros(0)
    row_job = np.repeat(np.asarray(block_job, dtype=np.int64), sizes)
    used = np.unique(incidence.indices)
    if len(used) and capacity[used].min() <= 0:
        dead = int(used[np.argmin(capacity[used])])
        raise NasfleetError(f"traffic needs failed link {topology.link_label(dead)}: no other path exists")
    has_links = np.diff(incidence.indptr) > 0
    block_latency = np.array([p.latency_s.max(initial=0.0) for p in parts])

    reserved = [_reserved_link_rates(topology, f) for f in background]
    boundaries = sorted({t for f in background for t in (f.start_s, f.end_s) if math.isfinite(t)})

    def capacity_at(now: float) -> np.ndarray:
        cap = capacity.copy()
        for flow, load in zip(background, reserved):
            if flow.start_s <= now < flow.end_s:
                cap -= load
        over = np.flatnonzero(cap < -_REL_TOL * capacity)
        if len(over):
            raise NasfleetError(
                f"background flows reserve more than link {topology.link_label(int(over[0]))} carries "
                f"({capacity[over[0]] * 8e-9:g} Gb/s) at t = {now:g} s"
            )
        return np.maximum(cap, 0.0)

    problem = FairShare.build(incidence, capacity, share)
    remaining = np.zeros(len(size))
    done_at = np.zeros(len(size))
    active = np.zeros(len(size), dtype=bool)
    cursors = [_Cursor(wake_s=job.phases[0].release_s) for job in jobs]
    phase_start = [[math.nan] * len(job.phases) for job in jobs]
    phase_finish = [[math.nan] * len(job.phases) for job in jobs]

    def start_step(j: int, now: float) -> None:
        cursor = cursors[j]
        block, repeat, ph = runs[j][cursor.run]
        if math.isnan(phase_start[j][ph]):
            phase_start[j][ph] = now
        cursor.in_step = True
        if block < 0:
            cursor.wake_s = now
            return
        lo, hi = block_ptr[block], block_ptr[block + 1]
        remaining[lo:hi] = size[lo:hi]
        done_at[lo:hi] = now
        carried = has_links[lo:hi] & (size[lo:hi] > 0)
        if carried.any():
            active[lo:hi] = carried
            cursor.wake_s = math.inf
        else:  # nothing on the network: all repeats of this run take no bandwidth
            cursor.wake_s = now + block_latency[block] * (repeat - cursor.repeat_done)
            cursor.repeat_done = repeat - 1

    def wake(j: int, now: float) -> bool:
        """The job's step has arrived (or its release has come): start the next step.
        Returns whether rows were activated."""
        cursor, job_runs = cursors[j], runs[j]
        if cursor.in_step:
            cursor.in_step = False
            cursor.repeat_done += 1
            _, repeat, ph = job_runs[cursor.run]
            if cursor.repeat_done == repeat:
                cursor.run, cursor.repeat_done = cursor.run + 1, 0
                if cursor.run == len(job_runs) or job_runs[cursor.run][2] != ph:
                    phase_finish[j][ph] = now
            if cursor.run == len(job_runs):
                cursor.finish_s, cursor.wake_s = now, math.inf
                return False
            next_phase = job_runs[cursor.run][2]
            if next_phase != ph and jobs[j].phases[next_phase].release_s > now:
                cursor.wake_s = jobs[j].phases[next_phase].release_s
                return False
        start_step(j, now)
        return cursor.wake_s == math.inf

    now = min([c.wake_s for c in cursors] + boundaries[:1] + [math.inf])
    if not math.isfinite(now):
        now = 0.0
    recomputations = 0
    rates = np.zeros(len(size))
    dirty = True
    cap_now = capacity_at(now)
    while True:
        while True:  # every event due now; a zero-time step makes the next one due at once
            due = [j for j, c in enumerate(cursors) if c.wake_s <= now]
            if not due:
                break
            for j in due:
                dirty |= wake(j, now)
        if all(not math.isnan(c.finish_s) for c in cursors):
            break
        if dirty:
            problem = dataclasses.replace(problem, capacity_bytes_per_s=cap_now)
            rates = problem.rates(active)
            recomputations += 1
            dirty = False
        with np.errstate(divide="ignore", invalid="ignore"):
            left = np.where(active & (rates > 0), remaining / rates, np.inf)
        next_boundary = next((t for t in boundaries if t > now), math.inf)
        t_next = min(now + float(left.min(initial=math.inf)), min(c.wake_s for c in cursors), next_boundary)
        if not math.isfinite(t_next):
            stuck = sorted({jobs[j].name for j in row_job[active]})
            raise NasfleetError(
                f"job(s) {', '.join(stuck)} can never finish: background flows take all of a link they need for good"
            )
        dt = t_next - now
        finishing = active & (left <= dt * (1 + _REL_TOL))
        remaining[active] = np.maximum(remaining[active] - rates[active] * dt, 0.0)
        remaining[finishing] = 0.0
        done_at[finishing] = t_next
        active &= ~finishing
        now = t_next
        if finishing.any():
            dirty = True
            for j in np.unique(row_job[finishing]):
                block = runs[j][cursors[j].run][0]
                lo, hi = block_ptr[block], block_ptr[block + 1]
                if not active[lo:hi].any():
                    cursors[j].wake_s = float((done_at[lo:hi] + latency[lo:hi]).max())
        if now == next_boundary:
            cap_now = capacity_at(now)
            dirty = True

    results = []
    for j, job in enumerate(jobs):
        start, finish = job.start_s, cursors[j].finish_s
        results.append(JobResult(
            name=job.name,
            start_s=start,
            finish_s=finish,
            phase_start_s=tuple(phase_start[j]),
            phase_finish_s=tuple(phase_finish[j]),
            background=job.background,
            iteration=_iteration_report(job, start, finish, phase_start[j], phase_finish[j]),
        ))
    job_link_bytes = _job_link_bytes(parts, block_job, runs, len(jobs), num_links)
    return WorkloadResult(
        jobs=tuple(results),
        makespan_s=float(max((r.finish_s for r in results), default=0.0)),
        rate_recomputations=recomputations,
        shared_links=int(((job_link_bytes > 0).sum(axis=0) > 1).sum()),
        wall_time_s=time.perf_counter() - started,
        job_link_bytes=job_link_bytes,
    )


def _job_link_bytes(parts: list[Transfers], block_job: list[int], runs: list[list[tuple[int, int, int]]],
                    num_jobs: int, num_links: int) -> np.ndarray:
    """Bytes each job put on each link over the whole run (repeats counted)."""
    total = np.zeros((num_jobs, num_links))
    for j, job_runs in enumerate(runs):
        for block, repeat, _ in job_runs:
            if block >= 0:
                total[j] += repeat * parts[block].link_bytes()
    return total


# --- jobs from descriptions -------------------------------------------------------------


def collective_job(
    name: str,
    rank_host: np.ndarray,
    collective: Collective,
    start_s: float = 0.0,
    routing: str = "split",
    seed: int = 0,
) -> Job:
    """A job that runs one collective from ``start_s``."""
    return Job(name, np.asarray(rank_host, dtype=np.int64), (Phase(collective, start_s),), routing, seed)


def point_to_point_job(
    name: str, src_host: int, dst_host: int, size_bytes: float, start_s: float = 0.0, routing: str = "split", seed: int = 0
) -> Job:
    """A fixed-size background flow: one message that competes with the jobs for bandwidth."""
    if src_host == dst_host:
        raise NasfleetError(f"background flow {name!r}: source and destination are the same host {src_host}")
    coll = build_collective("p2p", 2, size_bytes)
    return Job(name, np.array([src_host, dst_host], dtype=np.int64), (Phase(coll, start_s),), routing, seed, background=True)


def gradient_bucket_bytes(payload_bytes: int, bucket_bytes: int) -> list[int]:
    """Sizes of the buckets ``payload_bytes`` of gradients fill, in the order backward produces them."""
    if payload_bytes <= 0 or bucket_bytes <= 0:
        raise NasfleetError(f"bad gradient buckets: {payload_bytes} bytes in buckets of {bucket_bytes} must both be positive")
    full, rest = divmod(int(payload_bytes), int(bucket_bytes))
    if full + (rest > 0) > MAX_BUCKETS:
        raise NasfleetError(
            f"{format_bytes(payload_bytes)} of gradients in buckets of {format_bytes(bucket_bytes)} makes "
            f"{full + (rest > 0):,} buckets; at most {MAX_BUCKETS:,} are simulated: give a larger bucket size"
        )
    return [int(bucket_bytes)] * full + ([rest] if rest else [])


def training_job(
    name: str,
    rank_host: np.ndarray,
    payload_bytes: int,
    bucket_bytes: int,
    forward_s: float,
    backward_s: float,
    optimizer_s: float = 0.0,
    collective: str = "allreduce",
    algorithm: str | None = None,
    start_s: float = 0.0,
    routing: str = "split",
    seed: int = 0,
    pipeline_chunk_bytes: int = DEFAULT_PIPELINE_CHUNK_BYTES,
    ranks_per_host: int = 1,
) -> Job:
    """One data-parallel training iteration with bucketed gradient communication.

    ``payload_bytes`` of gradients (parameters × dtype bytes) fill buckets of
    ``bucket_bytes`` (DeepSpeed's ``reduce_bucket_size`` × dtype bytes; torch DDP's
    ``bucket_cap_mb``); ``ranks_per_host`` is for the ``hierarchical`` algorithm; backward, which starts ``forward_s`` after ``start_s``, produces
    them in order at a constant byte rate, so bucket i is ready at
    start + forward + backward · (bytes of buckets 0..i) / payload. Each bucket's
    collective starts when it is ready and the previous bucket's has finished.
    """
    for what, value in (("forward_s", forward_s), ("backward_s", backward_s), ("optimizer_s", optimizer_s)):
        _check_time(f"{what} of job {name!r}:", value)
    rank_host = np.asarray(rank_host, dtype=np.int64)
    buckets = gradient_bucket_bytes(payload_bytes, bucket_bytes)
    built: dict[int, Collective] = {}
    phases, produced = [], 0
    for i, bucket in enumerate(buckets):
        if bucket not in built:
            built[bucket] = build_collective(collective, len(rank_host), bucket, algorithm, pipeline_chunk_bytes,
                                             ranks_per_host=ranks_per_host)
        produced += bucket
        ready = start_s + forward_s + backward_s * produced / payload_bytes
        phases.append(Phase(built[bucket], ready, f"bucket {i}"))
    return Job(name, rank_host, tuple(phases), routing, seed, compute=ComputeTimeline(forward_s, backward_s, optimizer_s),
               begin_s=start_s)



def alone_completion_times(topology: Topology, jobs: list[Job] | tuple[Job, ...]) -> dict[str, float]:
    """Each job's CCT on the empty fabric (no other job, no background): the baseline its
    slowdown in a workload is measured against."""
    return {job.name: simulate_workload(topology, [job]).jobs[0].completion_time_s for job in jobs if not job.background}
