"""Transformer space over image patches (a small ViT, pre-norm, mean-pooled).

Elastic: embedding width (shared by all layers), depth (the last layers are dropped),
and per layer the number of attention heads (fixed head width) and the MLP ratio.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator
from torch import nn

from nasfleet.supernet.arch import Arch, LayerChoice, TransformerArch
from nasfleet.supernet.elastic import ElasticLayerNorm, ElasticLinear
from nasfleet.supernet.space import ChoiceSequence, SearchSpace, check_member


class ViTSpaceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["vit"] = "vit"
    in_channels: PositiveInt = 1
    image_size: PositiveInt = 8
    num_classes: PositiveInt = 10
    patch_size: PositiveInt = 2
    head_dim: PositiveInt = 8
    embed_dims: list[PositiveInt] = Field(default=[32, 48, 64], min_length=1)
    depths: list[PositiveInt] = Field(default=[1, 2, 3], min_length=1)
    heads: list[PositiveInt] = Field(default=[1, 2, 4], min_length=1)
    mlp_ratios: list[PositiveFloat] = Field(default=[1.0, 2.0, 3.0], min_length=1)

    @model_validator(mode="after")
    def _check(self) -> ViTSpaceConfig:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        for name in ("embed_dims", "depths", "heads", "mlp_ratios"):
            setattr(self, name, sorted(set(getattr(self, name))))
        return self

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.patch_size**2


def mlp_hidden(embed_dim: int, mlp_ratio: float) -> int:
    return max(1, int(round(embed_dim * mlp_ratio)))


class TransformerSpace(SearchSpace):
    """Embedding width (all layers), depth, and per layer heads and MLP ratio: the set operations
    shared by the transformer spaces (image patches, text tokens); subclasses count and build."""

    config: Any
    """A config with ``embed_dims``, ``depths``, ``heads``, ``mlp_ratios`` and ``head_dim``."""

    def __init__(self, config: Any) -> None:
        self.config = config
        c = self.config
        self._layers = ChoiceSequence(c.depths, [LayerChoice(h, r) for h in c.heads for r in c.mlp_ratios])

    def config_dict(self) -> dict[str, Any]:
        return self.config.model_dump()

    def sample(self, rng: np.random.Generator) -> TransformerArch:
        embed = self.config.embed_dims[rng.integers(len(self.config.embed_dims))]
        return TransformerArch(embed, self._layers.sample_uniform(rng), space=self.name)

    def sample_choices(self, rng: np.random.Generator) -> TransformerArch:
        embed = self.config.embed_dims[rng.integers(len(self.config.embed_dims))]
        return TransformerArch(embed, self._layers.sample_per_choice(rng), space=self.name)

    def smallest(self) -> TransformerArch:
        c = self.config
        return TransformerArch(c.embed_dims[0], (LayerChoice(c.heads[0], c.mlp_ratios[0]),) * c.depths[0], space=self.name)

    def largest(self) -> TransformerArch:
        c = self.config
        return TransformerArch(
            c.embed_dims[-1], (LayerChoice(c.heads[-1], c.mlp_ratios[-1]),) * c.depths[-1], space=self.name
        )

    def size(self) -> int:
        return len(self.config.embed_dims) * self._layers.count()

    def enumerate(self) -> Iterator[TransformerArch]:
        for embed, layers in itertools.product(self.config.embed_dims, self._layers.enumerate()):
            yield TransformerArch(embed, layers, space=self.name)

    def check(self, arch: Arch) -> list[str]:
        if not isinstance(arch, TransformerArch) or arch.space != self.name:
            return [f"expected a {self.name} architecture, got space {getattr(arch, 'space', type(arch).__name__)!r}"]
        c = self.config
        problems: list[str] = []
        check_member(problems, "embed_dim", arch.embed_dim, c.embed_dims)
        check_member(problems, "depth", arch.depth, c.depths)
        for i, layer in enumerate(arch.layers):
            check_member(problems, f"layer {i} heads", layer.heads, c.heads)
            check_member(problems, f"layer {i} mlp_ratio", layer.mlp_ratio, c.mlp_ratios)
        return problems

    def _groups(self) -> list[tuple[Sequence[Any], ChoiceSequence[Any]]]:
        return [(self.config.embed_dims, self._layers)]

    def _split(self, arch: Arch) -> list[tuple[Any, tuple[Any, ...]]]:
        assert isinstance(arch, TransformerArch)
        return [(arch.embed_dim, arch.layers)]

    def _join(self, parts: list[tuple[Any, tuple[Any, ...]]]) -> TransformerArch:
        (embed_dim, layers), = parts
        return TransformerArch(embed_dim, layers, space=self.name)

    def layer_flops(self, arch: TransformerArch, tokens: int) -> int:
        """Multiply-adds of the transformer layers over ``tokens`` tokens."""
        total = 0
        for layer in arch.layers:
            width = layer.heads * self.config.head_dim
            total += 3 * tokens * arch.embed_dim * width  # q, k, v projections
            total += 2 * tokens * tokens * width  # scores q·kᵀ and the weighted sum of values
            total += tokens * width * arch.embed_dim  # output projection
            total += 2 * tokens * arch.embed_dim * mlp_hidden(arch.embed_dim, layer.mlp_ratio)
        return total

    def layer_params(self, arch: TransformerArch) -> int:
        """Parameters of the transformer layers."""
        e, total = arch.embed_dim, 0
        for layer in arch.layers:
            width, hidden = layer.heads * self.config.head_dim, mlp_hidden(e, layer.mlp_ratio)
            total += 2 * e + 3 * (e * width + width) + (width * e + e)  # norm, q/k/v, projection
            total += 2 * e + (e * hidden + hidden) + (hidden * e + e)  # norm, MLP
        return total


class ViTSpace(TransformerSpace):
    name = "vit"

    def __init__(self, config: ViTSpaceConfig | None = None) -> None:
        super().__init__(config or ViTSpaceConfig())

    def flops(self, arch: Arch) -> int:
        self.validate(arch)
        assert isinstance(arch, TransformerArch)
        c, e, t = self.config, arch.embed_dim, self.config.tokens
        return t * c.patch_dim * e + self.layer_flops(arch, t) + e * c.num_classes

    def params(self, arch: Arch) -> int:
        self.validate(arch)
        assert isinstance(arch, TransformerArch)
        c, e = self.config, arch.embed_dim
        total = c.patch_dim * e + e + c.tokens * e + self.layer_params(arch)  # patch embedding, positions, layers
        return total + 2 * e + e * c.num_classes + c.num_classes  # final norm and head

    def build_supernet(self) -> ViTSupernet:
        return ViTSupernet(self.config)

    def build_standalone(self, arch: Arch) -> ViTNet:
        self.validate(arch)
        assert isinstance(arch, TransformerArch)
        return ViTNet(self.config, arch)


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``[B, C, H, W]`` → ``[B, tokens, C·p·p]``."""
    patches = F.unfold(images, kernel_size=patch_size, stride=patch_size)
    return patches.transpose(1, 2)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, causal: bool = False) -> torch.Tensor:
    """Multi-head scaled dot-product attention on ``[B, T, heads·d]`` tensors (``causal``: token t
    attends to tokens ≤ t, as a decoder does).

    Written with explicit matmuls (not the fused kernel) so that its cost is the
    counted one and the elastic and plain networks run identical arithmetic.
    """
    batch, tokens, width = q.shape
    head_dim = width // heads

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(batch, tokens, heads, head_dim).transpose(1, 2)

    q, k, v = split(q), split(k), split(v)
    scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)
    if causal:
        future = torch.ones(tokens, tokens, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return (weights @ v).transpose(1, 2).reshape(batch, tokens, width)


class ElasticAttention(nn.Module):
    def __init__(self, embed_max: int, width_max: int, head_dim: int, causal: bool = False) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.causal = causal
        self.q = ElasticLinear(embed_max, width_max)
        self.k = ElasticLinear(embed_max, width_max)
        self.v = ElasticLinear(embed_max, width_max)
        self.proj = ElasticLinear(width_max, embed_max)

    def forward(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        width = heads * self.head_dim
        out = attend(self.q(x, width), self.k(x, width), self.v(x, width), heads, self.causal)
        return self.proj(out, x.shape[-1])


class ElasticMLP(nn.Module):
    def __init__(self, embed_max: int, hidden_max: int) -> None:
        super().__init__()
        self.fc1 = ElasticLinear(embed_max, hidden_max)
        self.fc2 = ElasticLinear(hidden_max, embed_max)

    def forward(self, x: torch.Tensor, hidden: int) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x, hidden)), x.shape[-1])


