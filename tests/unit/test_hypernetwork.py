"""The hypernetwork strategy: MIP's two defining changes are present exactly when ``mip`` is on,
and a trained run's exported subnet computes what the hypernetwork-generated supernet computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nasfleet.errors import NasfleetError
from nasfleet.strategies import build_strategy
from nasfleet.strategies.hypernetwork import HypernetworkSupernet
from nasfleet.supernet import GPTSpace, GPTSpaceConfig, MBConvSpace, extract, load_subnet, recalibrate_batchnorm
from nasfleet.supernet import save_subnet

from conftest import tiny_config, train


def hypernetwork(mip: bool, space=None) -> HypernetworkSupernet:
    torch.manual_seed(0)
    model = build_strategy("hypernetwork", {"mip": mip}, space or MBConvSpace()).build_model()
    assert isinstance(model, HypernetworkSupernet)
    return model


def mip_violations(model: HypernetworkSupernet) -> list[str]:
    """Which of MIP's two properties the model lacks (empty: both hold).

    1. Magnitude invariance: the hypernetwork's input has the same L1 norm for every
       architecture (the smallest is all-zero genes, the largest all-maximal ones).
    2. Residual base: with the hypernetwork's output layer at zero, the generated tensors are
       the supernet's own ones, and moving a base tensor moves the generated one by as much.
    """
    space = model.space
    archs = [space.smallest(), space.largest(), *(space.sample_choices(np.random.default_rng(s)) for s in range(4))]
    problems = []
    norms = torch.stack([model.encode(a).abs().sum() for a in archs])
    if not torch.allclose(norms, norms[0].expand_as(norms)):
        problems.append(f"input magnitude depends on the architecture: L1 norms {norms.tolist()}")
    with torch.no_grad():
        last = model.hyper[-1]
        last.weight.zero_()
        last.bias.zero_()
        own = dict(model.supernet.named_parameters())
        generated = model.generate(archs[2])
        if not all(torch.equal(generated[name], own[name]) for name in model.targets):
            problems.append("with h = 0 the generated weights are not the supernet's own (no residual base)")
    return problems


def test_mip_on_has_both_properties() -> None:
    assert mip_violations(hypernetwork(mip=True)) == []


def test_the_check_detects_mip_off() -> None:
    problems = mip_violations(hypernetwork(mip=False))
    assert len(problems) == 2, problems


def test_base_receives_gradient_only_under_mip() -> None:
    for mip in (True, False):
        model = hypernetwork(mip)
        space = model.space
        model(torch.randn(4, 1, 8, 8), space.largest()).sum().backward()
        grads = [model.supernet.get_parameter(name).grad for name in model.targets]
        assert all((g is not None and bool(g.abs().sum() > 0)) for g in grads) == mip
        assert model.hyper[-1].weight.grad.abs().sum() > 0


def test_unknown_target_is_one_error() -> None:
    with pytest.raises(NasfleetError, match="not parameters"):
        build_strategy("hypernetwork", {"targets": ["head.nope"]}, MBConvSpace()).build_model()


def test_any_space_works_and_extracts_equal() -> None:
    space = GPTSpace(GPTSpaceConfig(image_size=8, head_dim=4, embed_dims=[8, 12], depths=[1, 2], heads=[1, 2],
                                    mlp_ratios=[1.0, 2.0]))
    model = hypernetwork(True, space).eval()
    tokens = torch.randint(0, 256, (2, 1, 8))
    for arch in (space.smallest(), space.largest()):
        torch.testing.assert_close(model(tokens, arch), extract(model, space, arch)(tokens), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mip", [True, False])
def test_trained_run_exports_a_subnet_equal_to_the_supernet(mip: bool, tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run", strategy={"name": "hypernetwork", "params": {"mip": mip}},
                         optim={"steps": 6, "lr": 0.05, "warmup_steps": 1}, checkpoint_every_steps=6)
    trained = train(config)
    model, space = trained.model, trained.space
    arch = space.sample_choices(np.random.default_rng(5))
    recalibrate_batchnorm(model, arch, trained.calibration_batches())
    save_subnet(extract(model, space, arch).eval(), space, arch, tmp_path / "export")
    subnet, loaded_arch = load_subnet(tmp_path / "export")
    assert loaded_arch == arch
    images = trained.calibration_batches()[0]
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(subnet(images), model(images, arch), rtol=0, atol=1e-5)
