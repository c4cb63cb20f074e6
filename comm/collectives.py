"""Collectives as sequences of steps, each step a set of flows between ranks.

A collective is stored as its *distinct* step patterns plus a schedule of
``(pattern index, repeat count)`` entries, because the common algorithms repeat one
traffic pattern many times (a ring all-reduce is one pattern, 2(p−1) times). The
simulators solve each distinct pattern once; :meth:`Collective.expanded` gives the
plain one-pattern-per-step form that the equivalence tests compare against.

Steps are bulk-synchronous: step k+1 starts when every flow of step k has arrived.
Sizes follow the usual conventions (n = ``size_bytes``):

* all-reduce, reduce-scatter: n is the buffer each rank holds;
* all-gather: n is the gathered output (each rank contributes n/p);
* all-to-all: n is what each rank sends in total (n/p to each rank, its own part stays);
* broadcast, point-to-point: n is the message; incast: each sender sends n to rank 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from nasfleet.errors import NasfleetError
from nasfleet.comm.defaults import DEFAULT_PIPELINE_CHUNK_BYTES
from nasfleet.comm.limits import BYTES_PER_FLOW, MAX_STEPS, check_memory
from nasfleet.comm.units import format_bytes


@dataclass(frozen=True)
class Step:
    """Flows that start together: ``src[i] -> dst[i]`` carrying ``size_bytes[i]``."""

    src: np.ndarray
    dst: np.ndarray
    size_bytes: np.ndarray

    @staticmethod
    def of(src, dst, size_bytes) -> "Step":
        src = np.asarray(src, dtype=np.int64).ravel()
        dst = np.asarray(dst, dtype=np.int64).ravel()
        size = np.broadcast_to(np.asarray(size_bytes, dtype=np.float64), src.shape).copy()
        if not (len(src) == len(dst)):
            raise NasfleetError("bad step: src and dst must have the same length")
        if not np.all(np.isfinite(size)) or np.any(size < 0):
            raise NasfleetError("bad step: flow sizes must be finite and not negative")
        keep = (src != dst) & (size > 0)
        return Step(src[keep], dst[keep], size[keep])

    @property
    def num_flows(self) -> int:
        return len(self.src)

    @property
    def total_bytes(self) -> float:
        return float(self.size_bytes.sum())

    def key(self) -> bytes:
        """Identity of the traffic pattern, for solving repeated patterns once."""
        return self.src.tobytes() + b"|" + self.dst.tobytes() + b"|" + self.size_bytes.tobytes()


@dataclass(frozen=True)
class Collective:
    """A collective operation: distinct step patterns and the order they run in."""

    kind: str
    algorithm: str
    ranks: int
    size_bytes: float
    patterns: Sequence[Step]  # a tuple, or LazyPatterns for all-to-all
    schedule: tuple[tuple[int, int], ...]

    @property
    def num_steps(self) -> int:
        return sum(repeat for _, repeat in self.schedule)

    @property
    def num_flows(self) -> int:
        return sum(self.patterns[i].num_flows * repeat for i, repeat in self.schedule)

    def steps(self) -> list[Step]:
        """Every step in order (patterns repeated as scheduled)."""
        return [self.patterns[i] for i, repeat in self.schedule for _ in range(repeat)]

    def expanded(self) -> "Collective":
        """The same collective with one freshly built pattern per step."""
        steps = [Step.of(s.src.copy(), s.dst.copy(), s.size_bytes.copy()) for s in self.steps()]
        return Collective(
            self.kind, self.algorithm, self.ranks, self.size_bytes, tuple(steps), tuple((i, 1) for i in range(len(steps)))
        )


class LazyPatterns(Sequence[Step]):
    """The distinct steps of a collective, built on first use of any of them.

    All-to-all over p ranks stores p(p − 1) flows; the symmetric fast path
    (:mod:`nasfleet.comm.symmetric`) needs only their shape, so the steps (and the
    memory guard that protects building them) wait until something reads one.
    ``len()`` is known without building.
    """

    def __init__(
        self, count: int, build: Callable[[], list[Step]], guard: Callable[[], None], flows_per_step: int
    ) -> None:
        self._count, self._build, self._guard = count, build, guard
        self._steps: tuple[Step, ...] | None = None
        self.flows_per_step = flows_per_step
        """Flows in each step, known without building (a simulator can refuse a step before building it)."""

    def _all(self) -> tuple[Step, ...]:
        if self._steps is None:
            self._guard()
            self._steps = tuple(self._build())
        return self._steps

    @property
    def built(self) -> bool:
        return self._steps is not None

    def check(self) -> None:
        """Refuse, as building would, steps that do not fit in memory; builds nothing."""
        self._guard()

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):
        return self._all()[index]

    def __iter__(self):
        return iter(self._all())


def from_steps(kind: str, algorithm: str, ranks: int, size_bytes: float, steps: list[tuple[Step, int]]) -> Collective:
    """A collective from ``(step, repeat)`` pairs; identical patterns are merged."""
    patterns: list[Step] = []
    index: dict[bytes, int] = {}
    schedule: list[tuple[int, int]] = []
    for step, repeat in steps:
        if repeat <= 0 or step.num_flows == 0:
            continue
        key = step.key()
        if key not in index:
            index[key] = len(patterns)
            patterns.append(step)
        i = index[key]
        if schedule and schedule[-1][0] == i:
            schedule[-1] = (i, schedule[-1][1] + repeat)
        else:
            schedule.append((i, repeat))
    return Collective(kind, algorithm, ranks, float(size_bytes), tuple(patterns), tuple(schedule))


# --- algorithms -----------------------------------------------------------------------


def _ring_shift(p: int, shift: int, size: float) -> Step:
    ranks = np.arange(p)
    return Step.of(ranks, (ranks + shift) % p, size)


def _ring(p: int, n: float, phases: int) -> list[tuple[Step, int]]:
    return [(_ring_shift(p, 1, n / p), phases * (p - 1))]


def _direct_exchange(p: int, chunk: float) -> Step:
    src, dst = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    return Step.of(src, dst, chunk)


def _pof2_fold(p: int) -> tuple[int, np.ndarray, list[int]]:
    """Ranks that take part in the power-of-two core of a halving-doubling run.

    As in MPICH, with p = 2^m + r the first 2r ranks pair up: each odd rank hands its
    data to the even one before the core and gets the result back after it.
    """
    pof2 = 1 << (p.bit_length() - 1)
    rem = p - pof2
    core = np.concatenate([np.arange(0, 2 * rem, 2), np.arange(2 * rem, p)]).astype(np.int64)
    return pof2, core, list(range(rem))


def _halving(core: np.ndarray, n: float) -> list[tuple[Step, int]]:
    """Recursive halving reduce-scatter over the ranks in ``core`` (a power of two).

    As in Thakur, Rabenseifner and Gropp (2005): the first exchange is with the rank
    p/2 away and moves n/2, then p/4 away with n/4, and so on.
    """
    q, steps, size, distance = len(core), [], n / 2, len(core) // 2
    new = np.arange(q)
    while distance >= 1:
        steps.append((Step.of(core[new], core[new ^ distance], size), 1))
        distance, size = distance // 2, size / 2
    return steps


def _doubling(core: np.ndarray, n: float) -> list[tuple[Step, int]]:
    """Recursive doubling all-gather, the mirror image of :func:`_halving`."""
    return list(reversed(_halving(core, n)))


def _halving_doubling_allreduce(p: int, n: float) -> list[tuple[Step, int]]:
    pof2, core, folded = _pof2_fold(p)
    odd = np.array([2 * i + 1 for i in folded], dtype=np.int64)
    pre = [(Step.of(odd, odd - 1, n), 1)] if folded else []
    post = [(Step.of(odd - 1, odd, n), 1)] if folded else []
    return pre + _halving(core, n) + _doubling(core, n) + post


def _require_pof2(p: int, what: str) -> None:
    if p & (p - 1):
        raise NasfleetError(f"{what} with halving-doubling needs a power-of-two number of ranks, got {p}")


def _btree_parents(p: int) -> np.ndarray:
    """Parent of each rank in NCCL's in-order binary tree (root 0 has parent -1)."""
    parent = np.full(p, -1, dtype=np.int64)
    for rank in range(1, p):
        bit = rank & -rank
        up = (rank ^ bit) | (bit << 1)
        parent[rank] = up if up < p else rank ^ bit
    return parent


