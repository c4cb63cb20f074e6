"""Elastic layers: each owns the full weight and runs a leading slice of it.

The active size is an explicit forward argument (input sizes are read off the input),
so no module keeps hidden per-subnet state. Slices are always *leading* slices, and
kernels are *centre* crops; :func:`slice_like` applies the same rule when a subnet is
extracted, which is what makes an extracted module compute the supernet's function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn


def kernel_crop(full_kernel: int, kernel: int) -> slice:
    """The centre ``kernel`` × ``kernel`` window of a ``full_kernel`` kernel."""
    start = (full_kernel - kernel) // 2
    return slice(start, start + kernel)


def slice_like(source: torch.Tensor, shape: torch.Size, *, is_conv_weight: bool) -> torch.Tensor:
    """The part of a supernet tensor that a subnet of the given shape uses."""
    if source.dim() != len(shape):
        raise ValueError(f"rank mismatch: {tuple(source.shape)} vs {tuple(shape)}")
    index: list[slice] = [slice(0, n) for n in shape]
    if is_conv_weight:  # (out, in, *kernel): every kernel dimension is a centre crop
        for dim in range(2, len(shape)):
            index[dim] = kernel_crop(source.shape[dim], shape[dim])
    return source[tuple(index)]


class ElasticConv(nn.Module):
    """A conv whose output channels and (centre-cropped) kernel size are chosen per call.

    ``depthwise=True`` makes it a depthwise conv whose channel count follows the input.
    Subclasses fix the number of spatial dimensions (2 for images, 1 for sequences).
    """

    spatial_dims: ClassVar[int]
    _conv: ClassVar[Callable[..., torch.Tensor]]

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, depthwise: bool = False
    ) -> None:
        super().__init__()
        self.depthwise = depthwise
        self.stride = stride
        self.kernel_size = kernel_size
        in_per_group = 1 if depthwise else in_channels
        kernel = (kernel_size,) * self.spatial_dims
        self.weight = nn.Parameter(torch.empty(out_channels, in_per_group, *kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def forward(self, x: torch.Tensor, out_channels: int, kernel_size: int | None = None) -> torch.Tensor:
        kernel_size = kernel_size or self.kernel_size
        crops = (kernel_crop(self.kernel_size, kernel_size),) * self.spatial_dims
        in_channels = x.shape[1]
        if self.depthwise:
            weight = self.weight[(slice(0, in_channels), slice(None), *crops)]
            groups = in_channels
        else:
            weight = self.weight[(slice(0, out_channels), slice(0, in_channels), *crops)]
            groups = 1
        return type(self)._conv(x, weight, None, self.stride, kernel_size // 2, 1, groups)


class ElasticConv2d(ElasticConv):
    spatial_dims = 2
    _conv = F.conv2d


class ElasticConv1d(ElasticConv):
    spatial_dims = 1
    _conv = F.conv1d


class _LeadingChannelsBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the leading channels of the input, sharing the full statistics.

    Running statistics are shared across subnets, so they only suit a subnet after
    :func:`nasfleet.supernet.bn.calibrated_batchnorm` re-estimates them for it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        # Same momentum rule as nn.BatchNorm2d: None means a cumulative average,
        # which is what calibration uses.
        momentum = self.momentum if self.momentum is not None else 0.0
        if self.training:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(
            x,
            self.running_mean[:channels],
            self.running_var[:channels],
            self.weight[:channels],
            self.bias[:channels],
            self.training,
            momentum,
            self.eps,
        )


class ElasticBatchNorm2d(_LeadingChannelsBatchNorm, nn.BatchNorm2d):
    pass


class ElasticBatchNorm1d(_LeadingChannelsBatchNorm, nn.BatchNorm1d):
    pass


class ElasticLinear(nn.Linear):
    """A linear layer over the leading input features, producing the leading outputs."""

    def forward(self, x: torch.Tensor, out_features: int | None = None) -> torch.Tensor:  # type: ignore[override]
        out_features = out_features or self.out_features
        in_features = x.shape[-1]
        bias = self.bias[:out_features] if self.bias is not None else None
        return F.linear(x, self.weight[:out_features, :in_features], bias)


class ElasticLayerNorm(nn.LayerNorm):
    """Layer norm over the active (leading) features: statistics are per token, so exact."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x.shape[-1]
        return F.layer_norm(x, (features,), self.weight[:features], self.bias[:features], self.eps)


class ElasticConvBN(nn.Module):
    """Conv followed by batch norm; the unit a block is built from (``spatial_dims``: 2 images, 1 sequences)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, depthwise: bool = False,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        conv, bn = (ElasticConv2d, ElasticBatchNorm2d) if spatial_dims == 2 else (ElasticConv1d, ElasticBatchNorm1d)
        self.conv = conv(in_channels, out_channels, kernel_size, stride, depthwise)
        self.bn = bn(out_channels)

    def forward(self, x: torch.Tensor, out_channels: int, kernel_size: int | None = None) -> torch.Tensor:
        return self.bn(self.conv(x, out_channels, kernel_size))


class ConvBN(nn.Module):
    """The plain counterpart of :class:`ElasticConvBN`, with the same parameter names."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, depthwise: bool = False,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        groups = in_channels if depthwise else 1
        conv, bn = (nn.Conv2d, nn.BatchNorm2d) if spatial_dims == 2 else (nn.Conv1d, nn.BatchNorm1d)
        self.conv = conv(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = bn(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))
