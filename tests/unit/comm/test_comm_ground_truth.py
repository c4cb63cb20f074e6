"""Closed-form results the simulator must reproduce (relative error well under 0.1%)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nasfleet.comm import Step, build_collective, from_steps, leaf_spine, route_step, get_routing, simulate

GBPS = 400.0
B = GBPS * 1e9 / 8  # bytes/s
LAT_NS = 500.0
ROUTINGS = ["ecmp", "ecmp-4", "spray", "split"]
FIDELITIES = ["analytical", "flow"]
REL = 1e-6


@pytest.fixture(scope="module")
def fabric():
    """1:1 leaf-spine, 4 leaves x 4 spines x 4 hosts, 500 ns per link."""
    return leaf_spine(leaves=4, spines=4, hosts=4, gbps=GBPS, latency_ns=LAT_NS)


@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("fidelity", FIDELITIES)
@pytest.mark.parametrize("same_leaf", [False, True])
def test_single_flow_takes_alpha_plus_size_over_bandwidth(fabric, routing, fidelity, same_leaf):
    size = 3 * 2**20
    dst = 1 if same_leaf else 15
    coll = from_steps("p2p", "direct", 16, size, [(Step.of([0], [dst], size), 1)])
    alpha = (2 if same_leaf else 4) * LAT_NS * 1e-9
    result = simulate(fabric, coll, routing, fidelity)
    assert result.completion_time_s == pytest.approx(alpha + size / B, rel=REL)


@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("fidelity", FIDELITIES)
@pytest.mark.parametrize("ranks", [16, 12, 7])
def test_ring_allreduce_matches_textbook_under_every_routing(fabric, routing, fidelity, ranks):
    n = 2**30
    coll = build_collective("allreduce", ranks, n, "ring")
    alpha = 4 * LAT_NS * 1e-9  # every step has a flow that crosses the spine layer
    expected = 2 * (ranks - 1) * alpha + 2 * (ranks - 1) / ranks * n / B
    result = simulate(fabric, coll, routing, fidelity, seed=3)
    assert result.completion_time_s == pytest.approx(expected, rel=REL)
    assert result.steps == 2 * (ranks - 1)


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_halving_doubling_under_spray_meets_the_nic_bound(fidelity):
    topo = leaf_spine(leaves=8, spines=4, hosts=4, gbps=GBPS)
    p, n = 32, 2**28
    result = simulate(topo, build_collective("allreduce", p, n, "halving-doubling"), "spray", fidelity)
    assert result.completion_time_s == pytest.approx(2 * (p - 1) / p * n / B, rel=REL)
    assert result.steps == 2 * int(math.log2(p))


def test_halving_doubling_latency_term_is_two_log_p_alpha():
    topo = leaf_spine(leaves=8, spines=4, hosts=1, gbps=GBPS, latency_ns=LAT_NS)  # every partner is on another leaf
    p, n = 8, 2**24
    result = simulate(topo, build_collective("allreduce", p, n, "halving-doubling"), "split", "flow")
    alpha = 4 * LAT_NS * 1e-9
    assert result.completion_time_s == pytest.approx(2 * math.log2(p) * alpha + 2 * (p - 1) / p * n / B, rel=REL)


def test_halving_doubling_under_ecmp_is_slower_than_the_nic_bound():
    topo = leaf_spine(leaves=8, spines=4, hosts=4, gbps=GBPS)
    p, n = 32, 2**28
    coll = build_collective("allreduce", p, n, "halving-doubling")
    worst = max(simulate(topo, coll, "ecmp", "flow", seed=s).completion_time_s for s in range(4))
    assert worst > 1.2 * 2 * (p - 1) / p * n / B


@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("fidelity", FIDELITIES)
@pytest.mark.parametrize("senders", [2, 5, 15])
def test_incast_takes_n_times_size_over_bandwidth(fabric, routing, fidelity, senders):
    size = 2**22
    coll = build_collective("incast", senders + 1, size)
    alpha = (4 if senders >= 4 else 2) * LAT_NS * 1e-9  # senders 4.. sit on other leaves
    result = simulate(fabric, coll, routing, fidelity)
    assert result.completion_time_s == pytest.approx(senders * size / B + alpha, rel=REL)


def test_pairwise_alltoall_under_spray_matches_textbook():
    topo = leaf_spine(leaves=4, spines=4, hosts=4, gbps=GBPS, latency_ns=LAT_NS)
    p, n = 16, 2**26
    result = simulate(topo, build_collective("alltoall", p, n, "pairwise"), "spray", "flow")
    alpha = 4 * LAT_NS * 1e-9
    assert result.completion_time_s == pytest.approx((p - 1) * alpha + (p - 1) / p * n / B, rel=REL)


def test_ring_allgather_and_reducescatter_meet_their_lower_bound():
    topo = leaf_spine(leaves=4, spines=2, hosts=4, gbps=GBPS)
    p, n = 16, 2**26
    for kind in ("allgather", "reducescatter"):
        result = simulate(topo, build_collective(kind, p, n, "ring"), "split", "flow")
        assert result.completion_time_s == pytest.approx((p - 1) / p * n / B, rel=REL)


@pytest.mark.parametrize("spines", range(1, 17))
def test_splitting_rule_gives_spraying_load_with_lcm_subflows(spines):
    """A leaf with r equal flows over s spines: every uplink carries r·f/s, lcm(r, s) subflows."""
    f = 6.0 * 2**20
    for r in range(1, 25):
        topo = leaf_spine(leaves=2, spines=spines, hosts=r, gbps=GBPS)
        step = Step.of(np.arange(r), r + np.arange(r), f)
        transfers = route_step(topo, step, np.arange(2 * r), get_routing("split"))
        uplinks = [topo.links_between("leaf0", f"spine{j}")[0] for j in range(spines)]
        load = transfers.link_bytes()[uplinks]
        assert np.allclose(load, r * f / spines, rtol=1e-12), (r, spines)
        assert transfers.num_transfers == math.lcm(r, spines), (r, spines)
        # each subflow is on one path: host up, leaf up, spine down, host down
        assert np.all(np.diff(transfers.incidence.indptr) == 4)
        assert np.allclose(np.bincount(transfers.flow, weights=transfers.size_bytes), f)


@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_ring_allreduce_on_a_fat_tree(routing, fidelity):
    from nasfleet.comm import fat_tree_k

    topo = fat_tree_k(4, gbps=GBPS, latency_ns=LAT_NS)
    p, n = topo.num_hosts, 2**28
    alpha = 6 * LAT_NS * 1e-9  # some ring neighbour is in another pod: six links
    result = simulate(topo, build_collective("allreduce", p, n, "ring"), routing, fidelity, seed=1)
    assert result.completion_time_s == pytest.approx(2 * (p - 1) * alpha + 2 * (p - 1) / p * n / B, rel=REL)


def test_oversubscription_slows_cross_leaf_traffic_by_the_ratio():
    """2:1 oversubscribed leaves: all hosts of leaf 0 sending to leaf 1 get half their NIC rate."""
    topo = leaf_spine(leaves=2, spines=2, hosts=4, gbps=GBPS, oversubscription=2.0)
    size = 2**24
    coll = from_steps("custom", "direct", 8, size, [(Step.of(np.arange(4), 4 + np.arange(4), size), 1)])
    for routing in ("spray", "split"):
        assert simulate(topo, coll, routing, "flow").completion_time_s == pytest.approx(2 * size / B, rel=REL)