def double_binary_tree_parents(p: int) -> tuple[np.ndarray, np.ndarray]:
    """Parents in NCCL's two complementary trees (second: mirrored if p even, shifted if odd)."""
    first = _btree_parents(p)
    ranks = np.arange(p)
    if p % 2 == 0:
        mirrored = first[p - 1 - ranks]
        second = np.where(mirrored < 0, -1, p - 1 - mirrored)
    else:
        shifted = first[(ranks - 1) % p]
        second = np.where(shifted < 0, -1, (shifted + 1) % p)
    return first, second


def _depth(parent: np.ndarray) -> int:
    depth = np.zeros(len(parent), dtype=np.int64)
    for rank in range(len(parent)):
        d, r = 0, rank
        while parent[r] >= 0:
            r, d = parent[r], d + 1
        depth[rank] = d
    return int(depth.max(initial=0))


def _pipeline_repeat(n_per_pipe: float, stages: int, chunk_bytes: int) -> tuple[int, float]:
    """Steps and chunk size of a chunked pipeline over ``stages`` hops.

    The steady-state pattern (every edge busy) is used for the fill and drain steps
    too, which over-counts (stages − 1) chunks per edge: negligible when there are
    many chunks, and a small over-estimate for messages of a few chunks.
    """
    chunks = max(1, math.ceil(n_per_pipe / chunk_bytes))
    return chunks + stages - 1, n_per_pipe / chunks


