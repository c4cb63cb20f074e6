"""Routing schedules: ECMP statistics, congestion ordering and byte conservation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasfleet.comm import Step, fat_tree_k, get_routing, leaf_spine, route_step, routing_names
from nasfleet.comm.analytical import step_load
from nasfleet.errors import NasfleetError


@pytest.mark.parametrize("spines", [4, 8, 16, 32])
def test_ecmp_distinct_paths_match_balls_into_bins(spines):
    """k = s flows hashed onto s spines use s·(1 − (1 − 1/s)^k) spines on average."""
    topo = leaf_spine(leaves=2, spines=spines, hosts=spines, gbps=100)
    step = Step.of(np.arange(spines), spines + np.arange(spines), 1.0)
    uplinks = [topo.links_between("leaf0", f"spine{j}")[0] for j in range(spines)]
    routing = get_routing("ecmp")
    used = np.array(
        [
            np.count_nonzero(route_step(topo, step, np.arange(2 * spines), routing, seed).link_bytes()[uplinks])
            for seed in range(1500)
        ]
    )
    expected = spines * (1 - (1 - 1 / spines) ** spines)
    stderr = used.std(ddof=1) / np.sqrt(len(used))
    assert abs(used.mean() - expected) < 4 * stderr + 1e-9
    # and it is close to the large-s limit (1 − 1/e)·s
    assert used.mean() / spines == pytest.approx(1 - np.exp(-1), abs=0.06)


def test_ecmp_hash_is_seeded_and_stable_across_steps():
    topo = leaf_spine(leaves=4, spines=8, hosts=4, gbps=100)
    step = Step.of(np.arange(8), (np.arange(8) + 5) % 16, 1.0)
    route = lambda seed: route_step(topo, step, np.arange(16), get_routing("ecmp"), seed).incidence.toarray()
    assert np.array_equal(route(7), route(7))
    assert any(not np.array_equal(route(0), route(s)) for s in range(1, 5))


def test_routing_registry_names_and_errors():
    assert {"ecmp", "spray", "split"} <= set(routing_names())
    assert get_routing("ecmp-7").name == "ecmp-7"
    assert get_routing("ECMP").name == "ecmp"
    for bad in ("ecmp-0", "ecmp-x", "bogus", "spray-2"):
        with pytest.raises(NasfleetError, match="unknown routing"):
            get_routing(bad)


@st.composite
def fabrics_and_steps(draw):
    if draw(st.booleans()):
        topo = leaf_spine(
            leaves=draw(st.integers(2, 5)), spines=draw(st.integers(1, 6)), hosts=draw(st.integers(1, 4)), gbps=100
        )
    else:
        topo = fat_tree_k(draw(st.sampled_from([2, 4])), gbps=100)
    hosts = topo.num_hosts
    flows = draw(st.integers(1, 24))
    src = draw(st.lists(st.integers(0, hosts - 1), min_size=flows, max_size=flows))
    dst = draw(st.lists(st.integers(0, hosts - 1), min_size=flows, max_size=flows))
    sizes = draw(st.lists(st.sampled_from([1.0, 2.0, 3.0, 8.0]), min_size=flows, max_size=flows))
    return topo, Step.of(src, dst, sizes), draw(st.integers(0, 2**31))


@settings(max_examples=80, deadline=None, derandomize=True)
@given(fabrics_and_steps())
def test_split_equals_spray_and_ecmp_is_never_less_congested(case):
    topo, step, seed = case
    capacity = topo.link_bytes_per_s
    hosts = np.arange(topo.num_hosts)
    congestion = {
        name: step_load(route_step(topo, step, hosts, get_routing(name), seed), capacity).congestion_s
        for name in ("spray", "split", "ecmp", "ecmp-2", "ecmp-3")
    }
    assert congestion["split"] <= congestion["spray"] * (1 + 1e-12)
    for hashed in ("ecmp", "ecmp-2", "ecmp-3"):
        assert congestion[hashed] >= congestion["spray"] * (1 - 1e-12)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(fabrics_and_steps(), st.sampled_from(["ecmp", "ecmp-4", "spray", "split"]))
def test_bytes_are_conserved_on_links(case, routing):
    topo, step, seed = case
    transfers = route_step(topo, step, np.arange(topo.num_hosts), get_routing(routing), seed)
    # a flow's transfers carry exactly its bytes
    per_flow = np.bincount(transfers.flow, weights=transfers.size_bytes, minlength=step.num_flows)
    assert np.allclose(per_flow, step.size_bytes)
    # every byte leaves its host once and arrives once, and crosses the fabric once per tier
    link_bytes = transfers.link_bytes()
    assert np.isclose(link_bytes[topo.host_up_link].sum(), step.total_bytes)
    assert np.isclose(link_bytes[topo.host_down_link].sum(), step.total_bytes)
    hops = np.asarray(transfers.incidence.sum(axis=1)).ravel()  # fraction-weighted links per transfer
    assert np.isclose(link_bytes.sum(), (hops * transfers.size_bytes).sum())
    tor = topo.host_tor
    crossing = step.size_bytes[tor[step.src] != tor[step.dst]].sum()
    leaf_up = [l for l in range(2 * topo.num_hosts, topo.num_links) if topo.link_label(l).startswith("leaf")]
    assert np.isclose(link_bytes[leaf_up].sum(), crossing)


def test_spray_and_split_avoid_a_failed_link():
    from nasfleet.comm import LinkFailure

    topo = leaf_spine(leaves=2, spines=4, hosts=4, gbps=100, failures=(LinkFailure("leaf0", "spine2"),))
    step = Step.of(np.arange(4), 4 + np.arange(4), 1.0)
    dead = topo.links_between("leaf0", "spine2")
    for name in ("spray", "split", "ecmp", "ecmp-4"):
        assert np.all(route_step(topo, step, np.arange(8), get_routing(name), 1).link_bytes()[dead] == 0)
    # splitting over the 3 remaining spines: 4 flows → lcm(4, 3) = 12 subflows
    assert route_step(topo, step, np.arange(8), get_routing("split")).num_transfers == 12
