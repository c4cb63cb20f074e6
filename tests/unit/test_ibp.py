"""Interval bound propagation: sound on every corner, tight on one affine layer, equal on the
supernet and its extracted subnet; the IBP strategy's warm-up regulariser tightens bounds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from nasfleet.strategies import TaskOutputs, build_strategy
from nasfleet.strategies.ibp import eps_at, warmup_regulariser
from nasfleet.supernet import MBConvSpace, MBConvSpaceConfig, extract, recalibrate_batchnorm
from nasfleet.supernet.interval import Interval, input_box, margin_bounds, propagate, verified

TINY = MBConvSpaceConfig(
    image_size=3, stem_width=3,
    stages=[
        {"widths": [2, 3], "depths": [1, 2], "kernels": [3], "expands": [1, 2], "stride": 1},
        {"widths": [3, 4], "depths": [1, 2], "kernels": [1, 3], "expands": [1, 2], "stride": 2},
    ],
)


def corners(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Every corner of the box around one example ``x`` ([1, ...]): 2^d inputs."""
    flat_l, flat_u = lower.flatten(), upper.flatten()
    signs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=flat_l.numel())))
    return (flat_l + signs * (flat_u - flat_l)).view(-1, *x.shape[1:])


def tiny_supernet(seed: int = 0) -> tuple[MBConvSpace, nn.Module]:
    torch.manual_seed(seed)
    space = MBConvSpace(TINY)
    supernet = space.build_supernet()
    for arch in (space.largest(), space.smallest()):
        recalibrate_batchnorm(supernet, arch, [torch.randn(32, 1, 3, 3)])
    return space, supernet.eval()


@pytest.mark.parametrize("which", ["largest", "smallest", "random"])
def test_every_corner_output_lies_within_the_bounds(which: str) -> None:
    space, supernet = tiny_supernet()
    arch = space.sample(np.random.default_rng(3)) if which == "random" else getattr(space, which)()
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(1, 1, 3, 3, generator=gen)
        box = input_box(x, 0.3, -5.0, 5.0)
        bounds = propagate(supernet, box, arch)
        with torch.no_grad():
            outs = supernet(corners(x, box.lower, box.upper), arch)  # 512 corners of a 9-pixel box
        assert (outs >= bounds.lower - 1e-5).all() and (outs <= bounds.upper + 1e-5).all()
        assert torch.allclose(bounds.clean, supernet(x, arch), atol=1e-5)
        assert (bounds.upper - bounds.lower).max() > 0


def test_one_linear_layer_gets_exact_bounds() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(6, 4)
    x = torch.randn(1, 6)
    box = input_box(x, 0.25, -10.0, 10.0)
    bounds = propagate(layer, box)
    with torch.no_grad():
        outs = layer(corners(x, box.lower, box.upper))
    # An affine map reaches its extremes on corners, so IBP's bounds are the true range.
    torch.testing.assert_close(bounds.lower[0], outs.min(dim=0).values, atol=1e-5, rtol=0)
    torch.testing.assert_close(bounds.upper[0], outs.max(dim=0).values, atol=1e-5, rtol=0)


def test_margin_bounds_cover_corner_margins_and_zero_eps_is_clean() -> None:
    space, supernet = tiny_supernet()
    arch = space.largest()
    x, label = torch.randn(1, 1, 3, 3), torch.tensor([2])
    box = input_box(x, 0.2, -5.0, 5.0)
    _, margins = margin_bounds(supernet, box, label, arch)
    with torch.no_grad():
        logits = supernet(corners(x, box.lower, box.upper), arch)
    true_margins = (logits - logits[:, 2:3]).max(dim=0).values
    assert (true_margins <= margins[0] + 1e-5).all() and margins[0, 2] == 0
    clean, zero = margin_bounds(supernet, input_box(x, 0.0, -5.0, 5.0), label, arch)
    torch.testing.assert_close(zero[0], clean[0] - clean[0, 2], atol=1e-5, rtol=0)
    assert bool(verified(zero, label)) == bool(clean.argmax() == 2)


