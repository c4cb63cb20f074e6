"""TangleNAS: differentiable NAS on a weight-entangled supernet (Sukthanker et al., 2024).

Each elastic decision gets architecture logits α (one vector over its options), and a step
trains the *superposition* of all subnets in one forward pass of the supernet's full tensors,
so memory stays that of one supernet:

- a channel choice (a stage's width, a block's expansion, heads, MLP hidden width, embedding
  width) multiplies the layer's full output by ``m_c = Σ_k p_k · 1[c < w_k]``, applied where
  that is exact: after a per-channel batch norm and activation (conv), after attention (per
  head), after the MLP activation, after a projection back to the embedding;
- a hidden width that is a product of two choices (a block's input width × its expansion, an
  embedding width × an MLP ratio) uses the mask of the product distribution;
- a kernel choice mixes the zero-padded centre crops in weight space: ``W · Σ_k p_k · M_k``
  with ``M_k`` the centre ``k`` window of the full kernel;
- a layer norm over a chosen embedding width is the mixture of the sliced, zero-padded norms
  (``Σ_k p_k · pad(LN(x[:e_k]))``: a plain mask over a full-width norm would change its statistics);
- a depth choice mixes the stage's (or stack's) outputs after each possible depth.

At a one-hot ``p`` every term reduces to the discrete subnet's computation (the tests check it),
and the found architecture is the argmax of α per decision (:meth:`TangleNASSupernet.derived_arch`).

Updates alternate as in first-order DARTS: the trainer's step trains the network weights
through the superposition on its training batches (α fixed), and before every ``arch_every``-th
step (after ``warmup_steps`` of weights only) the strategy takes one step on α alone, with its
own Adam (``arch_lr``, betas (0.5, 0.999), L2 ``arch_weight_decay``, as DARTS), on a batch drawn
from a held-out part of the training split (``arch_holdout``; the trainer's batches then come
from the rest). The α batch is a function of the step and is the same on every rank; the α
gradient is broadcast from rank 0 before the update, so α and its Adam state stay identical
on all ranks. α lives in the wrapper's (persistent) buffers, so checkpoints and exports carry
it; the Adam moments are the strategy's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from torch import nn

from nasfleet.errors import NasfleetError
from nasfleet.strategies.base import StrategyParams, SubnetTask, TrainingStrategy, find_module
from nasfleet.strategies.registry import STRATEGIES
from nasfleet.supernet import Arch, SearchSpace
from nasfleet.supernet.arch import BlockChoice, ConvArch, LayerChoice, StageChoice, TransformerArch, arch_to_json
from nasfleet.supernet.elastic import ElasticLayerNorm
from nasfleet.supernet.gpt import GPTSupernet, _tokens
from nasfleet.supernet.mbconv import MBConvSupernet
from nasfleet.supernet.vit import ElasticTransformerLayer, ViTSupernet, attend, mlp_hidden, patchify


@dataclass(frozen=True)
class SuperposedConvArch(ConvArch):
    """The largest conv subnet, marked: the wrapper runs the superposition at its α instead.

    A marker (not a flag on the module) keeps the choice an explicit forward argument; its
    FLOPs are the largest subnet's, which is what the superposition computes.
    """


@dataclass(frozen=True)
class SuperposedTransformerArch(TransformerArch):
    """The largest transformer subnet, marked as :class:`SuperposedConvArch` is."""


def superposition_marker(space: SearchSpace) -> Arch:
    """The architecture value a training task passes to run the superposition."""
    largest = space.largest()
    if isinstance(largest, ConvArch):
        return SuperposedConvArch(largest.stages, space=largest.space)
    return SuperposedTransformerArch(largest.embed_dim, largest.layers, space=largest.space)


def soft_mask(probs: torch.Tensor, sizes: Sequence[int], channels: int) -> torch.Tensor:
    """``m_c = Σ_k probs_k · 1[c < sizes_k]`` over ``channels`` channels: the expected width mask."""
    limits = torch.tensor(list(sizes), device=probs.device)
    keep = (torch.arange(channels, device=probs.device)[None, :] < limits[:, None]).to(probs.dtype)
    return probs @ keep


def joint(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The product distribution of two independent choices, flattened (``a``'s index major)."""
    return (a[:, None] * b[None, :]).reshape(-1)


