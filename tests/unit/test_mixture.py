"""Mixture-of-Supernets: routed weights per architecture, extraction equal to the mixture, and routing that
depends on the architecture (the mechanism: a router that ignores the arch fails these tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nasfleet.orchestrator.evaluate import load_trained
from nasfleet.orchestrator.launch import train_job
from nasfleet.strategies import build_strategy
from nasfleet.strategies.mixture import MixtureOfSupernets, routing_spread
from nasfleet.supernet import Conv1DSpace, GPTSpace, GPTSpaceConfig, MBConvSpace, ViTSpace, extract, load_subnet, save_subnet
from nasfleet.supernet.registry import space_from_dict

from conftest import TINY_SPACE, tiny_config

SPACES = {
    "mbconv": space_from_dict(TINY_SPACE),
    "vit": ViTSpace(),
    "conv1d": Conv1DSpace(),
    "gpt": GPTSpace(GPTSpaceConfig(image_size=8, head_dim=8, embed_dims=[16, 24], depths=[1, 2], heads=[1, 2])),
}
NAME = "mixture-of-supernets"


def inputs(space: str, count: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    if space == "gpt":
        return torch.randint(0, 256, (count, 1, 8), generator=generator)
    return torch.randn(count, 1, 8, 8, generator=generator)


def archs(space: object) -> list:
    rng = np.random.default_rng(0)
    return [space.smallest(), space.largest(), *(space.sample_choices(rng) for _ in range(3))]  # type: ignore[attr-defined]


def perturbed_mixture(space_name: str, mixing: str) -> MixtureOfSupernets:
    """A mixture whose experts differ (as after training), in eval mode."""
    torch.manual_seed(0)
    params = {"rescale": True} if mixing == "rescaled" else {"mixing": mixing}
    model = build_strategy(NAME, params, SPACES[space_name]).build_model()
    with torch.no_grad():
        for extra in model.experts:
            extra.add_(0.05 * torch.randn_like(extra))
    return model.eval()


@pytest.mark.parametrize("mixing", ["layer", "neuron", "rescaled"])
@pytest.mark.parametrize("space_name", SPACES)
def test_extracted_subnet_computes_the_mixture_at_its_arch(space_name: str, mixing: str, tmp_path: Path) -> None:
    model, space = perturbed_mixture(space_name, mixing), SPACES[space_name]
    x = inputs(space_name, 3)
    for i, arch in enumerate(archs(space)):
        with torch.no_grad():
            expected = model(x, arch)
            save_subnet(extract(model, space, arch), space, arch, tmp_path / str(i))
            loaded, loaded_arch = load_subnet(tmp_path / str(i))
            assert loaded_arch == arch
            torch.testing.assert_close(loaded(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rescale", [False, True])
def test_before_training_every_arch_computes_the_plain_supernet(rescale: bool) -> None:
    space = SPACES["mbconv"]
    torch.manual_seed(0)
    plain = space.build_supernet().eval()
    torch.manual_seed(0)
    model = build_strategy(NAME, {"rescale": rescale}, space).build_model().eval()
    x = inputs("mbconv", 4)
    for arch in archs(space):
        with torch.no_grad():
            torch.testing.assert_close(model(x, arch), plain(x, arch), rtol=1e-5, atol=1e-6)


def test_neuron_wise_routing_gives_one_coefficient_vector_per_output_row() -> None:
    model = perturbed_mixture("gpt", "neuron")
    arch = SPACES["gpt"].largest()
    for name, coef in zip(model.names, model.coefficients(arch)):
        assert coef.shape == (model.base.get_parameter(name).shape[0], 2)
        torch.testing.assert_close(coef.sum(dim=1), torch.ones(coef.shape[0]))


def test_the_router_reads_the_architecture() -> None:
    space = SPACES["gpt"]
    routed = build_strategy(NAME, {}, space).build_model()
    blind = build_strategy(NAME, {"route_arch": False}, space).build_model()
    assert routing_spread(routed, archs(space)) > 1e-3
    assert routing_spread(blind, archs(space)) < 1e-7


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, object]:
    """Two tiny runs (8 steps), identical but for whether the router sees the architecture."""
    runs = {}
    for route_arch in (True, False):
        config = tiny_config(
            tmp_path_factory.mktemp(f"route{route_arch}"),
            strategy={"name": NAME, "params": {"num_random": 1, "route_arch": route_arch}},
            optim={"steps": 8, "lr": 0.05, "warmup_steps": 2},
        )
        train_job(config)
        runs[route_arch] = load_trained(config.run_dir)
    return runs


def test_training_gives_architectures_their_own_weights(trained_pair: dict[bool, object]) -> None:
    """The defining step: after training, the smallest and the largest subnet read different values from
    the same weight positions. Plain weight sharing (or a router that ignores the arch) gives them the same."""
    for route_arch, run in trained_pair.items():
        model, space = run.model, run.space  # type: ignore[attr-defined]
        small = model.module_for(space.smallest()).state_dict()
        large = model.module_for(space.largest()).state_dict()
        differs = max(float((small[n] - large[n]).abs().max()) for n in model.names)
        if route_arch:
            assert differs > 1e-4, "routing gave every architecture the same weights"
        else:
            assert differs < 1e-6
    # The router itself learned: it is not at its initial weights.
    fresh = build_strategy(NAME, {"num_random": 1}, trained_pair[True].space).build_model()  # type: ignore[attr-defined]
    trained_router = trained_pair[True].model.router.state_dict()  # type: ignore[attr-defined]
    assert any(not torch.equal(v, trained_router[k]) for k, v in fresh.router.state_dict().items())


def test_the_trained_mixture_exports_what_it_computes(trained_pair: dict[bool, object]) -> None:
    run = trained_pair[True]
    model, space = run.model.eval(), run.space  # type: ignore[attr-defined]
    x = inputs("mbconv", 4)
    for arch in archs(space):
        with torch.no_grad():
            torch.testing.assert_close(extract(model, space, arch).eval()(x), model(x, arch), rtol=1e-5, atol=1e-5)


def test_only_mbconv_like_weights_are_mixed() -> None:
    model = build_strategy(NAME, {}, MBConvSpace()).build_model()
    assert model.names and all(n.endswith(".weight") and model.base.get_parameter(n).dim() >= 2 for n in model.names)
    gpt = build_strategy(NAME, {}, SPACES["gpt"]).build_model()
    assert "tok_embed" not in gpt.names  # embedding tables stay shared


@pytest.mark.parametrize("rescale", [False, True])
def test_rescaled_mixture_takes_the_plain_supernets_step_when_evenly_mixed(rescale: bool) -> None:
    """One SGD step with the router's output zeroed (even mixing): the rescaled mixture's weights move as the
    plain supernet's do; the plain mixture's move by half (sum of a_e^2 = 1/2 for two experts)."""
    space, arch = SPACES["mbconv"], SPACES["mbconv"].largest()
    torch.manual_seed(0)
    plain = space.build_supernet()
    torch.manual_seed(0)
    model = build_strategy(NAME, {"rescale": rescale}, space).build_model()
    with torch.no_grad():
        model.router[2].weight.zero_()
        model.router[2].bias.zero_()
    x, labels = inputs("mbconv", 8), torch.arange(8) % 10
    before = {n: t.detach().clone() for n, t in model.mixed_tensors(arch).items()}
    for net, params in ((plain, list(plain.parameters())), (model, list(model.parameters()))):
        grads = torch.autograd.grad(torch.nn.functional.cross_entropy(net(x, arch), labels), params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is not None:
                    p.sub_(0.1 * g)
    after = model.mixed_tensors(arch)
    name = "stages.0.0.expand.conv.weight"
    plain_move = plain.get_parameter(name).detach() - before[name]
    mixture_move = after[name].detach() - before[name]
    torch.testing.assert_close(mixture_move, plain_move * (1.0 if rescale else 0.5), rtol=1e-4, atol=1e-7)