class ElasticTransformerLayer(nn.Module):
    def __init__(self, embed_max: int, width_max: int, hidden_max: int, head_dim: int, causal: bool = False) -> None:
        super().__init__()
        self.norm1 = ElasticLayerNorm(embed_max)
        self.attn = ElasticAttention(embed_max, width_max, head_dim, causal)
        self.norm2 = ElasticLayerNorm(embed_max)
        self.mlp = ElasticMLP(embed_max, hidden_max)

    def forward(self, x: torch.Tensor, layer: LayerChoice) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), layer.heads)
        return x + self.mlp(self.norm2(x), mlp_hidden(x.shape[-1], layer.mlp_ratio))


class ViTSupernet(nn.Module):
    """Every subnet of a :class:`ViTSpace`; ``forward(x, arch)`` runs one of them."""

    def __init__(self, config: ViTSpaceConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        embed_max = max(c.embed_dims)
        self.patch_embed = ElasticLinear(c.patch_dim, embed_max)
        self.pos_embed = nn.Parameter(torch.randn(c.tokens, embed_max) * 0.02)
        self.layers = nn.ModuleList(
            ElasticTransformerLayer(
                embed_max, max(c.heads) * c.head_dim, mlp_hidden(embed_max, max(c.mlp_ratios)), c.head_dim
            )
            for _ in range(max(c.depths))
        )
        self.norm = ElasticLayerNorm(embed_max)
        self.head = ElasticLinear(embed_max, c.num_classes)

    def forward(self, x: torch.Tensor, arch: TransformerArch) -> torch.Tensor:
        e = arch.embed_dim
        x = self.patch_embed(patchify(x, self.config.patch_size), e) + self.pos_embed[:, :e]
        for module, layer in zip(self.layers, arch.layers):
            x = module(x, layer)
        return self.head(self.norm(x).mean(dim=1))


class Attention(nn.Module):
    def __init__(self, embed_dim: int, width: int, heads: int, causal: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.q = nn.Linear(embed_dim, width)
        self.k = nn.Linear(embed_dim, width)
        self.v = nn.Linear(embed_dim, width)
        self.proj = nn.Linear(width, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(attend(self.q(x), self.k(x), self.v(x), self.heads, self.causal))


class MLP(nn.Module):
    def __init__(self, embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden)
        self.fc2 = nn.Linear(hidden, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TransformerLayer(nn.Module):
    def __init__(self, embed_dim: int, layer: LayerChoice, head_dim: int, causal: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = Attention(embed_dim, layer.heads * head_dim, layer.heads, causal)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = MLP(embed_dim, mlp_hidden(embed_dim, layer.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTNet(nn.Module):
    """One subnet as a plain network; parameter names match :class:`ViTSupernet`."""

    def __init__(self, config: ViTSpaceConfig, arch: TransformerArch) -> None:
        super().__init__()
        e = arch.embed_dim
        self.patch_size = config.patch_size
        self.patch_embed = nn.Linear(config.patch_dim, e)
        self.pos_embed = nn.Parameter(torch.zeros(config.tokens, e))
        self.layers = nn.ModuleList(TransformerLayer(e, layer, config.head_dim) for layer in arch.layers)
        self.norm = nn.LayerNorm(e)
        self.head = nn.Linear(e, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(patchify(x, self.patch_size)) + self.pos_embed
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x).mean(dim=1))
