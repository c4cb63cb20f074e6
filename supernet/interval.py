"""Interval bound propagation (IBP) through the networks nasfleet builds.

An :class:`Interval` stands in for the input tensor: every layer it meets maps the box
``[lower, upper]`` to a box containing every output the layer can give for an input in it
(Gowal et al. 2018). It implements ``__torch_function__``, so the supernet's own ``forward``
(elastic slices and all) and an extracted plain subnet's ``forward`` propagate it unchanged:
the bounds are those of exactly the function the module computes, and a subnet extracted
from the supernet gets the same bounds as the supernet running it.

Rules: convolutions and linear layers use the centre/radius form (centre through ``W``,
radius through ``|W|``), which is tight for one affine layer; ReLU is monotone; a residual
sum adds the bounds; global average pooling averages them. Batch norm is a per-channel affine
map whose statistics are not perturbed: in training mode they are the *clean* batch's (the
interval carries the unperturbed activation for that, as in Shi et al. 2021's implementation),
in eval mode the running statistics. Propagation never updates running statistics. An
operation without a rule (attention's softmax, say) is a ``TypeError``, never a silent
unsound bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasfleet.errors import NasfleetError


@dataclass(frozen=True)
class Interval:
    """A box ``[lower, upper]`` around the activation ``clean`` (all three of one shape).

    ``trace`` collects the boxes that enter each ReLU (its pre-activation bounds), for
    regularisers that look at them; the same list is handed on to every derived interval.
    """

    clean: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    trace: list[Interval] | None = None

    @property
    def shape(self) -> torch.Size:
        return self.clean.shape

    def dim(self) -> int:
        return self.clean.dim()

    def size(self, dim: int | None = None) -> Any:
        return self.clean.size() if dim is None else self.clean.size(dim)

    @property
    def centre(self) -> torch.Tensor:
        return (self.upper + self.lower) / 2

    @property
    def radius(self) -> torch.Tensor:
        return (self.upper - self.lower) / 2

    def _with(self, clean: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> Interval:
        return Interval(clean, lower, upper, self.trace)

    def __add__(self, other: Any) -> Interval:
        if isinstance(other, Interval):
            return self._with(self.clean + other.clean, self.lower + other.lower, self.upper + other.upper)
        return self._with(self.clean + other, self.lower + other, self.upper + other)

    __radd__ = __add__

    def mean(self, dim: Any = None, keepdim: bool = False) -> Interval:
        """A mean is a positive linear map, so it maps the bounds to the bounds."""
        if dim is None:
            return self._with(self.clean.mean(), self.lower.mean(), self.upper.mean())
        return self._with(self.clean.mean(dim, keepdim), self.lower.mean(dim, keepdim), self.upper.mean(dim, keepdim))

    @classmethod
    def __torch_function__(
        cls, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        rule = _RULES.get(func)
        if rule is None:
            name = getattr(func, "__name__", repr(func))
            raise TypeError(f"interval bound propagation has no rule for {name}")
        return rule(*args, **(kwargs or {}))


def _affine(x: Interval, apply: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
            weight: torch.Tensor, bias: torch.Tensor | None) -> Interval:
    centre = apply(x.centre, weight, bias)
    radius = apply(x.radius, weight.abs(), None)
    return x._with(apply(x.clean, weight, bias), centre - radius, centre + radius)


def _conv2d(input: Interval, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: Any = 1,
            padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Interval:
    return _affine(input, lambda t, w, b: F.conv2d(t, w, b, stride, padding, dilation, groups), weight, bias)


def _linear(input: Interval, weight: torch.Tensor, bias: torch.Tensor | None = None) -> Interval:
    return _affine(input, F.linear, weight, bias)


def _relu(input: Interval, inplace: bool = False) -> Interval:
    if input.trace is not None:
        input.trace.append(input)
    return input._with(F.relu(input.clean), F.relu(input.lower), F.relu(input.upper))


def _batch_norm(input: Interval, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, training: bool = False,
                momentum: float = 0.1, eps: float = 1e-5) -> Interval:
    if training or running_mean is None or running_var is None:
        dims = [0, *range(2, input.dim())]
        mean, var = input.clean.mean(dims), input.clean.var(dims, unbiased=False)
    else:
        mean, var = running_mean, running_var
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    view = (1, -1) + (1,) * (input.dim() - 2)
    scale, shift = scale.view(view), shift.view(view)
    centre, radius = input.centre * scale + shift, input.radius * scale.abs()
    return input._with(input.clean * scale + shift, centre - radius, centre + radius)


_RULES: dict[Any, Callable[..., Interval]] = {
    F.conv2d: _conv2d, torch.conv2d: _conv2d,
    F.linear: _linear,
    F.relu: _relu, torch.relu: _relu,
    F.batch_norm: _batch_norm,
    torch.Tensor.__add__: lambda a, b: Interval.__add__(b, a) if isinstance(b, Interval) else a + b,
    torch.Tensor.__radd__: lambda a, b: Interval.__add__(b, a) if isinstance(b, Interval) else a + b,
}


def input_box(images: torch.Tensor, eps: float, low: float, high: float, trace: bool = False) -> Interval:
    """The L∞ ball of radius ``eps`` around ``images``, clipped to the valid input range ``[low, high]``.

    All four numbers are in the model's input units (here: normalised pixels). The box always
    contains ``images`` itself, even where ``low``/``high`` are rounded copies of the data's range.
    """
    lower = torch.maximum(images - eps, torch.clamp(images, max=low))
    upper = torch.minimum(images + eps, torch.clamp(images, min=high))
    return Interval(images, lower, upper, [] if trace else None)


@contextmanager
def _batch_counts_kept(model: nn.Module) -> Iterator[None]:
    """Batch norm counts its training batches; a bound pass is not a batch, so restore the counts."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    counts = [m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, count in zip(norms, counts):
                if count is not None:
                    m.num_batches_tracked.copy_(count)


