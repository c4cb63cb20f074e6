"""Routing and transport schedules: how each flow's bytes are put on paths.

Every schedule turns the flows of one step into *transfers*, the units a transport
moves at a single rate: one per flow for ``spray`` (its bytes spread evenly over all
shortest paths, as ideal per-packet spraying does) and ``spray-weighted`` (spread in
proportion to each path's bottleneck capacity, as weighted ECMP / UCMP does), one per
subflow for ``ecmp``, ``ecmp-K``, ``split`` and ``split-weighted`` (each subflow on one
path). A transfer is a row of a sparse
(transfers × links) matrix whose entries are the fraction of its bytes crossing each
link; both simulators work from that matrix alone.

Schedules are plug-ins in :data:`ROUTINGS`, chosen by name (:func:`get_routing`). A
schedule registers with ``@ROUTINGS.register("name")`` above its class (called with no
arguments to build it), or from another installed package under the entry-point group
``nasfleet.routings``. A class that sets ``suffix_parameter`` also answers to ``name-K``
for any integer K ≥ 1, built with that parameter set to K: ``ecmp-4`` is
``HashedRouting(ways=4)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, ClassVar, Protocol

import numpy as np
import scipy.sparse as sp

from nasfleet.errors import NasfleetError
from nasfleet.registry import Registry
from nasfleet.comm.collectives import Step
from nasfleet.comm.limits import BYTES_PER_ENTRY, BYTES_PER_TRANSFER, check_memory
from nasfleet.comm.topology import PathSet, Topology


@dataclass(frozen=True)
class Transfers:
    """What the simulators consume for one step.

    ``incidence[t, e]`` is the fraction of transfer ``t``'s bytes that cross link ``e``
    (1 on a single path; 1/paths-per-link share under spraying). ``flow[t]`` is the
    step flow the transfer belongs to; ``latency_s[t]`` the propagation delay of its
    (longest) path, added once when its last byte leaves.
    ``share[t]`` is the transfer's fraction of its flow's bytes: fairness is per flow,
    so the subflows of one flow split that flow's fair share instead of each claiming
    a full one (a NIC arbitrates between messages, not between their pieces).
    """

    flow: np.ndarray
    size_bytes: np.ndarray
    latency_s: np.ndarray
    incidence: sp.csr_matrix
    num_flows: int
    share: np.ndarray

    @property
    def num_transfers(self) -> int:
        return len(self.flow)

    def link_bytes(self) -> np.ndarray:
        """Bytes each link carries in this step."""
        return np.asarray(self.incidence.T @ self.size_bytes).ravel()


@dataclass(frozen=True)
class RoutingContext:
    """A step's flows mapped to hosts, ToR pairs and candidate paths."""

    topology: Topology
    src_rank: np.ndarray
    dst_rank: np.ndarray
    src_host: np.ndarray
    dst_host: np.ndarray
    size_bytes: np.ndarray
    pair: np.ndarray  # ToR-pair index of each flow into ``paths``
    paths: PathSet
    path_latency_s: np.ndarray
    src_gpu: np.ndarray | None = None  # GPU of each flow's ends, with an intra-host tier
    dst_gpu: np.ndarray | None = None

    @staticmethod
    def build(topology: Topology, step: Step, rank_host: np.ndarray) -> "RoutingContext":
        src_host, dst_host = rank_host[step.src], rank_host[step.dst]
        tor, server = topology.host_tor, topology.host_server
        # traffic inside a server takes no fabric path, even between two of its rails' leaves
        src_tor = tor[src_host]
        dst_tor = np.where(server[src_host] == server[dst_host], src_tor, tor[dst_host])
        key = src_tor * topology.num_tors + dst_tor
        gpu = topology.rank_gpus(rank_host) if topology.intra_host is not None else None
        unique, pair = np.unique(key, return_inverse=True)
        paths = topology.fabric_paths(unique // topology.num_tors, unique % topology.num_tors)
        latency = topology.link_latency_s
        fabric = np.where(paths.links >= 0, latency[np.maximum(paths.links, 0)], 0.0).sum(axis=1)
        return RoutingContext(
            topology=topology,
            src_rank=step.src,
            dst_rank=step.dst,
            src_host=src_host,
            dst_host=dst_host,
            size_bytes=step.size_bytes,
            pair=pair.ravel(),
            paths=paths,
            path_latency_s=fabric,
            src_gpu=None if gpu is None else gpu[step.src],
            dst_gpu=None if gpu is None else gpu[step.dst],
        )

    @property
    def num_flows(self) -> int:
        return len(self.src_rank)

    @property
    def paths_per_flow(self) -> np.ndarray:
        return self.paths.paths_per_pair[self.pair]

    @property
    def on_host(self) -> np.ndarray:
        """Flows between two ranks on one server: they never touch the network."""
        server = self.topology.host_server
        return server[self.src_host] == server[self.dst_host]

    @property
    def carried(self) -> np.ndarray:
        """Flows that occupy links: those between servers, and with an intra-host tier all of them."""
        return ~self.on_host | (self.src_gpu is not None)

    def path_capacity_weights(self) -> np.ndarray:
        """Weight of every path in ``paths``: the capacity of its slowest fabric link.

        This is what weighted ECMP / UCMP (WCMP) gives a next hop, so a path through a
        link degraded to a quarter of its rate gets a quarter of the traffic. Host links
        are shared by all paths of a flow and do not count; a path with no fabric link
        (both ends under one ToR) is its pair's only path and gets weight 1.
        """
        links = self.paths.links
        capacity = self.topology.link_bytes_per_s[np.maximum(links, 0)]
        bottleneck = np.where(links >= 0, capacity, np.inf).min(axis=1, initial=np.inf)
        return np.where(np.isfinite(bottleneck), bottleneck, 1.0)

    def check_size(self, routing: str, transfers: int, links_per_transfer: float) -> None:
        """Refuse, before allocating, a step whose transfers would need more than the memory limit."""
        check_memory(
            f"routing {self.num_flows:,} flows with {routing} ({transfers:,} subflows)",
            transfers * (BYTES_PER_TRANSFER + links_per_transfer * BYTES_PER_ENTRY),
        )

    @property
    def path_width(self) -> int:
        """Most switch links on one candidate path (plus the two host links, a transfer's longest row)."""
        return self.paths.links.shape[1]

    def host_links(self, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Host up- and down-link of each flow (a flow inside a server: its GPUs' intra-host links),
        and their combined latency."""
        topo = self.topology
        up, down = topo.host_up_link[self.src_host[flow]], topo.host_down_link[self.dst_host[flow]]
        if self.src_gpu is not None:
            inside = self.on_host[flow]
            up = np.where(inside, topo.intra_up_link(self.src_gpu[flow]), up)
            down = np.where(inside, topo.intra_down_link(self.dst_gpu[flow]), down)
        return up, down, topo.link_latency_s[up] + topo.link_latency_s[down]

    def single_path_transfers(self, flow: np.ndarray, path_row: np.ndarray, size_bytes: np.ndarray) -> Transfers:
        """Transfers that each follow exactly one path (``path_row`` into ``paths.links``)."""
        up, down, host_latency = self.host_links(flow)
        fabric = self.paths.links[path_row]
        links = np.concatenate([up[:, None], fabric, down[:, None]], axis=1)
        off_host = self.carried[flow]
        valid = (links >= 0) & off_host[:, None]
        rows = np.broadcast_to(np.arange(len(flow))[:, None], links.shape)[valid]
        incidence = sp.csr_matrix(
            (np.ones(len(rows)), (rows, links[valid])), shape=(len(flow), self.topology.num_links)
        )
        latency = np.where(off_host, host_latency + self.path_latency_s[path_row], 0.0)
        share = size_bytes / self.size_bytes[flow]
        return Transfers(flow, size_bytes, latency, incidence, self.num_flows, share)


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For item i repeated counts[i] times: (item index, position within its run)."""
    item = np.repeat(np.arange(len(counts)), counts)
    start = np.repeat(np.cumsum(counts) - counts, counts)
    return item, np.arange(len(item)) - start


def flow_hash(src_rank: np.ndarray, dst_rank: np.ndarray, subflow: np.ndarray, seed: int) -> np.ndarray:
    """A well-mixed 64-bit hash of (src, dst, subflow, seed), as a switch hashes a 5-tuple.

    The same connection hashes the same way in every step, so a repeated pattern is
    routed identically each time it recurs.
    """
    with np.errstate(over="ignore"):
        x = (
            np.asarray(src_rank, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
            ^ np.asarray(dst_rank, dtype=np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
            ^ np.asarray(subflow, dtype=np.uint64) * np.uint64(0x165667B19E3779F9)
            ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0xD6E8FEB86659FD93)
        )
        # splitmix64 finaliser
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class Routing(Protocol):
    """A routing/transport schedule: turns one step's flows into transfers.

    ``name`` is what results report as the routing (the name it is looked up by).
    """

    name: str

    def route(self, ctx: RoutingContext, seed: int) -> Transfers: ...


ROUTINGS: Registry[Callable[..., Routing]] = Registry("routing", "nasfleet.routings")


@ROUTINGS.register("ecmp")
@dataclass(frozen=True)
class HashedRouting:
    """ECMP: every flow split into ``ways`` equal subflows, each hashed onto one path.

    ``ways == 1`` is plain per-flow ECMP; ``ways > 1`` is MP-RDMA-style ECMP-k.
    """

    suffix_parameter: ClassVar[str] = "ways"  # ecmp-K is ECMP-k with K ways
    ways: int = 1

    @property
    def name(self) -> str:
        return "ecmp" if self.ways == 1 else f"ecmp-{self.ways}"

    def route(self, ctx: RoutingContext, seed: int) -> Transfers:
        ctx.check_size(self.name, ctx.num_flows * self.ways, ctx.path_width + 2)
        flow = np.repeat(np.arange(ctx.num_flows), self.ways)
        sub = np.tile(np.arange(self.ways), ctx.num_flows)
        choice = flow_hash(ctx.src_rank[flow], ctx.dst_rank[flow], sub, seed) % ctx.paths_per_flow[flow].astype(np.uint64)
        path_row = ctx.paths.pair_ptr[ctx.pair[flow]] + choice.astype(np.int64)
        return ctx.single_path_transfers(flow, path_row, ctx.size_bytes[flow] / self.ways)


@ROUTINGS.register("spray")
@dataclass(frozen=True)
class SprayRouting:
    """Ideal per-packet spraying: each flow's bytes split evenly over all its paths (fluid)."""

    name: str = "spray"

    def path_weights(self, ctx: RoutingContext) -> np.ndarray:
        """Relative share of a flow's bytes on each path of ``ctx.paths`` (equal here)."""
        return np.ones(len(ctx.paths.links))

    def route(self, ctx: RoutingContext, seed: int) -> Transfers:
        flows = np.arange(ctx.num_flows)
        counts = np.where(ctx.on_host, 0, ctx.paths_per_flow)
        ctx.check_size(self.name, ctx.num_flows, 2 + int(counts.sum()) * ctx.path_width / max(1, ctx.num_flows))
        flow, k = _expand(counts)
        path_row = ctx.paths.pair_ptr[ctx.pair[flow]] + k
        fabric = ctx.paths.links[path_row]
        valid = fabric >= 0
        weight = self.path_weights(ctx)[path_row]
        share = weight / np.bincount(flow, weights=weight, minlength=ctx.num_flows)[flow]
        up, down, host_latency = ctx.host_links(flows)
        off = ctx.carried
        rows = np.concatenate([flows[off], flows[off], np.broadcast_to(flow[:, None], fabric.shape)[valid]])
        cols = np.concatenate([up[off], down[off], fabric[valid]])
        vals = np.concatenate([np.ones(2 * off.sum()), np.broadcast_to(share[:, None], fabric.shape)[valid]])
        incidence = sp.csr_matrix((vals, (rows, cols)), shape=(ctx.num_flows, ctx.topology.num_links))
        longest = np.zeros(ctx.num_flows)
        np.maximum.at(longest, flow, ctx.path_latency_s[path_row])
        latency = np.where(off, host_latency + longest, 0.0)
        return Transfers(flows, ctx.size_bytes.copy(), latency, incidence, ctx.num_flows, np.ones(ctx.num_flows))


@ROUTINGS.register("spray-weighted")
@dataclass(frozen=True)
class WeightedSprayRouting(SprayRouting):
    """Weighted spraying (WCMP/UCMP): each flow's bytes spread over its paths in proportion
    to each path's bottleneck capacity, so a degraded link gets a proportionally smaller
    part; on a fabric whose paths are all equally fast it is ``spray``."""

    name: str = "spray-weighted"

    def path_weights(self, ctx: RoutingContext) -> np.ndarray:
        return ctx.path_capacity_weights()


@dataclass(frozen=True)
class _SplitPlan:
    """A step's flows sorted into the units the splitting rules cut.

    A *class* is the flows of one source ToR with one size and the same candidate
    paths, in the same order, out of that ToR (on a healthy leaf-spine: all of a ToR's
    cross-fabric flows of one size). Within a class flows are sorted by destination
    ToR relative to the source (then by flow), so a *group* (class and destination
    ToR) is a contiguous run. ``order`` lists flows in that sort; the other per-flow
    arrays are in the same order.
    """

    order: np.ndarray
    paths: np.ndarray  # s, candidate paths of each flow
    class_r: np.ndarray  # r, flows in each flow's class
    class_index: np.ndarray  # position of each flow within its class
    group_r: np.ndarray
    group_index: np.ndarray
    class_first: np.ndarray  # whether a flow is the first of its class
    class_id: np.ndarray
    path_rows: np.ndarray  # interleaved path order, see _interleaved_rows

    @staticmethod
    def build(ctx: RoutingContext) -> "_SplitPlan":
        topo = ctx.topology
        src_tor = topo.host_tor[ctx.src_host]
        dst_tor = np.where(ctx.on_host, src_tor, topo.host_tor[ctx.dst_host])
        relative = (dst_tor - src_tor) % topo.num_tors
        rows, signature = _interleaved_rows(ctx.paths)
        s = ctx.paths_per_flow
        sig = signature[ctx.pair]
        order = np.lexsort((np.arange(ctx.num_flows), relative, ctx.size_bytes, sig, s, src_tor))
        keys = [src_tor[order], s[order], sig[order], ctx.size_bytes[order]]
        changed = np.zeros(len(order), dtype=bool)
        for key in keys:
            changed[1:] |= key[1:] != key[:-1]
        class_first = changed.copy()
        class_first[:1] = True
        rel = relative[order]
        group_first = class_first.copy()
        group_first[1:] |= rel[1:] != rel[:-1]
        class_id, class_index, class_r = _runs(class_first)
        _, group_index, group_r = _runs(group_first)
        return _SplitPlan(order, s[order], class_r, class_index, group_r, group_index, class_first, class_id, rows)

    def per_tor_count(self) -> int:
        """Subflows of the per-ToR rule: lcm(r, s) for each class of r flows over s paths."""
        first = self.class_first
        return int(np.lcm(self.class_r[first], self.paths[first]).sum())

    def per_group_count(self) -> np.ndarray:
        """Per class: subflows of the per-group rule, the sum of lcm(r_D, s) over its destination ToRs."""
        group_first = self.group_index == 0
        lcm = np.lcm(self.group_r[group_first], self.paths[group_first])
        return np.bincount(self.class_id[group_first], weights=lcm, minlength=int(self.class_first.sum()))


def _runs(first: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For runs that start where ``first`` is set: each item's run, position in it, and run length."""
    run = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    lengths = np.diff(np.r_[starts, len(first)])
    return run, np.arange(len(first)) - starts[run], lengths[run]


def _interleaved_rows(paths: PathSet) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's paths reordered so consecutive paths leave the ToR on different uplinks,
    and a hash of each pair's uplink sequence in that order.

    ``rows[pair_ptr[i] + k]`` is the k-th path of pair i: on a fat-tree k = core × spines
    + spine, so k mod spines is the uplink (on a leaf-spine the order is unchanged). Two
    pairs with equal hashes leave their ToR over the same uplink at every k, which is
    what lets one rotation over k balance a ToR's uplinks across destinations.
    """
    n = len(paths.links)
    pair_of_row = np.repeat(np.arange(len(paths.pair_ptr) - 1), paths.paths_per_pair)
    first_hop = paths.links[:, 0]
    by_hop = np.lexsort((np.arange(n), first_hop, pair_of_row))
    new = np.r_[True, (pair_of_row[by_hop][1:] != pair_of_row[by_hop][:-1]) | (first_hop[by_hop][1:] != first_hop[by_hop][:-1])]
    _, occurrence_sorted, _ = _runs(new)
    occurrence = np.empty(n, dtype=np.int64)
    occurrence[by_hop] = occurrence_sorted
    rows = np.lexsort((first_hop, occurrence, pair_of_row))
    k = np.arange(n) - paths.pair_ptr[pair_of_row]
    mixed = flow_hash(first_hop[rows] + 1, k, paths.paths_per_pair[pair_of_row], 1)
    signature = np.add.reduceat(mixed, paths.pair_ptr[:-1]) if n else np.zeros(0, dtype=np.uint64)
    return rows, signature


def _cut(ctx: RoutingContext, plan: _SplitPlan, r: np.ndarray, index: np.ndarray, whole: bool, name: str):
    """Every flow of a unit of r flows cut into s/gcd(r, s) equal subflows (or kept whole),
    the unit's subflows put on paths k = 0, 1, 2, ... in turn (mod s).

    Returns (flow, path row, bytes) per subflow.
    """
    s = plan.paths
    ways = np.ones_like(s) if whole else s // np.gcd(r, s)
    ctx.check_size(name, int(ways.sum()), ctx.path_width + 2)
    item, j = _expand(ways)
    flow = plan.order[item]
    k = (index[item] * ways[item] + j) % s[item]
    path_row = plan.path_rows[ctx.paths.pair_ptr[ctx.pair[flow]] + k]
    return flow, path_row, ctx.size_bytes[flow] / ways[item]


def _fabric_bytes(ctx: RoutingContext, path_row: np.ndarray, size_bytes: np.ndarray) -> np.ndarray:
    """Bytes on every link from switch-to-switch hops only (host links are the same under any split)."""
    links = ctx.paths.links[path_row]
    valid = links >= 0
    weights = np.broadcast_to(size_bytes[:, None], links.shape)[valid]
    return np.bincount(links[valid], weights=weights, minlength=ctx.topology.num_links)


def _spray_fabric_bytes(ctx: RoutingContext) -> np.ndarray:
    """Switch-link bytes under ``spray``: each pair's bytes spread evenly over its paths."""
    paths = ctx.paths
    pair_bytes = np.bincount(ctx.pair, weights=ctx.size_bytes, minlength=len(paths.pair_ptr) - 1)
    per_path = pair_bytes / np.maximum(paths.paths_per_pair, 1)
    return _fabric_bytes(ctx, np.arange(len(paths.links)), np.repeat(per_path, paths.paths_per_pair))


def _host_bytes(ctx: RoutingContext) -> np.ndarray:
    up, down, _ = ctx.host_links(np.arange(ctx.num_flows))
    carried = ctx.carried
    links = np.r_[up[carried], down[carried]]
    sizes = np.r_[ctx.size_bytes[carried], ctx.size_bytes[carried]]
    return np.bincount(links, weights=sizes, minlength=ctx.topology.num_links)


def per_tor_min_subflows(ctx: RoutingContext) -> int:
    """The subflows the per-ToR splitting rule needs for one step: lcm(r, s) for the r
    flows of one size that leave a ToR over the same s paths (a flow with one path
    counts once).

    This is the flow-splitting paper's minimum for schedules that cut every flow of a
    ToR into the same number of equal subflows; ``split`` reaches it, or goes below it,
    wherever its check against spraying's link loads passes (see :class:`SplitRouting`).
    """
    return _SplitPlan.build(ctx).per_tor_count()


@ROUTINGS.register("split")
@dataclass(frozen=True)
class SplitRouting:
    """Application-layer splitting onto single paths, coordinated across a ToR's destinations.

    The flows of one ToR are split as one unit: r flows of size f over the same s
    paths, g = gcd(r, s), each cut into s/g subflows of f·g/s, the ToR's subflows laid
    on paths 0, 1, 2, ... in turn with the flows sorted by destination ToR — r/g
    subflows per uplink, lcm(r, s) subflows per ToR whatever the destinations. A ToR
    whose flows to separate destinations need fewer subflows split per destination
    (Σ lcm(r_D, s) < lcm(r, s), e.g. 1 + 2 flows over 4 paths: 8 against 12) is split
    per destination instead.

    Uplinks then carry exactly what spraying puts on them; the links into a
    destination do when the turns of the ToRs sending to it fit together, which holds
    for shift patterns (ring, pairwise all-to-all, halving-doubling) but not for every
    pattern. The step's switch-link bytes are compared with spraying's, and a step that
    differs is split per (source ToR, destination ToR) group instead (``split-group``),
    which always matches. On fabrics of more than two switch tiers, flows are first
    kept whole (one path each, in turn) and split only if that would make some link
    more congested than spraying does — a lone flow held by its NIC stays one subflow.
    """

    name: str = "split"

    def route(self, ctx: RoutingContext, seed: int) -> Transfers:
        plan = _SplitPlan.build(ctx)
        spray = _spray_fabric_bytes(ctx)
        if ctx.path_width > 2:
            flow, path_row, size = _cut(ctx, plan, plan.class_r, plan.class_index, True, self.name)
            if self._congestion(ctx, _fabric_bytes(ctx, path_row, size)) <= self._congestion(ctx, spray) * (1 + 1e-12):
                return ctx.single_path_transfers(flow, path_row, size)
        per_tor = np.lcm(plan.class_r, plan.paths)
        per_group = plan.per_group_count()[plan.class_id]
        coordinated = per_tor <= per_group
        r = np.where(coordinated, plan.class_r, plan.group_r)
        index = np.where(coordinated, plan.class_index, plan.group_index)
        flow, path_row, size = _cut(ctx, plan, r, index, False, self.name)
        if np.any(coordinated & (plan.class_r != plan.group_r)):  # a ToR's turns span destinations
            scale = max(float(spray.max(initial=0.0)), 1e-300)
            if np.abs(_fabric_bytes(ctx, path_row, size) - spray).max(initial=0.0) > 1e-9 * scale:
                flow, path_row, size = _cut(ctx, plan, plan.group_r, plan.group_index, False, self.name)
        return ctx.single_path_transfers(flow, path_row, size)

    @staticmethod
    def _congestion(ctx: RoutingContext, fabric_bytes: np.ndarray) -> float:
        capacity = ctx.topology.link_bytes_per_s
        load = fabric_bytes + _host_bytes(ctx)
        live = capacity > 0
        return float((load[live] / capacity[live]).max(initial=0.0))


@ROUTINGS.register("split-group")
@dataclass(frozen=True)
class GroupSplitRouting:
    """Splitting per (source ToR, destination ToR, size) group, what ``split`` did before
    it coordinated a ToR's destinations.

    A group of r flows of size f over s paths, g = gcd(r, s), splits each flow into s/g
    subflows of f·g/s and puts r/g subflows on every path: each path carries r·f/s,
    exactly what ideal spraying gives, with lcm(r, s) subflows per group. It always
    matches spraying's link loads but pays lcm(r_D, s) for every destination ToR D of a
    ToR, where ``split`` pays lcm(r, s) once.
    """

    name: str = "split-group"

    def route(self, ctx: RoutingContext, seed: int) -> Transfers:
        plan = _SplitPlan.build(ctx)
        flow, path_row, size = _cut(ctx, plan, plan.group_r, plan.group_index, False, self.name)
        return ctx.single_path_transfers(flow, path_row, size)


@ROUTINGS.register("split-weighted")
@dataclass(frozen=True)
class WeightedSplitRouting:
    """Application-layer splitting in proportion to path capacity, onto single paths.

    The flows of one (source ToR, destination ToR) pair are laid end to end in flow
    order, and so are the pair's paths, each as long as its share of the pair's bytes
    (its bottleneck capacity over the pair's total, see
    :meth:`RoutingContext.path_capacity_weights`). Cutting wherever a flow or a path
    ends gives single-path subflows that put exactly ``spray-weighted``'s bytes on every
    link, with at most r + s − 1 subflows for r flows over s paths (fewer where ends
    coincide: r equal flows over r equal paths keep one whole path each). Subflows of one
    flow may differ in size.
    """

    name: str = "split-weighted"

    # Path ends this close (relative to the pair's bytes) to a flow end are moved onto it,
    # so rounding never cuts a sliver off a flow that should have kept one whole path.
    snap_rel: ClassVar[float] = 1e-9

    def route(self, ctx: RoutingContext, seed: int) -> Transfers:
        order = np.argsort(ctx.pair, kind="stable")
        pair, size = ctx.pair[order], ctx.size_bytes[order]
        starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
        group_pair = pair[starts]
        flow_group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(order)]))
        flow_end = _cumsum_within(size, flow_group, starts)
        total = flow_end[np.r_[starts[1:], len(order)] - 1]

        paths_per_group = ctx.paths.paths_per_pair[group_pair]
        ctx.check_size(self.name, len(order) + int(paths_per_group.sum()), ctx.path_width + 2)  # r + s − 1 per pair
        path_group, k = _expand(paths_per_group)
        path_row = ctx.paths.pair_ptr[group_pair[path_group]] + k
        weight = ctx.path_capacity_weights()[path_row]
        path_starts = np.flatnonzero(np.r_[True, path_group[1:] != path_group[:-1]])
        cum_weight = _cumsum_within(weight, path_group, path_starts)
        last = np.r_[path_starts[1:], len(path_group)] - 1
        path_end = total[path_group] * cum_weight / cum_weight[last][path_group]
        path_end[last] = total  # exactly, so every pair's last cut is its last flow's end

        # Every end as (group, position, flow ends, path ends), sorted; equal positions merge.
        group = np.concatenate([flow_group, path_group])
        position = np.concatenate([flow_end, path_end])
        is_flow = np.r_[np.ones(len(flow_end), dtype=np.int64), np.zeros(len(path_end), dtype=np.int64)]
        sort = np.lexsort((1 - is_flow, position, group))
        group, position, is_flow = group[sort], position[sort], is_flow[sort]
        position = _snap_to_flow_ends(group, position, is_flow.astype(bool), self.snap_rel * total[group])
        sort = np.lexsort((1 - is_flow, position, group))
        group, position, is_flow = group[sort], position[sort], is_flow[sort]
        new = np.r_[True, (group[1:] != group[:-1]) | (position[1:] != position[:-1])]
        cut = np.cumsum(new) - 1
        flow_ends_at = np.bincount(cut, weights=is_flow).astype(np.int64)
        path_ends_at = np.bincount(cut, weights=1 - is_flow).astype(np.int64)
        group, position = group[new], position[new]
        # The piece that ends at a cut belongs to the first flow and the first path not yet ended.
        piece_flow = np.cumsum(flow_ends_at) - flow_ends_at
        piece_path = np.cumsum(path_ends_at) - path_ends_at
        first = np.r_[True, group[1:] != group[:-1]]
        piece_bytes = position - np.where(first, 0.0, np.r_[0.0, position[:-1]])
        keep = piece_bytes > 0
        flow = order[piece_flow[keep]]
        return ctx.single_path_transfers(flow, path_row[piece_path[keep]], piece_bytes[keep])


def _cumsum_within(values: np.ndarray, group: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Running sum of ``values`` restarting at each group (rows of one group are contiguous)."""
    total = np.cumsum(values)
    return total - (total[starts] - values[starts])[group]


def _snap_to_flow_ends(group: np.ndarray, position: np.ndarray, is_flow: np.ndarray, tolerance: np.ndarray) -> np.ndarray:
    """Positions of path ends moved onto the nearest flow end of their group within ``tolerance``.

    Input is sorted by (group, position); flow ends never move.
    """
    index = np.arange(len(position))
    flow_index = np.where(is_flow, index, -1)
    before = np.maximum.accumulate(flow_index)
    after = np.minimum.accumulate(np.where(is_flow, index, len(position))[::-1])[::-1]
    snapped = position.copy()
    for neighbour in (before, after):
        ok = (neighbour >= 0) & (neighbour < len(position))
        near = np.clip(neighbour, 0, len(position) - 1)
        close = ~is_flow & ok & (group[near] == group) & (np.abs(position[near] - position) <= tolerance)
        snapped[close] = position[near][close]
    return snapped


_SUFFIXED = re.compile(r"^(?P<base>.+)-(?P<k>\d+)$")
MAX_SUFFIX_K = 1024
"""The largest K of ``name-K``: ECMP-K makes K subflows of every flow, so K = 10^11 would need terabytes."""


def routing_names() -> list[str]:
    """Registered names; ``name-K`` after each routing that takes a suffix (``ecmp``, ``ecmp-K``)."""
    names: list[str] = []
    for name, factory in ROUTINGS.items():
        names.append(name)
        if getattr(factory, "suffix_parameter", None):
            names.append(f"{name}-K")
    return names


def get_routing(name: str) -> Routing:
    """The schedule registered as ``name`` (case-insensitive), e.g. ``ecmp``, ``spray``, ``split``
    or ``ecmp-K``; an unknown name is one :class:`NasfleetError` listing the known ones."""
    key = name.strip()
    for candidate in (key, key.lower()):
        if candidate in ROUTINGS:
            return ROUTINGS.get(candidate)()
        match = _SUFFIXED.match(candidate)
        if match and match["base"] in ROUTINGS and 1 <= int(match["k"]) <= MAX_SUFFIX_K:
            factory = ROUTINGS.get(match["base"])
            parameter = getattr(factory, "suffix_parameter", None)
            if parameter:
                return factory(**{parameter: int(match["k"])})
    known = routing_names()
    suffix_hint = f"; K is an integer from 1 to {MAX_SUFFIX_K}" if any(n.endswith("-K") for n in known) else ""
    raise NasfleetError(f"unknown routing {name!r} (known: {', '.join(known)}{suffix_hint})")


def is_hashed(name: str) -> bool:
    """Whether the schedule depends on the hash seed (and so is reported over seeds)."""
    return isinstance(get_routing(name), HashedRouting)


def route_step(topology: Topology, step: Step, rank_host: np.ndarray, routing: Routing, seed: int = 0) -> Transfers:
    """Transfers of one step under ``routing``."""
    return routing.route(RoutingContext.build(topology, step, rank_host), seed)

