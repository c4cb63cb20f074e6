"""Mixture-of-Supernets: architecture-routed mixtures of expert weights (Jawahar et al., 2023).

A plain weight-sharing supernet gives every subnet the leading slice of one tensor per layer,
so subnets that want different weights for the same slice fight over it. Here each mixed
tensor (every ``*.weight`` with two or more dimensions: linear and conv weights) is held as
``E`` expert tensors, and a small router reads the architecture's encoding and gives, per
layer, softmax coefficients over the experts; the layer's weight for that architecture is the
coefficient-weighted sum of the experts, sliced as usual. Biases, norms and embedding tables
stay shared. With ``mixing: neuron`` (the paper's neuron-wise variant) the router gives one
coefficient vector per output row of each mixed tensor instead of one per tensor.

The supernet's own code runs unchanged (``torch.func.functional_call`` with the mixed tensors),
so every search space works. :meth:`MixtureOfSupernets.module_for` materialises the routed
weights of one architecture as a plain supernet, which :func:`nasfleet.supernet.extract` slices:
an exported subnet computes what the mixture computes at that architecture.

Sampling is the sandwich rule (largest on labels, smallest and random subnets distilled from
it), so the comparison with plain ``sandwich`` differs only in the weights.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn
from torch.func import functional_call

from nasfleet.strategies.registry import STRATEGIES
from nasfleet.strategies.sandwich import SandwichParams, SandwichStrategy
from nasfleet.supernet import Arch, SearchSpace


def mixed_parameter_names(supernet: nn.Module) -> list[str]:
    """The tensors that become mixtures: every ``*.weight`` with two or more dimensions."""
    return [name for name, p in supernet.named_parameters() if name.endswith(".weight") and p.dim() >= 2]


def arch_encoding(space: SearchSpace, arch: Arch) -> torch.Tensor:
    """The architecture as the router reads it: each active gene one-hot, inactive slots all zero."""
    genes = space.to_genes(arch)
    active = space.active_genes(genes)
    parts = []
    for gene, size, on in zip(genes, space.gene_sizes(), active):
        part = torch.zeros(size)
        if on:
            part[gene] = 1.0
        parts.append(part)
    return torch.cat(parts)


class MixtureOfSupernets(nn.Module):
    """A supernet whose mixed tensors are routed mixtures of ``num_experts`` expert tensors.

    ``base`` keeps expert 0 of each mixed tensor (and every unmixed parameter and buffer);
    ``experts[i]`` stacks experts ``1..E-1`` of the ``i``-th mixed tensor. All experts start as
    copies of the base's initial weights, so at step 0 every architecture computes exactly the
    plain supernet; the router starts random (its own seeded generator, no global RNG drawn), so
    architectures get different coefficients, and the experts move apart as they train.
    ``route_arch=False`` feeds the router a constant instead of the encoding: every
    architecture then gets the same mixture (the ablation that removes routing).
    """

    def __init__(
        self,
        supernet: nn.Module,
        space: SearchSpace,
        num_experts: int,
        router_hidden: int,
        mixing: Literal["layer", "neuron"],
        route_arch: bool = True,
        seed: int = 0,
        rescale: bool = False,
    ) -> None:
        super().__init__()
        self.base = supernet
        self.space = space
        self.num_experts = num_experts
        self.mixing = mixing
        self.route_arch = route_arch
        self.names = mixed_parameter_names(supernet)
        shapes = [supernet.get_parameter(n).shape for n in self.names]
        # A mixed weight moves by lr * sum(a_e^2) * grad per SGD step (each expert gets a_e * grad):
        # half the plain supernet's step for two evenly mixed experts. Storing the experts at
        # 1/sqrt(E) and mixing with gain sqrt(E) gives evenly mixed experts the plain step size.
        self.gain = float(num_experts) ** 0.5 if rescale else 1.0
        with torch.no_grad():
            for n in self.names:
                supernet.get_parameter(n).div_(self.gain)
        self.experts = nn.ParameterList(
            nn.Parameter(supernet.get_parameter(n).detach().clone().unsqueeze(0).repeat(num_experts - 1, *[1] * len(s)))
            for n, s in zip(self.names, shapes)
        )
        # Coefficient vectors per mixed tensor: one (layer-wise) or one per output row (neuron-wise).
        self.groups = [1 if mixing == "layer" else s[0] for s in shapes]
        generator = torch.Generator().manual_seed(seed)
        inputs = sum(space.gene_sizes())
        self.router = nn.Sequential(nn.Linear(inputs, router_hidden), nn.ReLU(), nn.Linear(router_hidden, sum(self.groups) * num_experts))
        with torch.no_grad():
            for layer in (self.router[0], self.router[2]):
                bound = 1.0 / layer.in_features**0.5
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
            # Logits of spread about 1 across architectures: routing differs from the first step.
            self.router[2].weight.mul_(3.0)
        self._encodings: dict[Arch, torch.Tensor] = {}

    def encoding(self, arch: Arch) -> torch.Tensor:
        if arch not in self._encodings:
            self._encodings[arch] = arch_encoding(self.space, arch)
        code = self._encodings[arch]
        return code if self.route_arch else torch.ones_like(code)

    def coefficients(self, arch: Arch) -> list[torch.Tensor]:
        """Per mixed tensor, ``[groups, E]`` softmax coefficients over the experts for ``arch``."""
        weight = self.router[0].weight
        logits = self.router(self.encoding(arch).to(device=weight.device, dtype=weight.dtype))
        out = []
        at = 0
        for groups in self.groups:
            out.append(torch.softmax(logits[at : at + groups * self.num_experts].view(groups, self.num_experts), dim=1))
            at += groups * self.num_experts
        return out

    def mixed_tensors(self, arch: Arch) -> dict[str, torch.Tensor]:
        """The routed weight of every mixed tensor at ``arch`` (full supernet shape, before slicing)."""
        mixed = {}
        for name, extra, coef in zip(self.names, self.experts, self.coefficients(arch)):
            stacked = torch.cat([self.base.get_parameter(name).unsqueeze(0), extra])  # [E, *shape]
            view = coef.T.reshape(self.num_experts, coef.shape[0], *[1] * (stacked.dim() - 2))
            mixed[name] = self.gain * (view * stacked).sum(dim=0)
        return mixed

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        return functional_call(self.base, self.mixed_tensors(arch), (x, arch))

    @torch.no_grad()
    def module_for(self, arch: Arch) -> nn.Module:
        """A plain supernet holding ``arch``'s routed weights: what extraction slices from."""
        plain = copy.deepcopy(self.base)
        for name, tensor in self.mixed_tensors(arch).items():
            plain.get_parameter(name).copy_(tensor)
        return plain


