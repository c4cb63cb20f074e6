"""MixtureGrowth: grow a trained network wider or deeper by recombining its learned templates (Pham et al., 2024).

Growing a network by adding random weights brings noise that the trained part has to absorb;
MixtureGrowth makes every layer's weight a linear combination of a small bank of *templates*
from the start, so that growing can create the new weights as *new* combinations of templates
that are already trained for the task.

Here every weight tensor of two or more dimensions (convolutions, linears) of the supernet is
generated: its full tensor is tiled with blocks of the shape the *small* architecture reads of it
(output × input channels, full kernel), and block ``(a, b)`` is ``Σ_k c[a, b, k] · T[k]`` over the
layer's ``templates`` templates ``T``. Batch-norm and bias vectors stay plain tensors. The two
phases are two runs of the one trainer:

- ``phase: small`` trains the small architecture alone: only the leading block ``(0, 0)`` is
  read, so its coefficients and the templates learn, and every other block keeps the coefficients
  it was initialised with (rows of a random orthogonal matrix, as the paper's code does);
- ``nasfleet grow`` starts ``phase: grown`` from the small run's weights: the target architecture
  reads the other blocks too, and each of them is a new combination of the trained templates.
  ``new_weights: random`` is the ablation the paper compares with: outside the small
  architecture's region the grown network reads free tensors (freshly initialised by
  ``nasfleet grow``), not template combinations.
- Growing deeper: a layer of a block the small network does not have takes, at growth, a copy of
  the trained templates of the same layer in the stage's last block, and combines them with its
  own (untrained) coefficients. That block must not be the stage's first, whose input width
  differs, so a stage grows deeper from depth 2 or more.

The paper grows from two small networks trained with separate template sets (the grown layer's
diagonal blocks); this implements the single-network form its abstract describes. It is defined
on the mbconv space (width, expansion and depth growth; the blocks both networks have keep their
kernels) — see docs/mixturegrowth.md for what was measured.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import PositiveInt
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from nasfleet.errors import NasfleetError
from nasfleet.strategies.base import StrategyParams, SubnetTask, TrainingStrategy, require_mbconv
from nasfleet.strategies.registry import STRATEGIES
from nasfleet.supernet import Arch, SearchSpace
from nasfleet.supernet.arch import BlockChoice, ConvArch, StageChoice, arch_from_json
from nasfleet.supernet.mbconv import MBConvSpace


class MixtureGrowthParams(StrategyParams):
    phase: Literal["small", "grown"] = "small"
    """``small``: train the small architecture; ``grown``: train the target (started by ``nasfleet grow``)."""
    templates: PositiveInt = 4
    """Templates per layer: the dimension of the space new blocks are combined in."""
    small_arch: str | None = None
    """Arch JSON of the network that grows; default: the target's depths and kernels at each stage's
    narrowest width and each block's smallest expansion."""
    target_arch: str | None = None
    """Arch JSON of the grown network; default: the largest."""
    new_weights: Literal["templates", "random"] = "templates"
    """Grown phase: new blocks are combinations of the templates, or free tensors (the ablation)."""


def narrowest(space: MBConvSpace, target: ConvArch) -> ConvArch:
    """``target`` with each stage's narrowest width and each block's smallest expansion."""
    stages = []
    for spec, stage in zip(space.config.stages, target.stages):
        blocks = tuple(BlockChoice(block.kernel, spec.expands[0]) for block in stage.blocks)
        stages.append(StageChoice(spec.widths[0], blocks))
    return space.validate(ConvArch(tuple(stages), space=space.name))


def check_growth(small: ConvArch, target: ConvArch) -> None:
    """The small network must be the target made narrower or shallower, its blocks keeping their kernels."""
    for i, (s, t) in enumerate(zip(small.stages, target.stages)):
        if s.depth > t.depth:
            raise NasfleetError(f"mixturegrowth: stage {i} of small_arch is deeper than target_arch's")
        if [b.kernel for b in s.blocks] != [b.kernel for b in t.blocks[: s.depth]]:
            raise NasfleetError(
                f"mixturegrowth grows width, expansion and depth: the blocks of stage {i} of small_arch must have "
                "target_arch's kernels"
            )
        if s.depth < t.depth and s.depth < 2:
            raise NasfleetError(
                f"mixturegrowth grows a stage deeper from the templates of its last block after the first (the "
                f"first reads another width): stage {i} of small_arch needs depth 2 or more to grow to {t.depth}"
            )
        if s.width > t.width or any(a.expand > b.expand for a, b in zip(s.blocks, t.blocks)):
            raise NasfleetError(f"mixturegrowth: stage {i} of small_arch is wider than target_arch's")


_BLOCK_LAYER = re.compile(r"^stages\.(\d+)\.(\d+)\.(.+)$")


