"""Minimal splitting per ToR: ``split`` coordinates a ToR's destinations, ``split-group`` does not."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nasfleet.comm import LinkFailure, Step, build_collective, fat_tree_k, get_routing, leaf_spine, route_step, simulate
from nasfleet.comm.analytical import step_load
from nasfleet.comm.routing import RoutingContext, per_tor_min_subflows
from nasfleet.errors import NasfleetError


def test_pairwise_alltoall_on_256_ranks_uses_the_per_tor_minimum():
    """16 × 16, 16 hosts per leaf: in step k a leaf's flows leave it for one or two leaves.

    Per ToR: steps 1..15 and 241..255 send k (or 256 − k) flows off the leaf, lcm(k, 16)
    subflows, plus one per flow that stays; the 225 steps between send 16 flows,
    lcm(16, 16) = 16. Σ_k lcm(k, 16) for k = 1..15 is 1,360, so per ToR
    2·1,360 + 225·16 + 2·120 (flows that stay) = 6,560, and 16 ToRs give 104,960.
    Splitting per destination leaf instead pays lcm(r_D, 16) for each of the two groups.
    """
    topo = leaf_spine(leaves=16, spines=16, hosts=16, gbps=400, latency_ns=500)
    coll = build_collective("alltoall", 256, 2**20, algorithm="pairwise")
    per_tor = 16 * (2 * sum(np.lcm(k, 16) for k in range(1, 16)) + 225 * 16 + 2 * sum(16 - k for k in range(1, 16)))
    assert per_tor == 104_960
    results = {name: simulate(topo, coll, routing=name, fidelity="analytical") for name in ("spray", "split", "split-group")}
    assert results["split"].subflows == results["split"].min_subflows == per_tor
    assert results["split-group"].subflows == 660_480
    assert results["split-group"].to_dict()["min_subflows"] == per_tor  # the CLI's JSON sets them side by side
    for name in ("split", "split-group"):
        assert results[name].max_congestion_s == pytest.approx(results["spray"].max_congestion_s, rel=1e-12)
        assert np.allclose(results[name].link_bytes_total(), results["spray"].link_bytes_total(), rtol=1e-12)


def test_a_ring_on_a_fat_tree_keeps_every_flow_whole():
    """k = 8: the one flow leaving a leaf (or a pod) per ring step is held by its NIC, so
    cutting it over the 16 cross-pod paths cannot lower the congestion."""
    topo = fat_tree_k(8, gbps=400)
    coll = build_collective("allreduce", 128, 2**20, algorithm="ring")
    split = simulate(topo, coll, routing="split", fidelity="analytical")
    spray = simulate(topo, coll, routing="spray", fidelity="analytical")
    assert split.flows == split.subflows == 2 * 127 * 128
    assert simulate(topo, coll, routing="split-group", fidelity="analytical").subflows == 81_280
    assert split.max_congestion_s == pytest.approx(spray.max_congestion_s, rel=1e-12)


def test_halving_doubling_on_a_fat_tree_splits_where_whole_flows_would_collide():
    """k = 4: a cross-pod step sends a leaf's 2 flows to one remote leaf over 4 paths; whole
    they would share a core link each way with another leaf's, so they are split."""
    topo = fat_tree_k(4, gbps=400)
    coll = build_collective("allreduce", 16, 2**20, algorithm="halving-doubling")
    split = simulate(topo, coll, routing="split", fidelity="analytical")
    spray = simulate(topo, coll, routing="spray", fidelity="analytical")
    assert split.max_congestion_s == pytest.approx(spray.max_congestion_s, rel=1e-12)
    assert split.flows < split.subflows <= simulate(topo, coll, routing="split-group", fidelity="analytical").subflows


def one_step_counts(topo, step):
    """(split subflows, split-group subflows, per-ToR minimum) of one step."""
    hosts = np.arange(topo.num_hosts)
    count = lambda name: route_step(topo, step, hosts, get_routing(name)).num_transfers
    return count("split"), count("split-group"), per_tor_min_subflows(RoutingContext.build(topo, step, hosts))


def test_a_tor_whose_destinations_need_fewer_subflows_is_split_per_destination():
    """Leaf 0 sends 1 flow to leaf 1 and 2 to leaf 2 over 4 spines: one rotation needs
    lcm(3, 4) = 12 subflows, per destination lcm(1, 4) + lcm(2, 4) = 8."""
    topo = leaf_spine(leaves=3, spines=4, hosts=3, gbps=100)
    step = Step.of([0, 1, 2], [3, 6, 7], 1.0)
    assert one_step_counts(topo, step) == (8, 8, 12)