def _double_binary_tree_allreduce(p: int, n: float, chunk_bytes: int) -> list[tuple[Step, int]]:
    # Reduce up and broadcast down both trees at once, each tree carrying half the data.
    trees = double_binary_tree_parents(p)
    depth = max(_depth(t) for t in trees)
    repeat, chunk = _pipeline_repeat(n / 2, 2 * depth, chunk_bytes)
    src, dst = [], []
    for parent in trees:
        child = np.flatnonzero(parent >= 0)
        src += [child, parent[child]]
        dst += [parent[child], child]
    return [(Step.of(np.concatenate(src), np.concatenate(dst), chunk), repeat)]


def _chain_broadcast(p: int, n: float, chunk_bytes: int) -> list[tuple[Step, int]]:
    repeat, chunk = _pipeline_repeat(n, p - 1, chunk_bytes)
    return [(Step.of(np.arange(p - 1), np.arange(1, p), chunk), repeat)]


def _binomial_broadcast(p: int, n: float) -> list[tuple[Step, int]]:
    steps, have = [], 1
    while have < p:
        src = np.arange(min(have, p - have))
        steps.append((Step.of(src, src + have, n), 1))
        have <<= 1
    return steps


def _pairwise_alltoall(p: int, n: float) -> list[tuple[Step, int]]:
    return [(_ring_shift(p, k, n / p), 1) for k in range(1, p)]


def _hierarchical_allreduce(p: int, n: float, local: int) -> list[tuple[Step, int]]:
    """All-reduce in three stages over hosts of ``local`` consecutive ranks.

    Reduce inside each host (a direct reduce-scatter: every rank sends n/L to each of the
    host's other L − 1 ranks, one step on an NVSwitch), all-reduce across hosts (L rings
    at once, ring i over the ranks of local index i, each of the n/L shard i: 2(H − 1)
    steps of n/(L·H)), then broadcast inside the host (a direct all-gather, the first
    stage reversed). On a rail-optimised fabric ring i stays on rail i.
    """
    if p % local:
        raise NasfleetError(f"hierarchical all-reduce needs whole hosts: {p} ranks are not a multiple of {local} per host")
    hosts = p // local
    rank = np.arange(p)
    host, index = rank // local, rank % local
    inside = Step.of(np.repeat(rank, local), np.repeat(host, local) * local + np.tile(np.arange(local), p), n / local)
    across = Step.of(rank, (host + 1) % hosts * local + index, n / (local * hosts))
    return [(inside, 1), (across, 2 * (hosts - 1)), (inside, 1)]


Builder = Callable[[int, float, int], list[tuple[Step, int]]]

_ALGORITHMS: dict[str, dict[str, Builder]] = {
    "allreduce": {
        "ring": lambda p, n, c: _ring(p, n, 2),
        "halving-doubling": lambda p, n, c: _halving_doubling_allreduce(p, n),
        "double-binary-tree": _double_binary_tree_allreduce,
        "direct": lambda p, n, c: [(_direct_exchange(p, n / p), 2)],
    },
    "reducescatter": {
        "ring": lambda p, n, c: _ring(p, n, 1),
        "halving-doubling": lambda p, n, c: (_require_pof2(p, "reduce-scatter"), _halving(np.arange(p), n))[1],
        "direct": lambda p, n, c: [(_direct_exchange(p, n / p), 1)],
    },
    "allgather": {
        "ring": lambda p, n, c: _ring(p, n, 1),
        "halving-doubling": lambda p, n, c: (_require_pof2(p, "all-gather"), _doubling(np.arange(p), n))[1],
        "direct": lambda p, n, c: [(_direct_exchange(p, n / p), 1)],
    },
    "alltoall": {
        "pairwise": lambda p, n, c: _pairwise_alltoall(p, n),
        "direct": lambda p, n, c: [(_direct_exchange(p, n / p), 1)],
    },
    "broadcast": {
        "ring": _chain_broadcast,
        "halving-doubling": lambda p, n, c: _binomial_broadcast(p, n),
        "direct": lambda p, n, c: [(Step.of(np.zeros(p - 1), np.arange(1, p), n), 1)],
    },
    "p2p": {"direct": lambda p, n, c: [(Step.of([0], [p - 1], n), 1)]},
    "incast": {"direct": lambda p, n, c: [(Step.of(np.arange(1, p), np.zeros(p - 1), n), 1)]},
}