def depth_donors(names: list[str], small: ConvArch) -> dict[str, str]:
    """Each layer of a block beyond the small network's depth: the same layer of its stage's last block.

    Only stages of depth 2 or more donate: a stage's later blocks all have one shape, its first
    another (see :func:`check_growth`).
    """
    donors = {}
    for name in names:
        match = _BLOCK_LAYER.match(name)
        if match is None:
            continue
        stage, block, layer = int(match[1]), int(match[2]), match[3]
        depth = small.stages[stage].depth
        if block >= depth >= 2:
            donors[name] = f"stages.{stage}.{depth - 1}.{layer}"
    return donors


class _ReadShapes(TorchFunctionMode):
    """Records, for each watched parameter, the extent of it that one forward pass reads."""

    def __init__(self, watched: dict[int, str]) -> None:
        super().__init__()
        self.watched = watched
        self.extent: dict[str, tuple[int, ...]] = {}

    def _read(self, tensor: Any, shape: tuple[int, ...]) -> None:
        name = self.watched.get(id(tensor))
        if name is not None:
            seen = self.extent.get(name, (0,) * len(shape))
            self.extent[name] = tuple(max(a, b) for a, b in zip(seen, shape))

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func is torch.Tensor.__getitem__:
            self._read(args[0], tuple(out.shape))
        else:
            for arg in (*args, *(kwargs or {}).values()):
                if isinstance(arg, torch.Tensor):
                    self._read(arg, tuple(arg.shape))
        return out


def block_shapes(supernet: nn.Module, space: MBConvSpace, small: ConvArch) -> dict[str, tuple[int, ...]]:
    """Per weight tensor (2-D or more) that the small architecture reads: the block it reads
    (output × input, full kernel); the layers of deeper blocks take their donor's block shape."""
    weights = {name: p for name, p in supernet.named_parameters() if p.dim() >= 2}
    probe = _ReadShapes({id(p): name for name, p in weights.items()})
    example = torch.zeros(2, space.config.in_channels, space.config.image_size, space.config.image_size)
    was_training = supernet.training
    supernet.eval()
    with torch.no_grad(), probe:
        supernet(example, small)
    supernet.train(was_training)
    read = {name: (*probe.extent[name][:2], *p.shape[2:]) for name, p in weights.items() if name in probe.extent}
    grown = {name: read[donor] for name, donor in depth_donors(list(weights), small).items()}
    return {**read, **grown}


def tile(blocks: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``[n_out, n_in, o, i, *k]`` blocks laid out as one ``[n_out·o, n_in·i, *k]`` tensor, cropped to ``shape``."""
    n_out, n_in, o, i = blocks.shape[:4]
    full = blocks.transpose(1, 2).reshape(n_out * o, n_in * i, *blocks.shape[4:])
    return full[: shape[0], : shape[1]]


class TemplateBank(nn.Module):
    """One layer's templates ``[K, *block]`` and its blocks' coefficients ``[n_out, n_in, K]``.

    ``in_small``: the small network reads this layer's leading block (a layer of a block it does
    not have: no part).
    """

    def __init__(
        self, full: torch.Tensor, block: tuple[int, ...], count: int, generator: torch.Generator, in_small: bool = True,
    ) -> None:
        super().__init__()
        self.full_shape = full.shape
        self.block = block
        n_out, n_in = (math.ceil(n / b) for n, b in zip(full.shape[:2], block[:2]))
        # Each block has the scale of the layer's own initialisation: templates of its spread,
        # mixed by (nearly) unit-norm rows.
        std = float(full.detach().std())
        self.templates = nn.Parameter(torch.randn(count, *block, generator=generator) * std)
        coefficients = torch.empty(n_out * n_in, count)
        nn.init.orthogonal_(coefficients, generator=generator)
        self.coefficients = nn.Parameter(coefficients.view(n_out, n_in, count))
        small = torch.zeros(full.shape[:2], dtype=torch.bool)
        small[: block[0], : block[1]] = in_small
        self.register_buffer("small_region", small.view(*full.shape[:2], *(1,) * (full.dim() - 2)), persistent=False)

    def generate(self) -> torch.Tensor:
        blocks = torch.einsum("abk,k...->ab...", self.coefficients, self.templates)
        return tile(blocks, self.full_shape)


def bank_key(name: str) -> str:
    return name.replace(".", "__")


def templates_key(name: str) -> str:
    """Where the templates of weight ``name`` are in a :class:`TemplateMixedSupernet`'s state dict."""
    return f"banks.{bank_key(name)}.templates"


