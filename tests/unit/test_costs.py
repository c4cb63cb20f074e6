"""Exact FLOPs (multiply-adds) and parameter counts, against hand counts and torch's counter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nasfleet.supernet import (
    BlockChoice,
    Conv1DSpace,
    Conv1DSpaceConfig,
    ConvArch,
    LayerChoice,
    MBConvSpace,
    MBConvSpaceConfig,
    StageChoice,
    TransformerArch,
    ViTSpace,
    ViTSpaceConfig,
    extract,
)


def test_mbconv_hand_count() -> None:
    # 1×8×8 input; stem 3×3 → 4 channels; one stride-2 block: expand ×2 (8), depthwise 3×3, project → 6; 10 classes.
    space = MBConvSpace(
        MBConvSpaceConfig(stem_width=4, stages=[{"widths": [6], "depths": [1], "kernels": [3], "expands": [2], "stride": 2}])
    )
    arch = ConvArch((StageChoice(6, (BlockChoice(3, 2),)),))
    stem = 8 * 8 * 4 * 1 * 9  # 2,304
    expand = 8 * 8 * 8 * 4  # 2,048 (1×1 at 8×8, before the stride)
    depthwise = 4 * 4 * 8 * 9  # 1,152 (stride 2 → 4×4)
    project = 4 * 4 * 6 * 8  # 768
    head = 6 * 10  # 60
    assert space.flops(arch) == stem + expand + depthwise + project + head == 6332
    # weights + BN (2 per channel) for each conv, weights + bias for the head
    params = (36 + 8) + (32 + 16) + (72 + 16) + (48 + 12) + (60 + 10)
    assert space.params(arch) == params == 310


def test_conv1d_hand_count() -> None:
    # 1×8×8 images read as 8 steps of 8 values; stem k3 → 4 channels; one stride-2 block: expand ×2 (8), depthwise k3, project → 6.
    space = Conv1DSpace(
        Conv1DSpaceConfig(stem_width=4, stages=[{"widths": [6], "depths": [1], "kernels": [3], "expands": [2], "stride": 2}])
    )
    arch = ConvArch((StageChoice(6, (BlockChoice(3, 2),)),), space="conv1d")
    stem = 8 * 4 * 8 * 3  # 768: 8 steps, 8 values in, 4 out, kernel 3
    expand = 8 * 8 * 4  # 256 (1-wide at 8 steps, before the stride)
    depthwise = 4 * 8 * 3  # 96 (stride 2 → 4 steps)
    project = 4 * 6 * 8  # 192
    head = 6 * 10
    assert space.flops(arch) == stem + expand + depthwise + project + head == 1372
    params = (96 + 8) + (32 + 16) + (24 + 16) + (48 + 12) + (60 + 10)
    assert space.params(arch) == params == 322


def test_vit_hand_count() -> None:
    space = ViTSpace(
        ViTSpaceConfig(patch_size=4, head_dim=2, embed_dims=[4], depths=[1], heads=[1], mlp_ratios=[2.0])
    )
    arch = TransformerArch(4, (LayerChoice(1, 2.0),))
    t, pd, e, w, h, c = 4, 16, 4, 2, 8, 10  # tokens, patch dim, embed, attn width, mlp hidden, classes
    flops = t * pd * e + 3 * t * e * w + 2 * t * t * w + t * w * e + 2 * t * e * h + e * c
    assert space.flops(arch) == flops == 256 + 96 + 64 + 32 + 256 + 40
    params = (pd * e + e) + t * e + 2 * e + 3 * (e * w + w) + (w * e + e) + 2 * e + (e * h + h) + (h * e + e)
    params += 2 * e + e * c + c
    assert space.params(arch) == params


@pytest.mark.parametrize("space", [MBConvSpace(), ViTSpace(), Conv1DSpace()], ids=lambda s: s.name)
def test_costs_match_torch_counters_on_extracted_subnets(space) -> None:
    supernet = space.build_supernet().eval()
    rng = np.random.default_rng(0)
    for arch in [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(15)]:
        subnet = extract(supernet, space, arch)
        with FlopCounterMode(display=False) as counter:
            subnet(torch.randn(1, 1, 8, 8))
        assert counter.get_total_flops() == 2 * space.flops(arch)  # torch counts a multiply-add as 2
        assert sum(p.numel() for p in subnet.parameters()) == space.params(arch)
