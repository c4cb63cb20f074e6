"""The published strategies (sorted, shift, deps, progressive): each one's defining mechanism."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.train import StepBatch, TorchBackend, run_step
from nasfleet.strategies import (
    FROM_LARGEST,
    STRATEGIES,
    DepsStrategy,
    ProgressiveStrategy,
    ShiftStrategy,
    SortedStrategy,
    build_strategy,
)
from nasfleet.strategies.sorted import is_prefix
from nasfleet.supernet import MBConvSpace
from nasfleet.supernet.arch import ConvArch

SPACE = MBConvSpace()
PARAMS: dict[str, dict[str, Any]] = {
    "sorted": {"num_subnets": 3},
    "shift": {"num_random": 2, "calibration_samples": 64},
    "deps": {"total_steps": 4, "delay_fraction": 0.25},
    "progressive": {"total_steps": 4},
}


@pytest.fixture(scope="module")
def sorted_strategy() -> SortedStrategy:
    strategy = build_strategy("sorted", {"num_subnets": 4}, SPACE)
    assert isinstance(strategy, SortedStrategy)
    return strategy


def test_sorted_submodels_are_nested_prefixes_in_cost_order(sorted_strategy: SortedStrategy) -> None:
    subs = sorted_strategy.submodels
    assert len(subs) >= 100
    assert subs[0] == SPACE.smallest() and subs[-1] == SPACE.largest()
    for i, arch in enumerate(subs):
        assert is_prefix(subs[0], arch) and is_prefix(arch, subs[-1])
        # Sorted: nothing later is a prefix of an earlier one.
        assert not any(is_prefix(later, arch) for later in subs[i + 1 :])
        # Nested: every sub-model but the largest lies on a chain of one-step growths inside the family.
        if i < len(subs) - 1:
            assert any(is_prefix(arch, later) and _steps_apart(arch, later) == 1 for later in subs[i + 1 :])


def _steps_apart(small: ConvArch, big: ConvArch) -> int:
    """How many single-dimension (global level or one stage's depth) steps separate two family members."""
    steps = 0
    for s, b, spec in zip(small.stages, big.stages, SPACE.config.stages):
        steps += spec.depths.index(b.depth) - spec.depths.index(s.depth)
    s0, b0, spec0 = small.stages[0], big.stages[0], SPACE.config.stages[0]
    steps += spec0.widths.index(b0.width) - spec0.widths.index(s0.width)
    steps += spec0.kernels.index(b0.blocks[0].kernel) - spec0.kernels.index(s0.blocks[0].kernel)
    steps += spec0.expands.index(b0.blocks[0].expand) - spec0.expands.index(s0.blocks[0].expand)
    return steps


def test_sorted_selects_the_largest_sub_model_under_a_budget(sorted_strategy: SortedStrategy) -> None:
    mflops = {a: SPACE.flops(a) / 1e6 for a in sorted_strategy.submodels}
    budget = float(np.median(list(mflops.values())))
    chosen = sorted_strategy.select_for_budget(budget)
    assert mflops[chosen] <= budget
    assert mflops[chosen] == max(m for m in mflops.values() if m <= budget)
    assert sorted_strategy.select_for_budget(1e9) == SPACE.largest()
    with pytest.raises(NasfleetError, match="no sorted sub-model fits"):
        sorted_strategy.select_for_budget(0.0)


def test_sorted_samples_distinct_family_members_on_labels(sorted_strategy: SortedStrategy) -> None:
    rng = np.random.default_rng(0)
    family = set(sorted_strategy.submodels)
    seen = set()
    for step in range(30):
        tasks = sorted_strategy.subnets_for_step(step, rng)
        assert len(tasks) == 4 and len({t.arch for t in tasks}) == 4
        assert all(t.arch in family and t.distill is None for t in tasks)
        seen |= {t.arch for t in tasks}
    assert len(seen) > 60


def test_shift_moves_sampling_toward_the_bin_that_improves_most() -> None:
    strategy = build_strategy("shift", {"num_bins": 4, "calibration_samples": 64}, SPACE)
    assert isinstance(strategy, ShiftStrategy)
    np.testing.assert_allclose(strategy.bin_probabilities(), 0.25)
    # Bin 2's loss falls fast, bin 0's slowly, the others stay flat.
    for step in range(20):
        strategy.observe([None, 0, 1, 2, 3], [1.0, 2.0 - 0.01 * step, 2.0, 2.0 - 0.2 * step, 2.0])
    probs = strategy.bin_probabilities()
    assert int(np.argmax(probs)) == 2 and probs[2] > 0.5
    assert probs[0] > probs[1] and probs.min() >= 0.2 / 4 - 1e-12
    np.testing.assert_allclose(probs.sum(), 1.0)
    # And the plan follows: most sampled subnets now come from bin 2.
    rng = np.random.default_rng(1)
    roles = [t.role for step in range(100) for t in strategy.subnets_for_step(step, rng)[1:]]
    assert roles.count("bin2") > len(roles) / 2


def test_shift_after_step_pairs_losses_with_the_planned_bins() -> None:
    strategy = build_strategy("shift", {"num_random": 3, "calibration_samples": 64}, SPACE)
    assert isinstance(strategy, ShiftStrategy)
    rng = np.random.default_rng(2)
    tasks = strategy.subnets_for_step(0, rng)
    assert tasks[0].arch == SPACE.largest() and tasks[0].distill is None
    assert all(t.distill == FROM_LARGEST for t in tasks[1:])
    for t in tasks[1:]:
        assert t.role == f"bin{strategy.bin_of(t.arch, rng)}"
    strategy.after_step(0, [5.0] + [3.0] * 3)
    bins = {int(t.role[3:]) for t in tasks[1:]}
    assert set(np.flatnonzero(~np.isnan(strategy.last_loss))) == bins


def test_shift_samples_a_subnet_of_the_requested_complexity() -> None:
    strategy = build_strategy("shift", {"num_bins": 3, "calibration_samples": 128}, SPACE)
    assert isinstance(strategy, ShiftStrategy)
    rng = np.random.default_rng(3)
    for b in range(3):
        for _ in range(5):
            assert strategy.bin_of(strategy.sample_with_complexity(rng, b), rng) == b
    with pytest.raises(NasfleetError, match="bin 3"):
        strategy.sample_with_complexity(rng, 3)


def test_deps_trains_only_the_full_model_before_its_delay_then_ramps_subnet_weights() -> None:
    strategy = build_strategy(
        "deps", {"total_steps": 100, "delay_fraction": 0.5, "ramp_fraction": 0.2, "start_lr_scale": 0.1}, SPACE
    )
    assert isinstance(strategy, DepsStrategy)
    rng = np.random.default_rng(0)
    for step in range(50):
        tasks = strategy.subnets_for_step(step, rng)
        assert [(t.arch, t.distill) for t in tasks] == [(SPACE.largest(), None)]
    weights = []
    for step in range(50, 100):
        tasks = strategy.subnets_for_step(step, rng)
        assert tasks[0].arch == SPACE.largest() and tasks[0].distill is None and tasks[0].weight == 1.0
        assert len(tasks) == 4 and all(t.distill == FROM_LARGEST for t in tasks[1:])
        assert len({t.weight for t in tasks[1:]}) == 1
        weights.append(tasks[1].weight)
    assert weights[0] == pytest.approx(0.1)
    assert weights[10] == pytest.approx(0.1 + 0.9 * 10 / 20)
    assert all(a <= b for a, b in zip(weights, weights[1:]))
    assert weights[20:] == [1.0] * 30


def test_progressive_unlocks_kernel_then_depth_then_width_and_expand() -> None:
    strategy = build_strategy("progressive", {"total_steps": 400, "num_random": 4}, SPACE)
    assert isinstance(strategy, ProgressiveStrategy)
    big = SPACE.largest()
    max_depths = [s.depths[-1] for s in SPACE.config.stages]
    rng = np.random.default_rng(0)

    def varied(steps: range) -> set[str]:
        dims: set[str] = set()
        for step in steps:
            tasks = strategy.subnets_for_step(step, rng)
            assert tasks[0].arch == big and tasks[0].distill is None
            for t in tasks[1:]:
                assert t.distill == FROM_LARGEST and tasks[0].distill is None
                for stage, top, depth in zip(t.arch.stages, big.stages, max_depths):
                    dims |= {"width"} if stage.width != top.width else set()
                    dims |= {"depth"} if stage.depth != depth else set()
                    dims |= {"kernel"} if any(b.kernel != top.blocks[0].kernel for b in stage.blocks) else set()
                    dims |= {"expand"} if any(b.expand != top.blocks[0].expand for b in stage.blocks) else set()
        return dims

    assert all(len(strategy.subnets_for_step(s, rng)) == 1 for s in range(100))
    assert varied(range(100, 200)) == {"kernel"}
    assert varied(range(200, 300)) == {"kernel", "depth"}
    assert varied(range(300, 400)) == {"kernel", "depth", "width", "expand"}


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("deps", {"total_steps": 10, "delay_fraction": -0.1}, "delay_fraction"),
        ("deps", {"total_steps": 0}, "total_steps"),
        ("deps", {}, "total_steps"),
        ("deps", {"total_steps": 10, "ramp_fraction": 1.5}, "ramp_fraction"),
        ("progressive", {"total_steps": 10, "phase_starts": [0.5, 0.2, 0.9]}, "phase_starts"),
        ("progressive", {"total_steps": 10, "phase_starts": [0.1, 0.2, 1.2]}, "phase_starts"),
        ("shift", {"num_bins": 2, "prior": [0.7, 0.7]}, "prior"),
        ("shift", {"num_bins": 3, "prior": [0.5, 0.5]}, "prior"),
        ("shift", {"min_prob": 1.5}, "min_prob"),
        ("shift", {"temperature": 0}, "temperature"),
        ("sorted", {"num_subnets": 0}, "num_subnets"),
        ("sorted", {"dims": ["width", "colour"]}, "dims"),
        ("sorted", {"colour": 1}, "colour"),
    ],
)
def test_invalid_params_are_one_line_user_errors(name: str, params: dict[str, Any], field: str) -> None:
    with pytest.raises(NasfleetError, match=f"invalid parameter '{field}.*'{name}'") as info:
        build_strategy(name, params, SPACE)
    assert "\n" not in str(info.value)


