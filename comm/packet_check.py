"""What a packet-level simulator needs to replay a collective exactly as the flow model routes it.

The flow model turns every step's flows into transfers on single paths (``ecmp``,
``ecmp-K``, ``split``) or spreads a flow over all paths (``spray``). To compare its CCT
with a packet simulator's on the same routing, the packet side must open the same
connections and pin each to the same spine. :func:`packet_plan` gives that plan for a
leaf-spine: the connections (source host, destination host, spine) a collective uses,
and per step the bytes each connection carries. A connection is reused by every step
that sends on it, as a communication library keeps its connections open.

Under ``spray`` a flow is one connection with spine ``-1``: the packet simulator sprays
its packets itself. A flow between two hosts of one leaf has spine ``-1`` too (it has no
fabric path).

Nothing here imports a packet simulator; ``benchmarks/comm_vs_packet.py`` hands the plan
to ns-3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nasfleet.errors import NasfleetError
from nasfleet.comm.collectives import Collective, place_ranks
from nasfleet.comm.routing import SprayRouting, get_routing, route_step
from nasfleet.comm.topology import LeafSpine


@dataclass(frozen=True)
class PacketPlan:
    """Connections and, per step, (connection, bytes) for every transfer of the step.

    ``conn_src``/``conn_dst`` are hosts, ``conn_spine`` the spine a connection is pinned
    to (``-1``: sprayed, or both ends on one leaf). ``steps[k]`` is a pair of arrays
    (connection ids, whole bytes) for step ``k``; bytes of a flow's subflows are rounded
    to whole bytes so that they still add up to the flow's (rounded) size.
    """

    conn_src: np.ndarray
    conn_dst: np.ndarray
    conn_spine: np.ndarray
    steps: tuple[tuple[np.ndarray, np.ndarray], ...]

    @property
    def num_connections(self) -> int:
        return len(self.conn_src)

    def step_bytes(self) -> np.ndarray:
        return np.array([b.sum() for _, b in self.steps], dtype=np.int64)


def transfer_spines(topology: LeafSpine, incidence) -> np.ndarray:
    """Spine of each transfer (row of a single-path incidence matrix), ``-1`` where it uses
    no leaf-to-spine link."""
    first_up = 2 * topology.num_hosts
    last_up = first_up + topology.leaves * topology.spines
    coo = incidence.tocoo()
    up = (coo.col >= first_up) & (coo.col < last_up)
    spine = np.full(incidence.shape[0], -1, dtype=np.int64)
    spine[coo.row[up]] = (coo.col[up] - first_up) % topology.spines
    return spine


def _whole_bytes(flow: np.ndarray, size: np.ndarray, flow_size: np.ndarray) -> np.ndarray:
    """Round each transfer down to whole bytes and give each flow's remainder to its first transfer."""
    whole = np.floor(size).astype(np.int64)
    want = np.round(flow_size).astype(np.int64)
    missing = want - np.bincount(flow, weights=whole, minlength=len(flow_size)).astype(np.int64)
    first = np.unique(flow, return_index=True)[1]
    whole[first] += missing[flow[first]]
    return whole


def packet_plan(topology: LeafSpine, collective: Collective, routing: str, seed: int = 0) -> PacketPlan:
    """The connections and per-step bytes that replay ``collective`` under ``routing``.

    Ranks are placed contiguously, one per host, as :func:`~nasfleet.comm.simulate` does by
    default. Only leaf-spines without an intra-host tier are supported.
    """
    if not isinstance(topology, LeafSpine) or topology.intra_host is not None:
        raise NasfleetError("packet plan: only a leaf-spine without an intra-host tier is supported")
    router = get_routing(routing)
    sprayed = isinstance(router, SprayRouting)
    rank_host = place_ranks(collective.ranks, topology.num_hosts)
    index: dict[tuple[int, int, int, int], int] = {}
    steps: list[tuple[np.ndarray, np.ndarray]] = []
    routed: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for pattern_id, repeat in collective.schedule:
        if pattern_id not in routed:
            step = collective.patterns[pattern_id]
            transfers = route_step(topology, step, rank_host, router, seed)
            spine = np.full(transfers.num_transfers, -1) if sprayed else transfer_spines(topology, transfers.incidence)
            src, dst = rank_host[step.src[transfers.flow]], rank_host[step.dst[transfers.flow]]
            size = _whole_bytes(transfers.flow, transfers.size_bytes, step.size_bytes)
            # the k-th transfer of one (src, dst, spine) in a step gets the k-th such connection
            conns = np.empty(transfers.num_transfers, dtype=np.int64)
            seen: dict[tuple[int, int, int], int] = {}
            for t in range(transfers.num_transfers):
                base = (int(src[t]), int(dst[t]), int(spine[t]))
                k = seen.get(base, 0)
                seen[base] = k + 1
                conns[t] = index.setdefault((*base, k), len(index))
            keep = size > 0
            routed[pattern_id] = (conns[keep], size[keep])
        steps.extend([routed[pattern_id]] * repeat)
    keys = np.array(list(index), dtype=np.int64).reshape(-1, 4)
    return PacketPlan(keys[:, 0].copy(), keys[:, 1].copy(), keys[:, 2].copy(), tuple(steps))


def plan_link_bytes(topology: LeafSpine, plan: PacketPlan, step: int) -> np.ndarray:
    """Bytes a plan's pinned step puts on every link of ``topology`` (sprayed connections
    counted on their host links only); used to check a plan against the flow model."""
    conns, size = plan.steps[step]
    src, dst, spine = plan.conn_src[conns], plan.conn_dst[conns], plan.conn_spine[conns]
    loads = np.zeros(topology.num_links)
    np.add.at(loads, topology.host_up_link[src], size)
    np.add.at(loads, topology.host_down_link[dst], size)
    pinned = spine >= 0
    src_leaf, dst_leaf = topology.host_tor[src[pinned]], topology.host_tor[dst[pinned]]
    np.add.at(loads, topology._up(src_leaf, spine[pinned]), size[pinned])
    np.add.at(loads, topology._down(dst_leaf, spine[pinned]), size[pinned])
    return loads
