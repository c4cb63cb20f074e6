"""One consensus subnet by polarisation regularisation (Zhuang et al., NeurIPS 2020).

Every hidden (expanded) channel of every block of the largest subnet gets a gate ``γ ∈ [0, 1]``
that multiplies it after its depthwise layer. The gates train in the same pass as the weights,
under the task loss plus ``strength · R(γ)`` with the polariser

    R(γ) = t · ‖γ‖₁ − ‖γ − mean(γ)‖₁

The first term pushes every gate down (the L1 of network slimming); the second rewards spread
from the mean, so gates below the mean are pushed down harder and gates above it are pushed up
(while ``t < 2 · fraction below the mean``): the gates split into a cluster at 0 and one at the
clamp's 1, instead of all shrinking together (a batch norm follows each block, so the common
scale of a block's gates costs the task nothing and L1 alone shrinks them all). Channels whose
gate reached 0 contribute nothing, and :func:`consensus_subnet` removes them physically
(:mod:`nasfleet.supernet.channel_prune`), giving a plain network with no gating cost.

The sparsity target is reached by ranking, not by tuning ``t`` alone: :func:`sparsity_mask` removes
the fraction ``sparsity`` of channels with the smallest gates (globally), so the extracted net has
exactly that sparsity; the polariser's job is to make those gates zero already, so that removing
them changes nothing. ``t`` sets how many gates it drives to zero (docs/polarisation.md measures it).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
import numpy as np
import torch
from pydantic import Field, NonNegativeFloat
from torch import nn
from torch.func import functional_call

from nasfleet.strategies.base import StrategyParams, SubnetTask, TrainingStrategy, find_module, require_mbconv
from nasfleet.strategies.registry import STRATEGIES
from nasfleet.supernet import Arch, SearchSpace, recalibrate_batchnorm
from nasfleet.supernet.channel_prune import PrunedMBConvNet, prune_hidden_channels
from nasfleet.supernet.mbconv import MBConvSupernet

Mask = list[list[torch.Tensor]]
"""Per stage, per block: a bool vector over the block's hidden channels, True where kept."""