def test_the_published_strategies_are_registered() -> None:
    assert {"sorted", "shift", "deps", "progressive"} <= set(STRATEGIES)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_state_round_trip_restores_sampling_exactly(name: str) -> None:
    strategy = build_strategy(name, PARAMS[name], SPACE)
    rng = np.random.default_rng(7)
    for step in range(3):
        tasks = strategy.subnets_for_step(step, rng)
        strategy.after_step(step, [2.0 - 0.1 * step * (i + 1) for i in range(len(tasks))])
    state = strategy.state_dict()
    rng_state = rng.bit_generator.state
    expected = [strategy.subnets_for_step(step, rng) for step in range(3, 6)]

    restored = build_strategy(name, PARAMS[name], SPACE)
    restored.load_state_dict(state)
    rng.bit_generator.state = rng_state
    assert [restored.subnets_for_step(step, rng) for step in range(3, 6)] == expected


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_each_strategy_trains_three_steps_through_the_trainer(name: str) -> None:
    torch.manual_seed(0)
    model = SPACE.build_supernet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    backend = TorchBackend(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0))
    strategy = build_strategy(name, PARAMS[name], SPACE)
    rng = np.random.default_rng(0)
    for step in range(3):
        images, labels = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
        batch = StepBatch(images, labels, torch.arange(8), (images, labels))
        results = run_step(backend, strategy, SPACE, batch, step, rng)
        backend.step()
        assert results and all(np.isfinite(r.loss) for r in results)
