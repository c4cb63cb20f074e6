"""The all-to-all fast path (nasfleet.comm.symmetric) against the general engine."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasfleet.comm import LinkFailure, build_collective, leaf_spine, simulate
from nasfleet.comm import symmetric
from nasfleet.errors import NasfleetError

ENV = "NASFLEET_COMM_MAX_MEMORY"


def _same(fast, general):
    for key in ("completion_time_s", "max_congestion_s", "max_link_utilization"):
        assert getattr(fast, key) == pytest.approx(getattr(general, key), rel=1e-9, abs=1e-15), key
    for key in ("flows", "subflows", "min_subflows", "steps", "routing"):
        assert getattr(fast, key) == getattr(general, key), key
    np.testing.assert_allclose(fast.step_times_s(), general.step_times_s(), rtol=1e-9)
    np.testing.assert_allclose(fast.link_bytes_total(), general.link_bytes_total(), rtol=1e-9, atol=1e-6)


@settings(max_examples=14, deadline=None, derandomize=True)
@given(
    leaves=st.integers(1, 5),
    spines=st.integers(1, 6),
    hosts=st.integers(1, 5),
    oversubscription=st.sampled_from([None, 0.5, 2.0, 3.0]),
    used=st.integers(1, 5),
    whole_leaves=st.booleans(),
    algorithm=st.sampled_from(["pairwise", "direct"]),
    routing=st.sampled_from(["spray", "split", "ecmp"]),
    fidelity=st.sampled_from(["flow", "analytical"]),
    seed=st.integers(0, 3),
)
def test_the_fast_path_equals_the_general_engine_on_random_symmetric_leaf_spines(
    leaves, spines, hosts, oversubscription, used, whole_leaves, algorithm, routing, fidelity, seed
):
    extra = {} if oversubscription is None else {"oversubscription": oversubscription}
    topo = leaf_spine(leaves=leaves, spines=spines, hosts=hosts, gbps=400, latency_ns=500, **extra)
    # whole leaves, or part of one leaf
    ranks = min(used, leaves) * hosts if whole_leaves else min(used, hosts)
    if ranks < 2:
        return
    coll = build_collective("alltoall", ranks, 2**20, algorithm)
    assert symmetric.applies(topo, coll, routing, 1, "contiguous", True, False)
    _same(simulate(topo, coll, routing, fidelity, seed=seed), simulate(topo, coll, routing, fidelity, seed=seed, fast_path=False))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    leaves=st.integers(1, 6),
    spines=st.integers(1, 7),
    hosts=st.integers(1, 6),
    oversubscription=st.sampled_from([None, 0.5, 2.0]),
    whole_leaves=st.booleans(),
    fidelity=st.sampled_from(["flow", "flow", "analytical"]),
    seed=st.integers(0, 5),
)
def test_direct_all_to_all_under_ecmp_equals_the_general_engine(
    leaves, spines, hosts, oversubscription, whole_leaves, fidelity, seed
):
    extra = {} if oversubscription is None else {"oversubscription": oversubscription}
    topo = leaf_spine(leaves=leaves, spines=spines, hosts=hosts, gbps=400, latency_ns=500, **extra)
    ranks = leaves * hosts if whole_leaves else hosts
    if ranks < 2:
        return
    coll = build_collective("alltoall", ranks, 2**20, "direct")
    assert symmetric.applies(topo, coll, "ecmp", 1, "contiguous", True, False)
    fast = simulate(topo, coll, "ecmp", fidelity, seed=seed)
    general = simulate(topo, coll, "ecmp", fidelity, seed=seed, fast_path=False)
    _same(fast, general)
    assert fast.completion_time_s > 0


def test_direct_all_to_all_under_ecmp_is_slower_than_spraying_where_hashes_collide():
    # 8 leaves x 8 spines x 8 hosts: 4,032 flows, hundreds of distinct rates (the general engine, before
    # keeps_its_first_rates, recomputed them at every completion)
    topo = leaf_spine(leaves=8, spines=8, hosts=8, gbps=400, latency_ns=500)
    coll = build_collective("alltoall", 64, 2**24, "direct")
    ecmp = simulate(topo, coll, "ecmp", seed=3)
    _same(ecmp, simulate(topo, coll, "ecmp", seed=3, fast_path=False))
    assert ecmp.completion_time_s > 1.01 * simulate(topo, coll, "spray").completion_time_s


@pytest.mark.parametrize(
    "topo, routing, placement",
    [
        (leaf_spine(4, 4, 4, gbps=400, failures=(LinkFailure("leaf0", "spine1"),)), "spray", "contiguous"),
        (leaf_spine(4, 4, 4, gbps=400, failures=(LinkFailure("leaf0", "spine1", 100),)), "split", "contiguous"),
        (leaf_spine(4, 4, 4, gbps=400), "spray-weighted", "contiguous"),
        (leaf_spine(4, 4, 4, gbps=400), "ecmp-4", "contiguous"),
        (leaf_spine(4, 4, 4, gbps=400), "split", "strided"),
    ],
)
def test_failed_links_other_routings_and_placements_take_the_general_engine(topo, routing, placement):
    coll = build_collective("alltoall", 16, 2**20, "pairwise")
    assert not symmetric.applies(topo, coll, routing, 1, placement, True, False)
    assert simulate(topo, coll, routing, placement=placement).completion_time_s > 0


def test_the_memory_guard_lets_the_fast_path_through_and_still_refuses_the_general_engine(monkeypatch):
    topo = leaf_spine(leaves=32, spines=32, hosts=32, gbps=400)
    coll = build_collective("alltoall", 1024, 2**30, "direct")  # 1,047,552 flows, built only when read
    monkeypatch.setenv(ENV, "64MiB")
    assert simulate(topo, coll, "split").completion_time_s > 0
    with pytest.raises(NasfleetError, match=r"direct alltoall over 1,024 ranks \(1,047,552 flows\) would need about"):
        simulate(topo, coll, "spray-weighted")


def test_pairwise_all_to_all_at_32768_hosts_runs_on_the_fast_path():
    topo = leaf_spine(leaves=1024, spines=32, hosts=32, gbps=400, latency_ns=500)
    result = simulate(topo, build_collective("alltoall", 32768, 2**30, "pairwise"), "spray")
    # NIC-bound: (p − 1)/p · n / B plus 4 links of latency per step
    p, n, b = 32768, 2**30, 400e9 / 8
    assert result.completion_time_s == pytest.approx((p - 1) / p * n / b + (p - 1) * 4 * 500e-9, rel=1e-9)
    assert len(result.patterns) < 100


def test_a_step_too_large_to_route_is_refused_before_its_flows_are_built(monkeypatch):
    topo = leaf_spine(leaves=32, spines=32, hosts=32, gbps=400)
    coll = build_collective("alltoall", 1024, 2**24, "direct")  # building fits in 256 MiB, routing does not
    monkeypatch.setenv(ENV, "256MiB")
    with pytest.raises(NasfleetError, match=r"routing one step of 1,047,552 flows .* would need about 280MiB"):
        simulate(topo, coll, "ecmp-2")
    assert not coll.patterns.built
