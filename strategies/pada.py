"""PA&DA (Lu et al., CVPR 2023): jointly sampling paths and data by their gradient norms.

Candidate operations whose weights receive larger (normalised) gradients, and training examples
with larger per-example gradients, are sampled more often; both importances are cheap moving
averages of what training computes anyway, mixed with a uniform floor so nothing starves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from nasfleet.strategies.base import StrategyParams, SubnetTask, TrainingStrategy, find_module, require_mbconv
from nasfleet.strategies.registry import STRATEGIES
from nasfleet.supernet import SearchSpace
from nasfleet.supernet.arch import BlockChoice, ConvArch, StageChoice
from nasfleet.supernet.mbconv import MBConvSupernet


class PadaParams(StrategyParams):
    # Share of each sampling distribution that stays uniform (so rarely-useful choices still train).
    path_floor: float = Field(default=0.2, ge=0.0, lt=1.0)
    data_floor: float = Field(default=0.2, ge=0.0, lt=1.0)
    # Weight of a new gradient-norm observation in the moving averages.
    smoothing: float = Field(default=0.5, gt=0.0, le=1.0)
    sample_data: bool = True


@dataclass(frozen=True)
class Decision:
    """One independent choice a path makes: a stage's width or depth, or one block slot's op."""

    name: str
    stage: int
    block: int | None  # None: a stage-level decision (width, depth)
    options: tuple[Any, ...]


def mixed_with_uniform(importance: np.ndarray, floor: float) -> np.ndarray:
    """``importance`` normalised to a distribution, then a ``floor`` share of it made uniform."""
    weights = np.asarray(importance, dtype=float)
    total = weights.sum()
    shaped = weights / total if total > 0 else np.full(len(weights), 1.0 / len(weights))
    return (1.0 - floor) * shaped + floor / len(weights)


def data_gradient_norms(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Per-example ``||softmax(logits) − onehot(label)||``: the norm of dLoss/dlogits, PA&DA's cheap proxy."""
    probs = torch.softmax(logits.detach().float(), dim=-1)
    residual = probs - F.one_hot(labels, probs.shape[-1]).to(probs)
    return residual.norm(dim=-1).cpu().double().numpy()