@pytest.mark.parametrize("training", [False, True])
def test_supernet_and_extracted_subnet_give_the_same_bounds(training: bool) -> None:
    space = MBConvSpace()
    torch.manual_seed(0)
    supernet = space.build_supernet()
    gen = torch.Generator().manual_seed(0)
    for seed in range(4):
        arch = space.sample(np.random.default_rng(seed))
        recalibrate_batchnorm(supernet, arch, [torch.randn(16, 1, 8, 8, generator=gen)])
        supernet.train(training)
        subnet = extract(supernet, space, arch).train(training)
        x = torch.randn(8, 1, 8, 8, generator=gen)
        a = propagate(supernet, input_box(x, 0.05, -3.0, 3.0), arch)
        b = propagate(subnet, input_box(x, 0.05, -3.0, 3.0))
        torch.testing.assert_close(a.lower, b.lower, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a.upper, b.upper, atol=1e-4, rtol=1e-4)


def test_training_mode_bounds_use_clean_batch_statistics_and_leave_running_stats_alone() -> None:
    space, supernet = tiny_supernet()
    supernet.train()
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    x = torch.randn(16, 1, 3, 3)
    bounds = propagate(supernet, input_box(x, 0.1, -5.0, 5.0), space.largest())
    for key, value in supernet.state_dict().items():
        assert torch.equal(value, before[key]), key
    with torch.no_grad():
        torch.testing.assert_close(bounds.clean, supernet(x, space.largest()), atol=1e-5, rtol=1e-5)


def test_an_operation_without_a_rule_is_refused() -> None:
    box = input_box(torch.randn(2, 3), 0.1, -1.0, 1.0)
    with pytest.raises(TypeError, match="no rule for softmax"):
        torch.softmax(box, dim=-1)  # type: ignore[call-overload]


def test_the_box_is_clipped_to_valid_pixels_and_always_holds_the_input() -> None:
    x = torch.tensor([[-1.0, 0.0, 1.0, 2.0]])
    box = input_box(x, 0.5, -1.0, 1.0)
    assert box.lower.tolist() == [[-1.0, -0.5, 0.5, 1.5]] and box.upper.tolist() == [[-0.5, 0.5, 1.0, 2.0]]


def test_eps_ramps_from_zero_to_its_target_after_the_start() -> None:
    space = MBConvSpace()
    params = build_strategy("ibp", {"eps": 0.2, "start_step": 5, "warmup_steps": 20}, space).params
    schedule = [eps_at(s, params) for s in range(40)]
    assert schedule[:5] == [0.0] * 5 and schedule[24:] == [0.2] * 16
    assert all(a <= b for a, b in zip(schedule, schedule[1:])) and 0 < schedule[5] < 0.01


def _bound_width_after_training(reg_weight: float) -> float:
    """Mean pre-activation radius after a few steps of IBP loss at a fixed small ε."""
    space, supernet = tiny_supernet(seed=2)
    strategy = build_strategy(
        "ibp", {"eps": 0.3, "warmup_steps": 10**6, "reg_weight": reg_weight, "input_range": [-5.0, 5.0]}, space
    )
    model = strategy.wrap_model(supernet).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 3, 3, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    task = strategy.subnets_for_step(10**5, np.random.default_rng(0))[0]  # ε ≈ 2 % of its target: λ_t ≈ λ
    for _ in range(8):
        optimizer.zero_grad()
        strategy.loss(task, TaskOutputs(model(x, task.arch)), y, {}).backward()
        optimizer.step()
    box = input_box(x, 0.05, -5.0, 5.0, trace=True)
    with torch.no_grad():
        propagate(model, box, task.arch)
    return float(torch.stack([b.radius.mean() for b in box.trace]).mean())


def test_the_warmup_regulariser_tightens_the_bounds() -> None:
    # Same seed, same batch, same steps: only λ differs (0.43 against 0.56 when written).
    assert _bound_width_after_training(reg_weight=5.0) < 0.9 * _bound_width_after_training(reg_weight=0.0)


def test_the_regulariser_penalises_loose_boxes_and_one_sided_relus() -> None:
    r = torch.full((1, 4), 0.1)
    tight = Interval(torch.tensor([[1.0, -1.0, 1.0, -1.0]]), torch.tensor([[0.9, -1.1, 0.9, -1.1]]),
                     torch.tensor([[1.1, -0.9, 1.1, -0.9]]))
    loose = Interval(tight.clean, tight.clean - 10, tight.clean + 10)
    one_sided = Interval(torch.tensor([[1.0, 1.0, 1.0, 2.0]]), torch.tensor([[0.9, 0.9, 0.9, 1.9]]),
                         torch.tensor([[1.1, 1.1, 1.1, 2.1]]))
    assert warmup_regulariser([tight], r, 0.5) == 0
    assert warmup_regulariser([loose], r, 0.5) > 0.9
    assert warmup_regulariser([one_sided], r, 0.5) > 1.9