def mixed_layer_norm(norm: ElasticLayerNorm, x: torch.Tensor, dims: Sequence[int], probs: torch.Tensor) -> torch.Tensor:
    """``Σ_k p_k · pad(LN(x[..., :d_k]))``: the norm at each embedding width, mixed."""
    out = torch.zeros_like(x)
    for d, p in zip(dims, probs):
        normed = F.layer_norm(x[..., :d], (d,), norm.weight[:d], norm.bias[:d], norm.eps)
        out = out + p * F.pad(normed, (0, x.shape[-1] - d))
    return out


def decisions(space: SearchSpace) -> dict[str, int]:
    """Every elastic decision of the space and its number of options (the α vectors)."""
    config = space.config
    if isinstance(space.largest(), ConvArch):
        out: dict[str, int] = {}
        for s, spec in enumerate(config.stages):
            out[f"s{s}_width"] = len(spec.widths)
            out[f"s{s}_depth"] = len(spec.depths)
            for j in range(max(spec.depths)):
                out[f"s{s}_b{j}_kernel"] = len(spec.kernels)
                out[f"s{s}_b{j}_expand"] = len(spec.expands)
        return out
    out = {"embed": len(config.embed_dims), "depth": len(config.depths)}
    for j in range(max(config.depths)):
        out[f"l{j}_heads"] = len(config.heads)
        out[f"l{j}_mlp"] = len(config.mlp_ratios)
    return out


