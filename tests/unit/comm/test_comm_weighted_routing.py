"""Capacity-aware spraying and splitting (spray-weighted, split-weighted) under degraded and failed links."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nasfleet.comm import LeafSpine, LinkFailure, Step, fat_tree_k, from_steps, get_routing, leaf_spine, route_step, routing_names, simulate
from nasfleet.errors import NasfleetError

GiB = 2**30


def one_step(step: Step, ranks: int):
    return from_steps("custom", "one-step", ranks, float(step.size_bytes.max()), [(step, 1)])


def test_weighted_split_with_a_degraded_uplink_meets_the_hand_calculated_bottleneck():
    """2 leaves × 4 spines, 4 hosts per leaf, 400 Gb/s everywhere except leaf0-spine0 at 100 Gb/s.

    Hosts 0..3 (leaf 0) each send S = 1 GiB to hosts 4..7 (leaf 1), all at once.

    Capacity-aware: leaf 0's four uplinks carry all 4·S bytes between them and together
    move (3·400 + 100) Gb/s = 1,300 Gb/s = 162.5 GB/s; with bytes split in proportion to
    capacity (4:4:4:1 of 4·S) every uplink drains at the same moment, after
    4·S / 162.5 GB/s = 26.43 ms. Each NIC then needs S / 26.43 ms = 40.6 GB/s, below its
    50 GB/s, and spine1..3 -> leaf1 carry what leaf0 -> spine1..3 carry, so the uplinks are
    the bottleneck. The last byte then crosses four links (host-leaf-spine-leaf-host) of
    500 ns each: CCT = 4·S / 162.5e9 + 4 · 500 ns.

    Equal split: r = s = 4 flows over 4 paths keeps one whole flow per spine, and the flow
    through spine0 moves S at 100 Gb/s = 12.5 GB/s: S / 12.5e9 + 4 · 500 ns = 85.9 ms.
    """
    latency_s = 500e-9
    topo = leaf_spine(leaves=2, spines=4, hosts=4, gbps=400, latency_ns=500,
                      failures=(LinkFailure("leaf0", "spine0", gbps=100),))
    coll = one_step(Step.of(np.arange(4), 4 + np.arange(4), GiB), 8)

    uplinks_bytes_per_s = (3 * 400 + 100) * 1e9 / 8
    weighted_s = 4 * GiB / uplinks_bytes_per_s + 4 * latency_s
    equal_s = GiB / (100e9 / 8) + 4 * latency_s
    assert GiB / (4 * GiB / uplinks_bytes_per_s) < 400e9 / 8  # the NIC is not the bottleneck

    for name in ("split-weighted", "spray-weighted"):
        for fidelity in ("flow", "analytical"):
            result = simulate(topo, coll, routing=name, fidelity=fidelity)
            assert result.completion_time_s == pytest.approx(weighted_s, rel=1e-12), (name, fidelity)
    for name in ("split", "spray"):
        assert simulate(topo, coll, routing=name).completion_time_s == pytest.approx(equal_s, rel=1e-12)
    # 4 flows over 4 paths cut at 4S·{4, 8, 12}/13: three cuts inside flows, so 4 + 3 subflows
    assert simulate(topo, coll, routing="split-weighted").subflows == 7


def test_weighted_routings_are_registered_and_equal_the_plain_ones_on_equal_paths():
    assert {"spray-weighted", "split-weighted"} <= set(routing_names())
    assert get_routing("Split-Weighted").name == "split-weighted"
    with pytest.raises(NasfleetError, match="unknown routing"):
        get_routing("split-weighted-2")
    # a removed link leaves equally fast paths: the weighted variants do what the equal ones do
    topo = leaf_spine(leaves=3, spines=4, hosts=4, gbps=400, latency_ns=300, failures=(LinkFailure("leaf1", "spine2"),))
    coll = one_step(Step.of(np.arange(12), (np.arange(12) + 4) % 12, 3 * 2**20), 12)
    assert simulate(topo, coll, "spray-weighted").completion_time_s == simulate(topo, coll, "spray").completion_time_s
    link_bytes = lambda name: simulate(topo, coll, name).link_bytes_total()
    assert np.allclose(link_bytes("split-weighted"), link_bytes("split"), rtol=1e-12)


@st.composite
def degraded_fabrics_and_steps(draw):
    if draw(st.booleans()):
        base = leaf_spine(leaves=draw(st.integers(2, 4)), spines=draw(st.integers(2, 5)), hosts=draw(st.integers(1, 4)), gbps=400)
    else:
        base = fat_tree_k(4, gbps=400)
    switch_links = np.arange(2 * base.num_hosts, base.num_links)
    chosen = draw(st.lists(st.sampled_from(list(switch_links)), max_size=3, unique=True))
    failures = []
    for link in chosen:
        a, b = base.link_label(int(link)).split("->")
        failures.append(LinkFailure(a, b, draw(st.sampled_from([0.0, 25.0, 100.0, 250.0]))))
    if isinstance(base, LeafSpine):
        topo = leaf_spine(base.leaves, base.spines, base.hosts_per_leaf, 400, failures=tuple(failures))
    else:
        topo = fat_tree_k(4, gbps=400, failures=tuple(failures))
    hosts = topo.num_hosts
    flows = draw(st.integers(1, 20))
    src = draw(st.lists(st.integers(0, hosts - 1), min_size=flows, max_size=flows))
    dst = draw(st.lists(st.integers(0, hosts - 1), min_size=flows, max_size=flows))
    sizes = draw(st.lists(st.sampled_from([1.0, 2.0, 3.0, 8.0]), min_size=flows, max_size=flows))
    return topo, Step.of(src, dst, sizes), bool(failures)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(degraded_fabrics_and_steps())
def test_weighted_split_puts_weighted_sprays_bytes_on_every_link(case):
    topo, step, degraded = case
    assume(step.num_flows > 0)
    hosts = np.arange(topo.num_hosts)
    try:
        routed = {name: route_step(topo, step, hosts, get_routing(name)) for name in
                  ("spray", "spray-weighted", "split-weighted")}
    except NasfleetError:  # the failures cut a pair off: no routing can deliver it
        assume(False)
    split = routed["split-weighted"]
    assert np.allclose(split.link_bytes(), routed["spray-weighted"].link_bytes(), rtol=1e-9, atol=1e-9)
    per_flow = np.bincount(split.flow, weights=split.size_bytes, minlength=step.num_flows)
    assert np.allclose(per_flow, step.size_bytes, rtol=1e-12)
    assert np.allclose(np.bincount(split.flow, weights=split.share, minlength=step.num_flows), 1.0)
    assert np.all(np.diff(split.incidence.indptr) <= 4 + 2)  # one path per subflow
    # r flows of one ToR pair over s paths give at most r + s − 1 subflows
    tor = topo.host_tor
    key = tor[step.src] * topo.num_tors + tor[step.dst]
    pairs, r = np.unique(key, return_counts=True)
    s = topo.fabric_paths(pairs // topo.num_tors, pairs % topo.num_tors).paths_per_pair
    assert split.num_transfers <= int((r + s - 1).sum())
    capacity = topo.link_bytes_per_s
    assert np.all(split.link_bytes()[capacity == 0] == 0)
    if not degraded:
        assert np.allclose(routed["spray-weighted"].link_bytes(), routed["spray"].link_bytes(), rtol=1e-12)
