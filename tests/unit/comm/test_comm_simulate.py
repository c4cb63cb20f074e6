"""simulate(): repeated-pattern solving, seeds, placement, and the 256-GPU result."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasfleet.comm import (
    algorithms_for,
    build_collective,
    collective_kinds,
    leaf_spine,
    place_ranks,
    simulate,
    simulate_over_seeds,
)
from nasfleet.errors import NasfleetError

SMALL = leaf_spine(leaves=4, spines=4, hosts=4, gbps=100, latency_ns=300)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    kind_algorithm=st.sampled_from([(k, a) for k in collective_kinds() for a in algorithms_for(k)]),
    ranks=st.sampled_from([2, 4, 8, 11, 16]),
    routing=st.sampled_from(["ecmp", "ecmp-3", "spray", "split"]),
    fidelity=st.sampled_from(["analytical", "flow"]),
    seed=st.integers(0, 1000),
)
def test_solving_distinct_patterns_once_equals_step_by_step(kind_algorithm, ranks, routing, fidelity, seed):
    kind, algorithm = kind_algorithm
    if algorithm == "halving-doubling" and kind != "allreduce" and ranks & (ranks - 1):
        return
    coll = build_collective(kind, ranks, 3 * 2**20, algorithm, pipeline_chunk_bytes=2**19)
    fast = simulate(SMALL, coll, routing, fidelity, seed=seed)
    slow = simulate(SMALL, coll, routing, fidelity, seed=seed, dedup=False)
    assert fast.completion_time_s == pytest.approx(slow.completion_time_s, rel=1e-9)
    assert fast.max_congestion_s == pytest.approx(slow.max_congestion_s, rel=1e-9)
    assert fast.max_link_utilization == pytest.approx(slow.max_link_utilization, rel=1e-9)
    assert (fast.flows, fast.subflows, fast.steps) == (slow.flows, slow.subflows, slow.steps)
    assert np.allclose(fast.step_times_s(), slow.step_times_s())


def test_ring_has_one_distinct_pattern():
    coll = build_collective("allreduce", 1024, 2**30, "ring")
    assert len(coll.patterns) == 1 and coll.num_steps == 2 * 1023


def test_collectives_move_the_textbook_byte_counts():
    p, n = 16, 2**20

    def total(kind, alg):
        return sum(step.total_bytes for step in build_collective(kind, p, n, alg).steps())

    for alg in ("ring", "halving-doubling", "direct"):
        assert total("allreduce", alg) == pytest.approx(2 * (p - 1) * n)  # 2(p−1)/p·n per rank
        assert total("allgather", alg) == pytest.approx((p - 1) * n)
        assert total("reducescatter", alg) == pytest.approx((p - 1) * n)
    assert total("alltoall", "pairwise") == pytest.approx((p - 1) * n)
    assert total("broadcast", "halving-doubling") == pytest.approx((p - 1) * n)


def test_halving_doubling_handles_non_power_of_two():
    coll = build_collective("allreduce", 6, 2**20, "halving-doubling")
    assert coll.num_steps == 2 * 2 + 2  # fold, 2 halving, 2 doubling, unfold
    result = simulate(SMALL, coll, "spray", "flow")
    assert result.completion_time_s > 0


def test_double_binary_tree_uses_two_complementary_trees():
    from nasfleet.comm.collectives import double_binary_tree_parents

    for p in (2, 7, 8, 16, 33):
        first, second = double_binary_tree_parents(p)
        assert (first < 0).sum() == 1 and (second < 0).sum() == 1
        # a rank is an inner node in at most one of the two trees (NCCL's property), p even
        if p % 2 == 0 and p > 2:
            inner_first = set(first[first >= 0]) - {first[first >= 0].min()}
            inner_second = set(second[second >= 0])
            assert len(inner_first & inner_second) <= 1


def test_result_fields_and_json():
    result = simulate(SMALL, build_collective("allreduce", 16, 2**24, "ring"), "split", "flow")
    record = result.to_dict()
    for key in ("completion_time_s", "max_congestion_s", "max_link_utilization", "subflows", "flows", "routing",
                "algorithm", "ranks", "bytes", "wall_time_s"):
        assert key in record
    assert record["flows"] == 16 * 30 and record["subflows"] >= record["flows"]
    assert 0 < record["max_link_utilization"] <= 1
    starts, util = result.utilization_timeline()
    assert util.shape[1] == SMALL.num_links and np.all(np.diff(starts) >= 0)


def test_over_seeds_reports_mean_and_worst():
    coll = build_collective("allreduce", 16, 2**24, "halving-doubling")
    summary = simulate_over_seeds(SMALL, coll, "ecmp", seeds=6, fidelity="analytical")
    assert len(summary.results) == 6
    assert summary.worst_completion_time_s >= summary.mean_completion_time_s
    assert len(simulate_over_seeds(SMALL, coll, "spray", seeds=6).results) == 1
    record = summary.to_dict()
    assert record["completion_time_worst_s"] == summary.worst_completion_time_s


def test_ranks_on_one_host_do_not_use_the_network():
    coll = build_collective("allreduce", 8, 2**24, "ring")
    result = simulate(SMALL, coll, "split", "flow", gpus_per_host=8)
    assert result.completion_time_s == 0.0
    spread = simulate(SMALL, coll, "split", "flow", gpus_per_host=2)
    assert spread.completion_time_s > 0


def test_placements():
    assert list(place_ranks(4, 4, 2)) == [0, 0, 1, 1]
    assert list(place_ranks(4, 4, 1, "strided")) == [0, 1, 2, 3]
    random = place_ranks(8, 8, 1, "random", seed=1)
    assert sorted(random) == list(range(8))
    assert list(place_ranks(2, 4, 1, [3, 1])) == [3, 1]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: place_ranks(17, 4, 4), "do not fit"),
        (lambda: simulate(SMALL, build_collective("allreduce", 17, 1, "ring")), "do not fit"),
        (lambda: build_collective("allreduce", 4, 1, "bogus"), "unknown algorithm"),
        (lambda: build_collective("gossip", 4, 1), "unknown collective"),
        (lambda: build_collective("allreduce", 4, -1), "negative"),
        (lambda: build_collective("allgather", 6, 1, "halving-doubling"), "power-of-two"),
        (lambda: simulate(SMALL, build_collective("allreduce", 4, 1), "bogus"), "unknown routing"),
        (lambda: simulate(SMALL, build_collective("allreduce", 4, 1), fidelity="packet"), "unknown fidelity"),
        (lambda: place_ranks(2, 4, 1, [0, 0]), "more than 1"),
    ],
)
def test_bad_input_raises_nasfleet_error(call, message):
    with pytest.raises(NasfleetError, match=message):
        call()


FABRIC_256 = leaf_spine(leaves=16, spines=16, hosts=16, gbps=400, latency_ns=500)


def cct(algorithm, routing, kind="allreduce", fidelity="flow", seeds=4):
    coll = build_collective(kind, 256, 64 * 2**20, algorithm)
    return simulate_over_seeds(FABRIC_256, coll, routing, seeds=seeds, fidelity=fidelity).mean_completion_time_s


def test_256_gpu_qualitative_result():
    """Ring and double binary tree barely care; halving-doubling and all-to-all do."""
    for algorithm in ("ring", "double-binary-tree"):
        times = [cct(algorithm, r) for r in ("ecmp", "spray", "split")]
        assert max(times) / min(times) < 1.05, (algorithm, times)
    for algorithm, kind, fidelity in (("halving-doubling", "allreduce", "flow"), ("pairwise", "alltoall", "analytical")):
        spray, split = cct(algorithm, "spray", kind, fidelity), cct(algorithm, "split", kind, fidelity)
        ecmp, ecmp4 = cct(algorithm, "ecmp", kind, fidelity), cct(algorithm, "ecmp-4", kind, fidelity)
        assert split == pytest.approx(spray, rel=0.02)
        assert ecmp > 1.3 * spray, (algorithm, ecmp, spray)
        assert spray < ecmp4 < ecmp


def test_flow_rates_need_record_flows_and_top_links_are_sorted_by_utilisation():
    coll = build_collective("alltoall", 16, 2**20)
    plain = simulate(SMALL, coll, "ecmp", seed=1)
    with pytest.raises(NasfleetError, match="record_flows=True"):
        plain.flow_rates()
    recorded = simulate(SMALL, coll, "ecmp", seed=1, record_flows=True)
    assert recorded.completion_time_s == plain.completion_time_s
    rows = recorded.flow_rates()
    assert len(rows) == coll.num_flows  # pairwise: 15 distinct steps of 16 flows, each run once
    assert [r["finish_s"] for r in rows] == list(np.concatenate([p.flow_finish_s for p in recorded.patterns]))
    top = recorded.top_links(SMALL, 4)
    assert len(top) == 4 and [t["utilization"] for t in top] == sorted((t["utilization"] for t in top), reverse=True)
    assert top[0]["utilization"] == pytest.approx(recorded.max_link_utilization, rel=1e-12)