def test_where_the_per_tor_minimum_is_unreachable_split_falls_back_to_groups():
    """3 leaves × 2 spines: leaf 0 sends to leaves 1 and 2, leaf 1 sends 2 flows to leaf 2.

    lcm(2, 2) = 2 per ToR keeps every flow whole, but then leaf 2 receives 3 whole flows
    over 2 spines and cannot get 1.5 on each as spraying gives. Per group: leaf 0's lone
    flows are cut in 2 each, leaf 1's 2 flows stay whole: 6 subflows.
    """
    topo = leaf_spine(leaves=3, spines=2, hosts=2, gbps=100)
    step = Step.of([0, 1, 2, 3], [2, 4, 4, 5], 1.0)
    assert one_step_counts(topo, step) == (6, 6, 4)
    hosts = np.arange(topo.num_hosts)
    split, spray = (route_step(topo, step, hosts, get_routing(n)) for n in ("split", "spray"))
    assert np.allclose(split.link_bytes(), spray.link_bytes(), rtol=1e-12)


def test_split_group_is_registered():
    assert get_routing("Split-Group").name == "split-group"


@st.composite
def fabrics(draw):
    """Random leaf-spines and fat-trees, healthy or with up to two cut switch cables."""
    if draw(st.booleans()):
        topo = leaf_spine(leaves=draw(st.integers(2, 5)), spines=draw(st.integers(1, 6)), hosts=draw(st.integers(1, 4)), gbps=100)
    else:
        topo = fat_tree_k(draw(st.sampled_from([2, 4])), gbps=100)
    cuts = draw(st.lists(st.integers(2 * topo.num_hosts, topo.num_links - 1), max_size=2, unique=True))
    failures = tuple(LinkFailure(*topo.link_label(link).split("->")) for link in cuts)
    if failures:
        topo = (leaf_spine(topo.leaves, topo.spines, topo.hosts_per_leaf, 100, failures=failures)
                if hasattr(topo, "leaves") else fat_tree_k(2 * topo.hosts_per_leaf, gbps=100, failures=failures))
    return topo


@st.composite
def fabrics_and_steps(draw):
    topo = draw(fabrics())
    hosts = topo.num_hosts
    if draw(st.booleans()):  # a shift pattern, as ring and pairwise all-to-all steps are
        shift = draw(st.integers(1, max(1, hosts - 1)))
        src = np.arange(hosts)
        return topo, Step.of(src, (src + shift) % hosts, draw(st.sampled_from([1.0, 3.0]))), True
    flows = draw(st.integers(1, 24))
    src = draw(st.lists(st.integers(0, hosts - 1), min_size=flows, max_size=flows))
    dst = draw(st.lists(st.integers(0, hosts - 1), min_size=flows, max_size=flows))
    sizes = draw(st.lists(st.sampled_from([1.0, 2.0, 8.0]), min_size=flows, max_size=flows))
    return topo, Step.of(src, dst, sizes), False


def expected_shift_subflows(topo, step) -> int:
    """Per ToR the fewer of lcm(r, s) and Σ_D lcm(r_D, s) (s spines), one per flow that stays."""
    tor = topo.host_tor
    src, dst = tor[step.src], tor[step.dst]
    total = int(np.sum(src == dst))
    for leaf in range(topo.num_tors):
        leaving = (src == leaf) & (dst != leaf)
        if leaving.any():
            per_destination = sum(int(np.lcm(n, topo.spines)) for n in np.unique(dst[leaving], return_counts=True)[1])
            total += min(int(np.lcm(int(leaving.sum()), topo.spines)), per_destination)
    return total


@settings(max_examples=150, deadline=None, derandomize=True)
@given(fabrics_and_steps())
def test_split_loads_links_as_spray_does_with_at_most_the_per_group_subflows(case):
    topo, step, shift = case
    hosts = np.arange(topo.num_hosts)
    try:
        routed = {name: route_step(topo, step, hosts, get_routing(name)) for name in ("spray", "split", "split-group")}
    except NasfleetError:  # the cuts leave a pair without a path
        assume(False)
    split, spray = routed["split"], routed["spray"]
    capacity = topo.link_bytes_per_s
    assert np.allclose(np.bincount(split.flow, weights=split.size_bytes, minlength=step.num_flows), step.size_bytes)
    assert np.all(np.diff(split.incidence.indptr) <= 6)  # one path per subflow
    congestion = {name: step_load(t, capacity).congestion_s for name, t in routed.items()}
    assert congestion["split"] == pytest.approx(congestion["spray"], rel=1e-12)
    assert split.num_transfers <= routed["split-group"].num_transfers
    if hasattr(topo, "spines") or split.num_transfers > step.num_flows:
        # a leaf-spine, or a fat-tree step that had to be split: spraying's bytes on every link
        assert np.allclose(split.link_bytes(), spray.link_bytes(), rtol=1e-12, atol=1e-12)
    if shift and hasattr(topo, "spines") and not topo.failures:
        # the theorem's setting: one size, all s paths, turns that fit together at every destination
        assert split.num_transfers == expected_shift_subflows(topo, step)
        assert split.num_transfers <= per_tor_min_subflows(RoutingContext.build(topo, step, hosts))