class TangleNASSupernet(nn.Module):
    """A supernet with architecture logits α; ``forward(x, arch)`` runs a discrete subnet, or the
    superposition at softmax(α / temperature) when ``arch`` is :func:`superposition_marker`.

    α are persistent buffers named ``alpha.<decision>`` (the trainer's optimizer never sees them;
    checkpoints carry them). :meth:`module_for` is the plain supernet, which extraction slices.
    """

    def __init__(self, supernet: nn.Module, space: SearchSpace, temperature: float) -> None:
        super().__init__()
        if not isinstance(supernet, (MBConvSupernet, ViTSupernet, GPTSupernet)):
            raise NasfleetError(f"strategy 'tanglenas' supports the mbconv, conv1d, vit and gpt spaces, not {space.name!r}")
        self.supernet = supernet
        self.space = space
        self.temperature = temperature
        self.names = list(decisions(space))
        for name, options in decisions(space).items():
            self.register_buffer(f"alpha_{name}", torch.zeros(options))

    def alphas(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"alpha_{name}") for name in self.names}

    def probabilities(self, alphas: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        alphas = self.alphas() if alphas is None else alphas
        return {name: torch.softmax(a / self.temperature, dim=0) for name, a in alphas.items()}

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        if isinstance(arch, (SuperposedConvArch, SuperposedTransformerArch)):
            return self.superposed(x, self.probabilities())
        return self.supernet(x, arch)

    def superposed(self, x: torch.Tensor, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The one forward pass over all subnets, mixed by ``probs`` (one distribution per decision)."""
        if isinstance(self.supernet, MBConvSupernet):
            return _superposed_mbconv(self.supernet, x, probs)
        return _superposed_transformer(self.supernet, x, probs)

    def derived_arch(self) -> Arch:
        """The found architecture: the most probable option of every decision (ties: the first, smallest)."""
        best = {name: int(torch.argmax(a)) for name, a in self.alphas().items()}
        config = self.space.config
        if isinstance(self.supernet, MBConvSupernet):
            stages = []
            for s, spec in enumerate(config.stages):
                depth = spec.depths[best[f"s{s}_depth"]]
                blocks = tuple(
                    BlockChoice(spec.kernels[best[f"s{s}_b{j}_kernel"]], spec.expands[best[f"s{s}_b{j}_expand"]])
                    for j in range(depth)
                )
                stages.append(StageChoice(spec.widths[best[f"s{s}_width"]], blocks))
            return self.space.validate(ConvArch(tuple(stages), space=self.space.name))
        depth = config.depths[best["depth"]]
        layers = tuple(
            LayerChoice(config.heads[best[f"l{j}_heads"]], config.mlp_ratios[best[f"l{j}_mlp"]]) for j in range(depth)
        )
        return self.space.validate(TransformerArch(config.embed_dims[best["embed"]], layers, space=self.space.name))

    def one_hot(self, arch: Arch) -> dict[str, torch.Tensor]:
        """Probabilities with all mass on ``arch``'s options (layer slots beyond its depth: the first option);
        the superposition at them is ``arch``'s discrete forward."""
        self.space.validate(arch)
        chosen: dict[str, int] = {}
        config = self.space.config
        if isinstance(arch, ConvArch):
            for s, (stage, spec) in enumerate(zip(arch.stages, config.stages)):
                chosen[f"s{s}_width"] = spec.widths.index(stage.width)
                chosen[f"s{s}_depth"] = spec.depths.index(stage.depth)
                for j, block in enumerate(stage.blocks):
                    chosen[f"s{s}_b{j}_kernel"] = spec.kernels.index(block.kernel)
                    chosen[f"s{s}_b{j}_expand"] = spec.expands.index(block.expand)
        else:
            assert isinstance(arch, TransformerArch)
            chosen["embed"], chosen["depth"] = config.embed_dims.index(arch.embed_dim), config.depths.index(arch.depth)
            for j, layer in enumerate(arch.layers):
                chosen[f"l{j}_heads"] = config.heads.index(layer.heads)
                chosen[f"l{j}_mlp"] = config.mlp_ratios.index(layer.mlp_ratio)
        out = {}
        for name, alpha in self.alphas().items():
            out[name] = torch.zeros_like(alpha)
            out[name][chosen.get(name, 0)] = 1.0
        return out

    def derived_arch_json(self) -> str:
        return arch_to_json(self.derived_arch())

    def module_for(self, arch: Arch) -> nn.Module:
        return self.supernet


def _superposed_mbconv(net: MBConvSupernet, x: torch.Tensor, probs: dict[str, torch.Tensor]) -> torch.Tensor:
    config = net.config
    x = F.relu(net.stem(net.stem_input(x), config.stem_width))
    one = torch.ones(1, dtype=x.dtype, device=x.device)
    in_widths, in_probs = [config.stem_width], one  # the distribution of the block input's true width
    dims = (slice(None), slice(None)) + (None,) * net.spatial_dims  # channel masks broadcast over space
    for s, (blocks, spec) in enumerate(zip(net.stages, config.stages)):
        width_probs = probs[f"s{s}_width"]
        width_mask = soft_mask(width_probs, spec.widths, max(spec.widths))[dims[1:]]
        after_depth = []
        for j, block in enumerate(blocks):
            expand_probs = probs[f"s{s}_b{j}_expand"]
            hidden_max = block.expand.conv.weight.shape[0]
            sizes = [w * e for w in in_widths for e in spec.expands]
            hidden_mask = soft_mask(joint(in_probs, expand_probs), sizes, hidden_max)[dims[1:]]
            h = F.relu(block.expand(x, hidden_max)) * hidden_mask
            conv = block.depthwise.conv
            full = conv.kernel_size
            window = torch.zeros(len(spec.kernels), *(full,) * net.spatial_dims, dtype=x.dtype, device=x.device)
            for i, k in enumerate(spec.kernels):
                start = (full - k) // 2
                window[(i, *(slice(start, start + k),) * net.spatial_dims)] = 1.0
            kernel_mask = (probs[f"s{s}_b{j}_kernel"].reshape(-1, *(1,) * net.spatial_dims) * window).sum(dim=0)
            weight = conv.weight[: h.shape[1]] * kernel_mask
            h = type(conv)._conv(h, weight, None, conv.stride, full // 2, 1, h.shape[1])
            h = F.relu(block.depthwise.bn(h)) * hidden_mask
            h = block.project(h, max(spec.widths)) * width_mask
            x = x + h if j > 0 else h
            in_widths, in_probs = list(spec.widths), width_probs
            if j + 1 in spec.depths:
                after_depth.append(x)
        depth_probs = probs[f"s{s}_depth"]
        x = sum(p * out for p, out in zip(depth_probs, after_depth))
    return net.head(x.mean(dim=tuple(range(2, x.dim()))))


def _superposed_layer(
    layer: ElasticTransformerLayer, x: torch.Tensor, probs: dict[str, torch.Tensor], j: int, config: Any,
    embed_mask: torch.Tensor,
) -> torch.Tensor:
    dims, embed_probs = config.embed_dims, probs["embed"]
    attn = layer.attn
    width_max = attn.q.out_features
    h = mixed_layer_norm(layer.norm1, x, dims, embed_probs)
    out = attend(attn.q(h, width_max), attn.k(h, width_max), attn.v(h, width_max), width_max // attn.head_dim, attn.causal)
    head_mask = soft_mask(probs[f"l{j}_heads"], [n * config.head_dim for n in config.heads], width_max)
    x = x + attn.proj(out * head_mask, x.shape[-1]) * embed_mask
    h = mixed_layer_norm(layer.norm2, x, dims, embed_probs)
    hidden_max = layer.mlp.fc1.out_features
    sizes = [mlp_hidden(e, r) for e in dims for r in config.mlp_ratios]
    hidden_mask = soft_mask(joint(embed_probs, probs[f"l{j}_mlp"]), sizes, hidden_max)
    hidden = F.gelu(layer.mlp.fc1(h, hidden_max)) * hidden_mask
    return x + layer.mlp.fc2(hidden, x.shape[-1]) * embed_mask


def _superposed_transformer(net: ViTSupernet | GPTSupernet, x: torch.Tensor, probs: dict[str, torch.Tensor]) -> torch.Tensor:
    config = net.config
    embed_max = max(config.embed_dims)
    embed_mask = soft_mask(probs["embed"], config.embed_dims, embed_max)
    if isinstance(net, ViTSupernet):
        h = (net.patch_embed(patchify(x, config.patch_size), embed_max) + net.pos_embed) * embed_mask
    else:
        h = (F.embedding(_tokens(x), net.tok_embed) + net.pos_embed) * embed_mask
    after_depth = []
    for j, layer in enumerate(net.layers):
        h = _superposed_layer(layer, h, probs, j, config, embed_mask)
        if j + 1 in config.depths:
            after_depth.append(h)
    h = sum(p * out for p, out in zip(probs["depth"], after_depth))
    h = mixed_layer_norm(net.norm, h, config.embed_dims, probs["embed"])
    if isinstance(net, ViTSupernet):
        return net.head(h.mean(dim=1))
    logits = F.linear(h, net.tok_embed) if net.head is None else net.head(h)
    return logits.transpose(1, 2)


class TangleNASParams(StrategyParams):
    arch_lr: NonNegativeFloat = 0.01
    """Adam learning rate of α (0 freezes α: the ablation). DARTS uses 3e-4 over ~25k α steps;
    runs of a few hundred steps need more for α to move."""
    arch_weight_decay: NonNegativeFloat = 1e-3
    """L2 on α, added to its gradient (DARTS)."""
    arch_every: PositiveInt = 1
    """One α step before every ``arch_every``-th weight step (1: strict alternation)."""
    warmup_steps: NonNegativeInt = 0
    """Weight steps before the first α step (α stays uniform meanwhile)."""
    arch_batch_size: PositiveInt = 64
    arch_holdout: float = Field(default=0.5, ge=0.0, lt=1.0)
    """The fraction of the training split α learns on; the weights then train on the rest
    (DARTS's split). 0: α batches are drawn from the whole split, independently of the weights'."""
    temperature: PositiveFloat = 1.0
    """p = softmax(α / temperature)."""
    arch_seed: int = 0
    """Seeds the held-out split and the α batches (the same on every rank)."""


@STRATEGIES.register()
class TangleNASStrategy(TrainingStrategy):
    """Alternating weight steps on the superposition and Adam steps on α (see the module docstring)."""

    name = "tanglenas"
    Params = TangleNASParams
    params: TangleNASParams
    # The α step runs the plain module outside the engine's forward, which ZeRO-3's parameter
    # gathering does not see; stages 0-2 keep whole parameters on every rank.
    max_zero_stage = 2

    def __init__(self, space: SearchSpace, params: StrategyParams) -> None:
        super().__init__(space, params)
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        self._sampling: np.ndarray | None = None
        self.moments: dict[str, list[torch.Tensor]] = {}
        """Adam's first and second moments of each α vector."""
        self.arch_steps = 0
        self.last_arch_step = -1
        """The training step whose α update is done: a rank that runs several shards updates once."""
        self.found = ""
        """The derived architecture (JSON) after the last α step: recorded in every checkpoint."""
        self._wrapper: TangleNASSupernet | None = None

    def wrap_model(self, supernet: nn.Module) -> nn.Module:
        self._wrapper = TangleNASSupernet(supernet, self.space, self.params.temperature)
        return self._wrapper

    def subnets_for_step(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        return [SubnetTask(superposition_marker(self.space), role="superposition")]

    def bind_training_data(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self._images, self._labels = images, labels
        if self.params.arch_holdout > 0:
            count = len(labels)
            order = np.random.default_rng([self.params.arch_seed, count]).permutation(count)
            held = int(round(self.params.arch_holdout * count))
            sampling = np.ones(count)
            sampling[order[:held]] = 0.0
            self._sampling = sampling / sampling.sum()

    def example_probabilities(self, num_examples: int) -> np.ndarray | None:
        return self._sampling

    def arch_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The α step's batch: drawn from the held-out examples (or all), seeded by the step."""
        if self._images is None or self._labels is None:
            raise RuntimeError("tanglenas: bind_training_data was not called before training")
        pool = np.arange(len(self._labels)) if self._sampling is None else np.flatnonzero(self._sampling == 0)
        rng = np.random.default_rng([self.params.arch_seed, step, 1])
        index = torch.from_numpy(rng.choice(pool, size=min(self.params.arch_batch_size, len(pool)), replace=False))
        return self._images[index], self._labels[index]

    def before_step(self, step: int, model: nn.Module, shared_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        p = self.params
        if step == self.last_arch_step or step < p.warmup_steps or (step - p.warmup_steps) % p.arch_every:
            return
        self.last_arch_step = step
        wrapper = self._wrapper = find_module(model, TangleNASSupernet)
        device = next(wrapper.parameters()).device
        images, labels = (t.to(device) for t in self.arch_batch(step))
        alphas = {name: a.detach().clone().requires_grad_() for name, a in wrapper.alphas().items()}
        with torch.enable_grad():
            logits = wrapper.superposed(images, wrapper.probabilities(alphas))
            loss = F.cross_entropy(logits, labels)
            grads = torch.autograd.grad(loss, list(alphas.values()), allow_unused=True)
        grads = [torch.zeros_like(a) if g is None else g for a, g in zip(alphas.values(), grads)]
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            flat = torch.cat(grads)
            torch.distributed.broadcast(flat, src=0)  # one α update for every rank, whatever its arithmetic
            grads = list(flat.split([g.numel() for g in grads]))
        self._adam(wrapper, grads)
        self.found = wrapper.derived_arch_json()

    def _adam(self, wrapper: TangleNASSupernet, grads: list[torch.Tensor]) -> None:
        p = self.params
        beta1, beta2, eps = 0.5, 0.999, 1e-8
        self.arch_steps += 1
        with torch.no_grad():
            for (name, alpha), grad in zip(wrapper.alphas().items(), grads):
                grad = grad + p.arch_weight_decay * alpha
                first, second = self.moments.setdefault(name, [torch.zeros_like(alpha), torch.zeros_like(alpha)])
                first.mul_(beta1).add_(grad, alpha=1 - beta1)
                second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step_size = p.arch_lr / (1 - beta1**self.arch_steps)
                denominator = (second / (1 - beta2**self.arch_steps)).sqrt().add_(eps)
                alpha.addcdiv_(first, denominator, value=-step_size)

    def state_dict(self) -> dict[str, Any]:
        # Plain floats (float32 round-trips exactly through a Python float).
        return {
            "moments": {name: [m.tolist() for m in pair] for name, pair in self.moments.items()},
            "arch_steps": self.arch_steps, "last_arch_step": self.last_arch_step, "found": self.found,
            # A copy of α (the model's buffers hold it): each rank's state shows the α it trained with.
            "alphas": {} if self._wrapper is None else {n: a.tolist() for n, a in self._wrapper.alphas().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.moments = {
            name: [torch.tensor(m, dtype=torch.float32) for m in pair] for name, pair in state["moments"].items()
        }
        self.arch_steps = int(state["arch_steps"])
        self.last_arch_step = int(state["last_arch_step"])
        self.found = str(state["found"])


def derived_arch(model: nn.Module) -> Arch:
    """The architecture a TangleNAS-trained model found (argmax α), from the model or anything around it."""
    return find_module(model, TangleNASSupernet).derived_arch()


__all__ = [
    "SuperposedConvArch", "SuperposedTransformerArch", "TangleNASParams", "TangleNASStrategy", "TangleNASSupernet",
    "decisions", "derived_arch", "mixed_layer_norm", "soft_mask", "superposition_marker",
]
