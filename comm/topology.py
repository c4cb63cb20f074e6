"""Network topologies as arrays: links with capacities and latencies, and the set of
shortest paths between any two top-of-rack switches.

A topology is described once by a few integers (leaves, spines, hosts per leaf, ...)
and everything the simulators need is derived from them as numpy arrays, so that a
32,768-host fabric costs a few megabytes and path enumeration is vectorised.

Every link is directed; a cable between two switches is two links. Hosts attach to
exactly one top-of-rack switch (``leaf``). Paths are the shortest ones, which is what
ECMP, packet spraying and the splitting rule all choose from.

Node names used in failure specs: ``host{i}``, ``leaf{i}``, ``spine{i}`` and, for the
three-tier fat-tree, ``core{i}`` (global indices; in a fat-tree ``leaf`` is an edge
switch and ``spine`` an aggregation switch, numbered pod by pod).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
import dataclasses
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from nasfleet.errors import NasfleetError
from nasfleet.comm.limits import BYTES_PER_LINK, BYTES_PER_PATH_LINK, check_memory
from nasfleet.comm.units import gbps_to_bytes_per_s

_NODE_RE = re.compile(r"^(host|leaf|spine|core)(\d+)$")


@dataclass(frozen=True)
class LinkFailure:
    """A cable between two adjacent nodes that is removed (``gbps == 0``) or degraded.

    Both directions of the cable are affected.
    """

    node_a: str
    node_b: str
    gbps: float = 0.0


@dataclass(frozen=True)
class IntraHostTier:
    """GPUs of one server on an NVLink/NVSwitch-class fabric.

    Every GPU has one link to its server's switch and one back, at ``gbps`` each with
    ``latency_ns``; a flow between two GPUs of one server crosses the sender's and the
    receiver's link and never the network. Without a tier such flows take no time.
    """

    gpus: int
    gbps: float
    latency_ns: float = 0.0


@dataclass(frozen=True)
class PathSet:
    """Shortest fabric paths for a batch of (source ToR, destination ToR) pairs.

    Paths of pair ``i`` are rows ``pair_ptr[i]:pair_ptr[i+1]`` of ``links``; each row
    holds the switch-to-switch link ids of one path, padded with ``-1`` (a pair whose
    two ToRs are the same has one path with no fabric links).
    """

    pair_ptr: np.ndarray
    links: np.ndarray

    @property
    def paths_per_pair(self) -> np.ndarray:
        return np.diff(self.pair_ptr)


def _parse_node(name: str) -> tuple[str, int]:
    match = _NODE_RE.match(name.strip())
    if match is None:
        raise NasfleetError(f"bad node name {name!r}: expected host<i>, leaf<i>, spine<i> or core<i>")
    return match.group(1), int(match.group(2))


def _check_positive(**values: float) -> None:
    for key, value in values.items():
        if not (value > 0 and math.isfinite(value)):
            raise NasfleetError(f"bad topology: {key} must be a positive finite number, got {value}")


class Topology(ABC):
    """Common array view of a tiered fabric.

    Link ids ``0..H-1`` are host-to-leaf links of host ``h`` and ``H..2H-1`` the
    leaf-to-host links; switch links follow and are numbered by each subclass.
    """

    name: str
    failures: tuple[LinkFailure, ...]

    # --- what a subclass provides ---------------------------------------------------
    @property
    @abstractmethod
    def num_hosts(self) -> int: ...

    @property
    @abstractmethod
    def num_tors(self) -> int: ...

    @property
    @abstractmethod
    def num_links(self) -> int: ...

    @abstractmethod
    def _nominal_link_bytes_per_s(self) -> np.ndarray: ...

    @abstractmethod
    def _all_fabric_paths(self, src_tor: np.ndarray, dst_tor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidate paths before failures: (pair index per path, links per path)."""

    @abstractmethod
    def _switch_link_ids(self, a: tuple[str, int], b: tuple[str, int]) -> list[int]:
        """Both directed links of the cable between switches ``a`` and ``b`` (or [])."""

    @abstractmethod
    def link_label(self, link: int) -> str:
        """Readable name such as ``leaf3->spine5``."""

    @abstractmethod
    def describe(self) -> dict:
        """The parameters that rebuild this topology (for JSON output)."""

    @abstractmethod
    def _path_table_shape(self) -> tuple[int, int]:
        """(most paths between two ToRs, most switch links on one path), for size estimates."""

    # --- shared ---------------------------------------------------------------------
    hosts_per_leaf: int
    latency_ns: float
    intra_host: IntraHostTier | None = None  # a subclass with an intra-host tier declares it as a field

    @cached_property
    def host_tor(self) -> np.ndarray:
        return np.arange(self.num_hosts, dtype=np.int64) // self.hosts_per_leaf

    # --- the intra-host tier ----------------------------------------------------------
    # A "host" is a network endpoint (a NIC, link ids 0..2H-1). A server holds
    # endpoints_per_server of them (1, or one per rail on a rail-optimised fabric) and,
    # with a tier, its GPUs; GPU links follow every other link.
    endpoints_per_server: int = 1

    @cached_property
    def host_server(self) -> np.ndarray:
        """Server of every host (endpoint): flows between two endpoints of one server stay inside it."""
        return np.arange(self.num_hosts, dtype=np.int64) // self.endpoints_per_server

    @property
    def gpus_per_host(self) -> int:
        """GPU slots behind one endpoint: the tier's GPUs, or 1 per endpoint on a rail fabric (0: no tier)."""
        if self.intra_host is None:
            return 0
        return self.intra_host.gpus // self.endpoints_per_server

    @property
    def _intra_links(self) -> int:
        return 2 * self.num_hosts * self.gpus_per_host

    @property
    def _intra_base(self) -> int:
        return self.num_links - self._intra_links

    def intra_up_link(self, gpu: np.ndarray) -> np.ndarray:
        return self._intra_base + np.asarray(gpu, dtype=np.int64)

    def intra_down_link(self, gpu: np.ndarray) -> np.ndarray:
        return self._intra_base + self.num_hosts * self.gpus_per_host + np.asarray(gpu, dtype=np.int64)

    def rank_gpus(self, rank_host: np.ndarray) -> np.ndarray:
        """GPU of every rank: ``host × gpus_per_host + i`` for the i-th rank placed on that host."""
        rank_host = np.asarray(rank_host, dtype=np.int64)
        order = np.argsort(rank_host, kind="stable")
        sorted_hosts = rank_host[order]
        first = np.searchsorted(sorted_hosts, sorted_hosts, side="left")
        local = np.empty_like(rank_host)
        local[order] = np.arange(len(rank_host)) - first
        return rank_host * max(1, self.gpus_per_host) + local

    def _intra_label(self, link: int) -> str:
        gpu = (link - self._intra_base) % (self.num_hosts * self.gpus_per_host)
        server = int(self.host_server[gpu // self.gpus_per_host])
        up = link - self._intra_base < self.num_hosts * self.gpus_per_host
        return f"gpu{gpu}->nvswitch{server}" if up else f"nvswitch{server}->gpu{gpu}"

    @property
    def host_up_link(self) -> np.ndarray:
        return np.arange(self.num_hosts, dtype=np.int64)

    @property
    def host_down_link(self) -> np.ndarray:
        return np.arange(self.num_hosts, 2 * self.num_hosts, dtype=np.int64)

    @cached_property
    def link_bytes_per_s(self) -> np.ndarray:
        """Capacity of every link after failures (0 for a removed link)."""
        capacity = self._nominal_link_bytes_per_s().astype(np.float64)
        if self.intra_host is not None:
            capacity[self._intra_base :] = gbps_to_bytes_per_s(self.intra_host.gbps)
        for failure in self.failures:
            ids = self.links_between(failure.node_a, failure.node_b)
            capacity[ids] = gbps_to_bytes_per_s(failure.gbps)
        return capacity

    @cached_property
    def link_latency_s(self) -> np.ndarray:
        latency = np.full(self.num_links, self.latency_ns * 1e-9)
        if self.intra_host is not None:
            latency[self._intra_base :] = self.intra_host.latency_ns * 1e-9
        return latency

    @property
    def host_bytes_per_s(self) -> float:
        """Nominal NIC rate (the ``B`` in the textbook formulas)."""
        return float(self._nominal_link_bytes_per_s()[0])

    def links_between(self, node_a: str, node_b: str) -> list[int]:
        """Directed link ids of the cable between two adjacent nodes, both directions."""
        a, b = _parse_node(node_a), _parse_node(node_b)
        if a[0] == "host" or b[0] == "host":
            host, other = (a, b) if a[0] == "host" else (b, a)
            if host[1] >= self.num_hosts:
                raise NasfleetError(f"bad link {node_a}-{node_b}: host{host[1]} does not exist")
            if other != ("leaf", int(self.host_tor[host[1]])):
                raise NasfleetError(f"bad link {node_a}-{node_b}: host{host[1]} attaches to leaf{self.host_tor[host[1]]}")
            return [host[1], self.num_hosts + host[1]]
        ids = self._switch_link_ids(a, b)
        if not ids:
            raise NasfleetError(f"bad link {node_a}-{node_b}: no such link in topology {self.name}")
        return ids

    def fabric_paths(self, src_tor: np.ndarray, dst_tor: np.ndarray) -> PathSet:
        """All usable shortest paths between each (src_tor[i], dst_tor[i]) pair.

        Paths through a removed link are dropped; a pair left with none raises
        :class:`NasfleetError`, since no routing could deliver its traffic.
        """
        src_tor = np.asarray(src_tor, dtype=np.int64)
        dst_tor = np.asarray(dst_tor, dtype=np.int64)
        paths, width = self._path_table_shape()
        check_memory(
            f"the paths of {len(src_tor):,} ToR pairs in topology {self.name} ({paths:,} each)",
            len(src_tor) * paths * width * BYTES_PER_PATH_LINK,
        )
        pair_of_path, links = self._all_fabric_paths(src_tor, dst_tor)
        capacity = self.link_bytes_per_s
        alive = np.all((links < 0) | (capacity[np.maximum(links, 0)] > 0), axis=1)
        pair_of_path, links = pair_of_path[alive], links[alive]
        order = np.argsort(pair_of_path, kind="stable")
        pair_of_path, links = pair_of_path[order], links[order]
        counts = np.bincount(pair_of_path, minlength=len(src_tor))
        if len(counts) and counts.min() == 0:
            bad = int(np.argmin(counts))
            raise NasfleetError(
                f"no path from leaf{src_tor[bad]} to leaf{dst_tor[bad]} in topology {self.name}: all links failed"
            )
        pair_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return PathSet(pair_ptr=pair_ptr, links=links)

    def _check_links(self) -> None:
        """Checks shared by every fabric: uplink rate, latency, and the failed links named."""
        uplink_gbps = getattr(self, "uplink_gbps", None)
        if uplink_gbps is not None:
            _check_positive(uplink_gbps=uplink_gbps)
        latency_ns = getattr(self, "latency_ns", 0.0)
        if not (latency_ns >= 0 and math.isfinite(latency_ns)):
            raise NasfleetError(f"bad topology: latency_ns must be a finite number, not negative, got {latency_ns}")
        if self.intra_host is not None:
            tier = self.intra_host
            if int(tier.gpus) != tier.gpus or tier.gpus < 1:
                raise NasfleetError(f"bad topology: gpus_per_host must be a positive integer, got {tier.gpus}")
            _check_positive(nvlink_gbps=tier.gbps)
            if not (tier.latency_ns >= 0 and math.isfinite(tier.latency_ns)):
                raise NasfleetError(f"bad topology: nvlink_latency_ns must be a finite number, not negative, got {tier.latency_ns}")
        check_memory(f"topology {self.name} with {self.num_links:,} links", self.num_links * BYTES_PER_LINK)
        self._check_failures()

    def _check_failures(self) -> None:
        for failure in self.failures:
            if not (failure.gbps >= 0 and math.isfinite(failure.gbps)):
                raise NasfleetError(
                    f"bad failure {failure.node_a}-{failure.node_b}: gbps must be a finite number, not negative, "
                    f"got {failure.gbps}"
                )
            self.links_between(failure.node_a, failure.node_b)


@dataclass(frozen=True)
class LeafSpine(Topology):
    """Two-tier leaf-spine: every leaf connects to every spine by one cable.

    ``uplink_gbps`` defaults to ``gbps`` (the host-link rate); ``oversubscription``
    instead sets it so that hosts·gbps / (spines·uplink_gbps) equals the given ratio.
    """

    leaves: int
    spines: int
    hosts_per_leaf: int
    gbps: float
    uplink_gbps: float | None = None
    latency_ns: float = 0.0
    failures: tuple[LinkFailure, ...] = field(default_factory=tuple)
    name: str = "leafspine"
    intra_host: IntraHostTier | None = None

    def __post_init__(self) -> None:
        _check_positive(leaves=self.leaves, spines=self.spines, hosts=self.hosts_per_leaf, gbps=self.gbps)
        self._check_links()

    @property
    def num_hosts(self) -> int:
        return self.leaves * self.hosts_per_leaf

    @property
    def num_tors(self) -> int:
        return self.leaves

    @property
    def num_links(self) -> int:
        return 2 * self.num_hosts + 2 * self.leaves * self.spines + self._intra_links

    @property
    def effective_uplink_gbps(self) -> float:
        return self.gbps if self.uplink_gbps is None else self.uplink_gbps

    @property
    def oversubscription(self) -> float:
        return self.hosts_per_leaf * self.gbps / (self.spines * self.effective_uplink_gbps)

    def _up(self, leaf: np.ndarray, spine: np.ndarray) -> np.ndarray:
        return 2 * self.num_hosts + leaf * self.spines + spine

    def _down(self, leaf: np.ndarray, spine: np.ndarray) -> np.ndarray:
        return 2 * self.num_hosts + self.leaves * self.spines + leaf * self.spines + spine

    def _nominal_link_bytes_per_s(self) -> np.ndarray:
        capacity = np.empty(self.num_links)
        capacity[: 2 * self.num_hosts] = gbps_to_bytes_per_s(self.gbps)
        capacity[2 * self.num_hosts :] = gbps_to_bytes_per_s(self.effective_uplink_gbps)
        return capacity

    def _all_fabric_paths(self, src_tor: np.ndarray, dst_tor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.spines
        same = src_tor == dst_tor
        cross = np.flatnonzero(~same)
        spine = np.tile(np.arange(s, dtype=np.int64), len(cross))
        pair = np.repeat(cross, s)
        links = np.stack([self._up(src_tor[pair], spine), self._down(dst_tor[pair], spine)], axis=1)
        local = np.flatnonzero(same)
        pair = np.concatenate([pair, local])
        links = np.concatenate([links, np.full((len(local), 2), -1, dtype=np.int64)])
        return pair, links

    def _path_table_shape(self) -> tuple[int, int]:
        return self.spines, 2

    def _switch_link_ids(self, a: tuple[str, int], b: tuple[str, int]) -> list[int]:
        ends = dict([a, b]) if a[0] != b[0] else {}
        if set(ends) != {"leaf", "spine"} or ends["leaf"] >= self.leaves or ends["spine"] >= self.spines:
            return []
        return [int(self._up(ends["leaf"], ends["spine"])), int(self._down(ends["leaf"], ends["spine"]))]

    def link_label(self, link: int) -> str:
        h, ls = self.num_hosts, self.leaves * self.spines
        if link >= self._intra_base:
            return self._intra_label(link)
        if link < h:
            return f"host{link}->leaf{self.host_tor[link]}"
        if link < 2 * h:
            return f"leaf{self.host_tor[link - h]}->host{link - h}"
        if link < 2 * h + ls:
            leaf, spine = divmod(link - 2 * h, self.spines)
            return f"leaf{leaf}->spine{spine}"
        leaf, spine = divmod(link - 2 * h - ls, self.spines)
        return f"spine{spine}->leaf{leaf}"

    def describe(self) -> dict:
        return {
            "kind": "leafspine",
            "leaves": self.leaves,
            "spines": self.spines,
            "hosts": self.hosts_per_leaf,
            "gbps": self.gbps,
            "uplink_gbps": self.effective_uplink_gbps,
            "latency_ns": self.latency_ns,
            "oversubscription": self.oversubscription,
            "failures": [f"{f.node_a}-{f.node_b}:{f.gbps:g}" for f in self.failures],
            **_describe_tier(self.intra_host),
        }


def _describe_tier(tier: IntraHostTier | None) -> dict:
    if tier is None:
        return {}
    return {"gpus_per_host": tier.gpus, "nvlink_gbps": tier.gbps, "nvlink_latency_ns": tier.latency_ns}


@dataclass(frozen=True)
class RailLeafSpine(LeafSpine):
    """Rail-optimised leaf-spine: GPU i of every server has its own NIC on rail leaf i.

    Servers of ``intra_host.gpus`` GPUs (the rails) come in groups of ``hosts_per_leaf``;
    group g has one leaf per rail, ``leaves = groups × rails``, and every leaf connects to
    every spine. Endpoint (host) ``s × rails + i`` is GPU i of server s; its NIC is on
    leaf ``(s // hosts_per_leaf) × rails + i``. GPUs of one server talk over the
    intra-host tier, so a ring over same-index GPUs of a group never leaves its rail leaf.
    """

    name: str = "rail"

    def __post_init__(self) -> None:
        if self.intra_host is None:
            raise NasfleetError("bad rail topology: it needs GPUs per server (the rails) and an NVLink rate")
        if self.leaves % self.intra_host.gpus:
            raise NasfleetError(f"bad rail topology: {self.leaves} leaves are not a whole number of groups of "
                                f"{self.intra_host.gpus} rails")
        super().__post_init__()

    @property
    def endpoints_per_server(self) -> int:  # type: ignore[override]
        return self.intra_host.gpus

    @property
    def rails(self) -> int:
        return self.intra_host.gpus

    @cached_property
    def host_tor(self) -> np.ndarray:
        endpoint = np.arange(self.num_hosts, dtype=np.int64)
        server, rail = endpoint // self.rails, endpoint % self.rails
        return (server // self.hosts_per_leaf) * self.rails + rail

    def describe(self) -> dict:
        return {**super().describe(), "kind": "rail", "groups": self.leaves // self.rails, "rails": self.rails}


@dataclass(frozen=True)
class FatTree(Topology):
    """Three-tier fat-tree: pods of leaves (edge) and spines (aggregation), plus cores.

    Spine ``i`` of every pod connects to cores ``i·cores_per_spine ..``; a k-ary
    fat-tree is ``pods=k, leaves_per_pod=spines_per_pod=cores_per_spine=hosts=k/2``
    (see :func:`fat_tree_k`).
    """

    pods: int
    leaves_per_pod: int
    spines_per_pod: int
    cores_per_spine: int
    hosts_per_leaf: int
    gbps: float
    uplink_gbps: float | None = None
    latency_ns: float = 0.0
    failures: tuple[LinkFailure, ...] = field(default_factory=tuple)
    name: str = "fattree"

    def __post_init__(self) -> None:
        _check_positive(
            pods=self.pods,
            leaves=self.leaves_per_pod,
            spines=self.spines_per_pod,
            cores=self.cores_per_spine,
            hosts=self.hosts_per_leaf,
            gbps=self.gbps,
        )
        self._check_links()

    @property
    def num_hosts(self) -> int:
        return self.num_tors * self.hosts_per_leaf

    @property
    def num_tors(self) -> int:
        return self.pods * self.leaves_per_pod

    @property
    def num_spines(self) -> int:
        return self.pods * self.spines_per_pod

    @property
    def num_cores(self) -> int:
        return self.spines_per_pod * self.cores_per_spine

    @property
    def num_links(self) -> int:
        return 2 * self.num_hosts + 2 * self.num_tors * self.spines_per_pod + 2 * self.num_spines * self.cores_per_spine

    @property
    def _bases(self) -> tuple[int, int, int, int]:
        edge = self.num_tors * self.spines_per_pod
        agg = self.num_spines * self.cores_per_spine
        b0 = 2 * self.num_hosts
        return b0, b0 + edge, b0 + 2 * edge, b0 + 2 * edge + agg

    def _leaf_up(self, leaf, spine_in_pod):
        return self._bases[0] + leaf * self.spines_per_pod + spine_in_pod

    def _leaf_down(self, leaf, spine_in_pod):
        return self._bases[1] + leaf * self.spines_per_pod + spine_in_pod

    def _spine_up(self, spine, core_in_group):
        return self._bases[2] + spine * self.cores_per_spine + core_in_group

    def _spine_down(self, spine, core_in_group):
        return self._bases[3] + spine * self.cores_per_spine + core_in_group

    def _nominal_link_bytes_per_s(self) -> np.ndarray:
        capacity = np.empty(self.num_links)
        capacity[: 2 * self.num_hosts] = gbps_to_bytes_per_s(self.gbps)
        capacity[2 * self.num_hosts :] = gbps_to_bytes_per_s(self.gbps if self.uplink_gbps is None else self.uplink_gbps)
        return capacity

    def _all_fabric_paths(self, src_tor: np.ndarray, dst_tor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, c = self.spines_per_pod, self.cores_per_spine
        src_pod, dst_pod = src_tor // self.leaves_per_pod, dst_tor // self.leaves_per_pod
        pairs, links = [], []

        local = np.flatnonzero(src_tor == dst_tor)
        pairs.append(local)
        links.append(np.full((len(local), 4), -1, dtype=np.int64))

        in_pod = np.flatnonzero((src_tor != dst_tor) & (src_pod == dst_pod))
        pair = np.repeat(in_pod, a)
        spine = np.tile(np.arange(a, dtype=np.int64), len(in_pod))
        pad = np.full(len(pair), -1, dtype=np.int64)
        pairs.append(pair)
        links.append(np.stack([self._leaf_up(src_tor[pair], spine), self._leaf_down(dst_tor[pair], spine), pad, pad], 1))

        cross = np.flatnonzero(src_pod != dst_pod)
        pair = np.repeat(cross, a * c)
        spine = np.tile(np.repeat(np.arange(a, dtype=np.int64), c), len(cross))
        core = np.tile(np.arange(c, dtype=np.int64), a * len(cross))
        pairs.append(pair)
        links.append(
            np.stack(
                [
                    self._leaf_up(src_tor[pair], spine),
                    self._spine_up(src_pod[pair] * a + spine, core),
                    self._spine_down(dst_pod[pair] * a + spine, core),
                    self._leaf_down(dst_tor[pair], spine),
                ],
                axis=1,
            )
        )
        return np.concatenate(pairs), np.concatenate(links)

    def _path_table_shape(self) -> tuple[int, int]:
        return self.spines_per_pod * self.cores_per_spine, 4

    def _switch_link_ids(self, a: tuple[str, int], b: tuple[str, int]) -> list[int]:
        ends = dict([a, b]) if a[0] != b[0] else {}
        if set(ends) == {"leaf", "spine"}:
            leaf, spine = ends["leaf"], ends["spine"]
            if leaf >= self.num_tors or spine >= self.num_spines:
                return []
            if leaf // self.leaves_per_pod != spine // self.spines_per_pod:
                return []
            i = spine % self.spines_per_pod
            return [int(self._leaf_up(leaf, i)), int(self._leaf_down(leaf, i))]
        if set(ends) == {"spine", "core"}:
            spine, core = ends["spine"], ends["core"]
            if spine >= self.num_spines or core >= self.num_cores:
                return []
            if core // self.cores_per_spine != spine % self.spines_per_pod:
                return []
            j = core % self.cores_per_spine
            return [int(self._spine_up(spine, j)), int(self._spine_down(spine, j))]
        return []

    def link_label(self, link: int) -> str:
        h = self.num_hosts
        b0, b1, b2, b3 = self._bases
        a, c = self.spines_per_pod, self.cores_per_spine
        if link < h:
            return f"host{link}->leaf{link // self.hosts_per_leaf}"
        if link < b0:
            return f"leaf{(link - h) // self.hosts_per_leaf}->host{link - h}"
        if link < b2:
            leaf, i = divmod(link - (b0 if link < b1 else b1), a)
            spine = (leaf // self.leaves_per_pod) * a + i
            return f"leaf{leaf}->spine{spine}" if link < b1 else f"spine{spine}->leaf{leaf}"
        spine, j = divmod(link - (b2 if link < b3 else b3), c)
        core = (spine % a) * c + j
        return f"spine{spine}->core{core}" if link < b3 else f"core{core}->spine{spine}"

    def describe(self) -> dict:
        return {
            "kind": "fattree",
            "pods": self.pods,
            "leaves": self.leaves_per_pod,
            "spines": self.spines_per_pod,
            "cores": self.cores_per_spine,
            "hosts": self.hosts_per_leaf,
            "gbps": self.gbps,
            "uplink_gbps": self.gbps if self.uplink_gbps is None else self.uplink_gbps,
            "latency_ns": self.latency_ns,
            "failures": [f"{f.node_a}-{f.node_b}:{f.gbps:g}" for f in self.failures],
        }


def leaf_spine(
    leaves: int,
    spines: int,
    hosts: int,
    gbps: float,
    uplink_gbps: float | None = None,
    oversubscription: float | None = None,
    latency_ns: float = 0.0,
    failures: tuple[LinkFailure, ...] = (),
    name: str | None = None,
    intra_host: IntraHostTier | None = None,
) -> LeafSpine:
    """A leaf-spine fabric; give ``uplink_gbps`` or ``oversubscription``, not both; ``intra_host``
    adds GPUs per host on an NVLink-class tier."""
    if uplink_gbps is not None and oversubscription is not None:
        raise NasfleetError("bad topology: give uplink_gbps or oversubscription, not both")
    if oversubscription is not None:
        _check_positive(oversubscription=oversubscription)
        uplink_gbps = hosts * gbps / (spines * oversubscription)
    return LeafSpine(
        leaves=leaves,
        spines=spines,
        hosts_per_leaf=hosts,
        gbps=gbps,
        uplink_gbps=uplink_gbps,
        latency_ns=latency_ns,
        failures=tuple(failures),
        name=name or f"leafspine-{leaves}x{spines}x{hosts}",
        intra_host=intra_host,
    )


def rail_leaf_spine(
    servers: int,
    rails: int,
    spines: int,
    gbps: float,
    nvlink_gbps: float,
    servers_per_leaf: int | None = None,
    uplink_gbps: float | None = None,
    latency_ns: float = 0.0,
    nvlink_latency_ns: float = 0.0,
    failures: tuple[LinkFailure, ...] = (),
    name: str | None = None,
) -> RailLeafSpine:
    """A rail-optimised leaf-spine of ``servers`` servers with ``rails`` GPUs (and NICs) each.

    ``servers_per_leaf`` (default: all of them) servers share a group of rail leaves.
    """
    per_leaf = servers if servers_per_leaf is None else servers_per_leaf
    _check_positive(servers=servers, rails=rails, servers_per_leaf=per_leaf)
    if servers % per_leaf:
        raise NasfleetError(f"bad rail topology: {servers} servers are not a whole number of groups of {per_leaf}")
    return RailLeafSpine(
        leaves=servers // per_leaf * rails,
        spines=spines,
        hosts_per_leaf=per_leaf,
        gbps=gbps,
        uplink_gbps=uplink_gbps,
        latency_ns=latency_ns,
        failures=tuple(failures),
        name=name or f"rail-{servers}x{rails}",
        intra_host=IntraHostTier(rails, nvlink_gbps, nvlink_latency_ns),
    )


def fat_tree_k(
    k: int, gbps: float, latency_ns: float = 0.0, failures: tuple[LinkFailure, ...] = (), name: str | None = None
) -> FatTree:
    """The classic k-ary fat-tree (k even): k pods, k³/4 hosts, full bisection."""
    if k < 2 or k % 2:
        raise NasfleetError(f"bad topology: fat-tree k must be an even integer >= 2, got {k}")
    half = k // 2
    return FatTree(
        pods=k,
        leaves_per_pod=half,
        spines_per_pod=half,
        cores_per_spine=half,
        hosts_per_leaf=half,
        gbps=gbps,
        latency_ns=latency_ns,
        failures=tuple(failures),
        name=name or f"fattree-k{k}",
    )


def with_host_gbps(topology: Topology, gbps: float) -> Topology:
    """The same fabric with host links at ``gbps`` (switch links keep their rate).

    Used to apply a calibrated per-byte cost: the effective NIC rate is 1/β.
    """
    _check_positive(gbps=gbps)
    uplink = topology.uplink_gbps if topology.uplink_gbps is not None else topology.gbps
    return dataclasses.replace(topology, gbps=float(gbps), uplink_gbps=uplink)
