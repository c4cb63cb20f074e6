"""Certified robust training with interval bounds and a short warm-up (Shi et al. 2021).

Each step trains the largest, the smallest and ``num_random`` random subnets; each subnet's
loss mixes the clean cross-entropy with the cross-entropy of the worst-case logits that its
interval bounds allow over the L∞ ball of radius ε around the batch:
``(1 - robust_weight) · CE_clean + robust_weight · CE_robust + λ_t · (L_tightness + L_relu)``.

The paper's three changes, as they apply to nasfleet's MobileNet-style space:

- *IBP initialisation*: conv weights ~ N(0, 2π / fan_in²), so the interval width neither
  explodes nor vanishes layer to layer; the classifier keeps its default. The supernet's
  seeded (Kaiming-normal) weights are rescaled to that standard deviation, a zero-mean
  normal like the paper's, and no RNG is drawn (``wrap_model`` must not).
- *Batch norm after every layer*: the space already has it (every conv is conv + BN).
- *Warm-up regulariser*: while ε ramps up, ``L_tightness`` penalises pre-activation boxes
  more than ``1/τ`` times wider than the input box and ``L_relu`` penalises imbalance between
  active and inactive ReLUs (their mean and variance ratios); its weight ``λ_t = λ (1 - ε_t/ε)``
  fades to 0 as ε reaches its target.

ε is in pixel units (a fraction of the full intensity range); ``input_range`` gives the model
inputs that pixel values 0 and 1 become after nasfleet's normalisation (the defaults are
Fashion-MNIST's), so ε is scaled and the box clipped to valid images. ``eps=0`` is natural
training with the same subnet sampling: the baseline the benchmark compares against.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, model_validator
from torch import nn

from nasfleet.strategies.base import StrategyParams, SubnetTask, TaskOutputs, TrainingStrategy, require_mbconv
from nasfleet.strategies.registry import STRATEGIES
from nasfleet.supernet import Arch
from nasfleet.supernet.elastic import ElasticConv2d
from nasfleet.supernet.interval import Interval, input_box, margin_bounds, robust_cross_entropy

FASHION_MNIST_PIXEL_RANGE = (-0.8098982, 2.0243423)
"""What pixel values 0 and 1 become under nasfleet's Fashion-MNIST normalisation (training-split mean and std)."""


class IBPParams(StrategyParams):
    eps: NonNegativeFloat = 0.1
    """Target L∞ radius in pixel units (0–1 intensity); 0 trains naturally."""
    input_range: tuple[float, float] = FASHION_MNIST_PIXEL_RANGE
    """The model inputs of pixel values 0 and 1 (ε is scaled by their difference, boxes clipped to them)."""
    start_step: NonNegativeInt = 0
    """Natural training (ε = 0) before this step."""
    warmup_steps: NonNegativeInt = 200
    """Steps over which ε ramps from 0 to ``eps`` (slowly at first: quadratic, then linear)."""
    robust_weight: float = Field(0.5, ge=0.0, le=1.0)
    """Weight of the robust cross-entropy in the loss; the clean cross-entropy gets the rest."""
    reg_weight: NonNegativeFloat = 0.5
    """λ: the warm-up regulariser's weight at ε = 0 (0 turns it off)."""
    reg_tolerance: PositiveFloat = 0.5
    """τ: the tightness and balance ratios below which the regulariser acts."""
    ibp_init: bool = True
    num_random: NonNegativeInt = 1
    grad_clip: PositiveFloat | None = 10.0
    """Cap on the L2 norm of the step's accumulated gradient, applied after each task's backward
    (the paper clips at 10): bounds are loose early in the ramp, and one large robust loss would
    otherwise throw the weights to NaN. None turns it off."""

    @model_validator(mode="after")
    def _range_is_ordered(self) -> IBPParams:
        if not self.input_range[0] < self.input_range[1]:
            raise ValueError(f"input_range must be (low, high) with low < high, got {self.input_range}")
        return self


RAMP_QUADRATIC_PART = 0.25


def eps_at(step: int, params: IBPParams) -> float:
    """ε at ``step`` in pixel units: 0 before ``start_step``, then a smooth ramp to ``eps``.

    The ramp is quadratic over its first quarter and linear after (continuous slope), so ε
    grows slowly while the bounds are still loose, as the paper's exponential-then-linear one.
    """
    if params.eps == 0 or step < params.start_step:
        return 0.0
    if params.warmup_steps == 0:
        return params.eps
    f = min((step - params.start_step + 1) / params.warmup_steps, 1.0)
    m = RAMP_QUADRATIC_PART
    a = 1.0 / (m * (2.0 - m))
    shape = a * f * f if f < m else a * m * m + 2.0 * a * m * (f - m)
    return params.eps * min(shape, 1.0)


