"""Architectures as values, and the search spaces' set operations."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nasfleet.errors import NasfleetError
from nasfleet.supernet import (
    Conv1DSpace,
    ConvArch,
    MBConvSpace,
    MBConvSpaceConfig,
    StageChoice,
    ViTSpace,
    ViTSpaceConfig,
    arch_from_json,
    arch_to_json,
)
from nasfleet.supernet.conv1d import rows_as_sequence

SMALL_MBCONV = MBConvSpace(
    MBConvSpaceConfig(stages=[{"widths": [4, 8], "depths": [1, 2], "kernels": [3, 5], "expands": [2]}])
)
SMALL_VIT = ViTSpace(ViTSpaceConfig(embed_dims=[8, 16], depths=[1, 2], heads=[1, 2], mlp_ratios=[1.0]))
SPACES = [MBConvSpace(), ViTSpace(), Conv1DSpace()]


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.name)
@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None)
def test_json_round_trip_and_hash(space, seed: int) -> None:
    arch = space.sample(np.random.default_rng(seed))
    again = arch_from_json(arch_to_json(arch))
    assert again == arch and hash(again) == hash(arch)
    assert space.check(again) == []


@pytest.mark.parametrize("space", [SMALL_MBCONV, SMALL_VIT], ids=lambda s: s.name)
def test_size_counts_the_enumeration_of_distinct_archs(space) -> None:
    archs = list(space.enumerate())
    assert len(archs) == len(set(archs)) == space.size()
    # 2 widths × (2 + 2²) block sequences; 2 embeds × (2 + 2²) layer sequences.
    assert space.size() == 12


@pytest.mark.parametrize("space", [SMALL_MBCONV, SMALL_VIT], ids=lambda s: s.name)
def test_smallest_and_largest_bound_every_cost(space) -> None:
    flops = [space.flops(a) for a in space.enumerate()]
    params = [space.params(a) for a in space.enumerate()]
    assert space.flops(space.smallest()) == min(flops) and space.flops(space.largest()) == max(flops)
    assert space.params(space.smallest()) == min(params) and space.params(space.largest()) == max(params)


@pytest.mark.parametrize("space", [SMALL_MBCONV, SMALL_VIT], ids=lambda s: s.name)
def test_sample_is_uniform_over_architectures(space) -> None:
    rng = np.random.default_rng(0)
    draws = 12_000
    counts = collections.Counter(space.sample(rng) for _ in range(draws))
    assert set(counts) == set(space.enumerate())
    expected = draws / space.size()
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 30  # 11 degrees of freedom: p ≈ 0.002 at 30


def test_sample_choices_draws_each_depth_equally_often() -> None:
    rng = np.random.default_rng(1)
    depths = collections.Counter(SMALL_MBCONV.sample_choices(rng).stages[0].depth for _ in range(4000))
    assert abs(depths[1] - depths[2]) < 250


def test_validation_names_the_offending_choice() -> None:
    arch = ConvArch((StageChoice(5, SMALL_MBCONV.largest().stages[0].blocks),))
    with pytest.raises(NasfleetError, match="stage 0 width 5"):
        SMALL_MBCONV.validate(arch)
    with pytest.raises(NasfleetError, match="expected a vit architecture"):
        SMALL_VIT.validate(arch)


def test_malformed_json_is_a_user_error() -> None:
    with pytest.raises(NasfleetError):
        arch_from_json("{not json")
    with pytest.raises(NasfleetError, match="malformed"):
        arch_from_json('{"space": "mbconv", "stages": [{"width": 1.5, "blocks": []}]}')


def test_the_sequence_space_reads_each_image_row_as_one_time_step() -> None:
    images = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4)  # 3 rows of 4 pixels
    sequences = rows_as_sequence(images)
    assert sequences.shape == (2, 4, 3)
    for step in range(3):
        assert torch.equal(sequences[:, :, step], images[:, 0, step, :])


def test_an_architecture_of_one_conv_space_is_outside_the_other() -> None:
    arch = Conv1DSpace().largest()
    assert arch.space == "conv1d" and arch_from_json(arch_to_json(arch)) == arch
    with pytest.raises(NasfleetError, match="expected a mbconv architecture, got space 'conv1d'"):
        MBConvSpace().validate(arch)
