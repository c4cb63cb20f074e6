"""Subnet extraction and the on-disk format of an exported subnet.

An export is a folder with ``model.pt`` (a plain ``state_dict`` saved with ``torch.save``)
and ``arch.json`` (the architecture and the search-space config that rebuild the module).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from torch import nn

from nasfleet.errors import NasfleetError
from nasfleet.supernet.arch import Arch, arch_to_dict
from nasfleet.supernet.elastic import slice_like
from nasfleet.supernet.registry import space_from_dict
from nasfleet.supernet.space import SearchSpace

WEIGHTS_FILE = "model.pt"
ARCH_FILE = "arch.json"


def extract(supernet: nn.Module, space: SearchSpace, arch: Arch) -> nn.Module:
    """A standalone module with copied weights computing the supernet's function at ``arch``.

    The standalone network uses the supernet's parameter names, so each of its tensors
    is the leading (kernel: centre) slice of the same-named supernet tensor.
    """
    # A module holding several supernets (few-shot NAS) names the one that computes ``arch``.
    module_for = getattr(supernet, "module_for", None)
    if module_for is not None:
        supernet = module_for(arch)
    subnet = space.build_standalone(arch)
    source = supernet.state_dict()
    target = subnet.state_dict()
    with torch.no_grad():
        for name, tensor in target.items():
            is_conv_weight = tensor.dim() >= 3 and name.endswith("conv.weight")
            tensor.copy_(slice_like(source[name], tensor.shape, is_conv_weight=is_conv_weight))
    subnet.train(supernet.training)
    return subnet


def save_subnet(subnet: nn.Module, space: SearchSpace, arch: Arch, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    weights = io.BytesIO()
    torch.save(subnet.state_dict(), weights)  # onto a path, a full disk would be a RuntimeError, not an OSError
    (folder / WEIGHTS_FILE).write_bytes(weights.getvalue())
    meta = {"arch": arch_to_dict(arch), "space": space.config_dict()}
    (folder / ARCH_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def load_subnet(folder: Path) -> tuple[nn.Module, Arch]:
    """Rebuild an exported subnet from its folder; needs nothing but torch and nasfleet."""
    meta_path, weights_path = folder / ARCH_FILE, folder / WEIGHTS_FILE
    for path in (meta_path, weights_path):
        if not path.is_file():
            raise NasfleetError(f"{path} does not exist: not an exported subnet folder")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise NasfleetError(f"{meta_path} is not valid JSON: {exc}") from None
    space = space_from_dict(meta["space"])
    arch = space.arch_from_dict(meta["arch"])
    subnet = space.build_standalone(arch)
    try:
        subnet.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    except Exception as exc:  # torch raises many types for a bad file
        raise NasfleetError(f"{weights_path} cannot be loaded: {exc}") from None
    subnet.eval()
    return subnet, arch
