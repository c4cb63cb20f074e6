"""Extraction: a standalone subnet computes exactly what the supernet computes at that arch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nasfleet.errors import NasfleetError
from nasfleet.supernet import ConvArch
from nasfleet.supernet import Conv1DSpace, GPTSpace, GPTSpaceConfig, MBConvSpace, ViTSpace, extract, load_subnet, recalibrate_batchnorm, save_subnet

SPACES = {
    "mbconv": MBConvSpace(),
    "vit": ViTSpace(),
    "conv1d": Conv1DSpace(),
    "gpt": GPTSpace(GPTSpaceConfig(image_size=8, head_dim=8, embed_dims=[16, 24, 32], depths=[1, 2], heads=[1, 2])),
}


def inputs(name: str, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A batch the space reads: 8×8 images, or 8 byte tokens for the language model."""
    if name == "gpt":
        return torch.randint(0, 256, (count, 1, 8), generator=generator)
    return torch.randn(count, 1, 8, 8, generator=generator)
SUPERNETS = {}


def supernet_for(name: str) -> torch.nn.Module:
    if name not in SUPERNETS:
        torch.manual_seed(0)
        SUPERNETS[name] = SPACES[name].build_supernet()
    return SUPERNETS[name]


@pytest.mark.parametrize("name", SPACES)
@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=25, deadline=None)
def test_extracted_subnet_equals_supernet(name: str, seed: int) -> None:
    space, supernet = SPACES[name], supernet_for(name)
    rng = np.random.default_rng(seed)
    arch = space.sample(rng)
    gen = torch.Generator().manual_seed(seed)
    # Subnet-specific BN statistics, so that eval mode is not trivially the identity.
    recalibrate_batchnorm(supernet, arch, [inputs(name, 16, gen) * 2 + 1 for _ in range(2)])
    x = inputs(name, 7, gen)
    supernet.eval()
    subnet = extract(supernet, space, arch).eval()
    with torch.no_grad():
        assert (supernet(x, arch) - subnet(x)).abs().max().item() < 1e-5
    supernet.train()
    subnet.train()
    assert (supernet(x, arch) - subnet(x)).abs().max().item() < 1e-5


@pytest.mark.parametrize("name", SPACES)
def test_gradients_reach_only_the_shared_slice(name: str) -> None:
    space, supernet = SPACES[name], SPACES[name].build_supernet()
    arch = space.smallest()
    supernet(inputs(name, 4), arch).sum().backward()
    head = supernet.tok_embed.grad if name == "gpt" else supernet.head.weight.grad  # gpt: the tied output layer
    width = arch.stages[-1].width if isinstance(arch, ConvArch) else arch.embed_dim
    assert head[:, width:].abs().sum() == 0 and head[:, :width].abs().sum() > 0
    last_layers = [p for n, p in supernet.named_parameters() if p.grad is None]
    assert last_layers, "the smallest subnet drops blocks, which must receive no gradient"


@pytest.mark.parametrize("name", SPACES)
def test_export_round_trip_with_plain_torch_files(name: str, tmp_path: Path) -> None:
    space, supernet = SPACES[name], supernet_for(name)
    arch = space.sample(np.random.default_rng(7))
    supernet.eval()
    subnet = extract(supernet, space, arch).eval()
    save_subnet(subnet, space, arch, tmp_path / "export")
    state = torch.load(tmp_path / "export" / "model.pt", weights_only=True)
    assert set(state) == set(subnet.state_dict())
    loaded, loaded_arch = load_subnet(tmp_path / "export")
    x = inputs(name, 3)
    assert loaded_arch == arch
    with torch.no_grad():
        assert torch.equal(loaded(x), subnet(x))


def test_loading_a_folder_without_export_files_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(NasfleetError, match="not an exported subnet"):
        load_subnet(tmp_path)
