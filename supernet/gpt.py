"""A decoder-only language-model space (GPT-style: pre-norm, causal attention, learned positions).

Elastic: embedding width (shared by all layers), depth (the last layers are dropped), and per
layer the number of attention heads (fixed head width) and the MLP ratio — the choices of the
elastic/nested LLM work (MatFormer, Flextron), at a size that trains on a CPU.

The data sets deliver a batch as ``[B, 1, T]`` token ids (one "channel" of ``T`` tokens:
``image_size`` is the context length and ``num_classes`` the vocabulary), with the next tokens
``[B, T]`` as labels; logits come out as ``[B, vocab, T]``, class dimension 1 as
``F.cross_entropy`` expects, so every loss and accuracy of the trainer applies per token.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt
from torch import nn

from nasfleet.supernet.arch import Arch, TransformerArch
from nasfleet.supernet.elastic import ElasticLayerNorm, ElasticLinear
from nasfleet.supernet.vit import ElasticTransformerLayer, TransformerLayer, TransformerSpace, mlp_hidden


class GPTSpaceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["gpt"] = "gpt"
    in_channels: Literal[1] = 1
    """One row of tokens per example (the data set's shape)."""
    image_size: PositiveInt = 64
    """The context length in tokens."""
    num_classes: PositiveInt = 256
    """The vocabulary (256: bytes)."""
    head_dim: PositiveInt = 16
    embed_dims: list[PositiveInt] = Field(default=[64, 96, 128], min_length=1)
    depths: list[PositiveInt] = Field(default=[2, 3, 4], min_length=1)
    heads: list[PositiveInt] = Field(default=[2, 4], min_length=1)
    mlp_ratios: list[PositiveFloat] = Field(default=[2.0, 3.0, 4.0], min_length=1)
    tie_embeddings: bool = True
    """The output layer reads the token embedding (no weights of its own), as GPT-2 does."""

    def model_post_init(self, _context: object) -> None:
        for name in ("embed_dims", "depths", "heads", "mlp_ratios"):
            setattr(self, name, sorted(set(getattr(self, name))))


class GPTSpace(TransformerSpace):
    name = "gpt"
    config: GPTSpaceConfig

    def __init__(self, config: GPTSpaceConfig | None = None) -> None:
        super().__init__(config or GPTSpaceConfig())

    def flops(self, arch: Arch) -> int:
        """Multiply-adds of one sequence of ``image_size`` tokens; the embedding lookup costs none,
        and the causal mask saves none (the full score matrix is computed, then masked)."""
        self.validate(arch)
        assert isinstance(arch, TransformerArch)
        c, t = self.config, self.config.image_size
        return self.layer_flops(arch, t) + t * arch.embed_dim * c.num_classes

    def params(self, arch: Arch) -> int:
        self.validate(arch)
        assert isinstance(arch, TransformerArch)
        c, e = self.config, arch.embed_dim
        total = c.num_classes * e + c.image_size * e + self.layer_params(arch) + 2 * e  # embeddings, layers, norm
        return total if c.tie_embeddings else total + e * c.num_classes + c.num_classes

    def build_supernet(self) -> GPTSupernet:
        return GPTSupernet(self.config)

    def build_standalone(self, arch: Arch) -> GPTNet:
        self.validate(arch)
        assert isinstance(arch, TransformerArch)
        return GPTNet(self.config, arch)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """``[B, 1, T]`` token ids (the data sets' layout) as ``[B, T]``."""
    return x[:, 0].long()


class GPTSupernet(nn.Module):
    """Every subnet of a :class:`GPTSpace`; ``forward(x, arch)`` runs one of them."""

    def __init__(self, config: GPTSpaceConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        embed_max = max(c.embed_dims)
        self.tok_embed = nn.Parameter(torch.randn(c.num_classes, embed_max) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(c.image_size, embed_max) * 0.02)
        self.layers = nn.ModuleList(
            ElasticTransformerLayer(
                embed_max, max(c.heads) * c.head_dim, mlp_hidden(embed_max, max(c.mlp_ratios)), c.head_dim, causal=True
            )
            for _ in range(max(c.depths))
        )
        self.norm = ElasticLayerNorm(embed_max)
        self.head = None if c.tie_embeddings else ElasticLinear(embed_max, c.num_classes)

    def forward(self, x: torch.Tensor, arch: TransformerArch) -> torch.Tensor:
        e = arch.embed_dim
        h = F.embedding(_tokens(x), self.tok_embed[:, :e]) + self.pos_embed[:, :e]
        for module, layer in zip(self.layers, arch.layers):
            h = module(h, layer)
        h = self.norm(h)
        logits = F.linear(h, self.tok_embed[:, :e]) if self.head is None else self.head(h)
        return logits.transpose(1, 2)


class GPTNet(nn.Module):
    """One subnet as a plain network; parameter names match :class:`GPTSupernet`."""

    def __init__(self, config: GPTSpaceConfig, arch: TransformerArch) -> None:
        super().__init__()
        e = arch.embed_dim
        self.tok_embed = nn.Parameter(torch.zeros(config.num_classes, e))
        self.pos_embed = nn.Parameter(torch.zeros(config.image_size, e))
        self.layers = nn.ModuleList(TransformerLayer(e, layer, config.head_dim, causal=True) for layer in arch.layers)
        self.norm = nn.LayerNorm(e)
        self.head = None if config.tie_embeddings else nn.Linear(e, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.embedding(_tokens(x), self.tok_embed) + self.pos_embed
        for layer in self.layers:
            h = layer(h)
        h = self.norm(h)
        logits = F.linear(h, self.tok_embed) if self.head is None else self.head(h)
        return logits.transpose(1, 2)
