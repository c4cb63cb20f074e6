"""The continual strategy's parts: task specs, the per-phase schedule, and KNN-based knowledge transfer."""

from __future__ import annotations

import pytest
import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import OptimConfig
from nasfleet.orchestrator.train import lr_factor
from nasfleet.strategies import build_strategy
from nasfleet.strategies.continual import ContinualTask, SupermaskSupernet, kkt_choice, parse_tasks
from nasfleet.supernet import MBConvSpace, MBConvSpaceConfig


def small_space() -> MBConvSpace:
    return MBConvSpace(MBConvSpaceConfig.model_validate({
        "stem_width": 8, "image_size": 8, "num_classes": 4,
        "stages": [{"widths": [8], "depths": [1], "kernels": [3], "expands": [2], "stride": 1}],
    }))


def test_task_specs() -> None:
    assert [t.classes for t in parse_tasks("split:5", 10)] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert [t.classes for t in parse_tasks("split:3", 10)] == [(0, 1, 2, 3), (4, 5, 6), (7, 8, 9)]
    permuted = parse_tasks("permuted:3", 10)
    assert [t.permutation for t in permuted] == [None, 1, 2] and permuted[2].classes == tuple(range(10))
    assert parse_tasks("classes:0-1,2-3,10-19", 20)[2] == ContinualTask(tuple(range(10, 20)))
    for bad in ("split:6", "split:x", "classes:0-1,1-2", "classes:3", "classes:0-20", "rotated:3", "split"):
        with pytest.raises(NasfleetError):
            parse_tasks(bad, 10 if "20" not in bad else 20)


def test_each_task_and_exssnet_weight_phase_restart_the_learning_rate_schedule() -> None:
    space = small_space()
    strategy = build_strategy("continual", {"tasks": "split:2", "steps_per_task": 10, "mask_fraction": 0.4}, space)
    restarts = strategy.schedule_restarts(20)
    assert restarts == (4, 10, 14)
    optim = OptimConfig(steps=20, warmup_steps=2)
    assert [lr_factor(s, optim, restarts) for s in (0, 4, 10, 14)] == [0.5] * 4
    assert lr_factor(9, optim, restarts) == pytest.approx(lr_factor(19, optim, restarts))  # phases of 6 steps
    assert lr_factor(5, optim) == pytest.approx(lr_factor(5, optim, ()))


def test_kkt_picks_the_earlier_mask_whose_features_separate_the_new_task() -> None:
    space = small_space()
    torch.manual_seed(0)
    tasks = (ContinualTask((0, 1)), ContinualTask((0, 1)), ContinualTask((2, 3)))
    wrapper = SupermaskSupernet(space.build_supernet(), tasks, density=1.0, masked=True)
    # Two classes of images far apart; an empty mask gives every image the same (zero) features.
    images = torch.cat([torch.randn(16, 1, 8, 8) * 0.1 + 2.0, torch.randn(16, 1, 8, 8) * 0.1 - 2.0])
    labels = torch.tensor([2] * 16 + [3] * 16)
    order = torch.randperm(32, generator=torch.Generator().manual_seed(1))
    images, labels = images[order], labels[order]
    state = {k: v.clone() for k, v in wrapper.state_dict().items()}
    for useful in (0, 1):
        wrapper.masks[useful] = True
        wrapper.masks[1 - useful] = False
        wrapper.fixed[:2] = True
        choice, accuracies = kkt_choice(wrapper, space.largest(), images, labels, task=2, k=3)
        assert choice == useful and accuracies[useful] == 1.0 and accuracies[1 - useful] <= 0.75
    for key, value in wrapper.state_dict().items():  # choosing changes nothing but the masks set here
        if key not in ("masks", "fixed"):
            assert torch.equal(value, state[key]), key
