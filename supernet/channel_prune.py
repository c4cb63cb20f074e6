"""Channel pruning of an mbconv supernet's largest subnet into a plain, smaller network.

The prunable unit is a block's hidden (expanded) channel: it is produced by one output filter of
the expand conv, runs through one depthwise filter and is read by one input column of the
project conv, so removing it deletes weights in three layers and touches nothing outside the
block. Stage widths are tied by residual connections and are kept whole. A residual block
left with no hidden channel is the identity and is dropped; a stage's first block (no
residual) keeps at least one channel so that its output still has a source.

Each kept channel may carry a scale (a trained gate): since ``relu(s · bn(x)) = s · relu(bn(x))``
for ``s ≥ 0``, the scale is folded into the depthwise batch norm's weight and bias, which is why
the pruned network computes exactly what the gated one does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nasfleet.supernet.elastic import ConvBN
from nasfleet.supernet.mbconv import STEM_KERNEL, MBConvSpaceConfig, MBConvSupernet, PlainStagedNet


class PrunedMBConvBlock(nn.Module):
    """An inverted-residual block with any number of hidden channels (zero: the identity)."""

    def __init__(self, c_in: int, hidden: int, c_out: int, kernel: int, stride: int, residual: bool) -> None:
        super().__init__()
        if hidden == 0 and not residual:
            raise ValueError("a block without a residual connection needs at least one hidden channel")
        self.residual = residual
        self.hidden = hidden
        if hidden:
            self.expand = ConvBN(c_in, hidden, 1)
            self.depthwise = ConvBN(hidden, hidden, kernel, stride, depthwise=True)
            self.project = ConvBN(hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.hidden:
            return x
        h = self.project(F.relu(self.depthwise(F.relu(self.expand(x)))))
        return x + h if self.residual else h


class PrunedMBConvNet(PlainStagedNet):
    """The largest subnet of an mbconv space with per-block hidden-channel counts of its own."""

    def __init__(self, config: MBConvSpaceConfig, hidden: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.stem = ConvBN(config.in_channels, config.stem_width, STEM_KERNEL)
        self.stages = nn.ModuleList()
        channels = config.stem_width
        for spec, counts in zip(config.stages, hidden, strict=True):
            width = max(spec.widths)
            self.stages.append(
                nn.ModuleList(
                    PrunedMBConvBlock(channels if j == 0 else width, h, width, max(spec.kernels),
                                      spec.stride if j == 0 else 1, residual=j > 0)
                    for j, h in enumerate(counts)
                )
            )
            channels = width
        self.head = nn.Linear(channels, config.num_classes)


def _copy_convbn(target: ConvBN, source: nn.Module, out_index: torch.Tensor | None,
                 in_index: torch.Tensor | None, scale: torch.Tensor | None = None) -> None:
    """Copy the selected output (and input) channels of an elastic conv + BN into a plain one."""
    weight = source.conv.weight
    if out_index is not None:
        weight = weight[out_index]
    if in_index is not None:
        weight = weight[:, in_index]
    target.conv.weight.copy_(weight)
    bn = source.bn
    pick = (lambda t: t[out_index]) if out_index is not None else (lambda t: t)
    gain = scale if scale is not None else 1.0
    target.bn.weight.copy_(pick(bn.weight) * gain)
    target.bn.bias.copy_(pick(bn.bias) * gain)
    target.bn.running_mean.copy_(pick(bn.running_mean))
    target.bn.running_var.copy_(pick(bn.running_var))
    target.bn.num_batches_tracked.copy_(bn.num_batches_tracked)


def prune_hidden_channels(
    supernet: MBConvSupernet,
    keep: Sequence[Sequence[torch.Tensor]],
    scales: Sequence[Sequence[torch.Tensor]] | None = None,
) -> PrunedMBConvNet:
    """The supernet's largest subnet with only the ``keep[stage][block]`` hidden channels (indices).

    ``scales[stage][block]`` (full hidden length, optional) multiplies each hidden channel after
    its depthwise layer; it is folded into the copied weights. An empty ``keep`` entry of a
    residual block removes the block.
    """
    config = supernet.config
    counts = [[int(k.numel()) for k in stage] for stage in keep]
    pruned = PrunedMBConvNet(config, counts)
    with torch.no_grad():
        _copy_convbn(pruned.stem, supernet.stem, None, None)
        for i, (source_blocks, target_blocks) in enumerate(zip(supernet.stages, pruned.stages, strict=True)):
            for j, (source, target) in enumerate(zip(source_blocks, target_blocks, strict=True)):
                index = keep[i][j]
                if index.numel() == 0:
                    continue
                scale = None if scales is None else scales[i][j][index]
                _copy_convbn(target.expand, source.expand, index, None)
                _copy_convbn(target.depthwise, source.depthwise, index, None, scale)
                _copy_convbn(target.project, source.project, None, index)
        pruned.head.weight.copy_(supernet.head.weight)
        pruned.head.bias.copy_(supernet.head.bias)
    pruned.train(supernet.training)
    return pruned


def multiply_adds(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one image through ``model``'s convs and linears (measured by a forward).

    The same count as :meth:`MBConvSpace.flops`, so a pruned net and a subnet compare directly.
    """
    total = 0

    def count(module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += output[0].numel() * (module.in_channels // module.groups) * k
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total
