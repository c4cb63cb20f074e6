"""A hypernetwork generates some of the supernet's weights from the architecture, optionally with
Magnitude-Invariant Parametrisation (MIP; Ortiz, Guttag and Dalca, 2023).

The architecture is encoded as its genes (``space.to_genes``), each scaled to [0, 1] by its
number of values: ``x``. A small MLP ``h`` maps the encoding to the flattened weights of the
target layers; the rest of the supernet is shared as usual. MIP changes two things:

- the input is ``[x, 1 − x]``, whose L1 norm is the number of genes for every architecture, so
  the scale of ``h``'s activations (and of the weights it generates) cannot follow ``|x|``;
- the output is added to a learned base: ``θ = θ₀ + h([x, 1 − x])``, where ``θ₀`` is the
  supernet's own (initialised, trained) tensor of that layer.

Without MIP, ``θ = h(x)``: the supernet's own tensors of the target layers are not used. Both
variants initialise ``h`` the same way (PyTorch's defaults), so they differ in exactly those two
changes. Sampling is single-path uniform (as ``uniform``): one random subnet a step.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from pydantic import PositiveInt
from torch import nn
from torch.func import functional_call

from nasfleet.errors import NasfleetError
from nasfleet.strategies.base import StrategyParams, SubnetTask, TrainingStrategy
from nasfleet.strategies.registry import STRATEGIES
from nasfleet.supernet import Arch, SearchSpace


class HypernetworkParams(StrategyParams):
    mip: bool = True
    """Magnitude-invariant parametrisation: input ``[x, 1 − x]`` and output added to the base ``θ₀``."""
    targets: list[str] = []
    """Names of the supernet parameters the hypernetwork generates; empty: the last ``last_weights``."""
    last_weights: PositiveInt = 4
    """With no ``targets``: how many of the supernet's last weight tensors (2-D or more) it generates."""
    hidden: PositiveInt = 32
    """Width of the hypernetwork's two hidden layers."""


def gene_scale(space: SearchSpace) -> torch.Tensor:
    """Per gene, what its index is divided by to lie in [0, 1] (a gene with one value stays 0)."""
    return torch.tensor([max(n - 1, 1) for n in space.gene_sizes()], dtype=torch.float32)


def default_targets(supernet: nn.Module, count: int) -> list[str]:
    """The last ``count`` weight tensors of two or more dimensions (convolutions, linears), in order."""
    weights = [name for name, p in supernet.named_parameters() if p.dim() >= 2]
    return weights[-count:]


class HypernetworkSupernet(nn.Module):
    """A supernet whose ``targets`` tensors are generated per architecture by an MLP.

    ``forward(x, arch)`` generates the tensors and runs the supernet with them in place of its
    own (``torch.func.functional_call``), so it works for any space. :meth:`module_for` returns a
    plain copy of the supernet holding the generated tensors, which is what :func:`extract` copies.
    """

    def __init__(
        self, supernet: nn.Module, space: SearchSpace, targets: list[str], *, mip: bool, hidden: int
    ) -> None:
        super().__init__()
        own = dict(supernet.named_parameters())
        missing = [name for name in targets if name not in own]
        if missing:
            raise NasfleetError(f"hypernetwork targets are not parameters of the {space.name} supernet: {missing}")
        self.supernet = supernet
        self.space = space
        self.mip = mip
        self.targets = list(targets)
        self.shapes = [own[name].shape for name in self.targets]
        self.register_buffer("gene_scale", gene_scale(space), persistent=False)
        genes = len(space.gene_sizes())
        outputs = sum(math.prod(shape) for shape in self.shapes)
        self.hyper = nn.Sequential(
            nn.Linear(2 * genes if mip else genes, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, outputs),
        )

    def encode(self, arch: Arch) -> torch.Tensor:
        """The hypernetwork's input: ``x`` (genes in [0, 1]), or ``[x, 1 − x]`` under MIP."""
        genes = torch.tensor(self.space.to_genes(arch), dtype=torch.float32, device=self.gene_scale.device)
        x = genes / self.gene_scale
        return torch.cat([x, 1 - x]) if self.mip else x

    def generate(self, arch: Arch) -> dict[str, torch.Tensor]:
        """The target tensors for ``arch``: ``θ₀ + h(encoding)`` under MIP, else ``h(encoding)``."""
        flat = self.hyper(self.encode(arch))
        own = dict(self.supernet.named_parameters())
        out: dict[str, torch.Tensor] = {}
        at = 0
        for name, shape in zip(self.targets, self.shapes):
            size = math.prod(shape)
            delta = flat[at : at + size].view(shape)
            out[name] = own[name] + delta if self.mip else delta
            at += size
        return out

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        return functional_call(self.supernet, self.generate(arch), (x, arch), strict=False)

    @torch.no_grad()
    def module_for(self, arch: Arch) -> nn.Module:
        """A plain supernet (same buffers: batch-norm statistics) holding ``arch``'s generated tensors."""
        plain = copy.deepcopy(self.supernet)
        params = dict(plain.named_parameters())
        for name, tensor in self.generate(arch).items():
            params[name].copy_(tensor)
        return plain


@STRATEGIES.register()
class HypernetworkStrategy(TrainingStrategy):
    """One uniformly drawn subnet a step; its target layers' weights come from a hypernetwork of its genes.

    ``mip`` selects the magnitude-invariant parametrisation (see the module docstring); the
    measured effect is in docs/hypernetwork.md.
    """

    name = "hypernetwork"
    Params = HypernetworkParams
    # ZeRO-3 gathers partitioned parameters in module hooks; the functional call replaces some
    # of them by generated tensors, which that path is not written for.
    max_zero_stage = 2
    params: HypernetworkParams

    def wrap_model(self, supernet: nn.Module) -> nn.Module:
        targets = self.params.targets or default_targets(supernet, self.params.last_weights)
        return HypernetworkSupernet(supernet, self.space, targets, mip=self.params.mip, hidden=self.params.hidden)

    def subnets_for_step(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        return [SubnetTask(self.space.sample_choices(rng), role="random")]

    def state_dict(self) -> dict[str, Any]:
        return {}