def propagate(model: nn.Module, box: Interval, *args: Any) -> Interval:
    """The bounds of ``model(x, *args)`` over every ``x`` in ``box`` (``args``: the arch, for a supernet)."""
    with _batch_counts_kept(model):
        out = model(box, *args)
    if not isinstance(out, Interval):
        raise TypeError(f"{type(model).__name__} returned {type(out).__name__}, not bounds")
    return out


def classifier_head(model: nn.Module) -> nn.Linear:
    """The final linear layer the margin bounds are folded into (``model.head`` in nasfleet's spaces)."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise NasfleetError(f"certified bounds need a linear `head` classifier; {type(model).__name__} has none")
    return head


def margin_bounds(
    model: nn.Module, box: Interval, labels: torch.Tensor, *args: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean logits and upper bounds on ``logit_j - logit_label`` over the box, shape ``[N, classes]``.

    The margins are bounded through the last linear layer as one map (``W_j - W_label``), which
    is tighter than subtracting the logits' separate bounds (Gowal et al.'s elision of the last
    layer). The label's own entry is 0; an example is verified when every other entry is < 0.
    """
    head = classifier_head(model)
    features: list[Interval] = []
    handle = head.register_forward_pre_hook(lambda _m, inputs: features.append(inputs[0]))
    try:
        out = propagate(model, box, *args)
    finally:
        handle.remove()
    feats = features[-1]
    weight = head.weight[:, : feats.shape[-1]]
    bias = head.bias if head.bias is not None else torch.zeros(weight.shape[0], device=weight.device)
    diff = weight.unsqueeze(0) - weight[labels].unsqueeze(1)  # [N, classes, features]
    centre = torch.einsum("ncf,nf->nc", diff, feats.centre) + (bias.unsqueeze(0) - bias[labels].unsqueeze(1))
    radius = torch.einsum("ncf,nf->nc", diff.abs(), feats.radius)
    return out.clean, centre + radius


def verified(margins: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Which examples are certified: every wrong class's margin bound is below 0."""
    others = margins.scatter(1, labels.unsqueeze(1), float("-inf"))
    return others.max(dim=1).values < 0


def robust_cross_entropy(margins: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the worst-case logits the margin bounds allow (an upper bound on the loss over the box)."""
    return F.cross_entropy(margins, labels)
