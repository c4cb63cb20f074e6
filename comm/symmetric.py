"""All-to-all on a healthy, symmetric leaf-spine from leaf-level flow counts.

Pairwise all-to-all over p ranks is p − 1 steps of p flows and direct all-to-all one
step of p(p − 1): the general engine routes and water-fills every flow, which is
hours at 32,768 hosts. On a fabric where every leaf looks the same the answer depends
only on how many flows of a step stay inside a leaf and how many cross the spines:

* every leaf's hosts, uplinks and downlinks are equally fast, no link has failed or
  is degraded, there is no intra-host tier, one rank per host placed contiguously on
  whole leaves (p a multiple of the hosts per leaf, or p no more than one leaf);
* under ``spray`` a crossing flow puts 1/s of its rate on each of its leaf's s
  uplinks and on each of the destination's s downlinks, so the s links of a leaf
  carry the same load at every instant and fill together: they act as one link of s
  times the capacity shared by the leaf's crossing flows;
* pairwise step k sends host i to host i + k: leaf a sends n − r flows to leaf a + q
  and r to leaf a + q + 1 (k = qn + r, n hosts per leaf), the same counts from every
  leaf, and each host link carries one flow; direct all-to-all sends every host the
  same mix (n − 1 flows inside its leaf, p − n across), so a leaf's host links also
  fill together.

Then flows of one kind (inside a leaf, or across) are interchangeable, max-min
fairness gives them equal rates at every instant, and the step is a problem of at
most two *classes* over four *groups* of links (a class of m flows is a transfer of
m times the bytes with fairness weight m; a group of links is one link of their
summed capacity). That problem is solved by the engine's own event loop
(:func:`nasfleet.comm.flowsim.simulate_step`), and the analytical bound from the
same counts, so the numbers are the general engine's (tested on random small
fabrics against ``fast_path=False``). Steps with the same (inside, across) counts are
solved once: a pairwise all-to-all has at most about 2n distinct ones.

``split`` gives the same rates: on a healthy leaf-spine it loads every link exactly as
spraying does (its own check falls back to per-group splitting otherwise), each
subflow of a crossing flow crosses one uplink of its leaf and one downlink of its
destination, and those links fill together, so all of a flow's subflows freeze when
the sprayed flow would. Its subflow count is the per-ToR rule's, from the same counts.

Anything else returns ``None`` and the general engine runs: failed or degraded links,
unequal uplinks, fat-trees and rail fabrics, an intra-host tier, several ranks per
host, strided, random or explicit placements, p not whole leaves, the capacity-weighted
and ``ecmp-K``, other collectives, ``dedup=False`` and ``record_flows=True``.

Plain ``ecmp`` depends on which spine each flow hashes to, so no count of a leaf pair
decides its rates; for pairwise all-to-all (one flow per host link) it is answered per
flow but vectorised (:func:`simulate_pairwise_ecmp`): the same hash as the engine, only
the flow counts of uplinks and downlinks, many steps solved side by side. Direct
all-to-all under ECMP (host links shared by p − 1 hashed flows) is one coupled problem,
solved once by a progressive filling over a spine per flow
(:func:`simulate_direct_ecmp`).
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse as sp

from nasfleet.comm.collectives import Collective, LazyPatterns
from nasfleet.comm.flowsim import _REL_TOL, simulate_step
from nasfleet.comm.limits import BYTES_PER_HASHED_FLOW, check_memory
from nasfleet.comm.routing import Transfers, get_routing
from nasfleet.comm.topology import LeafSpine, Topology

ROUTINGS = ("spray", "split")
"""Routings answered from leaf-level counts; plain ``ecmp`` is answered per flow for pairwise
all-to-all (:func:`simulate_pairwise_ecmp`)."""


def applies(
    topology: Topology, collective: Collective, routing: str, gpus_per_host: int, placement, dedup: bool,
    record_flows: bool,
) -> bool:
    """Whether :func:`simulate_alltoall` gives the general engine's numbers for this request."""
    if collective.kind != "alltoall" or collective.algorithm not in ("pairwise", "direct"):
        return False
    if not isinstance(collective.patterns, LazyPatterns):  # steps built by hand may not be the standard ones
        return False
    if type(topology) is not LeafSpine or topology.intra_host is not None or topology.failures:
        return False
    name = get_routing(routing).name
    if not (name in ROUTINGS or name == "ecmp") or not dedup or record_flows:
        return False
    if gpus_per_host != 1 or not (isinstance(placement, str) and placement == "contiguous"):
        return False
    p, n = collective.ranks, topology.hosts_per_leaf
    if p < 2 or collective.size_bytes <= 0 or p > topology.num_hosts or (p > n and p % n):
        return False
    capacity = topology.link_bytes_per_s
    hosts = 2 * topology.num_hosts
    return bool(np.ptp(capacity[:hosts]) == 0 and np.ptp(capacity[hosts:]) == 0 and np.ptp(topology.link_latency_s) == 0)


