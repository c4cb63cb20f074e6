"""Extraction: a standalone subnet computes exactly what the supernet computes at that arch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nasfleet.errors import NasfleetError
from nasfleet.supernet import Conv1DSpace, MBConvSpace, ViTSpace, extract, load_subnet, recalibrate_batchnorm, save_subnet

SPACES = {"mbconv": MBConvSpace(), "vit": ViTSpace(), "conv1d": Conv1DSpace()}
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
    recalibrate_batchnorm(supernet, arch, [torch.randn(16, 1, 8, 8, generator=gen) * 2 + 1 for _ in range(2)])
    x = torch.randn(7, 1, 8, 8, generator=gen)
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
    supernet(torch.randn(4, 1, 8, 8), arch).sum().backward()
    head = supernet.head.weight.grad
    width = arch.embed_dim if name == "vit" else arch.stages[-1].width
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
    x = torch.randn(3, 1, 8, 8)
    assert loaded_arch == arch
    with torch.no_grad():
        assert torch.equal(loaded(x), subnet(x))


def test_loading_a_folder_without_export_files_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(NasfleetError, match="not an exported subnet"):
        load_subnet(tmp_path)
