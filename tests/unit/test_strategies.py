"""The strategy interface, uniform and sandwich, through the trainer's step function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.train import StepBatch, TorchBackend, run_step
from nasfleet.strategies import FROM_LARGEST, SandwichStrategy, UniformStrategy, build_strategy, soft_cross_entropy
from nasfleet.supernet import MBConvSpace

SPACE = MBConvSpace()


def test_uniform_runs_one_random_subnet_on_labels() -> None:
    strategy = build_strategy("uniform", {}, SPACE)
    assert isinstance(strategy, UniformStrategy)
    rng = np.random.default_rng(0)
    plans = [strategy.subnets_for_step(step, rng) for step in range(20)]
    assert all(len(p) == 1 and p[0].distill is None for p in plans)
    assert len({p[0].arch for p in plans}) > 10


def test_sandwich_trains_the_bounds_and_distils_from_the_largest() -> None:
    strategy = build_strategy("sandwich", {"num_random": 3}, SPACE)
    assert isinstance(strategy, SandwichStrategy)
    tasks = strategy.subnets_for_step(0, np.random.default_rng(0))
    assert [t.role for t in tasks] == ["largest", "smallest", "random", "random", "random"]
    assert tasks[0].arch == SPACE.largest() and tasks[0].distill is None
    assert tasks[1].arch == SPACE.smallest()
    assert all(t.distill == FROM_LARGEST for t in tasks[1:])


def sgd(model: torch.nn.Module) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def test_step_accumulates_every_subnets_gradient_with_the_teachers_soft_targets() -> None:
    torch.manual_seed(0)
    model = SPACE.build_supernet()
    images, labels = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    strategy = build_strategy("sandwich", {"num_random": 1, "label_smoothing": 0.0}, SPACE)
    backend = TorchBackend(model, *sgd(model))
    batch = StepBatch(images, labels, torch.arange(8), (images, labels))
    run_step(backend, strategy, SPACE, batch, 0, np.random.default_rng(5))
    accumulated = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad(set_to_none=True)
    tasks = strategy.subnets_for_step(0, np.random.default_rng(5))
    teacher_logits = model(images, tasks[0].arch)
    total = torch.nn.functional.cross_entropy(teacher_logits, labels)
    probs = teacher_logits.detach().softmax(-1)
    for task in tasks[1:]:
        total = total + soft_cross_entropy(model(images, task.arch), probs)
    total.backward()
    for name, param in model.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(accumulated[name], param.grad, rtol=1e-4, atol=1e-6)


def test_soft_cross_entropy_is_minimised_by_the_teacher() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1]])
    at_teacher = soft_cross_entropy(probs.log(), probs)
    elsewhere = soft_cross_entropy(torch.tensor([[0.0, 1.0, 0.0]]), probs)
    assert at_teacher < elsewhere


def test_unknown_strategy_and_bad_params_are_user_errors() -> None:
    with pytest.raises(NasfleetError, match="unknown strategy 'bignas'.*sandwich"):
        build_strategy("bignas", {}, SPACE)
    with pytest.raises(NasfleetError, match="num_random"):
        build_strategy("sandwich", {"num_random": -1}, SPACE)
    with pytest.raises(NasfleetError, match="colour"):
        build_strategy("uniform", {"colour": 1}, SPACE)