class MixtureParams(SandwichParams):
    num_experts: int = Field(default=2, ge=2)
    """Expert tensors per mixed weight (memory of the mixed weights grows with it)."""
    router_hidden: PositiveInt = 32
    mixing: Literal["layer", "neuron"] = "layer"
    """One coefficient vector per mixed tensor, or one per output row of it (neuron-wise)."""
    route_arch: bool = True
    """False: the router reads a constant, so all architectures share one mixture (ablation)."""
    router_seed: int = 0
    """Seeds the router's initial weights (its own generator: identical on every rank)."""
    rescale: bool = False
    """Keep the mixed weights' SGD step size that of the plain supernet when the experts are evenly
    mixed (experts stored at 1/sqrt(E), mixed with gain sqrt(E)); False is the paper's plain mixture."""


@STRATEGIES.register()
class MixtureOfSupernetsStrategy(SandwichStrategy):
    """Sandwich sampling on a Mixture-of-Supernets: each subnet trains its own routed weights."""

    name = "mixture-of-supernets"
    Params = MixtureParams
    params: MixtureParams
    # The mixture reads expert 0 from the base supernet before that module's forward runs, which
    # ZeRO-3's per-module parameter gathering does not see; stages 0-2 keep whole parameters.
    max_zero_stage = 2

    def wrap_model(self, supernet: nn.Module) -> nn.Module:
        p = self.params
        return MixtureOfSupernets(
            supernet, self.space, p.num_experts, p.router_hidden, p.mixing, p.route_arch, p.router_seed, p.rescale
        )


def routing_spread(model: MixtureOfSupernets, archs: list[Arch]) -> float:
    """Mean absolute difference of the archs' coefficients from their average: 0 when routing ignores the arch."""
    with torch.no_grad():
        coefs = torch.stack([torch.cat([c.reshape(-1) for c in model.coefficients(a)]) for a in archs])
    return float((coefs - coefs.mean(dim=0)).abs().mean())


__all__ = ["MixtureOfSupernets", "MixtureOfSupernetsStrategy", "MixtureParams", "arch_encoding", "routing_spread"]