GroupedBuilder = Callable[[int, float, int], list[tuple[Step, int]]]

_HOST_AWARE: dict[str, dict[str, GroupedBuilder]] = {
    "allreduce": {"hierarchical": _hierarchical_allreduce},
}
"""Algorithms that need to know which ranks share a host (called with ranks, size, ranks per host)."""

DEFAULT_ALGORITHM = {
    "allreduce": "ring",
    "reducescatter": "ring",
    "allgather": "ring",
    "alltoall": "pairwise",
    "broadcast": "ring",
    "p2p": "direct",
    "incast": "direct",
}

_KIND_ALIASES = {
    "all-reduce": "allreduce",
    "reduce-scatter": "reducescatter",
    "all-gather": "allgather",
    "all-to-all": "alltoall",
    "point-to-point": "p2p",
}


def collective_kinds() -> list[str]:
    return list(_ALGORITHMS)


def algorithms_for(kind: str) -> list[str]:
    kind = normalize_kind(kind)
    return [*_ALGORITHMS[kind], *_HOST_AWARE.get(kind, {})]


def normalize_kind(kind: str) -> str:
    name = _KIND_ALIASES.get(kind.lower(), kind.lower())
    if name not in _ALGORITHMS:
        raise NasfleetError(f"unknown collective {kind!r}: choose one of {', '.join(_ALGORITHMS)}")
    return name

_PIPELINED = {"allreduce": ("double-binary-tree",), "broadcast": ("ring",)}
"""The algorithms whose step count grows with size / pipeline chunk."""


def _stored_flows(kind: str, algorithm: str, ranks: int, ranks_per_host: int = 1) -> int:
    """An upper bound on the flows a collective's distinct step patterns hold, from its shape alone.

    All-pairs algorithms store p(p − 1) flows (pairwise all-to-all as p − 1 patterns of p);
    rings, trees and halving-doubling store at most a few p·lg p.
    """
    if algorithm == "pairwise" or (algorithm == "direct" and kind in ("allreduce", "reducescatter", "allgather", "alltoall")):
        return ranks * (ranks - 1)
    if algorithm == "hierarchical":  # the in-host exchange (L − 1 flows per rank) and one ring
        return ranks * (min(ranks_per_host, ranks) + 1)
    return 4 * ranks * max(1, (ranks - 1).bit_length())


