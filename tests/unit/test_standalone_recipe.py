"""The stand-alone trainer of the research harness follows the supernet loop's recipe, clipping included."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from nasfleet.orchestrator.train import job_space
from nasfleet.research.standalone import train_standalone


def test_a_stand_alone_step_is_clipped_to_grad_clip_norm(tmp_path: Path) -> None:
    """One SGD step without momentum or decay moves the weights by lr × the gradient: by exactly
    lr·c when clipped at c, by far more when not (the same check as the supernet loop's)."""
    lr, clip = 0.5, 1e-2

    def step_norm(grad_clip_norm: float | None) -> float:
        optim = {"steps": 1, "lr": lr, "momentum": 0.0, "weight_decay": 0.0, "warmup_steps": 0,
                 "grad_clip_norm": grad_clip_norm}
        config = tiny_config(tmp_path / "unused", optim=optim)
        space = job_space(config)
        torch.manual_seed(0)
        model = space.build_standalone(space.largest())
        start = copy.deepcopy(model.state_dict())
        train_standalone(config, space.largest(), init=model)
        moved = [(value.double() - start[key].double()).flatten() for key, value in model.state_dict().items()
                 if value.is_floating_point() and "running" not in key]
        return torch.cat(moved).norm().item()

    assert step_norm(clip) == pytest.approx(lr * clip, rel=1e-3)
    assert step_norm(None) > 10 * lr * clip
