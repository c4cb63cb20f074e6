"""The tanglenas strategy: the superposition at a one-hot α is the discrete subnet, α steps move the
argmax toward the choice with the lower loss (and do not when α's learning rate is 0), and a trained
run's derived architecture exports to a subnet that computes what the supernet computes there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.cli.app import app
from nasfleet.orchestrator.evaluate import load_trained
from nasfleet.strategies import build_strategy
from nasfleet.strategies.tanglenas import TangleNASStrategy, TangleNASSupernet, superposition_marker
from nasfleet.supernet import (
    GPTSpace, GPTSpaceConfig, MBConvSpace, MBConvSpaceConfig, ViTSpace, ViTSpaceConfig, load_subnet, recalibrate_batchnorm,
)
from nasfleet.supernet.conv1d import Conv1DSpace

from conftest import TINY_SPACE, tiny_config, train

SPACES = {
    "mbconv": (lambda: MBConvSpace(MBConvSpaceConfig.model_validate(TINY_SPACE)), lambda: torch.randn(6, 1, 8, 8)),
    "conv1d": (Conv1DSpace, lambda: torch.randn(6, 1, 8, 8)),
    "vit": (
        lambda: ViTSpace(ViTSpaceConfig(head_dim=4, embed_dims=[8, 12, 16], depths=[1, 2], heads=[1, 2], mlp_ratios=[1.0, 2.0])),
        lambda: torch.randn(6, 1, 8, 8),
    ),
    "gpt": (
        lambda: GPTSpace(GPTSpaceConfig(image_size=8, head_dim=4, embed_dims=[8, 12], depths=[1, 2], heads=[1, 2], mlp_ratios=[1.0, 2.0])),
        lambda: torch.randint(0, 256, (3, 1, 8)).float(),
    ),
}


def wrapped(space, **params) -> tuple[TangleNASStrategy, TangleNASSupernet]:
    torch.manual_seed(0)
    strategy = build_strategy("tanglenas", params, space)
    assert isinstance(strategy, TangleNASStrategy)
    model = strategy.build_model()
    assert isinstance(model, TangleNASSupernet)
    return strategy, model


@pytest.mark.parametrize("name", list(SPACES))
@pytest.mark.parametrize("training", [True, False])
def test_superposition_at_a_one_hot_alpha_is_the_discrete_subnet(name: str, training: bool) -> None:
    make_space, make_input = SPACES[name]
    space = make_space()
    _, model = wrapped(space)
    model.train(training)
    x = make_input()
    rng = np.random.default_rng(1)
    for arch in (space.smallest(), space.largest(), *(space.sample_choices(rng) for _ in range(6))):
        with torch.no_grad():
            torch.testing.assert_close(model.superposed(x, model.one_hot(arch)), model(x, arch), rtol=0, atol=2e-6)


def test_the_marker_runs_the_superposition_at_the_models_alpha() -> None:
    space = SPACES["mbconv"][0]()
    _, model = wrapped(space)
    arch = space.sample_choices(np.random.default_rng(3))
    with torch.no_grad():
        for name, probs in model.one_hot(arch).items():
            getattr(model, f"alpha_{name}").copy_(probs * 1e4)  # softmax of it: exactly one-hot
        x = torch.randn(4, 1, 8, 8)
        torch.testing.assert_close(model(x, superposition_marker(space)), model(x, arch), rtol=0, atol=2e-6)
    assert model.derived_arch() == arch


def sabotaged_wider_channels(strategy: TangleNASStrategy, model: TangleNASSupernet, favour_wide: float) -> None:
    """A task on which the last stage's narrowest width is the better choice: its extra channels of
    every wider width carry a huge constant into the head; α starts favouring the widest."""
    last = len(model.supernet.stages) - 1
    narrow = strategy.space.config.stages[last].widths[0]
    with torch.no_grad():
        for block in model.supernet.stages[last]:
            block.project.bn.bias[narrow:] = 30.0
        getattr(model, f"alpha_s{last}_width")[-1] = favour_wide
    generator = torch.Generator().manual_seed(0)
    strategy.bind_training_data(torch.randn(256, 1, 8, 8, generator=generator), torch.randint(0, 10, (256,), generator=generator))


@pytest.mark.parametrize("arch_lr", [0.2, 0.0])
def test_alpha_steps_move_the_argmax_to_the_better_width_and_frozen_alpha_does_not(arch_lr: float) -> None:
    space = SPACES["mbconv"][0]()
    strategy, model = wrapped(space, arch_lr=arch_lr, arch_batch_size=32)
    sabotaged_wider_channels(strategy, model, favour_wide=1.0)
    last = len(space.config.stages) - 1
    widths = space.config.stages[last].widths
    assert model.derived_arch().stages[last].width == widths[-1]
    before = {n: a.clone() for n, a in model.alphas().items()}
    for step in range(20):
        strategy.before_step(step, model, (torch.empty(0), torch.empty(0)))
        strategy.before_step(step, model, (torch.empty(0), torch.empty(0)))  # a second shard of the same step: no α step
    assert strategy.arch_steps == 20
    moved = any(not torch.equal(before[n], a) for n, a in model.alphas().items())
    found = model.derived_arch().stages[last].width
    if arch_lr > 0:
        assert moved and found == widths[0]
    else:
        assert not moved and found == widths[-1]


def test_alpha_steps_leave_the_weights_and_their_gradients_alone() -> None:
    space = SPACES["vit"][0]()
    strategy, model = wrapped(space, arch_holdout=0.0)
    strategy.bind_training_data(torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)))
    weights = {n: p.clone() for n, p in model.named_parameters()}
    strategy.before_step(0, model, (torch.empty(0), torch.empty(0)))
    assert all(p.grad is None and torch.equal(p, weights[n]) for n, p in model.named_parameters())
    assert not torch.equal(model.alpha_embed, torch.zeros_like(model.alpha_embed))


def test_holdout_splits_the_training_examples_between_weights_and_alpha() -> None:
    strategy, _ = wrapped(SPACES["mbconv"][0](), arch_holdout=0.25, arch_batch_size=16)
    strategy.bind_training_data(torch.randn(100, 1, 8, 8), torch.arange(100))
    probs = strategy.example_probabilities(100)
    assert probs is not None and int((probs == 0).sum()) == 25 and np.isclose(probs.sum(), 1.0)
    _, labels = strategy.arch_batch(7)
    assert set(labels.tolist()) <= set(np.flatnonzero(probs == 0).tolist())


def test_bad_parameters_are_one_error() -> None:
    with pytest.raises(NasfleetError, match="arch_holdout"):
        build_strategy("tanglenas", {"arch_holdout": 1.0}, MBConvSpace())


def test_trained_run_exports_its_derived_arch_equal_to_the_supernet(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run", strategy={"name": "tanglenas", "params": {"arch_lr": 0.1}},
                         optim={"steps": 10, "lr": 0.05, "warmup_steps": 1}, checkpoint_every_steps=10)
    trained = train(config)
    alphas = trained.model.alphas()
    assert any(bool(a.abs().sum() > 0) for a in alphas.values())  # α trained and came back with the weights
    found = trained.model.derived_arch()
    result = CliRunner().invoke(app, ["export", "--run", str(config.run_dir), "--arch", "derived", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    subnet, arch = load_subnet(tmp_path / "out")
    assert arch == found
    fresh = load_trained(config.run_dir)
    batches = fresh.calibration_batches()
    recalibrate_batchnorm(fresh.model, arch, batches)
    fresh.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(subnet(batches[0]), fresh.model(batches[0], arch), rtol=0, atol=1e-5)


def test_derived_on_another_strategys_run_is_one_error(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run", optim={"steps": 2, "lr": 0.05, "warmup_steps": 1}, checkpoint_every_steps=2)
    train(config)
    result = CliRunner().invoke(app, ["export", "--run", str(config.run_dir), "--arch", "derived", "--out", str(tmp_path / "o")])
    # The CLI's entry point turns it into one `error:` line and exit 2.
    assert isinstance(result.exception, NasfleetError) and "derives no architecture" in str(result.exception)