def warmup_regulariser(trace: list[Interval], input_radius: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Shi et al.'s ``L_tightness + L_relu``, averaged over the ReLUs whose pre-activation boxes ``trace`` holds.

    Tightness compares the mean input radius with each pre-activation's mean radius; balance
    compares active (lower > 0) with inactive (upper < 0) neurons by the ratio of their mean
    centres and of their centres' spread. Each ratio is penalised below ``tolerance``.
    """
    if not trace:
        return input_radius.new_zeros(())
    tight0 = input_radius.mean()
    total = input_radius.new_zeros(())
    for box in trace:
        centre, radius = box.centre, box.radius
        total = total + F.relu(tolerance - tight0 / radius.mean().clamp(min=1e-12)) / tolerance
        active, inactive = (box.lower > 0).float(), (box.upper < 0).float()
        mean_ratio = (centre * active).mean() / -(centre * inactive).mean().clamp(max=-1e-12)
        spread = (centre - centre.mean()) ** 2
        var_ratio = (spread * active).sum() / (spread * inactive).sum().clamp(min=1e-12)
        balance = torch.zeros_like(total)
        for ratio in (mean_ratio, var_ratio):
            ratio = torch.minimum(ratio, 1.0 / ratio.clamp(min=1e-12))
            balance = balance + F.relu(tolerance - ratio) / tolerance
        if torch.isfinite(balance):
            total = total + balance
    return total / len(trace)


def ibp_initialise(supernet: nn.Module) -> None:
    """Rescale every conv weight to the IBP initialisation's standard deviation, √(2π) / fan_in."""
    with torch.no_grad():
        for module in supernet.modules():
            if isinstance(module, ElasticConv2d):
                weight = module.weight
                fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
                weight.mul_((2 * np.pi) ** 0.5 / fan_in / weight.std().clamp(min=1e-12))


@STRATEGIES.register()
class IBPStrategy(TrainingStrategy):
    """Certified (IBP) training of the largest, smallest and random subnets with a short ε warm-up."""

    name = "ibp"
    Params = IBPParams
    params: IBPParams
    max_zero_stage = 0  # the clip reads the parameters' .grad; ZeRO-1/2 keeps the step's gradients elsewhere

    def __init__(self, space: Any, params: IBPParams) -> None:
        super().__init__(require_mbconv(space, self.name), params)
        self._step = 0
        self._batch: tuple[nn.Module, torch.Tensor, Arch] | None = None

    def wrap_model(self, supernet: nn.Module) -> nn.Module:
        # loss() sees logits, not inputs: a pre-hook keeps the last clean training batch (and
        # the module and arch it ran) so the bounds can be computed on it, without a trainer change.
        supernet.register_forward_pre_hook(self._remember_batch)
        if self.params.ibp_init and self.params.eps > 0:
            ibp_initialise(supernet)
        return supernet

    def _remember_batch(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if module.training and len(args) == 2 and isinstance(args[0], torch.Tensor):
            self._batch = (module, args[0], args[1])

    def subnets_for_step(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        self._step = step
        tasks = [SubnetTask(self.space.largest(), role="largest"), SubnetTask(self.space.smallest(), role="smallest")]
        tasks += [SubnetTask(self.space.sample_choices(rng), role="random") for _ in range(self.params.num_random)]
        return tasks

    def eps_norm(self, eps_pixels: float) -> float:
        """ε in model-input units."""
        low, high = self.params.input_range
        return eps_pixels * (high - low)

    def loss(
        self, task: SubnetTask, outputs: TaskOutputs, labels: torch.Tensor, earlier: dict[str, TaskOutputs]
    ) -> torch.Tensor:
        natural = F.cross_entropy(outputs.logits, labels, label_smoothing=self.params.label_smoothing)
        eps = eps_at(self._step, self.params)
        if eps == 0:
            return natural
        if self._batch is None or self._batch[2] != task.arch:
            raise RuntimeError("ibp: the task's forward pass was not seen; was the model built with wrap_model?")
        module, images, _ = self._batch
        low, high = self.params.input_range
        box = input_box(images, self.eps_norm(eps), low, high, trace=self.params.reg_weight > 0)
        _, margins = margin_bounds(module, box, labels, task.arch)
        kappa = self.params.robust_weight
        loss = (1 - kappa) * natural + kappa * robust_cross_entropy(margins, labels)
        intensity = self.params.reg_weight * (1 - eps / self.params.eps)
        if intensity > 0 and box.trace is not None:
            loss = loss + intensity * warmup_regulariser(box.trace, box.radius, self.params.reg_tolerance)
        return loss

    def after_backward(
        self, task: SubnetTask, model: nn.Module, logits: torch.Tensor, labels: torch.Tensor,
        example_ids: torch.Tensor | None,
    ) -> None:
        if self.params.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.params.grad_clip)

    def state_dict(self) -> dict[str, Any]:
        return {}  # ε is a function of the step; the remembered batch lives for one task only