class GatedSupernet(nn.Module):
    """An mbconv supernet whose hidden channels are multiplied by trainable gates in ``[0, 1]``.

    The gates are folded into each depthwise batch norm's weight and bias for the forward
    (exact: ``relu(g · bn(x)) = g · relu(bn(x))`` for ``g ≥ 0``), so the supernet's own code runs
    unchanged and any of its subnets can be evaluated with the leading gates.
    """

    def __init__(self, supernet: MBConvSupernet) -> None:
        super().__init__()
        self.supernet = supernet
        self.gates = nn.ParameterList(
            nn.Parameter(torch.ones(block.depthwise.bn.num_features)) for blocks in supernet.stages for block in blocks
        )

    def blocks(self) -> list[tuple[int, int]]:
        """(stage, block) of each gate vector, in the order of :attr:`gates`."""
        return [(i, j) for i, blocks in enumerate(self.supernet.stages) for j in range(len(blocks))]

    def gate_values(self) -> list[torch.Tensor]:
        """The gates as the forward uses them: clamped to ``[0, 1]`` (a gate below 0 is exactly 0)."""
        return [g.clamp(0.0, 1.0) for g in self.gates]

    def _folded(self, values: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        folded: dict[str, torch.Tensor] = {}
        for (i, j), gate in zip(self.blocks(), values):
            bn = self.supernet.stages[i][j].depthwise.bn
            prefix = f"stages.{i}.{j}.depthwise.bn."
            folded[prefix + "weight"] = bn.weight * gate
            folded[prefix + "bias"] = bn.bias * gate
        return folded

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        return functional_call(self.supernet, self._folded(self.gate_values()), (x, arch))

    def module_for(self, arch: Arch) -> MBConvSupernet:
        """A plain supernet with the gates folded in: what :func:`nasfleet.supernet.extract` copies from,
        so ``nasfleet export`` of a polarisation run exports the gated function."""
        plain = copy.deepcopy(self.supernet)
        with torch.no_grad():
            for name, tensor in self._folded(self.gate_values()).items():
                plain.get_parameter(name).copy_(tensor)
        return plain

    def gates_vector(self) -> torch.Tensor:
        """All gate values, concatenated (detached)."""
        return torch.cat([g.detach() for g in self.gate_values()])


def polarisation_regulariser(gates: torch.Tensor, t: float, polarise: float = 1.0) -> torch.Tensor:
    """``t · ‖γ‖₁ − polarise · ‖γ − mean(γ)‖₁`` over the concatenated gate values (Zhuang et al., eq. 2,
    where ``polarise`` is 1; 0 leaves network slimming's L1)."""
    return t * gates.abs().sum() - polarise * (gates - gates.mean()).abs().sum()


def polarised_fraction(gates: torch.Tensor, margin: float = 0.05) -> float:
    """The fraction of gates within ``margin`` of 0 or of 1: how binary the gates are."""
    return float(((gates <= margin) | (gates >= 1.0 - margin)).float().mean())


class PolarisationParams(StrategyParams):
    strength: NonNegativeFloat = 2e-4
    """λ, the regulariser's weight in the loss (per gate: R is a sum, as in the paper). 0 trains the
    gates on the task loss alone."""
    t: NonNegativeFloat = 1.0
    """The L1 term's weight relative to the polarising term: larger removes more channels."""
    polarise: NonNegativeFloat = 1.0
    """The weight of the polarising term ``−‖γ − mean(γ)‖₁`` (the paper's is 1): 0 is the L1 ablation,
    under which the gates shrink together instead of splitting."""
    sparsity: float = Field(0.5, ge=0.0, lt=1.0)
    """The fraction of hidden channels :meth:`PolarisationStrategy.consensus` removes (smallest gates first)."""


@STRATEGIES.register()
class PolarisationStrategy(TrainingStrategy):
    """Gated largest subnet trained with the polarisation regulariser; extracts one pruned net.

    Each step trains the largest subnet on the labels; after its backward the regulariser's
    gradient is added to the gates' (identical on every rank, so data-parallel ranks agree).
    The gates are parameters of the model: checkpoints save and resume them with the weights.
    """

    name = "polarisation"
    Params = PolarisationParams
    params: PolarisationParams
    # The regulariser's gradient is added to .grad after the task's backward; under ZeRO ≥ 1 those
    # are the backend's step buffers, whose scaling this has not been checked against.
    max_zero_stage = 0
    ranks_subnets = False  # it trains one gated network, the largest subnet

    def __init__(self, space: SearchSpace, params: StrategyParams) -> None:
        super().__init__(space, params)
        require_mbconv(space, self.name)

    def wrap_model(self, supernet: nn.Module) -> nn.Module:
        assert isinstance(supernet, MBConvSupernet)
        return GatedSupernet(supernet)

    def subnets_for_step(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        return [SubnetTask(self.space.largest(), role="largest")]

    def after_backward(
        self,
        task: SubnetTask,
        model: nn.Module,
        logits: torch.Tensor,
        labels: torch.Tensor,
        example_ids: torch.Tensor | None,
    ) -> None:
        if self.params.strength == 0:
            return
        gated = find_module(model, GatedSupernet)
        assert isinstance(gated, GatedSupernet)
        params = list(gated.gates)
        with torch.enable_grad():
            values = torch.cat([g.clamp(0.0, 1.0) for g in params])
            penalty = self.params.strength * polarisation_regulariser(values, self.params.t, self.params.polarise)
            grads = torch.autograd.grad(penalty, params)
        for param, grad in zip(params, grads):
            if param.grad is None:
                param.grad = grad.clone()
            else:
                param.grad.add_(grad)

    def consensus(self, model: nn.Module, calibration: Iterable[torch.Tensor] = ()) -> PrunedMBConvNet:
        """The trained run's one pruned network: ``sparsity`` of the hidden channels removed, smallest
        gates first, batch norm re-estimated on ``calibration`` (training images) when given.

        Works on a copy; the plain network it returns has no gates and computes what the gated
        model computes once those channels are zeroed.
        """
        gated = copy.deepcopy(find_module(model, GatedSupernet))
        assert isinstance(gated, GatedSupernet)
        apply_mask(gated, sparsity_mask(gated, gate_scores(gated), self.params.sparsity))
        batches = list(calibration)
        if batches:
            recalibrate_batchnorm(gated, self.space.largest(), batches)
        return consensus_subnet(gated.eval()).eval()


def sparsity_mask(gated: GatedSupernet, scores: list[torch.Tensor], sparsity: float) -> Mask:
    """Keep-masks removing the ``sparsity`` fraction of hidden channels with the lowest ``scores``.

    Ranked over the whole network (as the paper prunes), ties broken by position; a stage's first
    block keeps its best channel whatever its rank, since it has no residual path to fall back on.
    """
    flat = torch.cat(scores)
    remove = int(round(sparsity * flat.numel()))
    order = torch.argsort(flat, stable=True)
    kept = torch.ones_like(flat, dtype=torch.bool)
    kept[order[:remove]] = False
    masks: Mask = [[] for _ in gated.supernet.stages]
    offset = 0
    for (i, j), score in zip(gated.blocks(), scores):
        block = kept[offset : offset + score.numel()].clone()
        offset += score.numel()
        if j == 0 and not block.any():
            block[torch.argmax(score)] = True
        masks[i].append(block)
    return masks


def gate_scores(gated: GatedSupernet) -> list[torch.Tensor]:
    """Polarisation's pruning criterion: the gate values themselves."""
    return [g.detach().clone() for g in gated.gate_values()]


def magnitude_scores(gated: GatedSupernet) -> list[torch.Tensor]:
    """The magnitude-pruning baseline's criterion: how large each hidden channel's output weights are.

    ``|g · γ_dw| · ‖W_project[:, c]‖₁``: the channel's batch-norm scale (with its gate) times the
    L1 norm of the project-conv weights that read it. The expand filter's own norm would say
    nothing, since a batch norm rescales its output.
    """
    scores = []
    for (i, j), gate in zip(gated.blocks(), gated.gate_values()):
        block = gated.supernet.stages[i][j]
        outgoing = block.project.conv.weight.detach().abs().sum(dim=(0, 2, 3))
        scores.append((gate.detach() * block.depthwise.bn.weight.detach()).abs() * outgoing)
    return scores


def apply_mask(gated: GatedSupernet, masks: Mask) -> None:
    """Zero the gates of removed channels, so the gated model computes what the pruned net will."""
    with torch.no_grad():
        for (i, j), gate in zip(gated.blocks(), gated.gates):
            gate.masked_fill_(~masks[i][j], 0.0)


def consensus_subnet(gated: GatedSupernet) -> PrunedMBConvNet:
    """The largest subnet as a plain network without the channels whose gate is 0, gates folded in.

    Computes the gated model's function at the largest architecture (same outputs up to float
    rounding), with fewer parameters and multiply-adds; :func:`apply_mask` first to reach a sparsity.
    """
    values = gated.gate_values()
    keep: list[list[torch.Tensor]] = [[] for _ in gated.supernet.stages]
    scales: list[list[torch.Tensor]] = [[] for _ in gated.supernet.stages]
    for (i, j), gate in zip(gated.blocks(), values):
        index = torch.nonzero(gate.detach() > 0).flatten()
        if j == 0 and index.numel() == 0:
            index = torch.zeros(1, dtype=torch.long)  # a zero gate: the kept channel outputs 0, as gated
        keep[i].append(index)
        scales[i].append(gate.detach())
    return prune_hidden_channels(gated.supernet, keep, scales)