class TemplateMixedSupernet(nn.Module):
    """A supernet whose weight tensors are generated from per-layer template banks.

    ``forward(x, arch)`` generates the tensors and runs the supernet with them
    (``torch.func.functional_call``); :meth:`module_for` is a plain copy holding them, which is
    what extraction copies. With ``free_outside_small`` (the random-growth ablation) each tensor
    outside the small architecture's region is the supernet's own. ``donors`` maps a layer of a
    block beyond the small network's depth to the layer whose trained templates it starts from
    when the network grows; weights neither network reads stay plain tensors.
    """

    def __init__(
        self, supernet: nn.Module, blocks: dict[str, tuple[int, ...]], templates: int, generator: torch.Generator,
        free_outside_small: bool = False, donors: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.supernet = supernet
        self.names = list(blocks)
        self.donors = dict(donors or {})
        own = dict(supernet.named_parameters())
        self.banks = nn.ModuleDict({
            bank_key(n): TemplateBank(own[n], blocks[n], templates, generator, in_small=n not in self.donors)
            for n in self.names
        })
        self.free_outside_small = free_outside_small

    def bank(self, name: str) -> TemplateBank:
        return self.banks[bank_key(name)]  # type: ignore[return-value]

    def generate(self) -> dict[str, torch.Tensor]:
        own = dict(self.supernet.named_parameters())
        out = {}
        for name in self.names:
            bank = self.bank(name)
            mixed = bank.generate()
            out[name] = torch.where(bank.small_region, mixed, own[name]) if self.free_outside_small else mixed
        return out

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        return functional_call(self.supernet, self.generate(), (x, arch), strict=False)

    @torch.no_grad()
    def module_for(self, arch: Arch) -> nn.Module:
        """A plain supernet (same buffers: batch-norm statistics) holding the generated tensors."""
        plain = copy.deepcopy(self.supernet)
        params = dict(plain.named_parameters())
        for name, tensor in self.generate().items():
            params[name].copy_(tensor)
        return plain


@dataclass(frozen=True)
class GrowthPlan:
    small: ConvArch
    target: ConvArch


@STRATEGIES.register()
class MixtureGrowthStrategy(TrainingStrategy):
    """Train the small network (``phase: small``) or the grown one (``phase: grown``), weights from templates."""

    name = "mixturegrowth"
    Params = MixtureGrowthParams
    params: MixtureGrowthParams
    spaces = ("mbconv",)
    ranks_subnets = False
    # ZeRO-3 gathers partitioned parameters in module hooks; the functional call replaces the
    # supernet's weights by generated tensors, which that path is not written for.
    max_zero_stage = 2

    def __init__(self, space: SearchSpace, params: StrategyParams) -> None:
        mbconv = require_mbconv(space, "mixturegrowth")
        super().__init__(mbconv, params)
        target = self._arch(self.params.target_arch, "target_arch") or mbconv.largest()
        small = self._arch(self.params.small_arch, "small_arch") or narrowest(mbconv, target)
        check_growth(small, target)
        self.plan = GrowthPlan(small, target)

    def _arch(self, text: str | None, what: str) -> ConvArch | None:
        if text is None:
            return None
        try:
            arch = self.space.validate(arch_from_json(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise NasfleetError(f"mixturegrowth: {what} is not an architecture: {exc}") from None
        if not isinstance(arch, ConvArch):
            raise NasfleetError(f"mixturegrowth: {what} is not an mbconv architecture")
        return arch

    @property
    def trained_arch(self) -> ConvArch:
        return self.plan.small if self.params.phase == "small" else self.plan.target

    def wrap_model(self, supernet: nn.Module) -> nn.Module:
        blocks = block_shapes(supernet, self.space, self.plan.small)  # type: ignore[arg-type]
        # Its own generator, seeded from the job's seed: the templates differ per seed, and the
        # global RNG the trainer draws from next does not move.
        generator = torch.Generator().manual_seed(torch.initial_seed() + 1)
        free = self.params.phase == "grown" and self.params.new_weights == "random"
        donors = depth_donors(list(blocks), self.plan.small)
        return TemplateMixedSupernet(supernet, blocks, self.params.templates, generator, free_outside_small=free,
                                     donors=donors)

    def subnets_for_step(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        return [SubnetTask(self.trained_arch, role=self.params.phase)]


def grown_state(
    small_state: dict[str, torch.Tensor], model: TemplateMixedSupernet, new_weights: str, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """The grown network's starting weights from a trained small run's (the moment of growth).

    Everything the small run trained is kept. With ``templates``, the new blocks are the
    untrained coefficient rows over the trained templates: new combinations; a layer of a new,
    deeper block first copies its donor layer's trained templates. With ``random``, the free
    tensors the grown network reads outside the small region are drawn afresh at the spread of
    the layer's trained templates (a new block's: its donor's).
    """
    state = dict(small_state)
    for name, donor in model.donors.items():
        state[templates_key(name)] = small_state[templates_key(donor)].clone()
    if new_weights == "random":
        own = dict(model.supernet.named_parameters())
        for name in model.names:
            std = float(state[templates_key(name)].std())
            state[f"supernet.{name}"] = torch.randn(own[name].shape, generator=generator) * std
    return state
