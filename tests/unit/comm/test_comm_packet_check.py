"""The plan handed to a packet simulator replays the flow model's routing byte for byte."""

from __future__ import annotations

import numpy as np
import pytest

from nasfleet.comm import build_collective, leaf_spine, simulate
from nasfleet.comm.packet_check import packet_plan, plan_link_bytes

MiB = 2**20


@pytest.mark.parametrize("routing", ["ecmp", "ecmp-2", "split"])
@pytest.mark.parametrize("kind,algorithm", [("allreduce", "ring"), ("allreduce", "halving-doubling"),
                                            ("alltoall", "pairwise")])
def test_pinned_plan_puts_the_models_bytes_on_every_link(kind, algorithm, routing):
    topo = leaf_spine(4, 4, 4, gbps=100, latency_ns=500)
    coll = build_collective(kind, ranks=16, size_bytes=3 * MiB + 7, algorithm=algorithm)
    plan = packet_plan(topo, coll, routing, seed=3)
    result = simulate(topo, coll, routing=routing, fidelity="analytical", seed=3)
    assert len(plan.steps) == coll.num_steps
    for k, step in enumerate(coll.steps()):
        # whole bytes: each flow's subflows add up to the flow's size rounded
        assert abs(plan.step_bytes()[k] - step.total_bytes) <= len(step.src) / 2
    total = sum(plan_link_bytes(topo, plan, k) for k in range(len(plan.steps)))
    np.testing.assert_allclose(total, result.link_bytes_total(), rtol=0, atol=len(plan.steps) * 16)


def test_split_plan_pins_a_lone_flow_to_every_spine_and_spray_pins_nothing():
    topo = leaf_spine(2, 4, 1, gbps=100)
    coll = build_collective("p2p", ranks=2, size_bytes=4 * MiB)
    split = packet_plan(topo, coll, "split")
    assert sorted(split.conn_spine.tolist()) == [0, 1, 2, 3]
    assert split.steps[0][1].tolist() == [MiB] * 4
    spray = packet_plan(topo, coll, "spray")
    assert spray.conn_spine.tolist() == [-1] and spray.steps[0][1].tolist() == [4 * MiB]


def test_a_connection_is_reused_by_the_steps_that_send_on_it():
    topo = leaf_spine(4, 4, 4, gbps=100)
    coll = build_collective("allreduce", ranks=16, size_bytes=MiB, algorithm="ring")
    plan = packet_plan(topo, coll, "ecmp")
    assert plan.num_connections == 16 and len(plan.steps) == 30
