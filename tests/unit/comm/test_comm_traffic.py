"""Training traffic: which collectives an iteration runs and how long they take."""

from __future__ import annotations

import pytest
import torch

from nasfleet.comm import leaf_spine
from nasfleet.comm.traffic import count_parameters, predict_dp_step_comm_time, training_comm_time, training_traffic
from nasfleet.errors import NasfleetError

TOPO = leaf_spine(leaves=4, spines=4, hosts=4, gbps=400)
B = 400e9 / 8


def test_ddp_buckets_gradients_into_allreduces():
    traffic = training_traffic(10_000_000, dp_degree=16, zero_stage=0, bucket_bytes=4 * 2**20, dtype_bytes=4)
    assert [(c.kind, c.count) for c in traffic.calls] == [("allreduce", 9), ("allreduce", 1)]
    assert sum(c.size_bytes * c.count for c in traffic.calls) == 40_000_000


@pytest.mark.parametrize("stage, volume", [(0, 2), (1, 2), (2, 2), (3, 3)])
def test_zero_stages_move_two_or_three_psi(stage, volume):
    """On a non-blocking fabric with ring collectives: time = volume·(p−1)/p·Ψ/B."""
    p, params = 16, 2**24
    traffic = training_traffic(params, p, stage, bucket_bytes=2**30, dtype_bytes=2)
    time_s = training_comm_time(traffic, TOPO).total_s
    assert time_s == pytest.approx(volume * (p - 1) / p * params * 2 / B, rel=1e-9)


def test_predict_matches_a_direct_simulation_and_scales_with_model_size():
    small = predict_dp_step_comm_time(1_000_000, 16, TOPO)
    large = predict_dp_step_comm_time(8_000_000, 16, TOPO)
    assert large == pytest.approx(8 * small, rel=1e-9)
    assert predict_dp_step_comm_time(1_000_000, 1, TOPO) == 0.0
    assert predict_dp_step_comm_time(1_000_000, 16, TOPO, routing="ecmp", algorithm="halving-doubling") > 0


def test_parameters_are_counted_from_models():
    model = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.Linear(20, 5))
    assert count_parameters(model) == 10 * 20 + 20 + 20 * 5 + 5

    class Subnet:
        num_params = 1234

    assert count_parameters(Subnet()) == 1234
    assert predict_dp_step_comm_time(model, 4, TOPO) > 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(dp_degree=0), "data-parallel"), (dict(zero_stage=4), "ZeRO"), (dict(bucket_bytes=0), "bucket"),
])
def test_bad_training_input(kwargs, message):
    args = dict(model=100, dp_degree=4)
    args.update(kwargs)
    with pytest.raises(NasfleetError, match=message):
        training_traffic(**args)
    with pytest.raises(NasfleetError):
        count_parameters("resnet")
