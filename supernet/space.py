"""The search-space interface and the counting/sampling rules the spaces share.

Both built-in spaces are products of independent groups (a conv stage; the whole
transformer), each group being "a width choice × a variable-length sequence of
per-layer choices". Counting, uniform sampling and enumeration of such sequences
live here once.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
from torch import nn

from nasfleet.errors import NasfleetError
from nasfleet.supernet.arch import Arch, arch_from_dict

Choice = TypeVar("Choice")


class SearchSpace(ABC):
    """A set of subnets of one supernet: sample, bound, count, validate, cost, build."""

    name: str

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Arch:
        """An architecture drawn uniformly from the whole (canonical) space."""

    @abstractmethod
    def sample_choices(self, rng: np.random.Generator) -> Arch:
        """Each elastic dimension drawn independently and uniformly (depth first).

        This is how single-path one-shot methods sample during training: it keeps
        shallow subnets as frequent as deep ones, which uniform-over-architectures does not.
        """

    @abstractmethod
    def smallest(self) -> Arch: ...

    @abstractmethod
    def largest(self) -> Arch: ...

    @abstractmethod
    def size(self) -> int:
        """The number of distinct subnets."""

    @abstractmethod
    def enumerate(self) -> Iterator[Arch]:
        """Every subnet once, lazily (the space may be far too large to list)."""

    @abstractmethod
    def check(self, arch: Arch) -> list[str]:
        """Reasons the architecture is not in this space (empty when it is)."""

    @abstractmethod
    def flops(self, arch: Arch) -> int:
        """Exact multiply-adds of one forward pass on one input (convs, linears, attention)."""

    @abstractmethod
    def params(self, arch: Arch) -> int:
        """Exact parameter count of the extracted subnet."""

    @abstractmethod
    def build_supernet(self) -> nn.Module:
        """A fresh supernet whose ``forward(x, arch)`` runs any subnet of this space."""

    @abstractmethod
    def build_standalone(self, arch: Arch) -> nn.Module:
        """A plain module with the subnet's shapes and the supernet's parameter names."""

    @abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """The space's configuration, enough to rebuild it."""

    # -- genes: every subnet as a fixed-length vector of choice indices ------------
    # Evolutionary search mutates and recombines these, and accuracy predictors read
    # them. Each group (a conv stage; the transformer) contributes a width gene, a depth
    # gene and one gene per layer slot up to the deepest depth; slots beyond the chosen
    # depth are carried along inactive, so a later depth mutation can revive them.

    @abstractmethod
    def _groups(self) -> list[tuple[Sequence[Any], ChoiceSequence[Any]]]:
        """Each independent group of the space: (its width options, its layer sequence)."""

    @abstractmethod
    def _split(self, arch: Arch) -> list[tuple[Any, tuple[Any, ...]]]:
        """The architecture as (width, layers) per group."""

    @abstractmethod
    def _join(self, parts: list[tuple[Any, tuple[Any, ...]]]) -> Arch:
        """The inverse of :meth:`_split`."""

    def gene_sizes(self) -> list[int]:
        """How many values each gene can take."""
        sizes: list[int] = []
        for widths, seq in self._groups():
            sizes += [len(widths), len(seq.depths)] + [len(seq.options)] * seq.depths[-1]
        return sizes

    def to_genes(self, arch: Arch) -> tuple[int, ...]:
        self.validate(arch)
        genes: list[int] = []
        for (widths, seq), (width, layers) in zip(self._groups(), self._split(arch)):
            slots = [seq.options.index(layer) for layer in layers] + [0] * (seq.depths[-1] - len(layers))
            genes += [list(widths).index(width), seq.depths.index(len(layers)), *slots]
        return tuple(genes)

    def from_genes(self, genes: Sequence[int]) -> Arch:
        """The subnet the genes describe (inactive slots are ignored)."""
        parts = []
        at = 0
        for widths, seq in self._groups():
            depth = seq.depths[genes[at + 1]]
            slots = genes[at + 2 : at + 2 + depth]
            parts.append((widths[genes[at]], tuple(seq.options[g] for g in slots)))
            at += 2 + seq.depths[-1]
        return self._join(parts)

    def active_genes(self, genes: Sequence[int]) -> np.ndarray:
        """A mask of the genes that matter for these genes' subnet (slots within the chosen depth)."""
        mask: list[bool] = []
        at = 0
        for _, seq in self._groups():
            depth = seq.depths[genes[at + 1]]
            mask += [True, True] + [slot < depth for slot in range(seq.depths[-1])]
            at += 2 + seq.depths[-1]
        return np.array(mask, dtype=bool)

    def validate(self, arch: Arch) -> Arch:
        problems = self.check(arch)
        if problems:
            raise NasfleetError(f"architecture is outside the {self.name} search space: {problems[0]}")
        return arch

    def arch_from_dict(self, data: dict[str, Any]) -> Arch:
        return self.validate(arch_from_dict(data))


class ChoiceSequence(Generic[Choice]):
    """A variable-length sequence of per-layer choices: ``depth ∈ depths``, each layer one of ``options``."""

    def __init__(self, depths: Sequence[int], options: Sequence[Choice]) -> None:
        self.depths = sorted(set(depths))
        self.options = list(options)

    def count(self) -> int:
        return sum(len(self.options) ** d for d in self.depths)

    def sample_uniform(self, rng: np.random.Generator) -> tuple[Choice, ...]:
        """Uniform over all sequences: depth ``d`` is drawn with weight ``len(options)**d``."""
        weights = np.array([float(len(self.options)) ** d for d in self.depths])
        depth = self.depths[rng.choice(len(self.depths), p=weights / weights.sum())]
        return self._sample_layers(rng, depth)

    def sample_per_choice(self, rng: np.random.Generator) -> tuple[Choice, ...]:
        depth = self.depths[rng.integers(len(self.depths))]
        return self._sample_layers(rng, depth)

    def enumerate(self) -> Iterator[tuple[Choice, ...]]:
        for depth in self.depths:
            yield from itertools.product(self.options, repeat=depth)

    def _sample_layers(self, rng: np.random.Generator, depth: int) -> tuple[Choice, ...]:
        return tuple(self.options[i] for i in rng.integers(len(self.options), size=depth))


def check_member(problems: list[str], what: str, value: object, allowed: Sequence[object]) -> None:
    if value not in allowed:
        problems.append(f"{what} {value!r} is not one of {sorted(allowed)}")  # type: ignore[type-var]