def _step_counts(collective: Collective, n: int, leaves: int) -> list[tuple[int, int, tuple[int, ...]]]:
    """Per step, one leaf's (flows inside the leaf, flows across, flows per destination leaf)."""
    p = collective.ranks
    if collective.algorithm == "direct":
        return [(n * (n - 1), n * (p - n), (n * n,) * (leaves - 1))]
    steps = []
    for k in range(1, p):
        q, r = divmod(k, n)
        groups = [(n - r, q % leaves), (r, (q + 1) % leaves)]
        inside = sum(count for count, offset in groups if offset == 0)
        across = tuple(count for count, offset in groups if offset != 0 and count > 0)
        steps.append((inside, n - inside, across))
    return steps


def _split_subflows(inside: int, across: int, groups: tuple[int, ...], spines: int) -> tuple[int, int]:
    """One leaf's (subflows under ``split``, the per-ToR minimum) for one step."""
    if across == 0:
        return inside, inside
    per_tor = math.lcm(across, spines)
    per_group = sum(math.lcm(r, spines) for r in groups)
    # coordinated over the ToR when that is no dearer; every leaf lays its turns alike, so
    # the turns fit at every destination and the check against spraying passes
    return inside + min(per_tor, per_group), inside + per_tor


def simulate_alltoall(topology: LeafSpine, collective: Collective, routing: str, fidelity: str, seed: int, alpha_s: float):
    """The :class:`~nasfleet.comm.simulate.SimulationResult` of an all-to-all for which
    :func:`applies` holds, from leaf-level counts (see the module docstring)."""
    from nasfleet.comm.simulate import PatternResult, assemble_result

    started = time.perf_counter()
    name = get_routing(routing).name
    p, s = collective.ranks, topology.spines
    n = min(p, topology.hosts_per_leaf)
    leaves = p // n
    flow_bytes = collective.size_bytes / p
    host_cap = float(topology.link_bytes_per_s[0])
    fabric_cap = s * float(topology.link_bytes_per_s[2 * topology.num_hosts])
    hop_s = float(topology.link_latency_s[0])
    shared_hosts = collective.algorithm == "direct"
    flows_per_step = p * (p - 1) if shared_hosts else p

    capacity = topology.link_bytes_per_s
    num_hosts = topology.num_hosts
    used_up = 2 * num_hosts + (np.arange(leaves)[:, None] * s + np.arange(s)).ravel()
    used_down = used_up + topology.leaves * s

    solved: dict[tuple[int, int], int] = {}
    results: list[PatternResult] = []
    schedule: list[list[int]] = []
    for inside, across, groups in _step_counts(collective, n, leaves):
        key = (inside, across, tuple(sorted(groups)))
        if key not in solved:
            solved[key] = len(results)
            results.append(_solve(key, groups, n, p, s, flow_bytes, host_cap, fabric_cap, hop_s, shared_hosts,
                                  fidelity, alpha_s, name, leaves, flows_per_step, capacity, used_up, used_down,
                                  num_hosts, PatternResult))
        index = solved[key]
        if schedule and schedule[-1][0] == index:
            schedule[-1][1] += 1
        else:
            schedule.append([index, 1])
    schedule_t = tuple((i, r) for i, r in schedule)

    repeats = np.zeros(len(results), dtype=np.int64)
    for i, r in schedule_t:
        repeats[i] += r
    link_total = np.zeros_like(capacity)
    for i, r in enumerate(repeats):
        link_total += r * results[i].link_bytes
    return assemble_result(
        tuple(results), schedule_t, collective, topology, steps=collective.num_steps, routing=name,
        fidelity=fidelity, seed=seed, started=started, link_total=link_total,
    )