def build_collective(
    kind: str,
    ranks: int,
    size_bytes: float,
    algorithm: str | None = None,
    pipeline_chunk_bytes: int = DEFAULT_PIPELINE_CHUNK_BYTES,
    ranks_per_host: int = 1,
) -> Collective:
    """The steps of collective ``kind`` run by ``algorithm`` over ``ranks`` ranks.

    ``algorithm`` defaults to the usual one (ring, or pairwise for all-to-all);
    ``pipeline_chunk_bytes`` is the chunk of the pipelined tree and chain algorithms;
    ``ranks_per_host`` tells host-aware algorithms (``hierarchical``) that ranks
    ``h·L .. h·L + L − 1`` share host h (a contiguous placement).
    """
    kind = normalize_kind(kind)
    algorithm = algorithm or DEFAULT_ALGORITHM[kind]
    if algorithm not in algorithms_for(kind):
        raise NasfleetError(
            f"unknown algorithm {algorithm!r} for {kind}: choose one of {', '.join(algorithms_for(kind))}"
        )
    if int(ranks_per_host) != ranks_per_host or ranks_per_host < 1:
        raise NasfleetError(f"bad ranks per host {ranks_per_host}: must be a positive integer")
    if int(ranks) != ranks or ranks < 1:
        raise NasfleetError(f"bad number of ranks {ranks}: must be a positive integer")
    if kind in ("p2p", "incast") and ranks < 2:
        raise NasfleetError(f"{kind} needs at least 2 ranks, got {ranks}")
    if not (size_bytes >= 0 and math.isfinite(size_bytes)):
        raise NasfleetError(f"bad size {size_bytes}: must be a finite number, not negative")
    if pipeline_chunk_bytes <= 0:
        raise NasfleetError(f"bad pipeline chunk {pipeline_chunk_bytes}: must be positive")
    ranks = int(ranks)
    flows = _stored_flows(kind, algorithm, ranks, int(ranks_per_host))

    def guard() -> None:
        check_memory(f"{algorithm} {kind} over {ranks:,} ranks ({flows:,} flows)", flows * BYTES_PER_FLOW)

    if kind == "alltoall" and ranks > 1 and size_bytes > 0:
        # p − 1 distinct shifts (pairwise) or one all-pairs step (direct), built when first read
        count = ranks - 1 if algorithm == "pairwise" else 1
        build = lambda: [step for step, _ in _ALGORITHMS[kind][algorithm](ranks, float(size_bytes), 1)]
        patterns = LazyPatterns(count, build, guard, ranks if algorithm == "pairwise" else ranks * (ranks - 1))
        return Collective(kind, algorithm, ranks, float(size_bytes), patterns, tuple((i, 1) for i in range(count)))
    guard()
    if ranks <= 1:
        steps = []
    elif algorithm in _HOST_AWARE.get(kind, {}):
        steps = _HOST_AWARE[kind][algorithm](ranks, float(size_bytes), int(ranks_per_host))
    else:
        steps = _ALGORITHMS[kind][algorithm](ranks, float(size_bytes), int(pipeline_chunk_bytes))
    collective = from_steps(kind, algorithm, ranks, size_bytes, steps)
    if collective.num_steps > MAX_STEPS:
        chunk = f" in {format_bytes(pipeline_chunk_bytes)} pipeline chunks" if algorithm in _PIPELINED.get(kind, ()) else ""
        raise NasfleetError(
            f"{algorithm} {kind} of {format_bytes(size_bytes)}{chunk} over {ranks:,} ranks plans "
            f"{collective.num_steps:,} steps ({collective.num_flows:,} flows); at most {MAX_STEPS:,} steps are "
            f"simulated{': give a larger pipeline chunk' if chunk else ''}"
        )
    return collective


# --- placement ------------------------------------------------------------------------

PLACEMENTS = ("contiguous", "strided", "random")


def place_ranks(
    ranks: int,
    num_hosts: int,
    gpus_per_host: int = 1,
    placement: str | list[int] = "contiguous",
    seed: int = 0,
) -> np.ndarray:
    """Host of each rank.

    ``contiguous`` fills host 0's GPUs first, then host 1, ...; ``strided`` deals ranks
    round-robin over hosts; ``random`` shuffles the contiguous slots (seeded); a list
    gives each rank's host explicitly.
    """
    if gpus_per_host < 1:
        raise NasfleetError(f"bad gpus_per_host {gpus_per_host}: must be at least 1")
    slots = num_hosts * gpus_per_host
    if ranks > slots:
        raise NasfleetError(
            f"{ranks} ranks do not fit on {num_hosts} hosts with {gpus_per_host} GPU(s) each ({slots} slots)"
        )
    if not isinstance(placement, str):
        hosts = np.asarray(placement, dtype=np.int64)
        if hosts.shape != (ranks,):
            raise NasfleetError(f"bad placement: expected {ranks} host indices, got {hosts.size}")
        if hosts.min(initial=0) < 0 or hosts.max(initial=0) >= num_hosts:
            raise NasfleetError(f"bad placement: host indices must be in 0..{num_hosts - 1}")
        if np.bincount(hosts, minlength=num_hosts).max(initial=0) > gpus_per_host:
            raise NasfleetError(f"bad placement: more than {gpus_per_host} rank(s) on one host")
        return hosts
    if placement == "contiguous":
        return np.arange(ranks, dtype=np.int64) // gpus_per_host
    if placement == "strided":
        return np.arange(ranks, dtype=np.int64) % num_hosts
    if placement == "random":
        if seed < 0:
            raise NasfleetError(f"bad seed {seed} for a random placement: must not be negative")
        return np.random.default_rng(seed).permutation(slots)[:ranks] // gpus_per_host
    raise NasfleetError(f"unknown placement {placement!r}: choose one of {', '.join(PLACEMENTS)} or give a list")
