"""The sequence space: the mbconv family of inverted-residual stages over 1-D convolutions.

Inputs arrive as the data sets deliver them, ``(batch, channels, height, width)``, and are
read as sequences of their rows: ``height`` time steps of ``channels × width`` values each
(Fashion-MNIST: 28 steps of 28 values). No multichannel time-series set ships offline here,
so this is how the space is trained and measured; a real sequence set would be a data set
delivering ``(batch, values, steps, 1)``-shaped examples to the same space.
"""

from __future__ import annotations

from typing import Literal

import torch

from nasfleet.supernet.arch import Arch, ConvArch
from nasfleet.supernet.mbconv import InvertedResidualSpace, MBConvNet, MBConvSpaceConfig, MBConvSupernet


class Conv1DSpaceConfig(MBConvSpaceConfig):
    name: Literal["conv1d"] = "conv1d"  # type: ignore[assignment]


def rows_as_sequence(images: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` images as ``(N, C·W, H)`` sequences: one time step per row."""
    n, c, h, w = images.shape
    return images.permute(0, 1, 3, 2).reshape(n, c * w, h)


class Conv1DSpace(InvertedResidualSpace):
    name = "conv1d"
    spatial_dims = 1

    def __init__(self, config: Conv1DSpaceConfig | None = None) -> None:
        super().__init__(config or Conv1DSpaceConfig())

    def build_supernet(self) -> Conv1DSupernet:
        return Conv1DSupernet(self.config)

    def build_standalone(self, arch: Arch) -> Conv1DNet:
        self.validate(arch)
        assert isinstance(arch, ConvArch)
        return Conv1DNet(self.config, arch)


class Conv1DSupernet(MBConvSupernet):
    """Every subnet of a :class:`Conv1DSpace`."""

    spatial_dims = 1

    def stem_input(self, x: torch.Tensor) -> torch.Tensor:
        return rows_as_sequence(x)


class Conv1DNet(MBConvNet):
    """One subnet of a :class:`Conv1DSpace` as a plain network (parameter names match the supernet)."""

    spatial_dims = 1

    def stem_input(self, x: torch.Tensor) -> torch.Tensor:
        return rows_as_sequence(x)