def _grad_norm(module: nn.Module) -> float | None:
    """The gradient norm of ``module``'s parameters, None when no gradient is readable."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return None
    return float(torch.sqrt(sum((g.detach().float() ** 2).sum() for g in grads)).cpu())


@STRATEGIES.register()
class PadaStrategy(TrainingStrategy):
    """PA&DA: samples one path per step with op probabilities ∝ EMA of their gradient norms, and
    training examples (through ``BatchStream``) with probabilities ∝ EMA of their gradient norms.

    Decisions are each stage's width and depth and each block slot's (kernel, expand) op. After a
    path's backward, the norm of the gradients on the weights a decision governs (a block: its own
    layers; width and depth: the whole stage) updates the chosen option's moving average. One path
    per step keeps that norm the path's own (gradients accumulate over a step's tasks), under every
    ZeRO stage the backend allows (under ZeRO-1/2 the gradients it reads are the backend's step buffers).
    """

    name = "pada"
    Params = PadaParams
    params: PadaParams

    def __init__(self, space: SearchSpace, params: StrategyParams) -> None:
        super().__init__(space, params)
        specs = require_mbconv(space, self.name).config.stages
        decisions: list[Decision] = []
        for i, spec in enumerate(specs):
            ops = tuple(BlockChoice(k, e) for k in spec.kernels for e in spec.expands)
            decisions.append(Decision(f"stage{i}.width", i, None, tuple(spec.widths)))
            decisions.append(Decision(f"stage{i}.depth", i, None, tuple(spec.depths)))
            decisions += [Decision(f"stage{i}.block{j}", i, j, ops) for j in range(max(spec.depths))]
        self.decisions = decisions
        self._index = {d.name: n for n, d in enumerate(decisions)}
        # NaN: never observed (such an option borrows the mean of the observed ones).
        self.path_importance = [np.full(len(d.options), np.nan) for d in decisions]
        self.data_importance: np.ndarray | None = None

    # -- paths -------------------------------------------------------------------
    def path_probabilities(self, decision: str) -> np.ndarray:
        """The sampling distribution over one decision's options (e.g. ``"stage0.block1"``)."""
        importance = self.path_importance[self._index[decision]]
        seen = ~np.isnan(importance)
        filled = np.where(seen, importance, importance[seen].mean() if seen.any() else 1.0)
        return mixed_with_uniform(filled, self.params.path_floor)

    def _draw(self, decision: str, rng: np.random.Generator) -> Any:
        options = self.decisions[self._index[decision]].options
        return options[int(rng.choice(len(options), p=self.path_probabilities(decision)))]

    def subnets_for_step(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        stages = []
        for i in range(len(self.space.config.stages)):  # type: ignore[attr-defined]
            width = self._draw(f"stage{i}.width", rng)
            depth = self._draw(f"stage{i}.depth", rng)
            stages.append(StageChoice(width, tuple(self._draw(f"stage{i}.block{j}", rng) for j in range(depth))))
        return [SubnetTask(ConvArch(tuple(stages)), role="pada")]

    def observe_path(self, arch: ConvArch, stage_norms: list[float], block_norms: list[list[float]]) -> None:
        """Fold one path's gradient norms (per stage, and per active block) into its options' averages."""
        for i, stage in enumerate(arch.stages):
            self._update(f"stage{i}.width", stage.width, stage_norms[i])
            self._update(f"stage{i}.depth", stage.depth, stage_norms[i])
            for j, block in enumerate(stage.blocks):
                self._update(f"stage{i}.block{j}", block, block_norms[i][j])

    def _update(self, decision: str, option: Any, value: float) -> None:
        n = self._index[decision]
        k = self.decisions[n].options.index(option)
        old = self.path_importance[n][k]
        s = self.params.smoothing
        self.path_importance[n][k] = value if np.isnan(old) else (1 - s) * old + s * value

    # -- data --------------------------------------------------------------------
    def example_probabilities(self, num_examples: int) -> np.ndarray | None:
        if not self.params.sample_data:
            return None
        return mixed_with_uniform(self._data_importance(num_examples), self.params.data_floor)

    def _data_importance(self, num_examples: int) -> np.ndarray:
        if self.data_importance is None:
            # ||softmax − onehot|| of an untrained net is close to 1: unseen examples start there.
            self.data_importance = np.ones(num_examples)
        return self.data_importance

    def observe_data(self, example_ids: np.ndarray, norms: np.ndarray) -> None:
        """Fold per-example gradient norms into the examples' averages (once sampling has started)."""
        if self.data_importance is None:
            return
        s = self.params.smoothing
        self.data_importance[example_ids] = (1 - s) * self.data_importance[example_ids] + s * norms

    # -- the hook ----------------------------------------------------------------
    def after_backward(
        self,
        task: SubnetTask,
        model: nn.Module,
        logits: torch.Tensor,
        labels: torch.Tensor,
        example_ids: torch.Tensor | None,
    ) -> None:
        assert isinstance(task.arch, ConvArch)
        supernet = find_module(model, MBConvSupernet)
        block_norms = [
            [_grad_norm(module) for module, _ in zip(blocks, stage.blocks)]
            for blocks, stage in zip(supernet.stages, task.arch.stages)  # type: ignore[arg-type]
        ]
        if all(n is not None for norms in block_norms for n in norms):
            stage_norms = [float(np.sqrt(sum(n**2 for n in norms))) for norms in block_norms]  # type: ignore[operator]
            self.observe_path(task.arch, stage_norms, block_norms)  # type: ignore[arg-type]
        if example_ids is not None:
            self.observe_data(example_ids.cpu().numpy(), data_gradient_norms(logits, labels))

    def state_dict(self) -> dict[str, Any]:
        return {
            "path_importance": [imp.tolist() for imp in self.path_importance],
            "data_importance": None if self.data_importance is None else self.data_importance.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.path_importance = [np.array(imp, dtype=float) for imp in state["path_importance"]]
        data = state["data_importance"]
        self.data_importance = None if data is None else np.array(data, dtype=float)