def _solve(key, groups, n, p, s, flow_bytes, host_cap, fabric_cap, hop_s, shared_hosts, fidelity, alpha_s, name,
           leaves, flows_per_step, capacity, used_up, used_down, num_hosts, PatternResult):
    """One distinct step: its time, congestion, link bytes and counts."""
    inside, across, _ = key
    # classes (flows inside one leaf, flows across) that have flows, as transfers of one
    # leaf; link groups: host up and host down (shared by the leaf's hosts for direct,
    # one pair per class for pairwise, where each host link carries one flow), the
    # leaf's uplinks and its downlinks
    classes = [(m, lat, crosses) for m, lat, crosses in ((inside, 2 * hop_s, False), (across, 4 * hop_s, True)) if m > 0]
    rows, cols, caps = [], [], []
    if shared_hosts:
        caps += [n * host_cap, n * host_cap]
    for c, (m, _, crosses) in enumerate(classes):
        if shared_hosts:
            rows += [c, c]
            cols += [0, 1]
        else:
            rows += [c, c]
            cols += [len(caps), len(caps) + 1]
            caps += [m * host_cap, m * host_cap]
        if crosses:
            rows += [c, c]
            cols += [len(caps), len(caps) + 1]
            caps += [fabric_cap, fabric_cap]
    count = np.array([m for m, _, _ in classes], dtype=np.float64)
    incidence = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(classes), len(caps)))
    quotient = Transfers(
        flow=np.arange(len(classes)), size_bytes=count * flow_bytes, latency_s=np.array([lat for _, lat, _ in classes]),
        incidence=incidence, num_flows=len(classes), share=count,
    )
    host_bytes = (p - 1 if shared_hosts else 1) * flow_bytes
    fabric_link_bytes = across * flow_bytes / s
    congestion_s = max(host_bytes / host_cap, fabric_link_bytes * s / fabric_cap if across else 0.0)
    latency_s = float(quotient.latency_s.max())
    if fidelity == "flow":
        timing = simulate_step(quotient, np.array(caps))
        time_s, changes = timing.time_s, timing.rate_changes
    else:
        time_s, changes = congestion_s + latency_s, 0
    link_bytes = np.zeros(len(capacity))
    link_bytes[:p] = host_bytes
    link_bytes[num_hosts: num_hosts + p] = host_bytes
    if across:
        link_bytes[used_up] = fabric_link_bytes
        link_bytes[used_down] = fabric_link_bytes
    split_count, minimum = _split_subflows(inside, across, groups, s)
    per_leaf = split_count if name == "split" else inside + across
    return PatternResult(
        time_s=time_s + alpha_s,
        congestion_s=congestion_s,
        latency_s=latency_s,
        num_flows=flows_per_step,
        num_transfers=per_leaf * leaves,
        link_bytes=link_bytes,
        min_subflows=minimum * leaves,
        rate_changes=changes,
    )


ECMP_FLOWS_PER_BATCH = 1 << 21
"""Flows of the pairwise ECMP path solved together (steps stacked side by side)."""


def _segment_min(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.minimum.reduceat(values, starts) if len(values) else np.zeros(0)


def _independent_parts(up: np.ndarray, down: np.ndarray, num_links: int) -> np.ndarray:
    """Each flow's connected part of the flow-link graph (flows are edges between their up- and downlink).

    Max-min fairness splits over these parts: flows that share no link, directly or through
    other flows, do not affect each other's rates. Under hashing a fabric link carries a
    handful of flows, so the parts are small (1.9 flows on average, at most 18, at 1,024
    hosts on 32 x 32) and each is filled on its own, in a few rounds, instead of the whole
    batch rising through one level per distinct rate.
    """
    # scipy.sparse.csgraph pulls in scipy.linalg (0.13 s): only pairwise ECMP pays for it, not every CLI start
    from scipy.sparse.csgraph import connected_components

    if not len(up):
        return np.zeros(0, dtype=np.int64)
    graph = sp.coo_matrix((np.ones(len(up)), (up, down)), shape=(num_links, num_links))
    return connected_components(graph, directed=False)[1][up]


def _fill_parts(up, down, part, num_links, host_cap, fabric_cap):
    """Max-min rates of crossing flows of many independent parts at once; ``part`` is sorted.

    Every flow has a private host up- and down-link (pairwise: one flow per host link),
    one uplink ``up`` and one downlink ``down`` (indices into the batch's used links).
    Each part's level rises to the lowest level at which one of its links fills, as
    :meth:`FairShare.rates` does for that part alone; every flow through a full link
    freezes there.
    """
    rate = np.zeros(len(up))
    live = np.arange(len(up))
    frozen_load = np.zeros(num_links)
    count = (np.bincount(up, minlength=num_links) + np.bincount(down, minlength=num_links)).astype(np.float64)
    level = np.zeros(int(part[-1]) + 1 if len(part) else 0)
    tolerance = 1 + _REL_TOL
    while len(live):
        u, d, c = up[live], down[live], part[live]
        fill_up = (fabric_cap - frozen_load[u]) / count[u]
        fill_down = (fabric_cap - frozen_load[d]) / count[d]
        fill = np.minimum(np.minimum(fill_up, fill_down), host_cap)
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        sizes = np.diff(np.r_[starts, len(c)])
        before = level[c[starts]]
        new = _segment_min(fill, starts)
        level[c[starts]] = new
        delta = np.repeat(new - before, sizes)
        prev = np.repeat(before, sizes)
        full = (fill - prev) <= delta * tolerance + 1e-300
        # a link fills for every flow on it: freeze all flows of a full link, not just those that saw it first
        link_full = np.zeros(num_links, dtype=bool)
        link_full[u[(fill_up - prev) <= delta * tolerance + 1e-300]] = True
        link_full[d[(fill_down - prev) <= delta * tolerance + 1e-300]] = True
        newly = full | link_full[u] | link_full[d]
        frozen, fu, fd = live[newly], u[newly], d[newly]
        rate[frozen] = level[c[newly]]
        frozen_load += np.bincount(fu, weights=rate[frozen], minlength=num_links)
        frozen_load += np.bincount(fd, weights=rate[frozen], minlength=num_links)
        count -= np.bincount(fu, minlength=num_links) + np.bincount(fd, minlength=num_links)
        live = live[~newly]
    return rate


def simulate_pairwise_ecmp(topology: LeafSpine, collective: Collective, fidelity: str, seed: int, alpha_s: float):
    """Pairwise all-to-all under plain ECMP for which :func:`applies` holds.

    Per flow, vectorised: every flow is hashed onto its spine exactly as
    :class:`~nasfleet.comm.routing.HashedRouting` does; host links carry one flow each,
    so only the per-link flow counts of the uplinks and downlinks enter the rates. Up to
    :data:`ECMP_FLOWS_PER_BATCH` flows of consecutive steps are solved together, each
    independent part of a step (:func:`_independent_parts`) by its own progressive filling,
    once: every flow of a step is the same size, so each keeps its first rate until it
    finishes (:func:`~nasfleet.comm.flowsim.keeps_its_first_rates`). Each step keeps its
    time and congestion; link bytes are kept as the collective's total (every pattern holds the per-step mean), so totals, top links
    and utilisation are exact and the per-step utilisation timeline is averaged.
    """
    from nasfleet.comm.routing import flow_hash
    from nasfleet.comm.simulate import PatternResult, assemble_result

    started = time.perf_counter()
    p, s, n_leaf = collective.ranks, topology.spines, topology.hosts_per_leaf
    n = min(p, n_leaf)
    leaves = p // n
    f = collective.size_bytes / p
    host_cap = float(topology.link_bytes_per_s[0])
    fabric_cap = float(topology.link_bytes_per_s[2 * topology.num_hosts])
    hop_s = float(topology.link_latency_s[0])
    links_per_step = 2 * topology.leaves * s
    src = np.arange(p, dtype=np.int64)
    tor = src // n_leaf
    fabric_total = np.zeros(links_per_step)
    times, congestion = np.zeros(p - 1), np.zeros(p - 1)
    per_batch = max(1, ECMP_FLOWS_PER_BATCH // p)
    for first in range(1, p, per_batch):
        shifts = np.arange(first, min(p, first + per_batch), dtype=np.int64)
        steps = len(shifts)
        dst = (src[None, :] + shifts[:, None]) % p
        dst_tor = tor[dst]
        crosses = (tor[None, :] != dst_tor).ravel()
        spine = (flow_hash(np.broadcast_to(src, dst.shape), dst, np.zeros(1, dtype=np.int64), seed)
                 % np.uint64(s)).astype(np.int64).ravel()
        comp = np.repeat(np.arange(steps), p)
        base = comp * links_per_step
        src_tor = np.tile(tor, steps)
        up = (base + src_tor * s + spine)[crosses]
        down = (base + links_per_step // 2 + dst_tor.ravel() * s + spine)[crosses]
        comp = comp[crosses]
        count = np.bincount(up, minlength=steps * links_per_step) + np.bincount(down, minlength=steps * links_per_step)
        fabric_total += count.reshape(steps, links_per_step).sum(axis=0) * f
        busiest = count.reshape(steps, links_per_step).max(axis=1)
        congestion[shifts - 1] = np.maximum(f / host_cap, busiest * f / fabric_cap)
        any_inside = (~crosses).reshape(steps, p).any(axis=1)
        any_across = crosses.reshape(steps, p).any(axis=1)
        inside_s = np.where(any_inside, f / host_cap + 2 * hop_s, 0.0)  # alone on their host links
        if fidelity == "flow":
            compact = np.cumsum(count > 0) - 1  # used links numbered 0..used-1
            num_used = int(compact[-1]) + 1
            up_c, down_c = compact[up], compact[down]
            part = _independent_parts(up_c, down_c, num_used)
            order = np.argsort(part, kind="stable")
            up_c, down_c, part, comp = up_c[order], down_c[order], part[order], comp[order]
            # every flow is f bytes at weight 1, so each keeps its first rate to the end
            # (nasfleet.comm.flowsim.keeps_its_first_rates)
            done = f / _fill_parts(up_c, down_c, part, num_used, host_cap, fabric_cap)
            across_s = np.zeros(steps)
            np.maximum.at(across_s, comp, done + 4 * hop_s)
            times[shifts - 1] = np.maximum(inside_s, across_s)
        else:
            times[shifts - 1] = congestion[shifts - 1] + np.where(any_across, 4 * hop_s, 2 * hop_s)

    capacity = topology.link_bytes_per_s
    num_hosts = topology.num_hosts
    mean_bytes = np.zeros(len(capacity))
    mean_bytes[:p] = f
    mean_bytes[num_hosts: num_hosts + p] = f
    mean_bytes[2 * num_hosts: 2 * num_hosts + links_per_step] = fabric_total / (p - 1)
    counts = _step_counts(collective, n, leaves)
    results = tuple(
        PatternResult(
            time_s=float(times[k]) + alpha_s, congestion_s=float(congestion[k]), latency_s=4 * hop_s if across else 2 * hop_s,
            num_flows=p, num_transfers=p, link_bytes=mean_bytes,
            min_subflows=_split_subflows(inside, across, groups, s)[1] * leaves,
        )
        for k, (inside, across, groups) in enumerate(counts)
    )
    schedule = tuple((k, 1) for k in range(p - 1))
    return assemble_result(
        results, schedule, collective, topology, steps=p - 1, routing="ecmp", fidelity=fidelity, seed=seed,
        started=started, link_total=mean_bytes * (p - 1),
    )


def _spine_of_every_flow(p: int, n: int, s: int, seed: int) -> np.ndarray:
    """spine[i, j]: the spine ECMP hashes flow i -> j onto, as :class:`~nasfleet.comm.routing.HashedRouting` does."""
    from nasfleet.comm.routing import flow_hash

    spine = np.empty((p, p), dtype=np.uint8 if s <= 256 else np.int32)
    dst = np.arange(p, dtype=np.int64)
    for first in range(0, p, n):
        src = np.arange(first, min(p, first + n), dtype=np.int64)[:, None]
        spine[first: first + len(src)] = flow_hash(src, dst[None, :], np.zeros(1, dtype=np.int64), seed) % np.uint64(s)
    return spine


def _leaf_block_keys(spine: np.ndarray, n: int, s: int, leaf: int, by_source: bool) -> np.ndarray:
    """The spines of the flows that leave ``leaf`` (``by_source``: its rows) or enter it (its columns).

    Flows inside the leaf get a key above every spine, so they sort after every crossing flow.
    """
    block = slice(leaf * n, (leaf + 1) * n)
    keys = (spine[block] if by_source else spine[:, block]).astype(np.uint8 if s < 255 else np.int32)
    (keys[:, block] if by_source else keys[block])[...] = np.iinfo(keys.dtype).max
    return keys


def _fabric_link_flows(spine: np.ndarray, n: int, s: int, by_source: bool) -> np.ndarray:
    """Crossing flows per uplink (``by_source``) or downlink, indexed ``leaf · s + spine``."""
    p = len(spine)
    counts = np.zeros((p // n, s), dtype=np.int64)
    for leaf in range(p // n):
        keys = _leaf_block_keys(spine, n, s, leaf, by_source)
        crossing = keys[keys < s]
        counts[leaf] = np.bincount(crossing, minlength=s)
    return counts.ravel()


def _flows_by_fabric_link(
    spine: np.ndarray, n: int, s: int, by_source: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crossing flows grouped by uplink (``by_source``) or downlink: (sources, destinations, offsets).

    Group ``leaf · s + spine`` holds the flows that leave (enter) ``leaf`` through that
    spine, as ``sources[offsets[g]:offsets[g + 1]]`` and the same slice of ``destinations``.
    """
    p = len(spine)
    host = np.int16 if p <= np.iinfo(np.int16).max else np.int32
    src, dst = np.empty(p * (p - n), dtype=host), np.empty(p * (p - n), dtype=host)
    counts = np.zeros((p // n, s), dtype=np.int64)
    written = 0
    for leaf in range(p // n):
        keys = _leaf_block_keys(spine, n, s, leaf, by_source)
        order = np.argsort(keys, axis=None, kind="stable")[: n * (p - n)]
        row, col = np.divmod(order, keys.shape[1])
        if by_source:
            row += leaf * n
        else:
            col += leaf * n
        src[written: written + len(order)], dst[written: written + len(order)] = row, col
        counts[leaf] = np.bincount(keys.ravel()[order], minlength=s)
        written += len(order)
    return src, dst, np.r_[0, np.cumsum(counts.ravel())]


FabricIndex = tuple[np.ndarray, np.ndarray, np.ndarray]
"""What :func:`_flows_by_fabric_link` returns: (sources, destinations, offsets)."""


def _slowest_direct_ecmp_rates(
    spine: np.ndarray, n: int, s: int, up: FabricIndex, down: FabricIndex, host_cap: float, fabric_cap: float
) -> tuple[float, float]:
    """Max-min fair rates of a direct all-to-all under ECMP: (slowest flow inside a leaf, slowest across).

    Progressive filling as :meth:`~nasfleet.comm.flowsim.FairShare.rates` does, over the
    structure instead of an incidence matrix: flow i -> j crosses host uplink i, host
    downlink j and, leaving its leaf, the uplink and downlink of the spine it hashes to.
    Host links' flows are rows and columns of ``spine``, fabric links' flows are looked up
    in ``up`` and ``down`` (:func:`_flows_by_fabric_link`); the level only rises, so each
    class's first freeze is its slowest flow. Every link fills at most once, so there are
    at most as many rounds as links.
    """
    p = len(spine)
    leaves = p // n
    (up_src, up_dst, up_ptr), (down_src, down_dst, down_ptr) = up, down
    fabric = leaves * s
    # links: host up 0..p-1, host down p..2p-1, uplinks 2p + leaf·s + spine, downlinks 2p + fabric + leaf·s + spine
    num_links = 2 * p + 2 * fabric
    capacity = np.r_[np.full(2 * p, host_cap), np.full(2 * fabric, fabric_cap)]
    count = np.r_[np.full(2 * p, p - 1), np.diff(up_ptr), np.diff(down_ptr)].astype(np.float64)
    load = np.zeros(num_links)
    frozen = np.zeros(p * p, dtype=bool)
    frozen[:: p + 1] = True  # no flow to itself
    every = np.arange(p, dtype=np.int64)
    slowest_inside = slowest_across = math.inf
    while True:
        with np.errstate(divide="ignore", invalid="ignore"):
            fill = np.where(count > 0, (capacity - load) / count, np.inf)
        level = float(fill.min())
        if level == math.inf:
            break
        full = np.flatnonzero(fill <= level * (1 + _REL_TOL) + 1e-300)
        sources, destinations = [], []
        for link in full.tolist():
            if link < p:
                sources.append(np.full(p, link))
                destinations.append(every)
            elif link < 2 * p:
                sources.append(every)
                destinations.append(np.full(p, link - p))
            else:
                g = link - 2 * p
                src, dst, ptr = (up_src, up_dst, up_ptr) if g < fabric else (down_src, down_dst, down_ptr)
                g %= fabric
                sources.append(src[ptr[g]: ptr[g + 1]].astype(np.int64))
                destinations.append(dst[ptr[g]: ptr[g + 1]].astype(np.int64))
        src, dst = np.concatenate(sources), np.concatenate(destinations)
        flat = src * p + dst
        if len(full) > 1:  # a flow may cross two of the links that filled
            flat, first = np.unique(flat, return_index=True)
            src, dst = src[first], dst[first]
        fresh = ~frozen[flat]
        src, dst = src[fresh], dst[fresh]
        frozen[flat[fresh]] = True
        crosses = src // n != dst // n
        if crosses.any():
            slowest_across = min(slowest_across, level)
        if not crosses.all():
            slowest_inside = min(slowest_inside, level)
        far_src, far_dst = src[crosses], dst[crosses]
        lane = spine[far_src, far_dst].astype(np.int64)
        links = np.concatenate([src, p + dst, 2 * p + (far_src // n) * s + lane, 2 * p + fabric + (far_dst // n) * s + lane])
        freed = np.bincount(links, minlength=num_links)
        count -= freed
        load += level * freed
    return slowest_inside, slowest_across


def simulate_direct_ecmp(topology: LeafSpine, collective: Collective, fidelity: str, seed: int, alpha_s: float):
    """Direct all-to-all under plain ECMP for which :func:`applies` holds: one step of p(p − 1) flows.

    Every host link carries p − 1 hashed flows, so the whole step is one connected max-min
    problem and no leaf-level count decides it. But every flow is the same size, so each
    keeps its first max-min rate until it finishes
    (:func:`~nasfleet.comm.flowsim.keeps_its_first_rates`): one progressive filling
    (:func:`_slowest_direct_ecmp_rates`) gives the step's time, and it runs over a spine per
    flow and two index arrays, about 10 bytes a flow, instead of the general engine's routed
    transfers and incidence matrices.
    """
    from nasfleet.comm.simulate import PatternResult, assemble_result

    started = time.perf_counter()
    p, s = collective.ranks, topology.spines
    n = min(p, topology.hosts_per_leaf)
    leaves = p // n
    check_memory(
        f"direct alltoall over {p:,} ranks under ecmp ({p * (p - 1):,} flows, each hashed)",
        p * p * (BYTES_PER_HASHED_FLOW if fidelity == "flow" else 1),
    )
    f = collective.size_bytes / p
    host_cap = float(topology.link_bytes_per_s[0])
    fabric_cap = float(topology.link_bytes_per_s[2 * topology.num_hosts])
    hop_s = float(topology.link_latency_s[0])
    spine = _spine_of_every_flow(p, n, s, seed)
    if fidelity == "flow":
        up = _flows_by_fabric_link(spine, n, s, by_source=True)
        down = _flows_by_fabric_link(spine, n, s, by_source=False)
        up_flows, down_flows = np.diff(up[2]), np.diff(down[2])
    else:
        up_flows = _fabric_link_flows(spine, n, s, by_source=True)
        down_flows = _fabric_link_flows(spine, n, s, by_source=False)
    host_bytes = (p - 1) * f
    congestion_s = max(host_bytes / host_cap, float(np.max(up_flows, initial=0)) * f / fabric_cap,
                       float(np.max(down_flows, initial=0)) * f / fabric_cap)
    latency_s = 4 * hop_s if leaves > 1 else 2 * hop_s
    if fidelity == "flow":
        slowest_inside, slowest_across = _slowest_direct_ecmp_rates(spine, n, s, up, down, host_cap, fabric_cap)
        time_s = max(f / slowest_inside + 2 * hop_s if n > 1 else 0.0,
                     f / slowest_across + 4 * hop_s if leaves > 1 else 0.0)
        changes = 1
    else:
        time_s, changes = congestion_s + latency_s, 0

    capacity = topology.link_bytes_per_s
    num_hosts = topology.num_hosts
    link_bytes = np.zeros(len(capacity))
    link_bytes[:p] = host_bytes
    link_bytes[num_hosts: num_hosts + p] = host_bytes
    up_links = 2 * num_hosts + np.arange(leaves * s)
    link_bytes[up_links] = up_flows * f
    link_bytes[up_links + topology.leaves * s] = down_flows * f
    ((inside, across, groups),) = _step_counts(collective, n, leaves)
    result = PatternResult(
        time_s=time_s + alpha_s, congestion_s=congestion_s, latency_s=latency_s, num_flows=p * (p - 1),
        num_transfers=p * (p - 1), link_bytes=link_bytes,
        min_subflows=_split_subflows(inside, across, groups, s)[1] * leaves, rate_changes=changes,
    )
    return assemble_result(
        (result,), ((0, 1),), collective, topology, steps=1, routing="ecmp", fidelity=fidelity, seed=seed,
        started=started,
    )
